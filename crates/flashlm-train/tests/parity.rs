//! burn, and the hand-written fused training step, vs the original PyTorch FlashLM v4 on a
//! committed fixture (no PyTorch needed).

#[allow(dead_code)]
#[path = "common/parity.rs"]
mod parity;

use std::path::PathBuf;

use flashlm_model::{Bolt, cpu_device, read_safetensors};
use flashlm_train::fused::{Params, Products, Scratch, forward_backward, forward_backward_with};
use parity::{PARITY_CONFIG, compute};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity").join(name)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn parity_with_pytorch_fixture() {
    let weights = read_safetensors(&fixture("weights.safetensors")).unwrap();
    let expected = read_safetensors(&fixture("expected.safetensors")).unwrap();
    let device = cpu_device(true);
    let model = Bolt::init(&PARITY_CONFIG, &device).with_weights(&weights).unwrap();
    let ours = compute(model, &device);

    let tol = 1e-4;
    let d = max_diff(&ours.logits, &expected["logits"].1);
    assert!(d <= tol, "logits differ by {d}");
    let d = (ours.loss - expected["loss"].1[0]).abs();
    assert!(d <= tol, "loss differs by {d}");
    let mut checked = 0;
    for (name, g) in &ours.grads {
        let e = &expected[&format!("grad.{name}")].1;
        let d = max_diff(g, e);
        assert!(d <= tol, "gradient of {name} differs by {d}");
        checked += 1;
    }
    assert_eq!(checked, 2 + PARITY_CONFIG.n_blocks * 8, "every parameter's gradient is compared");
    let d = max_diff(&ours.step_losses, &expected["step_losses"].1);
    assert!(
        d <= tol,
        "losses over AdamW steps differ by {d}: {:?} vs {:?}",
        ours.step_losses,
        expected["step_losses"].1
    );
    // The steps really trained: the loss moved.
    assert!(ours.step_losses.last().unwrap() < &ours.step_losses[1]);
}

#[test]
fn weights_with_wrong_names_or_shapes_are_refused() {
    let mut weights = read_safetensors(&fixture("weights.safetensors")).unwrap();
    let device = cpu_device(false);
    let (shape, v) = weights.remove("final_norm.scale").unwrap();
    let e = Bolt::init(&PARITY_CONFIG, &device).with_weights(&weights).unwrap_err();
    assert!(e.contains("missing tensor final_norm.scale"), "{e}");
    weights.insert("final_norm.scale".into(), (vec![shape[0] + 1], vec![1.0; shape[0] + 1]));
    let e = Bolt::init(&PARITY_CONFIG, &device).with_weights(&weights).unwrap_err();
    assert!(e.contains("shape"), "{e}");
    weights.insert("final_norm.scale".into(), (shape, v));
    weights.insert("head.weight".into(), (vec![1], vec![0.0]));
    let e = Bolt::init(&PARITY_CONFIG, &device).with_weights(&weights).unwrap_err();
    assert!(e.contains("unexpected"), "{e}");
}

/// The parity fixture: weights, PyTorch's expected outputs, and the batch's (inputs, targets).
fn parity_fixture() -> (flashlm_model::NamedTensors, flashlm_model::NamedTensors, Vec<u16>, Vec<u16>) {
    let weights = read_safetensors(&fixture("weights.safetensors")).unwrap();
    let expected = read_safetensors(&fixture("expected.safetensors")).unwrap();
    let batch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("batch.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u16> {
        batch[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u16).collect()
    };
    (weights, expected, ids("tokens"), ids("targets"))
}

// ---- The hand-written training step (flashlm_train::fused) against the same fixture ----

#[test]
fn fused_step_matches_pytorch_and_burn() {
    let cfg = PARITY_CONFIG;
    let (weights, expected, inputs, targets) = parity_fixture();

    let params = Params::from_named(&cfg, &weights).unwrap();
    let device = cpu_device(true);
    let burn = compute(Bolt::init(&cfg, &device).with_weights(&weights).unwrap(), &device);
    // Both ways of multiplying by the ternary weights: GEMMs (the default) and the tables.
    for (products, threads) in [Products::Gemm, Products::Tables].into_iter().flat_map(|p| [(p, 1), (p, 2)]) {
        let mut grads = params.zeros_like();
        let mut scratch = Scratch::with_products(products);
        let loss = forward_backward_with(
            &mut scratch,
            &cfg,
            &params,
            &mut grads,
            &inputs,
            &targets,
            cfg.seq_len,
            threads,
        );
        let tol = 1e-4;
        assert!(
            (loss - expected["loss"].1[0]).abs() <= tol,
            "{products:?}: loss {loss} vs PyTorch {}",
            expected["loss"].1[0]
        );
        assert!((loss - burn.loss).abs() <= tol, "{products:?}: loss {loss} vs burn {}", burn.loss);
        let mut checked = 0;
        for (name, _, g) in grads.named(&cfg) {
            let torch = &expected[&format!("grad.{name}")].1;
            let d = max_diff(g, torch);
            assert!(
                d <= tol,
                "{products:?}, {threads} threads: gradient of {name} differs from PyTorch by {d}"
            );
            let b = &burn.grads[&name];
            let d = max_diff(g, b);
            assert!(d <= tol, "{products:?}, {threads} threads: gradient of {name} differs from burn by {d}");
            checked += 1;
        }
        assert_eq!(checked, 2 + cfg.n_blocks * 8);
    }
}

#[test]
fn reused_buffers_give_exactly_the_fresh_result() {
    let cfg = PARITY_CONFIG;
    let (weights, _, inputs, targets) = parity_fixture();
    let params = Params::from_named(&cfg, &weights).unwrap();
    // A second batch: the same tokens shifted, so every buffer holds other values.
    let shift =
        |v: &[u16]| -> Vec<u16> { v.iter().map(|&x| (x as usize * 7 % cfg.vocab_size) as u16).collect() };
    let (inputs_b, targets_b) = (shift(&inputs), shift(&targets));
    for threads in [1, 2, 3] {
        let mut scratch = Scratch::default();
        let mut g = params.zeros_like();
        forward_backward_with(&mut scratch, &cfg, &params, &mut g, &inputs, &targets, cfg.seq_len, threads);
        let mut reused = params.zeros_like();
        let lr = forward_backward_with(
            &mut scratch,
            &cfg,
            &params,
            &mut reused,
            &inputs_b,
            &targets_b,
            cfg.seq_len,
            threads,
        );
        let mut fresh = params.zeros_like();
        let lf = forward_backward(&cfg, &params, &mut fresh, &inputs_b, &targets_b, cfg.seq_len, threads);
        assert_eq!(lr.to_bits(), lf.to_bits(), "{threads} threads: loss");
        for ((name, _, a), (_, _, b)) in reused.named(&cfg).into_iter().zip(fresh.named(&cfg)) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{threads} threads: {name}");
        }
    }
}

#[test]
fn bad_weights_are_refused() {
    let cfg = PARITY_CONFIG;
    let (mut weights, ..) = parity_fixture();
    weights.insert("final_norm.scale".into(), (vec![3], vec![1.0; 3]));
    assert!(Params::from_named(&cfg, &weights).unwrap_err().contains("final_norm.scale"));
    weights.remove("final_norm.scale");
    assert!(Params::from_named(&cfg, &weights).unwrap_err().contains("missing"));
}

#[test]
fn fused_adamw_steps_match_pytorch() {
    use crate::parity::{PARITY_LR, PARITY_STEPS};
    use flashlm_train::fused::{AdamW, clip_global_norm};
    use flashlm_train::schedule::lr_at;
    let cfg = PARITY_CONFIG;
    let (weights, expected, inputs, targets) = parity_fixture();
    let mut params = Params::from_named(&cfg, &weights).unwrap();
    let mut opt = AdamW::new(&params);
    let (total, warmup, peak, min) = PARITY_LR;
    let mut losses = Vec::new();
    // Buffers kept across steps, as the trainer does.
    let mut scratch = Scratch::default();
    for step in 0..PARITY_STEPS as u64 {
        let mut grads = params.zeros_like();
        losses.push(forward_backward_with(
            &mut scratch,
            &cfg,
            &params,
            &mut grads,
            &inputs,
            &targets,
            cfg.seq_len,
            2,
        ));
        clip_global_norm(&mut grads, 1.0);
        opt.step(&mut params, &mut grads, lr_at(step, total, warmup, peak, min));
        assert!(
            grads.buffers_mut().iter().all(|g| g.iter().all(|&x| x == 0.0)),
            "the step clears the gradients"
        );
    }
    let d = max_diff(&losses, &expected["step_losses"].1);
    assert!(
        d <= 1e-4,
        "losses over AdamW steps differ by {d}: {losses:?} vs {:?}",
        expected["step_losses"].1
    );
    assert!(losses.last().unwrap() < &losses[1], "the steps trained");
}
