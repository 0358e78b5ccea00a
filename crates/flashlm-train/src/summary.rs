//! What a finished run reports: why it stopped and its figures.

use std::path::PathBuf;

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All planned epochs done.
    Epochs,
    /// `--hours` / `--minutes` reached.
    TimeLimit,
    /// `--max-steps` reached.
    MaxSteps,
    /// Validation stopped improving.
    EarlyStop,
    /// A signal (Ctrl-C, SIGTERM, SIGHUP).
    Interrupted,
}

/// Figures of a finished run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why it stopped.
    pub reason: StopReason,
    /// Optimizer steps in total.
    pub steps: u64,
    /// Steps done in this process.
    pub steps_this_run: u64,
    /// Tokens seen in total.
    pub tokens_seen: u64,
    /// Training seconds in this process.
    pub secs: f64,
    /// Tokens per second in this process.
    pub tokens_per_sec: f64,
    /// Best validation loss.
    pub best_val_loss: Option<f64>,
    /// Last validation loss.
    pub last_val_loss: Option<f64>,
    /// Validation bits per character estimated from the last validation loss.
    pub last_val_bpc: Option<f64>,
    /// Training loss of every step of this process: (step, loss).
    pub losses: Vec<(u64, f64)>,
    /// Checkpoint written at the end.
    pub final_checkpoint: PathBuf,
    /// Validation BPC of the final weights, original protocol (when requested).
    pub story_bpc: Option<f64>,
    /// Lines that could not be written to `training.log` / `metrics.jsonl`.
    pub log_write_errors: u64,
}
