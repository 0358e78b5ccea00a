//! Correctness checks of the burn model on tiny configs.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use flashlm_core::Config;
use flashlm_model::{BitLinear, Bolt, DepthwiseConv, cpu_device, ternary_quantize};

fn dev() -> Device {
    let d = cpu_device(true);
    d.seed(7);
    d
}

fn tokens(ids: &[i64], b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [b, t]), device)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn parameter_counts() {
    assert_eq!(Config::small().num_params(), 4_364_736);
    let device = cpu_device(false);
    for cfg in [
        Config::tiny(),
        Config { vocab_size: 50, dim: 12, n_blocks: 3, glu_hidden: 20, conv_taps: 4, seq_len: 9 },
    ] {
        let m = Bolt::init(&cfg, &device);
        let counted: usize = m.named_params().iter().map(|p| p.values.len()).sum();
        assert_eq!(counted, cfg.num_params());
        assert_eq!(m.config(cfg.seq_len), cfg);
    }
}

#[test]
fn parameter_names_follow_the_original_state_dict() {
    let m = Bolt::init(
        &Config { vocab_size: 20, dim: 8, n_blocks: 2, glu_hidden: 16, conv_taps: 8, seq_len: 4 },
        &cpu_device(false),
    );
    let names: Vec<(String, Vec<usize>)> = m.named_params().into_iter().map(|p| (p.name, p.shape)).collect();
    let expect = [
        ("embedding.weight", vec![20, 8]),
        ("blocks.0.norm1.scale", vec![8]),
        ("blocks.0.mixer.up.weight", vec![16, 8]),
        ("blocks.0.mixer.conv.weight", vec![8, 1, 8]),
        ("blocks.0.mixer.down.weight", vec![8, 8]),
        ("blocks.0.norm2.scale", vec![8]),
        ("blocks.0.ffn.W_gate.weight", vec![16, 8]),
        ("blocks.0.ffn.W_up.weight", vec![16, 8]),
        ("blocks.0.ffn.W_down.weight", vec![8, 16]),
    ];
    for (name, shape) in expect {
        assert!(names.contains(&(name.to_string(), shape.clone())), "missing {name} {shape:?} in {names:?}");
    }
    assert!(names.iter().any(|(n, _)| n == "blocks.1.ffn.W_down.weight"));
    assert!(names.iter().any(|(n, _)| n == "final_norm.scale"));
    assert_eq!(names.len(), 1 + 2 * 8 + 1);
}

/// The burn model's parameters, in visiting order, are exactly the shared parameter table
/// (names, shapes, order) that the fused step, the exporter and the engine read.
#[test]
fn parameters_are_the_shared_table_in_its_order() {
    for cfg in [
        Config::tiny(),
        Config { vocab_size: 20, dim: 8, n_blocks: 3, glu_hidden: 24, conv_taps: 5, seq_len: 4 },
    ] {
        let m = Bolt::init(&cfg, &cpu_device(false));
        let got: Vec<(String, Vec<usize>)> =
            m.named_params().into_iter().map(|p| (p.name, p.shape)).collect();
        let want: Vec<(String, Vec<usize>)> =
            flashlm_core::params::table(&cfg).into_iter().map(|p| (p.name, p.shape)).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn initial_loss_is_ln_vocab() {
    let device = dev();
    let cfg = Config::tiny();
    let m = Bolt::init(&cfg, &device);
    let (b, t) = (4, cfg.seq_len);
    let ids: Vec<i64> = (0..b * t).map(|i| ((i * 7919) % cfg.vocab_size) as i64).collect();
    let tg: Vec<i64> = (0..b * t).map(|i| ((i * 104_729 + 3) % cfg.vocab_size) as i64).collect();
    let loss: f32 = m.loss(tokens(&ids, b, t, &device), tokens(&tg, b, t, &device)).into_scalar();
    let ln_v = (cfg.vocab_size as f32).ln();
    assert!((loss - ln_v).abs() < 0.1, "initial loss {loss}, ln(V) = {ln_v}");
}

#[test]
fn bitlinear_gradient_is_straight_through() {
    // dL/dW of the ternary layer equals dL/dW of a plain linear layer evaluated at Wq:
    // for y = x·Wqᵀ and L = Σ y ⊙ r, dL/dW = rᵀ·x (flattened over batch and time).
    let device = dev();
    let layer = BitLinear::new(24, 10, &device);
    let x: Tensor<3> = Tensor::random([2, 5, 24], Distribution::Normal(0.0, 1.0), &device);
    let r: Tensor<3> = Tensor::random([2, 5, 10], Distribution::Normal(0.0, 1.0), &device);
    let y = layer.forward(x.clone().detach());
    let loss = y.clone().mul(r.clone().detach()).sum();
    let grads = loss.backward();
    let got = to_vec(layer.weight.val().grad(&grads).expect("weight gradient"));
    let r2 = r.inner().reshape([10, 10]); // [N=10, out=10]
    let x2 = x.inner().reshape([10, 24]); // [N, in]
    let expect = to_vec(r2.transpose().matmul(x2)); // [out, in]
    assert_eq!(got.len(), expect.len());
    for (a, b) in got.iter().zip(&expect) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    // And the forward value uses the ternary weights: y == x · Wqᵀ.
    let wq = ternary_quantize(layer.weight.val().inner());
    let (codes, alpha) = layer.ternary();
    let wq_v = to_vec(wq.clone());
    assert!(codes.iter().all(|c| (-1..=1).contains(c)));
    for (q, c) in wq_v.iter().zip(&codes) {
        assert!((q - f32::from(*c) * alpha).abs() < 1e-6);
    }
}

#[test]
fn depthwise_conv_matches_naive_loop() {
    let device = cpu_device(false);
    let (b, t, d, k) = (2, 11, 5, 4);
    let conv = DepthwiseConv::new(d, k, &device);
    let x: Tensor<3> = Tensor::random([b, t, d], Distribution::Normal(0.0, 1.0), &device);
    let got = to_vec(conv.forward(x.clone()));
    let xv = to_vec(x);
    let w = to_vec(conv.weight.val()); // [d, 1, k]
    for bi in 0..b {
        for ti in 0..t {
            for c in 0..d {
                let mut s = 0.0f32;
                for j in 0..k {
                    let src = ti as isize + j as isize - (k as isize - 1);
                    if src >= 0 {
                        s += w[c * k + j] * xv[(bi * t + src as usize) * d + c];
                    }
                }
                let g = got[(bi * t + ti) * d + c];
                assert!((g - s).abs() < 1e-5, "b{bi} t{ti} c{c}: {g} vs {s}");
            }
        }
    }
}

#[test]
fn model_is_causal() {
    let device = cpu_device(false);
    device.seed(3);
    let cfg = Config { seq_len: 24, ..Config::tiny() };
    let m = Bolt::init(&cfg, &device);
    let t = cfg.seq_len;
    let a: Vec<i64> = (0..t).map(|i| (i * 13 % 97) as i64).collect();
    let cut = 10;
    let mut b = a.clone();
    for (i, v) in b.iter_mut().enumerate().skip(cut + 1) {
        *v = (i * 31 % 89 + 100) as i64;
    }
    let la = to_vec(m.forward(tokens(&a, 1, t, &device)));
    let lb = to_vec(m.forward(tokens(&b, 1, t, &device)));
    let v = cfg.vocab_size;
    for pos in 0..=cut {
        for j in 0..v {
            assert!((la[pos * v + j] - lb[pos * v + j]).abs() < 1e-5, "position {pos} saw the future");
        }
    }
    let later_differs =
        (cut + 1..t).any(|pos| (0..v).any(|j| (la[pos * v + j] - lb[pos * v + j]).abs() > 1e-4));
    assert!(later_differs, "changing tokens changed nothing: the test is vacuous");
}
