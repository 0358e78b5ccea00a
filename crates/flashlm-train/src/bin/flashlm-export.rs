//! `flashlm-export`: pack a flashlm-train checkpoint into a `.flm` file for flashlm-infer.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::EmbeddingDtype;
use flashlm_model::cpu_device;
use flashlm_train::{checkpoint, export::export, step::load_model_bytes};

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Emb {
    F32,
    F16,
    Int8,
}

#[derive(Parser, Debug)]
#[command(name = "flashlm-export", version, about = "Pack a FlashLM checkpoint into a .flm model")]
struct Cli {
    /// Checkpoint from flashlm-train (best.ckpt, final.ckpt or latest.ckpt).
    checkpoint: PathBuf,
    /// Output .flm file.
    #[arg(short, long)]
    output: PathBuf,
    /// Storage of the tied embedding / output head.
    #[arg(long, value_enum, default_value_t = Emb::F32)]
    embedding: Emb,
    /// tokenizer.json (default: the one beside the checkpoint).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let ck = checkpoint::read(&cli.checkpoint)?;
    let tok_path = match cli.tokenizer {
        Some(p) => p,
        None => cli
            .checkpoint
            .parent()
            .map(|d| d.join("tokenizer.json"))
            .unwrap_or_else(|| "tokenizer.json".into()),
    };
    let tok =
        Tokenizer::load(&tok_path).with_context(|| "loading the tokenizer (pass --tokenizer)".to_string())?;
    anyhow::ensure!(
        tok.fingerprint() == ck.state.vocab_hash,
        "{} is not the vocabulary {} was trained with",
        tok_path.display(),
        cli.checkpoint.display()
    );
    let cfg = ck.state.config;
    let model = load_model_bytes(cfg.init(&cpu_device(false)), &ck.model)?;
    let emb = match cli.embedding {
        Emb::F32 => EmbeddingDtype::F32,
        Emb::F16 => EmbeddingDtype::F16,
        Emb::Int8 => EmbeddingDtype::Int8,
    };
    let (bytes, report) = export(&model, cfg.seq_len, &tok, emb)?;
    flashlm_data::tokenizer::write::write_atomic(&cli.output, &bytes)
        .with_context(|| format!("writing {}", cli.output.display()))?;
    println!("{} ({cfg}, step {}) -> {}", cli.checkpoint.display(), ck.state.step, cli.output.display());
    for (part, n) in &report.parts {
        println!("  {part:<28} {:>10} bytes", n);
    }
    println!("  {:<28} {:>10} bytes ({:.2} MB)", "total", report.total, report.total as f64 / 1e6);
    Ok(())
}
