//! Write the Rust side of the PyTorch parity check.
//!
//! cargo run --release -p flashlm-train --example parity -- DIR
//!   writes DIR/weights.safetensors (initial weights, seed 1234), DIR/batch.json and
//!   DIR/ours.safetensors (logits, loss, gradients, step losses); then
//!   python3 scripts/reference/parity.py DIR   compares them with PyTorch and writes
//!   DIR/expected.safetensors (the fixture CI checks against).

#[allow(dead_code)]
#[path = "../tests/common/parity.rs"]
mod parity;

use flashlm_model::Bolt;
use std::path::PathBuf;

use flashlm_model::cpu_device;
use parity::{PARITY_BATCH, PARITY_CONFIG, PARITY_LR, PARITY_STEPS, compute, parity_batch};

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: parity DIR"))?);
    std::fs::create_dir_all(&dir)?;
    let device = cpu_device(true);
    device.seed(1234);
    let model = Bolt::init(&PARITY_CONFIG, &device);
    model.save_safetensors(&dir.join("weights.safetensors")).map_err(anyhow::Error::msg)?;
    let (inp, tgt) = parity_batch();
    let (total, warmup, peak, min) = PARITY_LR;
    std::fs::write(
        dir.join("batch.json"),
        serde_json::json!({
            "config": PARITY_CONFIG, "batch": PARITY_BATCH, "tokens": inp, "targets": tgt,
            "steps": PARITY_STEPS, "lr": {"total": total, "warmup": warmup, "peak": peak, "min": min},
            "adamw": {"betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}, "clip": 1.0,
        })
        .to_string(),
    )?;
    let out = compute(model, &device);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("logits".into(), vec![PARITY_BATCH, PARITY_CONFIG.seq_len, PARITY_CONFIG.vocab_size], out.logits),
        ("loss".into(), vec![1], vec![out.loss]),
        ("step_losses".into(), vec![PARITY_STEPS], out.step_losses),
    ];
    for (name, g) in out.grads {
        let n = g.len();
        tensors.push((format!("grad.{name}"), vec![n], g));
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("ours.safetensors"))?;
    println!("wrote {}", dir.display());
    Ok(())
}
