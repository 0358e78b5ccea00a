//! Write the engine golden fixture: tests/fixtures/engine/tiny.flm (the PyTorch-parity
//! weights, vocab 256) and golden.json (burn's logits for a fixed sequence and burn's greedy
//! continuation), which flashlm-infer's tests check without burn.
//! cargo run --release -p flashlm-train --example engine_golden -- tests/fixtures

#[allow(dead_code)]
#[path = "../tests/common/parity.rs"]
mod parity;

use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::EmbeddingDtype;
use flashlm_infer::sample::argmax;
use flashlm_model::{Bolt, cpu_device, read_safetensors};
use parity::PARITY_CONFIG;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "tests/fixtures".into()));
    let device = cpu_device(false);
    let weights = read_safetensors(&root.join("parity/weights.safetensors")).map_err(anyhow::Error::msg)?;
    let model = Bolt::init(&PARITY_CONFIG, &device).with_weights(&weights).map_err(anyhow::Error::msg)?;
    let cfg = PARITY_CONFIG;
    let tok = Tokenizer::from_id_to_base(
        cfg.vocab_size,
        (0..(cfg.vocab_size - 4) as u32).map(|i| i + 32).collect(),
    )?;
    let (bytes, _) = flashlm_train::export::export(&model, cfg.seq_len, &tok, EmbeddingDtype::F32)?;
    std::fs::create_dir_all(root.join("engine"))?;
    std::fs::write(root.join("engine/tiny.flm"), &bytes)?;
    let run = |ids: &[u16]| -> Vec<f32> {
        let v: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        let t: Tensor<2, Int> = Tensor::from_data(TensorData::new(v, [1, ids.len()]), &device);
        model.forward(t).into_data().try_to_vec::<f32>().expect("f32")
    };
    let seq: Vec<u16> = (0..40).map(|i| ((i * 29 + 3) % cfg.vocab_size) as u16).collect();
    let logits = run(&seq);
    let prompt: Vec<u16> = vec![17, 30, 41];
    let mut greedy = prompt.clone();
    for _ in 0..200 {
        let l = run(&greedy);
        greedy.push(argmax(&l[(greedy.len() - 1) * cfg.vocab_size..]) as u16);
    }
    std::fs::write(
        root.join("engine/golden.json"),
        serde_json::json!({"sequence": seq, "logits": logits, "prompt": prompt, "greedy": greedy})
            .to_string(),
    )?;
    println!("wrote {}/engine/tiny.flm ({} bytes) and golden.json", root.display(), bytes.len());
    Ok(())
}
