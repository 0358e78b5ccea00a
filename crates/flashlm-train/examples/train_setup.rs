//! What `scripts/bench-train.sh` gives the PyTorch reference so both sides train the same
//! thing: the initial weights flashlm-train draws for a seed, and the token batches of its
//! first steps.
//!
//! usage: train_setup OUT_DIR small|large BATCH STEPS SEED DATA_DIR
//! writes OUT_DIR/init.safetensors (PyTorch names and layout), OUT_DIR/batches.bin
//! (STEPS x BATCH x (inputs T, targets T) u16 LE) and OUT_DIR/setup.json (config, batch, steps
//! and the LR schedule flashlm-train uses with its defaults).
use flashlm_core::Config;
use std::path::PathBuf;

use flashlm_data::batch::{TrainBatches, Windows};
use flashlm_data::prepare::{PrepareConfig, find_split_files, prepare};
use flashlm_model::{Bolt, cpu_device};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(a.len() == 6, "usage: train_setup OUT_DIR small|large BATCH STEPS SEED DATA_DIR");
    let out = PathBuf::from(&a[0]);
    let cfg = if a[1] == "large" { Config::large() } else { Config::small() };
    let (batch, steps, seed): (usize, usize, u64) = (a[2].parse()?, a[3].parse()?, a[4].parse()?);
    std::fs::create_dir_all(&out)?;
    let (train_files, val_files) = find_split_files(&PathBuf::from(&a[5]))?;
    // The same preparation as flashlm-train (its defaults), in a folder of its own.
    let data = prepare(&PrepareConfig {
        train_files,
        val_files,
        out_dir: out.join("prep"),
        vocab_size: cfg.vocab_size,
        vocab_stories: 50_000,
        tokenizer: None,
        rebuild_vocab: false,
        compress: true,
        progress: false,
        filter: Default::default(),
        text_column: None,
    })?;
    // The same initial weights as flashlm-train: autodiff device seeded, then init.
    let device = cpu_device(true);
    device.seed(seed);
    Bolt::init(&cfg, &device).save_safetensors(&out.join("init.safetensors")).map_err(anyhow::Error::msg)?;
    let windows = Windows::new(&data.train.tokens, cfg.seq_len);
    let mut batches = TrainBatches::new(windows, batch, seed, 0);
    let per_epoch = batches.schedule().batches_per_epoch();
    let mut bytes = Vec::new();
    for _ in 0..steps {
        let b = batches.next().expect("non-empty schedule").batch;
        for (x, y) in b.inputs.chunks(cfg.seq_len).zip(b.targets.chunks(cfg.seq_len)) {
            bytes.extend(x.iter().chain(y).flat_map(|t| t.to_le_bytes()));
        }
    }
    std::fs::write(out.join("batches.bin"), bytes)?;
    let setup = serde_json::json!({
        "config": cfg, "batch": batch, "steps": steps, "seed": seed,
        // flashlm-train defaults: 10 epochs planned, warmup 500, peak 4e-3, min 1e-5.
        "lr": {"peak": 4e-3, "min": 1e-5, "warmup": 500, "total": per_epoch * 10},
    });
    std::fs::write(out.join("setup.json"), serde_json::to_string_pretty(&setup)?)?;
    println!("{}: {} steps of {batch} x {} tokens, {cfg}", out.display(), steps, cfg.seq_len);
    Ok(())
}
