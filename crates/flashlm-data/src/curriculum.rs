//! Curriculum files: ordered training stages (TinyStories -> SimpleStories -> FineWeb-Edu),
//! each with its story files, a length, and an optional share of the previous stage mixed
//! into its batches for a smooth transition. The spec is in `docs/CURRICULUM.md`.
//!
//! ```toml
//! val_files = ["../shared/data/tinystories-valid.txt.zst"]   # the run's main validation set
//!
//! [[stage]]
//! name = "v1"
//! train_files = ["../shared/data/tinystories-train-v1.txt.zst"]
//! epochs = 2.0
//!
//! [[stage]]
//! name = "v2"
//! dir = "simplestories"           # every *train* / *valid* story file of a folder
//! tokens = 2_000_000
//! mix_previous = 0.25             # a quarter of every batch still comes from "v1"
//! ```
//!
//! Relative paths are relative to the curriculum file's folder. JSON files (`.json`) hold
//! the same fields (`{"val_files": [...], "stage": [{...}, ...]}`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

use flashlm_tokenizer::{Tokenizer, UNK_ID, VocabStats};

use crate::prepare::{PrepareConfig, Split, VocabSource, find_split_files, obtain_vocab, split};

/// The most stages a curriculum may have.
pub const MAX_STAGES: usize = 64;

/// How long a stage lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageLength {
    /// Training tokens (rounded up to whole optimizer steps).
    Tokens(u64),
    /// Passes over the stage's own training windows (fractions allowed).
    Epochs(f64),
}

/// One stage, its paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Unique name (log lines, metrics, caches).
    pub name: String,
    /// Training story files, in order.
    pub train_files: Vec<PathBuf>,
    /// This stage's validation files, reported separately at every evaluation (may be empty).
    pub val_files: Vec<PathBuf>,
    /// How long it lasts.
    pub length: StageLength,
    /// Share of every batch drawn from the previous stage's training windows (0 <= x < 1).
    pub mix_previous: f64,
}

/// A parsed, checked curriculum.
#[derive(Debug, Clone, PartialEq)]
pub struct Curriculum {
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// The run's main validation files (best checkpoint, early stopping, final BPC); empty:
    /// the trainer's `--val-file` / data folder.
    pub val_files: Vec<PathBuf>,
    /// Where it was read from.
    pub source: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCurriculum {
    #[serde(default)]
    val_files: Vec<PathBuf>,
    #[serde(default)]
    stage: Vec<RawStage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    #[serde(default)]
    train_files: Vec<PathBuf>,
    #[serde(default)]
    val_files: Vec<PathBuf>,
    dir: Option<PathBuf>,
    tokens: Option<u64>,
    epochs: Option<f64>,
    #[serde(default)]
    mix_previous: f64,
}

impl Curriculum {
    /// Read and check a curriculum file (`.toml` or `.json`).
    pub fn load(path: &Path) -> anyhow::Result<Curriculum> {
        let bytes = flashlm_core::limits::read_regular(path)
            .with_context(|| format!("cannot read curriculum file {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("curriculum file {} is not UTF-8 text", path.display()))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let raw: RawCurriculum = match ext.as_str() {
            "toml" => toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("curriculum file {}: {e}", path.display()))?,
            "json" => serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("curriculum file {}: {e}", path.display()))?,
            _ => bail!("curriculum file {} must end in .toml or .json", path.display()),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_raw(raw, base, path).with_context(|| format!("curriculum file {}", path.display()))
    }

    fn from_raw(raw: RawCurriculum, base: &Path, source: &Path) -> anyhow::Result<Curriculum> {
        ensure!(!raw.stage.is_empty(), "it has no stages: add one or more [[stage]] tables");
        ensure!(raw.stage.len() <= MAX_STAGES, "it has {} stages; at most {MAX_STAGES}", raw.stage.len());
        let resolve = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        let mut stages: Vec<Stage> = Vec::with_capacity(raw.stage.len());
        for (i, s) in raw.stage.into_iter().enumerate() {
            let what = format!("stage {} ({:?})", i + 1, s.name);
            ensure!(
                !s.name.is_empty()
                    && s.name.len() <= 64
                    && s.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{what}: the name must be 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.'"
            );
            ensure!(!stages.iter().any(|t| t.name == s.name), "{what}: the name is used twice");
            let length = match (s.tokens, s.epochs) {
                (Some(t), None) => {
                    ensure!(t > 0, "{what}: tokens must be positive");
                    StageLength::Tokens(t)
                }
                (None, Some(e)) => {
                    ensure!(e.is_finite() && e > 0.0 && e <= 1e6, "{what}: epochs must be a positive number");
                    StageLength::Epochs(e)
                }
                _ => bail!("{what}: give its length as exactly one of `tokens` or `epochs`"),
            };
            ensure!(
                s.mix_previous.is_finite() && (0.0..1.0).contains(&s.mix_previous),
                "{what}: mix_previous must be at least 0 and below 1 (it is {})",
                s.mix_previous
            );
            ensure!(i > 0 || s.mix_previous == 0.0, "{what}: the first stage has no previous stage to mix");
            let mut train_files: Vec<PathBuf> = s.train_files.iter().map(resolve).collect();
            let mut val_files: Vec<PathBuf> = s.val_files.iter().map(resolve).collect();
            if let Some(dir) = &s.dir {
                let dir = resolve(dir);
                let (t, v) = find_split_files(&dir)
                    .with_context(|| format!("{what}: cannot read folder {}", dir.display()))?;
                ensure!(!t.is_empty(), "{what}: folder {} holds no *train* story files", dir.display());
                train_files.extend(t);
                val_files.extend(v);
            }
            ensure!(!train_files.is_empty(), "{what}: give train_files or a dir");
            stages.push(Stage { name: s.name, train_files, val_files, length, mix_previous: s.mix_previous });
        }
        Ok(Curriculum {
            stages,
            val_files: raw.val_files.iter().map(resolve).collect(),
            source: source.to_path_buf(),
        })
    }
}

/// Windows of the previous stage in each batch of `batch_size`: `mix` of it, rounded, at
/// least 1 when `mix > 0`, and at most `batch_size - 1` (the stage itself always has one).
pub fn mixed_windows(mix: f64, batch_size: usize) -> usize {
    if mix <= 0.0 || batch_size < 2 {
        return 0;
    }
    ((mix * batch_size as f64).round() as usize).clamp(1, batch_size - 1)
}

/// One stage, prepared.
#[derive(Debug, Clone)]
pub struct PreparedStage {
    /// The stage as the file gave it.
    pub spec: Stage,
    /// Its training tokens (cache `stage-NN-NAME-train.tokens`).
    pub train: Split,
    /// Its own validation tokens, when it has validation files.
    pub val: Option<Split>,
    /// Stories of the stage counted for the vocabulary.
    pub vocab_sample: usize,
    /// Share of the stage's training tokens that are not UNK.
    pub coverage: f64,
}

/// A curriculum, prepared: one vocabulary over a sample of every stage, and the token
/// caches of every stage.
#[derive(Debug, Clone)]
pub struct PreparedCurriculum {
    /// The vocabulary.
    pub tokenizer: Tokenizer,
    /// Its build figures, when known.
    pub vocab_stats: Option<VocabStats>,
    /// How it was obtained.
    pub vocab_source: VocabSource,
    /// The stages in order.
    pub stages: Vec<PreparedStage>,
    /// The main validation split (best checkpoint, early stopping, final BPC).
    pub val: Split,
    /// Wall time in seconds.
    pub secs: f64,
}

/// Stories of each stage counted for the vocabulary: `vocab_stories` shared equally between
/// the stages (rounded up), each stage giving its first ones.
pub fn vocab_sample_per_stage(vocab_stories: usize, stages: usize) -> usize {
    vocab_stories.div_ceil(stages.max(1))
}

/// Prepare a curriculum. `cfg.train_files` is ignored (the stages name theirs);
/// `cfg.val_files` is the main validation set. The vocabulary is counted over the first
/// [`vocab_sample_per_stage`] stories of every stage.
pub fn prepare_curriculum(cur: &Curriculum, cfg: &PrepareConfig) -> anyhow::Result<PreparedCurriculum> {
    let start = std::time::Instant::now();
    ensure!(!cfg.val_files.is_empty(), "no main validation story files given");
    ensure!(cfg.vocab_stories > 0, "the vocabulary needs at least one story");
    let mut stories = Vec::with_capacity(cur.stages.len());
    for st in &cur.stages {
        let train = crate::read_stories(&st.train_files)
            .with_context(|| format!("stage {:?}: training files", st.name))?;
        ensure!(!train.texts.is_empty(), "stage {:?}: its training files contain no stories", st.name);
        let val = if st.val_files.is_empty() {
            None
        } else {
            let v = crate::read_stories(&st.val_files)
                .with_context(|| format!("stage {:?}: validation files", st.name))?;
            ensure!(!v.texts.is_empty(), "stage {:?}: its validation files contain no stories", st.name);
            Some(v)
        };
        stories.push((train, val));
    }
    let main_val = crate::read_stories(&cfg.val_files)?;
    ensure!(!main_val.texts.is_empty(), "the validation files contain no stories");

    let per_stage = vocab_sample_per_stage(cfg.vocab_stories, cur.stages.len());
    let mut sample = Vec::new();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"curriculum");
    for (train, _) in &stories {
        h.update(&train.source_hash.to_le_bytes());
        sample.extend_from_slice(&train.texts[..per_stage.min(train.texts.len())]);
    }
    let (tokenizer, vocab_stats, vocab_source) = obtain_vocab(cfg, &sample, h.digest())?;
    drop(sample);

    let mut stages = Vec::with_capacity(cur.stages.len());
    for (i, (st, (train, val))) in cur.stages.iter().zip(&stories).enumerate() {
        let stem = format!("stage-{:02}-{}", i + 1, st.name);
        let train_split = split(&format!("{stem}-train"), train, &tokenizer, cfg)?;
        let val_split =
            val.as_ref().map(|v| split(&format!("{stem}-valid"), v, &tokenizer, cfg)).transpose()?;
        let unk = train_split.tokens.iter().filter(|&&t| t == UNK_ID).count();
        let coverage = 1.0 - unk as f64 / train_split.tokens.len().max(1) as f64;
        stages.push(PreparedStage {
            spec: st.clone(),
            train: train_split,
            val: val_split,
            vocab_sample: per_stage.min(train.texts.len()),
            coverage,
        });
    }
    let val = split("valid", &main_val, &tokenizer, cfg)?;
    Ok(PreparedCurriculum {
        tokenizer,
        vocab_stats,
        vocab_source,
        stages,
        val,
        secs: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(text: &str) -> anyhow::Result<Curriculum> {
        let raw: RawCurriculum = toml::from_str(text)?;
        Curriculum::from_raw(raw, Path::new("/base"), Path::new("/base/c.toml"))
    }

    #[test]
    fn toml_and_json_give_the_same_curriculum() {
        let t = parse_toml(
            r#"
            val_files = ["valid.txt"]
            [[stage]]
            name = "a"
            train_files = ["a.txt", "/abs/b.txt"]
            epochs = 1.5
            [[stage]]
            name = "b"
            train_files = ["c.txt"]
            val_files = ["c-valid.txt"]
            tokens = 1000
            mix_previous = 0.25
            "#,
        )
        .unwrap();
        let raw: RawCurriculum = serde_json::from_str(
            r#"{"val_files": ["valid.txt"], "stage": [
                {"name": "a", "train_files": ["a.txt", "/abs/b.txt"], "epochs": 1.5},
                {"name": "b", "train_files": ["c.txt"], "val_files": ["c-valid.txt"], "tokens": 1000, "mix_previous": 0.25}]}"#,
        )
        .unwrap();
        let j = Curriculum::from_raw(raw, Path::new("/base"), Path::new("/base/c.toml")).unwrap();
        assert_eq!(t, j);
        assert_eq!(t.stages[0].train_files, vec![PathBuf::from("/base/a.txt"), PathBuf::from("/abs/b.txt")]);
        assert_eq!(t.stages[0].length, StageLength::Epochs(1.5));
        assert_eq!(t.stages[1].length, StageLength::Tokens(1000));
        assert_eq!(t.val_files, vec![PathBuf::from("/base/valid.txt")]);
    }

    #[test]
    fn bad_curricula_are_refused_with_the_reason() {
        let cases = [
            ("", "no stages"),
            ("[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\n", "exactly one of"),
            ("[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\ntokens = 5\nepochs = 1.0\n", "exactly one of"),
            ("[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\ntokens = 0\n", "positive"),
            ("[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\nepochs = -1.0\n", "positive"),
            ("[[stage]]\nname = \"a b\"\ntrain_files = [\"a\"]\ntokens = 5\n", "name must be"),
            ("[[stage]]\nname = \"a\"\ntokens = 5\n", "train_files or a dir"),
            (
                "[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\ntokens = 5\nmix_previous = 0.5\n",
                "first stage",
            ),
            (
                "[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\ntokens = 5\n[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\ntokens = 5\n",
                "used twice",
            ),
            (
                "[[stage]]\nname = \"a\"\ntrain_files = [\"a\"]\ntokens = 5\n[[stage]]\nname = \"b\"\ntrain_files = [\"a\"]\ntokens = 5\nmix_previous = 1.0\n",
                "below 1",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_toml(text).unwrap_err());
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = format!(
            "{:#}",
            parse_toml("[[stage]]\nname = \"a\"\ntrain_file = [\"a\"]\ntokens = 5\n").unwrap_err()
        );
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn load_names_the_file_and_refuses_other_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "x").unwrap();
        assert!(format!("{:#}", Curriculum::load(&p).unwrap_err()).contains(".toml or .json"));
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[[stage]]\nname = 1\n").unwrap();
        let err = format!("{:#}", Curriculum::load(&p).unwrap_err());
        assert!(err.contains("c.toml"), "{err}");
        assert!(
            format!("{:#}", Curriculum::load(&dir.path().join("none.toml")).unwrap_err())
                .contains("cannot read")
        );
    }

    #[test]
    fn mixed_windows_keep_both_sides_in_every_batch() {
        assert_eq!(mixed_windows(0.0, 8), 0);
        assert_eq!(mixed_windows(0.25, 8), 2);
        assert_eq!(mixed_windows(0.01, 8), 1);
        assert_eq!(mixed_windows(0.99, 8), 7);
        assert_eq!(mixed_windows(0.5, 1), 0);
    }
}
