//! The run's data as stages: a plain run is one stage that lasts as long as the run; a
//! curriculum (`--curriculum FILE`, `docs/CURRICULUM.md`) is several, each with its own
//! length, optional validation set and mixing share of the stage before it. The LR schedule
//! spans all stages; the batches are a pure function of (seed, batch number), so a run
//! resumes exactly across a stage boundary.

use anyhow::{bail, ensure};
use flashlm_data::batch::{BatchStage, TrainBatches, Windows};
use flashlm_data::curriculum::{Curriculum, StageLength, mixed_windows, prepare_curriculum};
use flashlm_data::prepare::{PrepareConfig, Split, prepare};
use flashlm_data::tokenizer::{Tokenizer, VocabStats};

/// One stage's tokens and plan.
#[derive(Debug)]
pub struct StageData {
    /// Name (`train` for a plain run).
    pub name: String,
    /// Training tokens.
    pub train: Vec<u16>,
    /// Its own validation split (curricula only).
    pub val: Option<Split>,
    /// How long it lasts (`None`: the whole run).
    pub length: Option<StageLength>,
    /// Share of each batch from the previous stage.
    pub mix_previous: f64,
    /// Training story files.
    pub files: usize,
    /// Stories counted for the vocabulary, and the share of its tokens that are not UNK.
    pub vocab: Option<(usize, f64)>,
}

/// Everything the loop reads.
#[derive(Debug)]
pub struct RunData {
    /// The vocabulary.
    pub tokenizer: Tokenizer,
    /// Its build figures.
    pub vocab_stats: Option<VocabStats>,
    /// Stages in order (one for a plain run).
    pub stages: Vec<StageData>,
    /// Main validation split.
    pub val: Split,
    /// Its story files (the final BPC reads them).
    pub val_files: Vec<std::path::PathBuf>,
    /// Whether the stages come from a curriculum file.
    pub curriculum: bool,
    /// Preparation wall time, seconds.
    pub secs: f64,
}

impl RunData {
    /// xxh3 of every stage's training tokens (u16 little-endian, each stream preceded by its
    /// length): what a checkpoint records so that a resume on other training data is refused.
    pub fn train_hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for st in &self.stages {
            h.update(&(st.train.len() as u64).to_le_bytes());
            for chunk in st.train.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|t| t.to_le_bytes()).collect();
                h.update(&bytes);
            }
        }
        h.digest()
    }

    /// Prepare the data of a plain run or of a curriculum, refusing a vocabulary that maps
    /// more than [`MAX_UNK_SHARE`] of a stage's training tokens to UNK.
    pub fn prepare(cfg: &PrepareConfig, curriculum: Option<&Curriculum>) -> anyhow::Result<RunData> {
        let data = Self::prepare_unchecked(cfg, curriculum)?;
        for st in &data.stages {
            let unk = st.train.iter().filter(|&&t| t == flashlm_data::tokenizer::UNK_ID).count();
            let share = unk as f64 / st.train.len().max(1) as f64;
            anyhow::ensure!(
                share <= MAX_UNK_SHARE,
                "{:.1}% of the training tokens{} are UNK (at most {:.0}% is accepted): the vocabulary{} does \
                 not cover this text; build one from it (leave out --tokenizer, or use a fresh --save-dir)",
                share * 100.0,
                if data.curriculum { format!(" of stage {:?}", st.name) } else { String::new() },
                MAX_UNK_SHARE * 100.0,
                cfg.tokenizer.as_ref().map_or_else(String::new, |p| format!(" ({})", p.display()))
            );
        }
        Ok(data)
    }

    fn prepare_unchecked(cfg: &PrepareConfig, curriculum: Option<&Curriculum>) -> anyhow::Result<RunData> {
        let Some(cur) = curriculum else {
            let p = prepare(cfg)?;
            return Ok(RunData {
                tokenizer: p.tokenizer,
                vocab_stats: p.vocab_stats,
                stages: vec![StageData {
                    name: "train".into(),
                    train: p.train.tokens,
                    val: None,
                    length: None,
                    mix_previous: 0.0,
                    files: cfg.train_files.len(),
                    vocab: None,
                }],
                val: p.val,
                val_files: cfg.val_files.clone(),
                curriculum: false,
                secs: p.secs,
            });
        };
        let mut cfg = cfg.clone();
        if !cur.val_files.is_empty() {
            cfg.val_files = cur.val_files.clone();
        }
        let p = prepare_curriculum(cur, &cfg)?;
        Ok(RunData {
            tokenizer: p.tokenizer,
            vocab_stats: p.vocab_stats,
            stages: p
                .stages
                .into_iter()
                .map(|s| StageData {
                    files: s.spec.train_files.len(),
                    vocab: Some((s.vocab_sample, s.coverage)),
                    name: s.spec.name,
                    train: s.train.tokens,
                    val: s.val,
                    length: Some(s.spec.length),
                    mix_previous: s.spec.mix_previous,
                })
                .collect(),
            val: p.val,
            val_files: cfg.val_files,
            curriculum: true,
            secs: p.secs,
        })
    }
}

/// The largest share of a stage's training tokens that may be UNK. A 10K vocabulary built from
/// the two TinyStories training files of `../shared/data` left none of their tokens UNK, and
/// 0.4-1.0% of the other TinyStories files there (validation 0.65%); a tokenizer made for other text
/// (or one with no ordinary ids) can leave all of it UNK, and a model trained on that learns
/// nothing while the loss looks fine.
pub const MAX_UNK_SHARE: f64 = 0.25;

/// How the stages map onto optimizer steps.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Optimizer steps of each stage (`u64::MAX`: the whole run).
    pub steps: Vec<u64>,
    /// Previous-stage windows in each of a stage's batches.
    pub mixed: Vec<usize>,
    /// Step at which each stage begins, and the sum of all (saturating).
    starts: Vec<u64>,
    /// Stage names, for the log.
    names: Vec<String>,
    /// Sum of the stages' steps (curricula), the length the LR schedule spans.
    pub total: Option<u64>,
}

impl Plan {
    /// The plan for micro-batches of `batch_size` sequences of `seq_len`, `grad_accum` per step.
    pub fn new(data: &RunData, seq_len: usize, batch_size: usize, grad_accum: usize) -> anyhow::Result<Plan> {
        let tokens_per_step = (batch_size * grad_accum * seq_len) as u64;
        let (mut steps, mut mixed) = (Vec::new(), Vec::new());
        for (i, st) in data.stages.iter().enumerate() {
            let windows = Windows::new(&st.train, seq_len).len();
            let m = mixed_windows(st.mix_previous, batch_size);
            let own = batch_size - m;
            if windows < own {
                bail!(
                    "stage {:?} gives {windows} windows of {} tokens: fewer than the {own} a batch takes from it",
                    st.name,
                    seq_len + 1
                );
            }
            if m > 0 {
                let prev = Windows::new(&data.stages[i - 1].train, seq_len).len();
                ensure!(prev >= m, "stage {:?} mixes {m} windows of a stage that has {prev}", st.name);
            }
            let n = match st.length {
                None => u64::MAX,
                Some(StageLength::Tokens(t)) => t.div_ceil(tokens_per_step).max(1),
                Some(StageLength::Epochs(e)) => {
                    let batches = e * (windows / own) as f64;
                    ((batches / grad_accum as f64).ceil() as u64).max(1)
                }
            };
            steps.push(n);
            mixed.push(m);
        }
        let mut starts = vec![0u64];
        for &n in &steps {
            starts.push(starts[starts.len() - 1].saturating_add(n));
        }
        let total = data.curriculum.then(|| starts[steps.len()]);
        let names = data.stages.iter().map(|s| s.name.clone()).collect();
        Ok(Plan { steps, mixed, starts, names, total })
    }

    /// The batches from global batch `start` on.
    pub fn batches<'a>(
        &self,
        data: &'a RunData,
        seq_len: usize,
        (batch_size, grad_accum): (usize, usize),
        seed: u64,
        start: u64,
    ) -> TrainBatches<'a> {
        let stages = data
            .stages
            .iter()
            .zip(self.steps.iter().zip(&self.mixed))
            .map(|(st, (&steps, &mixed))| BatchStage {
                windows: Windows::new(&st.train, seq_len),
                batches: steps.saturating_mul(grad_accum as u64),
                mixed,
            })
            .collect();
        TrainBatches::staged(stages, batch_size, seed, start)
    }

    /// The step at which stage `s` begins.
    pub fn first_step(&self, s: usize) -> u64 {
        self.starts[s]
    }

    /// Whether `step` is the last step of a stage.
    pub fn stage_ends_at(&self, step: u64) -> bool {
        self.starts[1..].contains(&step)
    }

    /// The stage that optimizer step `step + 1` trains on (`step` steps done; past the last
    /// stage, the last one).
    pub fn stage_at(&self, step: u64) -> usize {
        self.starts[1..self.steps.len()].partition_point(|&s| s <= step)
    }

    /// The log line and `stage` metrics row for the stage that step `step + 1` trains on
    /// (`start`: the run's first line, "continues" when resumed inside a stage).
    pub fn stage_line(
        &self,
        step: u64,
        tokens: u64,
        batch_size: usize,
        start: bool,
    ) -> (String, serde_json::Value) {
        let i = self.stage_at(step);
        let name = &self.names[i];
        let first = self.first_step(i);
        let verb = if start && step > first { "continues" } else { "begins" };
        let mut line = format!(
            "  >>> Stage {}/{} {name:?} {verb} at step {} ({:.2}M tokens seen; {} steps, to step {})",
            i + 1,
            self.steps.len(),
            step + 1,
            tokens as f64 / 1e6,
            self.steps[i],
            first + self.steps[i]
        );
        if self.mixed[i] > 0 {
            let prev = &self.names[i - 1];
            line.push_str(&format!("; {} of {batch_size} windows per batch from {prev:?}", self.mixed[i]));
        }
        let row = serde_json::json!({
            "kind": "stage", "stage": i + 1, "name": name, "step": step, "tokens": tokens,
            "steps": self.steps[i], "mixed_windows": self.mixed[i],
        });
        (line, row)
    }
}

/// The header lines that describe the stages of a curriculum.
pub fn describe(data: &RunData, plan: &Plan, tokens_per_step: u64) -> Vec<String> {
    let mut lines = Vec::new();
    if !data.curriculum {
        return lines;
    }
    lines.push(format!(
        "  Curriculum: {} stages, {} steps in all",
        data.stages.len(),
        plan.total.unwrap_or(0)
    ));
    for (i, st) in data.stages.iter().enumerate() {
        let steps = plan.steps[i];
        let mut l = format!(
            "    {}. {:<12} {} file(s), {} tokens | steps {}..{} ({} steps, {:.2}M tokens)",
            i + 1,
            st.name,
            st.files,
            st.train.len(),
            plan.first_step(i) + 1,
            plan.first_step(i) + steps,
            steps,
            (steps * tokens_per_step) as f64 / 1e6
        );
        if plan.mixed[i] > 0 {
            l.push_str(&format!(
                " | {} window(s) per batch from {:?}",
                plan.mixed[i],
                data.stages[i - 1].name
            ));
        }
        if let Some((sample, cov)) = st.vocab {
            l.push_str(&format!(" | vocab sample {sample} stories, coverage {:.2}%", 100.0 * cov));
        }
        if let Some(v) = &st.val {
            l.push_str(&format!(" | own validation {} tokens", v.tokens.len()));
        }
        lines.push(l);
    }
    lines
}
