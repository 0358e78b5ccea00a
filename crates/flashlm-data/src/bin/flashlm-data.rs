//! `flashlm-data`: download TinyStories, build the vocabulary and the token caches.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flashlm_data::batch::Windows;
use flashlm_data::download::hub::{self, DEFAULT_HUB_URL, HubDataset, ShardLimits};
use flashlm_data::download::{self, DEFAULT_BASE_URL, DatasetVersion, DownloadOptions};
use flashlm_data::filter::FilterConfig;
use flashlm_data::prepare::{self, PrepareConfig, Split, VocabSource};
use flashlm_data::tokenizer::{DEFAULT_VOCAB_SIZE, DEFAULT_VOCAB_STORIES};

#[derive(Parser, Debug)]
#[command(
    name = "flashlm-data",
    version,
    about = "TinyStories download, vocabulary and token caches for FlashLM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download a dataset from the Hugging Face hub: TinyStories (train + validation text
    /// files), SimpleStories or FineWeb-Edu `sample-10BT` (Parquet shards; docs/DATASETS.md).
    Download {
        /// Which dataset.
        #[arg(long, value_enum, default_value_t = DatasetArg::V1)]
        dataset: DatasetArg,
        /// Folder to download into (resumes `.part` files found there).
        #[arg(long, default_value = "data")]
        dir: PathBuf,
        /// Mirror: for TinyStories the folder holding its files (default, or
        /// FLASHLM_HF_BASE_URL: the dataset's `resolve/main`); for the Parquet datasets the hub
        /// endpoint (default, or FLASHLM_HF_ENDPOINT: https://huggingface.co).
        #[arg(long)]
        base_url: Option<String>,
        /// Parquet datasets: at most this many shards per split.
        #[arg(long)]
        max_shards: Option<usize>,
        /// Parquet datasets: at most this many bytes in all (whole shards).
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Retries per file after the first attempt (at most 100).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
        retries: u32,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Build (or reuse) the vocabulary and the token caches from local story files.
    Prepare {
        /// Folder with story files: names containing `train` are training files, names
        /// containing `valid` validation files. Used when --train-file/--val-file are absent.
        #[arg(long, env = "FLASHLM_DATA_DIR", default_value = prepare::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Training story file (.txt with <|endoftext|> lines, or .jsonl; optionally .zst). Repeatable.
        #[arg(long = "train-file")]
        train_files: Vec<PathBuf>,
        /// Validation story file. Repeatable.
        #[arg(long = "val-file")]
        val_files: Vec<PathBuf>,
        /// Output folder for tokenizer.json, train.tokens and valid.tokens.
        #[arg(long, default_value = "checkpoints")]
        out: PathBuf,
        /// Vocabulary size (4 specials + most frequent GPT-2 tokens).
        #[arg(long, default_value_t = DEFAULT_VOCAB_SIZE)]
        vocab_size: usize,
        /// Training stories counted to build the vocabulary.
        #[arg(long, default_value_t = DEFAULT_VOCAB_STORIES)]
        vocab_stories: usize,
        /// Use this tokenizer.json (ours or the original FlashLM's) instead of building one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Build a new vocabulary even if the saved one matches.
        #[arg(long)]
        rebuild_vocab: bool,
        /// Store caches uncompressed.
        #[arg(long)]
        no_compress: bool,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Sequence length used to report window counts.
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Text column of Parquet files (default: `text`, else `story`).
        #[arg(long)]
        text_column: Option<String>,
        /// Filter: keep Parquet rows whose `int_score` is at least N (FineWeb-Edu: 0-5).
        #[arg(long)]
        min_int_score: Option<i64>,
        /// Filter: drop training documents shorter than N characters.
        #[arg(long)]
        min_chars: Option<usize>,
        /// Filter: drop training documents longer than N characters.
        #[arg(long)]
        max_chars: Option<usize>,
        /// Filter: drop exact duplicate documents.
        #[arg(long)]
        dedup: bool,
        /// Filter: drop documents with less than this share of in-vocabulary tokens (0-1).
        #[arg(long)]
        min_vocab_coverage: Option<f64>,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum DatasetArg {
    /// TinyStories V1 (`TinyStories-train.txt` / `-valid.txt`).
    V1,
    /// TinyStoriesV2-GPT4.
    V2Gpt4,
    /// SimpleStories/SimpleStories (Parquet, MIT).
    Simplestories,
    /// HuggingFaceFW/fineweb-edu, sample-10BT (Parquet, ODC-By).
    FinewebEdu,
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

fn describe(name: &str, s: &Split, seq_len: usize) {
    let windows = Windows::new(&s.tokens, seq_len).len();
    let how = if s.from_cache { "cache hit".to_string() } else { "tokenized".to_string() };
    print!(
        "{name:>5}: {} stories, {} tokens, {windows} windows of {} ({how}",
        s.stories,
        s.tokens.len(),
        seq_len + 1
    );
    if let Some(t) = s.tokenize {
        print!(
            ", {:.1} MB in {:.2}s = {:.2} MB/s, {:.3}% UNK",
            t.bytes as f64 / 1e6,
            t.secs,
            t.mb_per_s(),
            100.0 * t.unk as f64 / t.tokens.max(1) as f64
        );
    }
    println!(") -> {}", s.cache_path.display());
}

/// `flashlm-data download`: TinyStories text files, or a Parquet dataset's shards.
fn download_cmd(
    dataset: DatasetArg,
    dir: &std::path::Path,
    base_url: Option<String>,
    limits: ShardLimits,
    retries: u32,
    quiet: bool,
) -> anyhow::Result<()> {
    let opts =
        DownloadOptions { retries, progress: !quiet, backoff: Duration::from_secs(2), ..Default::default() };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let hub = match dataset {
        DatasetArg::V1 | DatasetArg::V2Gpt4 => {
            anyhow::ensure!(
                limits.max_shards.is_none() && limits.max_bytes.is_none(),
                "--max-shards / --max-bytes are for the Parquet datasets (simplestories, fineweb-edu)"
            );
            let version =
                if matches!(dataset, DatasetArg::V1) { DatasetVersion::V1 } else { DatasetVersion::V2Gpt4 };
            let base = base_url.or_else(|| env("FLASHLM_HF_BASE_URL")).unwrap_or(DEFAULT_BASE_URL.into());
            let (train, val) = download::download_tinystories(&base, version, dir, &opts)?;
            println!("train: {}\nvalid: {}", train.display(), val.display());
            return Ok(());
        }
        DatasetArg::Simplestories => HubDataset::SimpleStories,
        DatasetArg::FinewebEdu => HubDataset::FinewebEdu,
    };
    anyhow::ensure!(limits.max_shards != Some(0), "--max-shards must be at least 1");
    let base = base_url.or_else(|| env("FLASHLM_HF_ENDPOINT")).unwrap_or(DEFAULT_HUB_URL.into());
    let got = hub::download_dataset(&base, hub, dir, limits, &opts)?;
    let mut bytes = 0;
    for f in &got {
        bytes += f.shard.size;
        let how = match f.outcome {
            download::DownloadOutcome::AlreadyPresent { .. } => "already present".to_string(),
            download::DownloadOutcome::Downloaded { resumed_from: 0, .. } => "downloaded".to_string(),
            download::DownloadOutcome::Downloaded { resumed_from, .. } => {
                format!("resumed from byte {resumed_from}")
            }
        };
        println!("{}: {} bytes, {how}", f.path.display(), f.shard.size);
    }
    println!("{} shard(s) of {}, {bytes} bytes in {}", got.len(), hub.repo(), dir.display());
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Download { dataset, dir, base_url, max_shards, max_bytes, retries, quiet } => {
            download_cmd(dataset, &dir, base_url, ShardLimits { max_shards, max_bytes }, retries, quiet)
        }
        Command::Prepare {
            data_dir,
            train_files,
            val_files,
            out,
            vocab_size,
            vocab_stories,
            tokenizer,
            rebuild_vocab,
            no_compress,
            threads,
            seq_len,
            quiet,
            text_column,
            min_int_score,
            min_chars,
            max_chars,
            dedup,
            min_vocab_coverage,
        } => {
            anyhow::ensure!(seq_len > 0, "--seq-len must be positive");
            if let Some(n) = threads {
                flashlm_core::limits::check_threads(n).map_err(anyhow::Error::msg)?;
                rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
            }
            let (train_files, val_files) = prepare::resolve_split_files(&data_dir, train_files, val_files)?;
            let cfg = PrepareConfig {
                train_files,
                val_files,
                out_dir: out,
                vocab_size,
                vocab_stories,
                tokenizer,
                rebuild_vocab,
                compress: !no_compress,
                progress: !quiet,
                filter: FilterConfig { min_int_score, min_chars, max_chars, dedup, min_vocab_coverage },
                text_column,
            };
            let p = prepare::prepare(&cfg)?;
            println!(
                "train files: {}",
                cfg.train_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
            println!(
                "valid files: {}",
                cfg.val_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
            let src = match p.vocab_source {
                VocabSource::Built => "built",
                VocabSource::Reused => "reused",
                VocabSource::Given => "given",
            };
            match p.vocab_stats {
                Some(s) => println!(
                    "vocab ({src}, {:.2}s): {} ids from {} stories, {} GPT-2 tokens counted, {} distinct, coverage {:.2}%",
                    p.vocab_secs,
                    p.tokenizer.vocab_size(),
                    s.texts,
                    s.counted_tokens,
                    s.distinct,
                    100.0 * s.coverage
                ),
                None => println!("vocab ({src}): {} ids", p.tokenizer.vocab_size()),
            }
            if let Some(f) = p.filter {
                println!("filters: {f}");
            }
            if let Some(path) = &p.filtered_file {
                println!("filtered training documents: {} (train on it with --train-file)", path.display());
            }
            describe("train", &p.train, seq_len);
            describe("valid", &p.val, seq_len);
            println!(
                "done in {:.2}s: {} train + {} valid tokens",
                p.secs,
                p.train.tokens.len(),
                p.val.tokens.len()
            );
            Ok(())
        }
    }
}
