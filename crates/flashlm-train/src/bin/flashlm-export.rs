//! `flashlm-export`: pack a flashlm-train checkpoint, or a checkpoint of the original PyTorch
//! FlashLM v4 (`--torch`), into a `.flm` file for flashlm-infer.

use flashlm_model::Bolt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::EmbeddingDtype;
use flashlm_model::cpu_device;
use flashlm_train::checkpoint::{self, load_model_bytes};
use flashlm_train::export::export;

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Emb {
    F32,
    F16,
    Int8,
    Int4,
}

#[derive(Parser, Debug)]
#[command(
    name = "flashlm-export",
    version,
    about = "Pack a FlashLM checkpoint into a .flm model",
    after_help = "Examples:\n  flashlm-export runs/small/best.ckpt -o model.flm --embedding int8\n  \
                  flashlm-export --torch model.pt --tokenizer tokenizer.json -o model.flm"
)]
struct Cli {
    /// Checkpoint from flashlm-train (best.ckpt, final.ckpt or latest.ckpt).
    #[arg(required_unless_present = "torch", conflicts_with = "torch")]
    checkpoint: Option<PathBuf>,
    /// A checkpoint of the original PyTorch FlashLM v4 instead: a `.pt`/`.pth` state_dict
    /// (bare or under `model_state_dict`) or a `.safetensors` file. Needs --tokenizer.
    #[arg(long, value_name = "MODEL.pt")]
    torch: Option<PathBuf>,
    /// Context length for --torch checkpoints whose config does not say.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Output .flm file.
    #[arg(short, long)]
    output: PathBuf,
    /// Storage of the tied embedding / output head: f32 (exact), f16, int8 (one scale per
    /// row) or int4 (one scale per 32 values; d must be a multiple of 32; format version 2).
    #[arg(long, value_enum, default_value_t = Emb::F32)]
    embedding: Emb,
    /// tokenizer.json (default: the one beside the checkpoint; required with --torch).
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
    // Refuse a device node, a FIFO or a directory before any work (a symlink is written through).
    flashlm_core::write::write_target(&cli.output)
        .with_context(|| format!("cannot write {}", cli.output.display()))?;
    let emb = match cli.embedding {
        Emb::F32 => EmbeddingDtype::F32,
        Emb::F16 => EmbeddingDtype::F16,
        Emb::Int8 => EmbeddingDtype::Int8,
        Emb::Int4 => EmbeddingDtype::Int4,
    };
    let (bytes, report, what) = match (&cli.torch, &cli.checkpoint) {
        (Some(pt), _) => {
            let tok_path = cli.tokenizer.as_ref().context("--torch needs --tokenizer tokenizer.json")?;
            let c = flashlm_convert::from_torch(pt, tok_path, cli.seq_len, emb)?;
            (c.bytes, c.report, c.description)
        }
        (None, Some(ckpt)) => {
            let ck = checkpoint::read(ckpt)?;
            // (read() already refused non-regular files and nonsense state.)
            let tok_path = match &cli.tokenizer {
                Some(p) => p.clone(),
                None => {
                    ckpt.parent().map(|d| d.join("tokenizer.json")).unwrap_or_else(|| "tokenizer.json".into())
                }
            };
            let tok = Tokenizer::load(&tok_path)
                .with_context(|| "loading the tokenizer (pass --tokenizer)".to_string())?;
            anyhow::ensure!(
                tok.fingerprint() == ck.state.vocab_hash,
                "{} is not the vocabulary {} was trained with",
                tok_path.display(),
                ckpt.display()
            );
            let cfg = ck.state.config;
            let model = load_model_bytes(Bolt::init(&cfg, &cpu_device(false)), &ck.model)?;
            let (bytes, report) = export(&model, cfg.seq_len, &tok, emb)?;
            (bytes, report, format!("{} ({cfg}, step {})", ckpt.display(), ck.state.step))
        }
        (None, None) => anyhow::bail!("give a CHECKPOINT or --torch MODEL.pt"),
    };
    flashlm_core::write::write_atomic(&cli.output, &bytes)
        .with_context(|| format!("writing {}", cli.output.display()))?;
    println!("{what} -> {}", cli.output.display());
    for (part, n) in &report.parts {
        println!("  {part:<28} {:>10} bytes", n);
    }
    println!("  {:<28} {:>10} bytes ({:.2} MB)", "total", report.total, report.total as f64 / 1e6);
    Ok(())
}
