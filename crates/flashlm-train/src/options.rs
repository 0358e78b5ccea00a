//! What a training run is asked to do, in groups: the model and its engine, the data, the
//! optimisation, the schedule (how long, when to stop), evaluation and samples, and output
//! (checkpoints, snapshots, the log). [`TrainOptions::validate`] checks every value before
//! any work starts, each with a message naming its flag.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, ensure};
use flashlm_core::Config;

use crate::checkpoint;
use crate::engine::EngineKind;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Model shape.
    pub model: Config,
    /// How a step is computed.
    pub engine: EngineKind,
    /// Seed for init, data order and sampling.
    pub seed: u64,
    /// Checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// Which options that a resumed run takes from its checkpoint were given explicitly.
    pub given: Given,
    /// Story files and the vocabulary.
    pub data: DataOptions,
    /// Batches, learning rate.
    pub optim: OptimOptions,
    /// How long the run lasts and when it stops.
    pub schedule: ScheduleOptions,
    /// Validation and samples during training.
    pub eval: EvalOptions,
    /// Checkpoints, snapshots and the log.
    pub output: OutputOptions,
    /// Set by a signal: finish the step, save and stop.
    pub stop: Arc<AtomicBool>,
    /// Set by [`crate::train::run`] when the first step begins. Before that nothing can be
    /// saved, so `flashlm-train`'s signal watcher exits at once instead of waiting for a step
    /// (reading a large corpus or building the vocabulary can take minutes).
    pub started: Arc<AtomicBool>,
}

/// The options a resumed run takes from its checkpoint (it continues exactly), and whether
/// each was given explicitly: one given with another value than the checkpoint's is refused,
/// naming both, instead of being silently ignored. (Time limits, `--max-steps`, evaluation,
/// sampling, saving, logging and threads may change on a resume.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    /// `--batch`.
    pub batch: bool,
    /// `--grad-accum`.
    pub grad_accum: bool,
    /// `--lr`.
    pub lr: bool,
    /// `--warmup`.
    pub warmup: bool,
    /// `--seed`.
    pub seed: bool,
    /// `--epochs`.
    pub epochs: bool,
}

/// The data.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Training story files.
    pub train_files: Vec<PathBuf>,
    /// Validation story files.
    pub val_files: Vec<PathBuf>,
    /// Training stories counted for the vocabulary.
    pub vocab_stories: usize,
    /// Existing tokenizer to use.
    pub tokenizer: Option<PathBuf>,
    /// Train in stages (`--curriculum FILE`); `train_files` is then unused.
    pub curriculum: Option<flashlm_data::curriculum::Curriculum>,
}

/// The optimisation.
#[derive(Debug, Clone, Copy)]
pub struct OptimOptions {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr_peak: f64,
    /// Final learning rate.
    pub lr_min: f64,
    /// Warmup steps.
    pub warmup: u64,
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleOptions {
    /// Epochs to plan (the LR schedule spans them).
    pub epochs: u64,
    /// Stop after this much training time.
    pub time_limit: Option<Duration>,
    /// Stop after this many optimizer steps (total, counting resumed ones).
    pub max_steps: Option<u64>,
    /// What the cosine LR schedule spans.
    pub lr_schedule: LrSchedule,
    /// Early stop after this many evaluations without improvement (0: never stop early).
    pub patience: u32,
}

/// How often something falls due: every N steps (N >= 1), or never (`off` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every(pub Option<u64>);

impl Every {
    /// Never.
    pub const OFF: Every = Every(None);

    /// Every `n` steps.
    pub const fn steps(n: u64) -> Every {
        Every(Some(n))
    }

    /// Whether it falls due at `step`.
    pub fn due(self, step: u64) -> bool {
        self.0.is_some_and(|n| n > 0 && step.is_multiple_of(n))
    }
}

impl std::str::FromStr for Every {
    type Err = String;

    /// `off` (or `never`), or a positive number of steps.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "never" => Ok(Every::OFF),
            n => match n.parse::<u64>() {
                Ok(0) => Err("must be a positive number of steps, or off".into()),
                Ok(n) => Ok(Every::steps(n)),
                Err(_) => Err(format!("{s:?} is not a number of steps or off")),
            },
        }
    }
}

/// Validation and samples.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Evaluate this often.
    pub every: Every,
    /// Validation batches per evaluation; 0: no validation while training.
    pub batches: usize,
    /// Print samples this often.
    pub sample_every: Every,
    /// Tokens per sample.
    pub sample_tokens: usize,
    /// At the end, the original protocol's validation BPC over this many stories (0: skip).
    pub final_bpc_stories: usize,
}

/// Where the run writes.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// Where checkpoints, logs, tokenizer and token caches go.
    pub save_dir: PathBuf,
    /// Write `latest.ckpt` this often (it is also written at the end and on a signal).
    pub save_every: Every,
    /// `latest.ckpt` versions kept: the current one and `latest.1.ckpt` ... (at least 1).
    pub keep_last: usize,
    /// Save `snapshots/snap-NNN.ckpt` every this much training time (and at the end).
    pub snapshot_every: Option<Duration>,
    /// Seconds between log lines.
    pub log_every_secs: f64,
    /// Show a live progress line.
    pub progress: bool,
}

/// What the cosine learning-rate schedule spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrSchedule {
    /// The planned epochs, in steps (the original's schedule; the default).
    Steps,
    /// The time limit: after warmup, the cosine follows the clock and ends at the limit, so a
    /// faster trainer fits more steps into the same schedule. Needs a time limit; not resumable.
    Time,
}

/// Longest time limit or snapshot interval accepted (one year).
pub const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// A time flag in seconds as a [`Duration`]: finite, positive and at most
/// [`MAX_DURATION_SECS`]; `what` names the flag in the message.
pub fn duration_arg(what: &str, secs: f64) -> anyhow::Result<Duration> {
    ensure!(
        secs.is_finite() && secs > 0.0 && secs <= MAX_DURATION_SECS,
        "{what} must be a positive time of at most one year (8760 hours)"
    );
    Duration::try_from_secs_f64(secs).with_context(|| format!("{what}: {secs} seconds"))
}

impl TrainOptions {
    /// A resumed run continues the checkpoint's exactly: refuse other training data, and every
    /// explicitly given option ([`crate::options::Given`]) whose value differs from the
    /// checkpoint's, naming each with both values.
    pub fn check_resume(
        &self,
        st: &checkpoint::TrainState,
        train_hash: u64,
        steps_per_epoch: u64,
        curriculum: bool,
    ) -> anyhow::Result<()> {
        if st.train_hash.is_some_and(|h| h != train_hash) {
            anyhow::bail!(
                "the checkpoint was trained on other training data than this run's (other files, or other contents): resume with the files it was started with, or start a new run"
            );
        }
        let (g, o) = (self.given, &self.optim);
        let mut differ = Vec::new();
        if g.batch && o.batch_size != st.batch_size {
            differ.push(format!("--batch {} (the checkpoint's: {})", o.batch_size, st.batch_size));
        }
        if g.grad_accum && o.grad_accum != st.grad_accum {
            differ.push(format!("--grad-accum {} (the checkpoint's: {})", o.grad_accum, st.grad_accum));
        }
        if g.lr && o.lr_peak != st.lr_peak {
            differ.push(format!("--lr {} (the checkpoint's: {})", o.lr_peak, st.lr_peak));
        }
        if g.warmup && o.warmup != st.warmup_steps {
            differ.push(format!("--warmup {} (the checkpoint's: {})", o.warmup, st.warmup_steps));
        }
        if g.seed && self.seed != st.seed {
            differ.push(format!("--seed {} (the checkpoint's: {})", self.seed, st.seed));
        }
        if g.epochs && !curriculum {
            let planned = steps_per_epoch.saturating_mul(self.schedule.epochs);
            if planned != st.total_steps {
                differ.push(format!(
                    "--epochs {} ({planned} steps; the checkpoint plans {})",
                    self.schedule.epochs, st.total_steps
                ));
            }
        }
        ensure!(
            differ.is_empty(),
            "--resume continues the checkpoint's run exactly, and these flags differ from it: {}; drop them (time limits, --max-steps, evaluation, sampling, saving and --threads may change)",
            differ.join(", ")
        );
        Ok(())
    }

    /// Check every option before any work starts, each with a message naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.model.validate().map_err(|e| anyhow::anyhow!("invalid model config: {e}"))?;
        let o = &self.optim;
        ensure!(
            (1..=checkpoint::MAX_BATCH).contains(&o.batch_size),
            "--batch must be between 1 and {}",
            checkpoint::MAX_BATCH
        );
        ensure!(
            (1..=checkpoint::MAX_GRAD_ACCUM).contains(&o.grad_accum),
            "--grad-accum must be between 1 and {}",
            checkpoint::MAX_GRAD_ACCUM
        );
        checkpoint::check_lr(o.lr_peak, o.lr_min).map_err(|e| anyhow::anyhow!("--lr / --lr-min: {e}"))?;
        ensure!(self.schedule.epochs > 0, "--epochs must be at least 1");
        for (what, e) in [
            ("--eval-every", self.eval.every),
            ("--sample-every", self.eval.sample_every),
            ("--save-every", self.output.save_every),
        ] {
            ensure!(e.0 != Some(0), "{what} must be a positive number of steps, or off");
        }
        ensure!(self.output.keep_last > 0, "--keep-last must be at least 1");
        ensure!(
            self.data.curriculum.is_none() || self.schedule.lr_schedule == LrSchedule::Steps,
            "--curriculum plans the LR schedule over its stages' steps; drop --lr-schedule time \
             (a time limit still stops the run)"
        );
        ensure!(
            self.output.log_every_secs.is_finite() && self.output.log_every_secs >= 0.0,
            "--log-every must be a number of seconds, 0 or more"
        );
        for (what, d) in
            [("the time limit", self.schedule.time_limit), ("--snapshot-minutes", self.output.snapshot_every)]
        {
            if let Some(d) = d {
                ensure!(!d.is_zero() && d.as_secs_f64() <= MAX_DURATION_SECS, "{what} must be positive");
            }
        }
        Ok(())
    }
}
