//! Export a randomly initialised model (for speed measurements of shapes without a trained
//! checkpoint). cargo run --release -p flashlm-train --example random_flm -- small|large OUT.flm [f32|f16|int8|int4]

use flashlm_core::Config;
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::EmbeddingDtype;
use flashlm_model::{Bolt, cpu_device};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() >= 2, "usage: random_flm small|large OUT.flm [f32|f16|int8|int4]");
    let cfg = match args[0].as_str() {
        "small" => Config::small(),
        "large" => Config::large(),
        other => anyhow::bail!("unknown size {other}"),
    };
    let emb = match args.get(2).map(String::as_str).unwrap_or("f32") {
        "f32" => EmbeddingDtype::F32,
        "f16" => EmbeddingDtype::F16,
        "int8" => EmbeddingDtype::Int8,
        "int4" => EmbeddingDtype::Int4,
        other => anyhow::bail!("unknown embedding {other}"),
    };
    let device = cpu_device(false);
    device.seed(7);
    let model = Bolt::init(&cfg, &device);
    let tok = Tokenizer::from_id_to_base(cfg.vocab_size, (0..(cfg.vocab_size - 4) as u32).collect())?;
    let (bytes, _) = flashlm_train::export::export(&model, cfg.seq_len, &tok, emb)?;
    std::fs::write(&args[1], bytes)?;
    Ok(())
}
