//! The run's record: `training.log` (also printed), `metrics.jsonl` (one JSON object per
//! line: `train`, `val`, `snapshot`, `bpc` rows) and the progress line; and readers of the
//! metrics for the loss plot and tests.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use indicatif::ProgressBar;

/// `training.log`, `metrics.jsonl` and the progress line. A failed write (a full disk) does
/// not stop training: the first one is reported, every one is counted for the summary.
#[derive(Debug)]
pub struct Log {
    file: File,
    metrics: File,
    /// The progress line (hidden unless asked for).
    pub bar: ProgressBar,
    /// Lines that could not be written.
    pub write_errors: u64,
}

impl Log {
    /// Append to `dir/training.log` and `dir/metrics.jsonl`; a progress line when `progress`.
    pub fn open(dir: &Path, progress: bool) -> std::io::Result<Self> {
        let append = |name: &str| OpenOptions::new().create(true).append(true).open(dir.join(name));
        Ok(Self {
            file: append("training.log")?,
            metrics: append("metrics.jsonl")?,
            bar: if progress { ProgressBar::new(0) } else { ProgressBar::hidden() },
            write_errors: 0,
        })
    }

    /// A line of `training.log`, also printed (above the progress line when there is one).
    pub fn line(&mut self, s: &str) {
        let stamp = chrono_like_now();
        let r = writeln!(self.file, "{stamp} | {s}");
        self.check(r, "training.log");
        if self.bar.is_hidden() {
            // Not println!: after SIGHUP closes the terminal (or a pipe reader exits) stdout
            // fails, and training must still reach its checkpoint. training.log has the line.
            let _ = writeln!(std::io::stdout().lock(), "{s}");
        } else {
            self.bar.println(s);
        }
    }

    /// A row of `metrics.jsonl`.
    pub fn metric(&mut self, v: serde_json::Value) {
        let r = writeln!(self.metrics, "{v}");
        self.check(r, "metrics.jsonl");
    }

    fn check(&mut self, r: std::io::Result<()>, name: &str) {
        if let Err(e) = r {
            if self.write_errors == 0 {
                self.bar.suspend(|| {
                    eprintln!(
                        "warning: cannot write {name}: {e}; training goes on, failed writes are counted"
                    )
                });
            }
            self.write_errors += 1;
        }
    }
}

/// Wall-clock time of day as HH:MM:SS (UTC), for log lines.
fn chrono_like_now() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// A duration for humans: `12m05s`, `3h07m`.
pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

fn read_metric(dir: &Path, kind: &str, field: &str) -> Vec<(u64, f64)> {
    // Regular files only: a metrics.jsonl linked to a device would be read forever.
    let Ok(bytes) = flashlm_core::limits::read_regular(&dir.join("metrics.jsonl")) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out: Vec<(u64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .filter_map(|v| Some((v["step"].as_u64()?, v[field].as_f64()?)))
        .collect();
    // A resumed run repeats steps: keep the last value of each step.
    out.sort_by_key(|p| p.0);
    out.dedup_by(|b, a| {
        if a.0 == b.0 {
            *a = *b;
            true
        } else {
            false
        }
    });
    out
}

/// Training losses logged in `dir/metrics.jsonl`, one per step.
pub fn read_train_losses(dir: &Path) -> Vec<(u64, f64)> {
    read_metric(dir, "train", "loss")
}

/// Validation losses logged in `dir/metrics.jsonl`.
pub fn read_val_losses(dir: &Path) -> Vec<(u64, f64)> {
    read_metric(dir, "val", "val_loss")
}

/// Steps at which a curriculum switched to a later stage (`stage` rows of `metrics.jsonl`).
pub fn read_stage_switches(dir: &Path) -> Vec<u64> {
    read_metric(dir, "stage", "stage")
        .into_iter()
        .filter(|&(step, _)| step > 0)
        .map(|(step, _)| step)
        .collect()
}
