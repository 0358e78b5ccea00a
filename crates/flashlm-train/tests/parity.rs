//! burn vs the original PyTorch FlashLM v4 on a committed fixture (no PyTorch needed).

use std::path::PathBuf;

use flashlm_model::{cpu_device, read_safetensors};
use flashlm_train::parity::{PARITY_CONFIG, compute};

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
    let model = PARITY_CONFIG.init(&device).with_weights(&weights).unwrap();
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
    let e = PARITY_CONFIG.init(&device).with_weights(&weights).unwrap_err();
    assert!(e.contains("missing tensor final_norm.scale"), "{e}");
    weights.insert("final_norm.scale".into(), (vec![shape[0] + 1], vec![1.0; shape[0] + 1]));
    let e = PARITY_CONFIG.init(&device).with_weights(&weights).unwrap_err();
    assert!(e.contains("shape"), "{e}");
    weights.insert("final_norm.scale".into(), (shape, v));
    weights.insert("head.weight".into(), (vec![1], vec![0.0]));
    let e = PARITY_CONFIG.init(&device).with_weights(&weights).unwrap_err();
    assert!(e.contains("unexpected"), "{e}");
}
