//! Write the seed corpora of the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`): tiny but
//! valid `.flm` files (each embedding type), a checkpoint, token caches and Parquet story
//! files, so that the fuzzer
//! starts from inputs that get past the magic and reach the code behind it.
//!
//! cargo run --release -p flashlm-train --example fuzz_seeds -- fuzz/corpus

use flashlm_core::Config;
use std::path::Path;

use flashlm_data::cache::{CacheKey, write_cache};
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::EmbeddingDtype;
use flashlm_model::{Bolt, cpu_device};
use flashlm_train::checkpoint::{self, Checkpoint, TrainState};

/// The smallest shape every path of the engine accepts (int4 needs d to be a multiple of 32).
const CFG: Config =
    Config { vocab_size: 16, dim: 32, n_blocks: 1, glu_hidden: 64, conv_taps: 8, seq_len: 16 };

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    let dir = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        let d = out.join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };
    let device = cpu_device(false);
    device.seed(7);
    let model = Bolt::init(&CFG, &device);
    let tok = Tokenizer::from_id_to_base(CFG.vocab_size, (0..(CFG.vocab_size - 4) as u32).collect())?;
    let flm = dir("flm_forward")?;
    for (name, emb) in [
        ("f32", EmbeddingDtype::F32),
        ("f16", EmbeddingDtype::F16),
        ("int8", EmbeddingDtype::Int8),
        ("int4", EmbeddingDtype::Int4),
    ] {
        let (bytes, _) = flashlm_train::export::export(&model, CFG.seq_len, &tok, emb)?;
        std::fs::write(flm.join(format!("{name}.flm")), bytes)?;
    }
    let state = TrainState {
        config: CFG,
        step: 3,
        epoch: 0,
        next_batch: 3,
        best_val_loss: Some(4.5),
        patience_used: 0,
        tokens_seen: 96,
        sample_rng: 1,
        seed: 42,
        batch_size: 2,
        grad_accum: 1,
        lr_peak: 4e-3,
        total_steps: 100,
        warmup_steps: 10,
        elapsed_secs: 1.0,
        vocab_hash: tok.fingerprint(),
        val_loss: None,
        train_hash: None,
    };
    let ck = Checkpoint {
        state,
        model: flashlm_train::checkpoint::model_bytes(&model)?,
        optim: Some(vec![7; 64]),
    };
    std::fs::write(dir("checkpoint_read")?.join("seed.ckpt"), checkpoint::to_bytes(&ck))?;
    let cache = dir("token_cache_read")?;
    let tokens: Vec<u16> = (0..500u32).map(|i| (i * 7 % 16) as u16).collect();
    let key = CacheKey { vocab_hash: 1, source_hash: 2 };
    write_cache(&cache.join("plain.tokens"), key, &tokens, false)?;
    write_cache(&cache.join("zstd.tokens"), key, &tokens, true)?;
    // Parquet story files in the hub's layout: one row group and several, nulls, scores.
    let pq = dir("parquet_read")?;
    let rows: Vec<(Option<&str>, Option<i64>)> = vec![
        (Some("Once upon a time."), Some(3)),
        (None, Some(5)),
        (Some(" A cat. "), None),
        (Some(""), Some(1)),
    ];
    flashlm_data::parquet::write_parquet(&pq.join("one-group.parquet"), "text", &rows, 4)?;
    flashlm_data::parquet::write_parquet(&pq.join("groups.parquet"), "story", &rows, 1)?;
    eprintln!("seeds written under {}", out.display());
    Ok(())
}
