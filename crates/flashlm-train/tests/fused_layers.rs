//! Every forward/backward pair of the fused step (`flashlm_train::fused::layers`) against the
//! burn layer it replaces: the forward values and, through burn autodiff of `Σ out ⊙ R` for a
//! random R, the gradients of inputs and weights. Shapes are small and ragged (widths that are
//! not multiples of 16, more than one sequence, more than one head chunk).

use burn::module::Param;
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use flashlm_model::{BitLinear, DepthwiseConv, RmsNorm, cpu_device, cross_entropy};
use flashlm_train::fused::layers;

fn dev() -> Device {
    cpu_device(true)
}

/// Deterministic values in [-1, 1].
fn data(n: usize, seed: u64) -> Vec<f32> {
    flashlm_core::rng::uniform_values(n, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn t3(v: &[f32], shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device).require_grad()
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn grad<const D: usize>(t: &Tensor<D>, g: &Gradients) -> Vec<f32> {
    vals(t.grad(g).expect("gradient"))
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: differs from burn by {worst} (relative)");
}

const TOL: f32 = 2e-5;

#[test]
fn rmsnorm_pair_matches_burn() {
    let device = dev();
    for (n, d) in [(1, 1), (7, 20), (13, 33), (4, 192)] {
        let x = data(n * d, 1);
        let g = data(d, 2);
        let r = data(n * d, 3);
        let norm = RmsNorm {
            scale: Param::from_tensor(Tensor::from_data(TensorData::new(g.clone(), [d]), &device)),
        };
        let xt = t3(&x, [1, n, d], &device);
        let out = norm.forward(xt.clone());
        let grads = out.clone().mul(t3(&r, [1, n, d], &device).detach()).sum().backward();
        let (mut y, mut rr) = (vec![0.0; n * d], vec![0.0; n]);
        layers::rmsnorm(&mut y, &mut rr, &x, &g, d);
        close("rmsnorm forward", &y, &vals(out), TOL);
        let (mut dx, mut dg) = (vec![0.0; n * d], vec![0.0; d]);
        layers::rmsnorm_back(&mut dx, &mut dg, &r, &x, &rr, &g, d);
        close("rmsnorm dx", &dx, &grad(&xt, &grads), TOL);
        close("rmsnorm dgain", &dg, &grad(&norm.scale.val(), &grads), TOL);
    }
}

#[test]
fn linear_pair_matches_the_ternary_layer() {
    // The fused step multiplies by the quantised weight; by the straight-through estimator
    // its weight gradient is the latent weight's.
    let device = dev();
    for (n, i, o) in [(1, 1, 1), (9, 20, 7), (5, 33, 64)] {
        let w = data(o * i, 4);
        let x = data(n * i, 5);
        let r = data(n * o, 6);
        let layer = BitLinear {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(w.clone(), [o, i]), &device)),
        };
        let xt = t3(&x, [1, n, i], &device);
        let out = layer.forward(xt.clone());
        let grads = out.clone().mul(t3(&r, [1, n, o], &device).detach()).sum().backward();
        let wq = flashlm_core::quant::ternary_values(&w);
        let mut y = vec![0.0; n * o];
        layers::linear(&mut y, &x, &wq, n, i, o, 1);
        close("linear forward", &y, &vals(out), TOL);
        let (mut dx, mut dw) = (vec![0.0; n * i], vec![0.0; o * i]);
        layers::linear_back(&mut dx, false, &mut dw, &r, &x, &wq, (n, i, o), 1);
        close("linear dx", &dx, &grad(&xt, &grads), TOL);
        close("linear dW", &dw, &grad(&layer.weight.val(), &grads), TOL);
    }
}

#[test]
fn conv_gate_pair_matches_burn() {
    // m = conv(value) · σ(gate) for gv = [gate | value], sequences of t rows.
    let device = dev();
    for (b, t, d, k) in [(1, 1, 1, 1), (2, 9, 20, 8), (3, 5, 17, 4)] {
        let n = b * t;
        let gv = data(n * 2 * d, 7);
        let taps = data(d * k, 8);
        let r = data(n * d, 9);
        let conv = DepthwiseConv {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(taps.clone(), [d, 1, k]), &device)),
        };
        let gvt = t3(&gv, [b, t, 2 * d], &device);
        let gate = sigmoid(gvt.clone().narrow(2, 0, d));
        let out = conv.forward(gvt.clone().narrow(2, d, d)).mul(gate);
        let grads = out.clone().mul(t3(&r, [b, t, d], &device).detach()).sum().backward();
        let (mut c, mut m) = (vec![0.0; n * d], vec![0.0; n * d]);
        layers::conv_gate(&mut c, &mut m, &gv, &taps, t, d, k);
        close("conv_gate forward", &m, &vals(out), TOL);
        let (mut dgv, mut dtaps) = (vec![7.0; n * 2 * d], vec![0.0; d * k]);
        layers::conv_gate_back(&mut dgv, &mut dtaps, &r, (&c, &gv), &taps, t, d, k);
        close("conv_gate dgv", &dgv, &grad(&gvt, &grads), TOL);
        close("conv_gate dtaps", &dtaps, &grad(&conv.weight.val(), &grads), TOL);
    }
}

#[test]
fn glu_pair_matches_burn() {
    let device = dev();
    for (n, h) in [(1, 1), (6, 20), (70, 33)] {
        let gu = data(n * 2 * h, 10);
        let r = data(n * h, 11);
        let gut = t3(&gu, [1, n, 2 * h], &device);
        let out = silu(gut.clone().narrow(2, 0, h)).mul(gut.clone().narrow(2, h, h));
        let grads = out.clone().mul(t3(&r, [1, n, h], &device).detach()).sum().backward();
        let mut a = vec![0.0; n * h];
        layers::glu(&mut a, &gu, h);
        close("glu forward", &a, &vals(out), TOL);
        let mut dgu = vec![0.0; n * 2 * h];
        layers::glu_back(&mut dgu, &r, &gu, h);
        close("glu dgu", &dgu, &grad(&gut, &grads), TOL);
    }
}

#[test]
fn head_and_cross_entropy_match_burn_over_several_chunks() {
    // N = 300 rows: one full chunk of CE_CHUNK = 256 and a partial one; d = 20 is not a
    // multiple of 16.
    let device = dev();
    const { assert!(300 > layers::CE_CHUNK) };
    for (n, d, v) in [(1, 1, 2), (300, 20, 37), (513, 16, 50)] {
        let h = data(n * d, 12);
        let emb = data(v * d, 13);
        let targets: Vec<u16> = (0..n).map(|i| (i * 7 % v) as u16).collect();
        let ht = t3(&h, [1, n, d], &device);
        let et = Tensor::<2>::from_data(TensorData::new(emb.clone(), [v, d]), &device).require_grad();
        let logits = ht.clone().reshape([n, d]).matmul(et.clone().transpose()).reshape([1, n, v]);
        let tg: Tensor<2, Int> = Tensor::from_data(
            TensorData::new(targets.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [1, n]),
            &device,
        );
        let loss = cross_entropy(logits, tg);
        let want = vals(loss.clone())[0];
        let grads = loss.backward();
        let (mut dh, mut demb) = (vec![0.0; n * d], vec![0.0; v * d]);
        let mut scratch = vec![0.0; layers::CE_CHUNK.min(n) * v];
        let sum = layers::head_ce(&mut dh, &mut demb, &mut scratch, &h, &targets, &emb, (d, n), 1);
        let got = (sum / n as f64) as f32;
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{n}x{d}: loss {got} vs burn {want}");
        close("head dh", &dh, &grad(&ht, &grads), TOL);
        close("head dE", &demb, &grad(&et, &grads), TOL);
    }
}

#[test]
fn embedding_pair_gathers_and_scatters_rows() {
    let (v, d) = (5, 3);
    let emb = data(v * d, 14);
    let ids = [4u16, 0, 4, 2];
    let mut x = vec![0.0; ids.len() * d];
    layers::embed(&mut x, &ids, &emb, d);
    assert_eq!(&x[..d], &emb[4 * d..5 * d]);
    let dx = data(ids.len() * d, 15);
    let mut demb = vec![0.0; v * d];
    layers::embed_back(&mut demb, &dx, &ids, d);
    for c in 0..d {
        assert_eq!(demb[4 * d + c], dx[c] + dx[2 * d + c], "id 4 gets both rows");
        assert_eq!(demb[d + c], 0.0, "id 1 is not used");
    }
}
