//! The whole data preparation: stories -> vocabulary -> cached token streams.

use std::path::{Path, PathBuf};
use std::time::Instant;

use flashlm_tokenizer::{Tokenizer, VocabStats};

use crate::cache::{self, CacheKey, CacheStatus};
use crate::filter::{FilterConfig, FilterStats};
use crate::parquet::ParquetOptions;
use crate::stories::Stories;
use crate::tokenize::{TokenizeStats, count_vocab, tokenize_stories};

/// Environment variable naming the folder with local TinyStories files.
pub const DATA_DIR_ENV: &str = "FLASHLM_DATA_DIR";
/// Folder used when [`DATA_DIR_ENV`] is not set (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "../shared/data";

/// The local data folder: `FLASHLM_DATA_DIR`, else `../shared/data`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// The story files a command uses: the ones given, and for a split given none, those of
/// `data_dir` ([`find_split_files`]). Errors say how to point at data.
pub fn resolve_split_files(
    data_dir: &Path,
    mut train: Vec<PathBuf>,
    mut val: Vec<PathBuf>,
) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    use anyhow::Context;
    if train.is_empty() || val.is_empty() {
        let (t, v) = find_split_files(data_dir).with_context(|| {
            format!(
                "cannot read data folder {} (set --data-dir or FLASHLM_DATA_DIR, pass --train-file/--val-file, \
                 or fetch TinyStories with `flashlm-data download`)",
                data_dir.display()
            )
        })?;
        if train.is_empty() {
            train = t;
        }
        if val.is_empty() {
            val = v;
        }
    }
    anyhow::ensure!(
        !train.is_empty() && !val.is_empty(),
        "no training or no validation story files: pass --train-file/--val-file, or a --data-dir holding \
         .txt/.jsonl[.zst] files with `train`/`valid` in their names (now {})",
        data_dir.display()
    );
    Ok((train, val))
}

/// Story files in a folder: (train files, validation files), each sorted by name.
/// Train files have `train` in their name, validation files `valid` or `val`.
pub fn find_split_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if !crate::is_story_file(&path) || name.ends_with(".part") {
            continue;
        }
        if name.contains("train") {
            train.push(path);
        } else if name.contains("valid")
            || name.contains("val.")
            || name.contains("_val")
            || name.contains("-val")
        {
            val.push(path);
        }
    }
    train.sort();
    val.sort();
    Ok((train, val))
}

/// What to prepare.
#[derive(Debug, Clone)]
pub struct PrepareConfig {
    /// Training story files, in order.
    pub train_files: Vec<PathBuf>,
    /// Validation story files, in order.
    pub val_files: Vec<PathBuf>,
    /// Where `tokenizer.json`, `train.tokens` and `valid.tokens` go.
    pub out_dir: PathBuf,
    /// Model vocabulary size.
    pub vocab_size: usize,
    /// Training stories counted to build the vocabulary.
    pub vocab_stories: usize,
    /// Use this tokenizer instead of building or reusing one.
    pub tokenizer: Option<PathBuf>,
    /// Build a new vocabulary even if `out_dir/tokenizer.json` matches.
    pub rebuild_vocab: bool,
    /// zstd-compress the token caches.
    pub compress: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Filters for the training documents (`docs/DATASETS.md`); when any runs, the kept
    /// documents are also written to `out_dir/train-filtered.jsonl.zst`.
    pub filter: FilterConfig,
    /// Text column of Parquet files (None: `text`, else `story`).
    pub text_column: Option<String>,
}

/// How the vocabulary was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabSource {
    /// Built now from the training stories.
    Built,
    /// Reused from `out_dir/tokenizer.json` (same files, same settings).
    Reused,
    /// Loaded from a file the user gave.
    Given,
}

/// One prepared split.
#[derive(Debug, Clone)]
pub struct Split {
    /// The token stream.
    pub tokens: Vec<u16>,
    /// Where it is cached.
    pub cache_path: PathBuf,
    /// Loaded from a valid cache (no tokenization).
    pub from_cache: bool,
    /// Why an existing cache was not used, if one existed.
    pub rebuilt_because: Option<String>,
    /// Tokenization figures, when it was tokenized now.
    pub tokenize: Option<TokenizeStats>,
    /// Stories read.
    pub stories: u64,
    /// Invalid UTF-8 sequences replaced while reading.
    pub invalid_utf8: u64,
    /// Characters (Unicode scalar values) of all stories.
    pub chars: u64,
}

impl Split {
    /// Tokens per character of its stories (turns a loss per token into one per character).
    pub fn tokens_per_char(&self) -> f64 {
        self.tokens.len() as f64 / self.chars.max(1) as f64
    }
}

/// Everything [`prepare`] produced.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The vocabulary.
    pub tokenizer: Tokenizer,
    /// Its build figures (coverage...) when known.
    pub vocab_stats: Option<VocabStats>,
    /// How it was obtained.
    pub vocab_source: VocabSource,
    /// Seconds spent on the vocabulary.
    pub vocab_secs: f64,
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub val: Split,
    /// Total wall time.
    pub secs: f64,
    /// What the filters removed (when any ran).
    pub filter: Option<FilterStats>,
    /// The filtered training documents, when filters ran.
    pub filtered_file: Option<PathBuf>,
}

pub(crate) fn split(
    name: &str,
    stories: &Stories,
    tok: &Tokenizer,
    cfg: &PrepareConfig,
) -> anyhow::Result<Split> {
    let cache_path = cfg.out_dir.join(format!("{name}.tokens"));
    let key = CacheKey { vocab_hash: tok.fingerprint(), source_hash: stories.source_hash };
    let rebuilt_because = match cache::check_cache(&cache_path, key, tok.vocab_size()) {
        CacheStatus::Fresh(tokens) => {
            return Ok(Split {
                tokens,
                cache_path,
                from_cache: true,
                rebuilt_because: None,
                tokenize: None,
                stories: stories.texts.len() as u64,
                invalid_utf8: stories.invalid_utf8,
                chars: stories.chars(),
            });
        }
        CacheStatus::Missing => None,
        CacheStatus::Stale(why) => Some(why),
        CacheStatus::Broken(e) => Some(e.to_string()),
    };
    if let Some(why) = &rebuilt_because {
        eprintln!("{}: rebuilding ({why})", cache_path.display());
    }
    let (tokens, st) = tokenize_stories(tok, &stories.texts, cfg.progress);
    cache::write_cache(&cache_path, key, &tokens, cfg.compress)?;
    Ok(Split {
        tokens,
        cache_path,
        from_cache: false,
        rebuilt_because,
        tokenize: Some(st),
        stories: stories.texts.len() as u64,
        invalid_utf8: stories.invalid_utf8,
        chars: stories.chars(),
    })
}

/// Read the stories, obtain the vocabulary, and load or build both token caches.
pub fn prepare(cfg: &PrepareConfig) -> anyhow::Result<Prepared> {
    anyhow::ensure!(!cfg.train_files.is_empty(), "no training story files given");
    anyhow::ensure!(!cfg.val_files.is_empty(), "no validation story files given");
    anyhow::ensure!(
        (flashlm_tokenizer::NUM_SPECIAL + 1..=flashlm_tokenizer::MAX_VOCAB_SIZE).contains(&cfg.vocab_size),
        "vocab size {} must be between {} and {}",
        cfg.vocab_size,
        flashlm_tokenizer::NUM_SPECIAL + 1,
        flashlm_tokenizer::MAX_VOCAB_SIZE
    );
    anyhow::ensure!(cfg.vocab_stories > 0, "the vocabulary needs at least one story");
    let start = Instant::now();
    cfg.filter.validate()?;
    if cfg.filter.min_int_score.is_some()
        && let Some(p) = cfg.train_files.iter().find(|p| !crate::parquet::is_parquet(p))
    {
        anyhow::bail!(
            "--min-int-score reads the int_score column of Parquet files, and {} is not Parquet",
            p.display()
        );
    }
    let popts =
        ParquetOptions { text_column: cfg.text_column.clone(), min_int_score: cfg.filter.min_int_score };
    let (mut train, pstats) = crate::read_stories_with(&cfg.train_files, &popts)?;
    let val_opts = ParquetOptions { text_column: cfg.text_column.clone(), min_int_score: None };
    let (val, _) = crate::read_stories_with(&cfg.val_files, &val_opts)?;
    let mut fstats = cfg.filter.any().then(|| FilterStats {
        read: train.texts.len() as u64 + pstats.empty + pstats.low_score,
        empty: pstats.empty,
        low_score: pstats.low_score,
        kept: train.texts.len() as u64,
        ..Default::default()
    });
    if let Some(st) = fstats.as_mut() {
        crate::filter::by_length_and_duplicates(&mut train.texts, &cfg.filter, st);
        // The caches of filtered text depend on the filters too.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&train.source_hash.to_le_bytes());
        h.update(format!("{:?}|{:?}", cfg.filter, cfg.text_column).as_bytes());
        train.source_hash = h.digest();
    }
    for (what, s) in [("training", &train), ("validation", &val)] {
        if s.invalid_utf8 > 0 {
            eprintln!(
                "warning: {} invalid UTF-8 sequences in the {what} files were replaced by U+FFFD",
                s.invalid_utf8
            );
        }
        anyhow::ensure!(!s.texts.is_empty(), "the {what} files contain no stories");
    }

    let vocab_start = Instant::now();
    let n = cfg.vocab_stories.min(train.texts.len());
    let (tokenizer, vocab_stats, vocab_source) = obtain_vocab(cfg, &train.texts[..n], train.source_hash)?;
    let mut filtered_file = None;
    if let Some(st) = fstats.as_mut() {
        if let Some(min) = cfg.filter.min_vocab_coverage {
            crate::filter::by_vocab_coverage(&mut train.texts, &tokenizer, min, st);
        }
        anyhow::ensure!(!train.texts.is_empty(), "the filters removed every training document ({st})");
        let path = cfg.out_dir.join("train-filtered.jsonl.zst");
        write_jsonl_zst(&path, &train.texts)?;
        filtered_file = Some(path);
    }
    let vocab_secs = vocab_start.elapsed().as_secs_f64();
    let train_split = split("train", &train, &tokenizer, cfg)?;
    let val_split = split("valid", &val, &tokenizer, cfg)?;
    Ok(Prepared {
        tokenizer,
        vocab_stats,
        vocab_source,
        vocab_secs,
        train: train_split,
        val: val_split,
        secs: start.elapsed().as_secs_f64(),
        filter: fstats,
        filtered_file,
    })
}

/// Documents as zstd-compressed JSON lines (`{"text": ...}`), written crash-safe.
fn write_jsonl_zst(path: &Path, texts: &[String]) -> anyhow::Result<()> {
    let mut jsonl = Vec::new();
    for t in texts {
        serde_json::to_writer(&mut jsonl, &serde_json::json!({ "text": t }))?;
        jsonl.push(b'\n');
    }
    let bytes = zstd::encode_all(&jsonl[..], 3)?;
    flashlm_core::write::write_atomic(path, &bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The vocabulary: the given tokenizer, else `out_dir/tokenizer.json` when it was built from
/// the same source (`source_hash`) and settings, else one counted now over `sample`.
pub(crate) fn obtain_vocab(
    cfg: &PrepareConfig,
    sample: &[String],
    source_hash: u64,
) -> anyhow::Result<(Tokenizer, Option<VocabStats>, VocabSource)> {
    let tok_path = cfg.out_dir.join("tokenizer.json");
    if let Some(p) = &cfg.tokenizer {
        let (t, s) = Tokenizer::load_with_stats(p)?;
        anyhow::ensure!(
            t.vocab_size() == cfg.vocab_size,
            "{} has {} tokens but the model has {} embedding rows; use a tokenizer of {} tokens \
             (or drop --tokenizer to build one)",
            p.display(),
            t.vocab_size(),
            cfg.vocab_size,
            cfg.vocab_size
        );
        return Ok((t, s, VocabSource::Given));
    }
    let reusable = if cfg.rebuild_vocab || !tok_path.exists() {
        None
    } else {
        match Tokenizer::load_with_stats(&tok_path) {
            Ok((t, Some(s)))
                if s.source_hash == source_hash
                    && s.max_texts == cfg.vocab_stories as u64
                    && t.vocab_size() == cfg.vocab_size =>
            {
                Some((t, s))
            }
            Ok(_) => {
                eprintln!("{}: built from other files or settings; rebuilding", tok_path.display());
                None
            }
            Err(e) => {
                eprintln!("{}: {e}; rebuilding", tok_path.display());
                None
            }
        }
    };
    Ok(match reusable {
        Some((t, s)) => (t, Some(s), VocabSource::Reused),
        None => {
            let counter = count_vocab(sample, cfg.progress);
            let (t, mut s) = counter.build(cfg.vocab_size)?;
            s.max_texts = cfg.vocab_stories as u64;
            s.source_hash = source_hash;
            t.save(&tok_path, Some(&s))?;
            (t, Some(s), VocabSource::Built)
        }
    })
}
