//! Training checkpoints: one self-checking file (spec in `docs/FORMAT.md`).
//!
//! ```text
//! offset  size        field
//!      0     8        magic  b"FLMCKPT\0"
//!      8     4        version u32 = 1
//!     12     4        section count n (1..=8)
//!     16  32·n        section table: name [16] (NUL-padded ASCII), len u64, xxh3-64 u64
//!      …              section bytes, in table order, back to back
//! sections: "state" (JSON, TrainState), "model" (burnpack), "optim" (optional: burnpack of
//!           burn's AdamW, or FLMADAM1 + safetensors moments of the fused engine's)
//! ```
//! Files are written to a temp file, fsynced and renamed, so a crash never leaves a broken
//! checkpoint under the final name. A reader verifies sizes and checksums before trusting
//! a byte.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::Bytes;
use flashlm_core::Config;
use flashlm_model::Bolt;

use crate::fused;
use crate::options::TrainOptions;

use xxhash_rust::xxh3::xxh3_64;

/// File magic.
pub const MAGIC: [u8; 8] = *b"FLMCKPT\0";
/// Version written and read by this build.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 32;
const MAX_SECTIONS: usize = 8;
const _: () = assert!(ENTRY_LEN == 16 + 8 + 8);

/// Everything about a run except tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Model shape.
    pub config: Config,
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch of the next batch.
    pub epoch: u64,
    /// Global number of the next training micro-batch (data position).
    pub next_batch: u64,
    /// Best validation loss so far (None before the first evaluation).
    pub best_val_loss: Option<f64>,
    /// Evaluations in a row without improvement.
    pub patience_used: u32,
    /// Training tokens consumed.
    pub tokens_seen: u64,
    /// State of the sampling RNG.
    pub sample_rng: u64,
    /// Run seed (data order, init).
    pub seed: u64,
    /// Micro-batch size.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr_peak: f64,
    /// Steps the LR schedule spans.
    pub total_steps: u64,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// Training wall time so far, seconds.
    pub elapsed_secs: f64,
    /// Fingerprint of the vocabulary the model was trained with.
    pub vocab_hash: u64,
    /// Validation loss at this point, if just evaluated.
    pub val_loss: Option<f64>,
    /// xxh3 of the training token streams ([`crate::stages::RunData::train_hash`]); absent in
    /// checkpoints written before it was recorded (those resume unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_hash: Option<u64>,
}

/// Largest micro-batch a run may use (sequences).
pub const MAX_BATCH: usize = 1 << 16;
/// Most micro-batches one optimizer step may accumulate.
pub const MAX_GRAD_ACCUM: usize = 1 << 16;

/// Check a learning-rate pair: the peak finite and positive, the final rate finite, not
/// negative and not above the peak.
pub fn check_lr(peak: f64, min: f64) -> Result<(), String> {
    if !(peak.is_finite() && peak > 0.0) {
        return Err(format!("peak learning rate {peak} must be a positive number"));
    }
    if !(min.is_finite() && (0.0..=peak).contains(&min)) {
        return Err(format!("final learning rate {min} must be between 0 and the peak rate {peak}"));
    }
    Ok(())
}

impl TrainState {
    /// Check every value a resumed run trusts: the model shape, the batch shape, the
    /// learning rate and the clocks. A file can have valid checksums and still say nonsense.
    pub fn validate(&self) -> Result<(), String> {
        self.config.validate().map_err(|e| format!("config: {e}"))?;
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return Err(format!("batch_size {} is not between 1 and {MAX_BATCH}", self.batch_size));
        }
        if !(1..=MAX_GRAD_ACCUM).contains(&self.grad_accum) {
            return Err(format!("grad_accum {} is not between 1 and {MAX_GRAD_ACCUM}", self.grad_accum));
        }
        if !(self.lr_peak.is_finite() && self.lr_peak > 0.0) {
            return Err(format!("lr_peak {} must be a positive number", self.lr_peak));
        }
        if !(self.elapsed_secs.is_finite() && self.elapsed_secs >= 0.0) {
            return Err(format!("elapsed_secs {} must be a non-negative number", self.elapsed_secs));
        }
        for (name, v) in [("best_val_loss", self.best_val_loss), ("val_loss", self.val_loss)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(format!("{name} {v:?} is not a number"));
            }
        }
        Ok(())
    }
}

impl TrainState {
    /// The state of a new run of `opts` with the vocabulary `vocab_hash`: step 0, the
    /// schedule planned over `--epochs` of `steps_per_epoch`, or over a curriculum's steps.
    pub fn fresh(
        opts: &TrainOptions,
        vocab_hash: u64,
        (batch_size, grad_accum): (usize, usize),
        steps_per_epoch: u64,
        curriculum_steps: Option<u64>,
    ) -> anyhow::Result<TrainState> {
        let epochs = opts.schedule.epochs;
        let total_steps = match curriculum_steps {
            Some(n) => n,
            None => steps_per_epoch.checked_mul(epochs).ok_or_else(|| {
                anyhow::anyhow!(
                    "--epochs {epochs} x {steps_per_epoch} steps per epoch is more steps than fit in a u64"
                )
            })?,
        };
        Ok(TrainState {
            config: opts.model,
            step: 0,
            epoch: 0,
            next_batch: 0,
            best_val_loss: None,
            patience_used: 0,
            tokens_seen: 0,
            sample_rng: flashlm_core::rng::Rng::new(opts.seed ^ 0x5EED).state(),
            seed: opts.seed,
            batch_size,
            grad_accum,
            lr_peak: opts.optim.lr_peak,
            total_steps,
            warmup_steps: opts.optim.warmup,
            elapsed_secs: 0.0,
            vocab_hash,
            val_loss: None,
            train_hash: None,
        })
    }
}

/// A checkpoint in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Run state.
    pub state: TrainState,
    /// Model weights, burnpack bytes.
    pub model: Vec<u8>,
    /// Optimizer state, burnpack bytes (absent in weights-only "best" files).
    pub optim: Option<Vec<u8>>,
}

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O.
    #[error("{path}: {err}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause (part of the message, not a separate source, so it is printed once).
        err: std::io::Error,
    },
    /// Not a checkpoint.
    #[error("{path}: not a FlashLM checkpoint ({reason})")]
    NotACheckpoint {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Newer format.
    #[error(
        "{path}: checkpoint format version {found} is not supported (this build reads {VERSION}); use the flashlm-train that wrote it"
    )]
    Version {
        /// File.
        path: PathBuf,
        /// Found version.
        found: u32,
    },
    /// Damaged.
    #[error("{path}: damaged checkpoint: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What.
        reason: String,
    },
}

fn section_name(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b
}

/// Serialize a checkpoint.
pub fn to_bytes(ck: &Checkpoint) -> Vec<u8> {
    let state = serde_json::to_vec_pretty(&ck.state).expect("state serializes");
    let mut sections: Vec<(&str, &[u8])> = vec![("state", &state), ("model", &ck.model)];
    if let Some(o) = &ck.optim {
        sections.push(("optim", o));
    }
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (name, data) in &sections {
        out.extend_from_slice(&section_name(name));
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(&xxh3_64(data).to_le_bytes());
    }
    for (_, data) in &sections {
        out.extend_from_slice(data);
    }
    out
}

/// Write a checkpoint atomically.
pub fn write(path: &Path, ck: &Checkpoint) -> Result<(), CheckpointError> {
    flashlm_core::write::write_atomic(path, &to_bytes(ck))
        .map_err(|err| CheckpointError::Io { path: path.to_path_buf(), err })
}

/// Write a checkpoint atomically, keeping the `keep - 1` versions before it as
/// `NAME.1.ckpt` (the newest), `NAME.2.ckpt`, ... (see `write_atomic_keeping`).
pub fn write_keeping(path: &Path, ck: &Checkpoint, keep: usize) -> Result<(), CheckpointError> {
    flashlm_core::write::write_atomic_keeping(path, &to_bytes(ck), keep)
        .map_err(|err| CheckpointError::Io { path: path.to_path_buf(), err })
}

/// Read a checkpoint to resume from; when it cannot be used and an older version was kept
/// beside it (`NAME.1.ckpt`), the error says so.
pub fn read_for_resume(path: &Path) -> anyhow::Result<Checkpoint> {
    read(path).map_err(|e| {
        let older = flashlm_core::write::backup_path(path, 1);
        match read(&older) {
            Ok(ck) if older != path => anyhow::anyhow!(
                "{e}\nthe previous checkpoint {} (step {}) is intact: resume from it with --resume {}",
                older.display(),
                ck.state.step,
                older.display()
            ),
            _ => e.into(),
        }
    })
}

/// Parse and verify a checkpoint.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let not =
        |reason: &str| CheckpointError::NotACheckpoint { path: path.to_path_buf(), reason: reason.into() };
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(not("bad magic"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(CheckpointError::Version { path: path.to_path_buf(), found: version });
    }
    let n = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if n == 0 || n > MAX_SECTIONS {
        return Err(corrupt(format!("{n} sections")));
    }
    let table_end = HEADER_LEN + n * ENTRY_LEN;
    if bytes.len() < table_end {
        return Err(corrupt(format!(
            "truncated: {} bytes, the section table alone needs {table_end}",
            bytes.len()
        )));
    }
    let mut entries = Vec::with_capacity(n);
    let mut total: u64 = table_end as u64;
    for i in 0..n {
        let e = &bytes[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
        let name = String::from_utf8_lossy(&e[..16]).trim_end_matches('\0').to_string();
        let len = u64::from_le_bytes(e[16..24].try_into().expect("8 bytes"));
        let hash = u64::from_le_bytes(e[24..32].try_into().expect("8 bytes"));
        total = total.checked_add(len).ok_or_else(|| corrupt("section sizes overflow".into()))?;
        entries.push((name, len as usize, hash));
    }
    if total != bytes.len() as u64 {
        return Err(corrupt(format!("truncated or padded: {} bytes, the table says {total}", bytes.len())));
    }
    let mut pos = table_end;
    let (mut state, mut model, mut optim) = (None, None, None);
    for (name, len, hash) in entries {
        let data = &bytes[pos..pos + len];
        pos += len;
        if xxh3_64(data) != hash {
            return Err(corrupt(format!("checksum mismatch in section {name:?}")));
        }
        match name.as_str() {
            "state" => {
                state = Some(
                    serde_json::from_slice::<TrainState>(data).map_err(|e| corrupt(format!("state: {e}")))?,
                )
            }
            "model" => model = Some(data.to_vec()),
            "optim" => optim = Some(data.to_vec()),
            _ => {} // unknown sections from later minor revisions are skipped
        }
    }
    let state = state.ok_or_else(|| corrupt("no state section".into()))?;
    let model = model.ok_or_else(|| corrupt("no model section".into()))?;
    state.validate().map_err(|e| corrupt(format!("state: {e}")))?;
    // The weights are f32: a model section smaller than that cannot hold this config, and
    // building the model first would allocate what the config asks for.
    let needed = state.config.checked_num_params().unwrap_or(u64::MAX).saturating_mul(4);
    if (model.len() as u64) < needed {
        return Err(corrupt(format!(
            "the model section has {} bytes, too few for {} ({} parameters)",
            model.len(),
            state.config,
            state.config.num_params()
        )));
    }
    Ok(Checkpoint { state, model, optim })
}

/// Read and verify a checkpoint file.
pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = flashlm_core::limits::read_regular(path)
        .map_err(|err| CheckpointError::Io { path: path.to_path_buf(), err })?;
    from_bytes(&bytes, path)
}

/// Read and check the checkpoint to resume from, before anything expensive.
/// (`--resume`): the model it holds must be `model`, its peak rate above `lr_min`, and it
/// must hold optimizer state.
pub fn read_to_resume(p: &Path, model: &Config, lr_min: f64) -> anyhow::Result<Checkpoint> {
    let ck = read_for_resume(p)?;
    check_lr(ck.state.lr_peak, lr_min).map_err(|e| anyhow::anyhow!("{}: {e} (set --lr-min)", p.display()))?;
    if ck.state.config != *model {
        anyhow::bail!(
            "{} is a checkpoint of another model ({}); this run is {}. Pass the matching --small/--large, or no size flag",
            p.display(),
            ck.state.config,
            model
        );
    }
    if ck.optim.is_none() {
        anyhow::bail!(
            "{} holds weights only (a best-model file) and cannot resume training; resume from latest.ckpt or final.ckpt",
            p.display()
        );
    }
    Ok(ck)
}

// ---- The tensor sections: burn records (weights, burn's AdamW) and the fused AdamW ----

/// Model weights as burnpack bytes.
pub fn model_bytes(model: &Bolt) -> anyhow::Result<Vec<u8>> {
    let bytes =
        model.clone().into_record().into_bytes().map_err(|e| anyhow::anyhow!("saving weights: {e:?}"))?;
    Ok(bytes.to_vec())
}

/// Load weights (and their parameter ids) from burnpack bytes into `model`.
pub fn load_model_bytes(model: Bolt, bytes: &[u8]) -> anyhow::Result<Bolt> {
    let record = burn::store::ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| anyhow::anyhow!("reading weights: {e:?}"))?;
    model.try_load_record(record).map_err(|e| anyhow::anyhow!("loading weights: {e:?}"))
}

/// Optimizer state as burnpack bytes.
pub fn optim_bytes(optim: &ModuleOptimizer) -> anyhow::Result<Vec<u8>> {
    let bytes = optim.to_record().into_bytes().map_err(|e| anyhow::anyhow!("saving optimizer: {e:?}"))?;
    Ok(bytes.to_vec())
}

/// Optimizer state from burnpack bytes.
pub fn load_optim_bytes(optim: ModuleOptimizer, bytes: &[u8]) -> anyhow::Result<ModuleOptimizer> {
    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| anyhow::anyhow!("reading optimizer state: {e:?}"))?;
    Ok(optim.load_record(record))
}

/// Magic at the start of a fused run's optimizer state in a checkpoint.
pub const FUSED_OPTIM_MAGIC: &[u8; 8] = b"FLMADAM1";

/// A fused run's AdamW state as bytes: magic, steps (u64 LE), then a safetensors blob of the
/// first (`m.<name>`) and second (`v.<name>`) moments.
pub fn fused_optim_bytes(cfg: &Config, opt: &fused::AdamW) -> anyhow::Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, p) in [("m", &opt.m), ("v", &opt.v)] {
        for (name, shape, vals) in p.named(cfg) {
            tensors.push((
                format!("{prefix}.{name}"),
                shape,
                vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
    }
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let blob = safetensors::serialize(views, None)?;
    let mut out = FUSED_OPTIM_MAGIC.to_vec();
    out.extend_from_slice(&opt.t.to_le_bytes());
    out.extend_from_slice(&blob);
    Ok(out)
}

/// Inverse of [`fused_optim_bytes`].
pub fn fused_optim_from_bytes(cfg: &Config, bytes: &[u8]) -> anyhow::Result<fused::AdamW> {
    anyhow::ensure!(bytes.len() >= 16 && bytes[..8] == FUSED_OPTIM_MAGIC[..], "not a fused optimizer state");
    let t = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let st = safetensors::SafeTensors::deserialize(&bytes[16..])?;
    let mut moments = Vec::new();
    for prefix in ["m", "v"] {
        let mut named = flashlm_model::NamedTensors::new();
        for (name, view) in st.tensors() {
            if let Some(n) = name.strip_prefix(&format!("{prefix}.")) {
                let vals = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                named.insert(n.to_string(), (view.shape().to_vec(), vals));
            }
        }
        moments.push(fused::Params::from_named(cfg, &named).map_err(anyhow::Error::msg)?);
    }
    let v = moments.pop().expect("two");
    let m = moments.pop().expect("two");
    Ok(fused::AdamW { m, v, t })
}

/// Whether optimizer bytes are a fused run's state (else burn's record).
pub fn is_fused_optim(bytes: &[u8]) -> bool {
    bytes.starts_with(FUSED_OPTIM_MAGIC)
}

/// Write a checkpoint of `state`, `model` and (for `latest`/`final`) the optimizer state,
/// keeping `keep - 1` older versions beside it.
pub fn save(
    path: &Path,
    state: &TrainState,
    model: &Bolt,
    optim: Option<Vec<u8>>,
    keep: usize,
) -> anyhow::Result<()> {
    let ck = Checkpoint { state: state.clone(), model: model_bytes(model)?, optim };
    write_keeping(path, &ck, keep)?;
    Ok(())
}

/// The save directory, held by one run: an exclusive lock on `DIR/.lock` (the file holds the
/// holder's PID), released when this is dropped or the process ends, however it ends.
#[derive(Debug)]
pub struct SaveDirLock {
    _file: std::fs::File,
}

/// Create the save directory, lock it for this run (a second run on it is refused, naming the
/// first one's PID: two runs would overwrite each other's checkpoints and interleave their
/// logs), and remove the temp files of earlier runs killed in the middle of a write.
pub fn open_save_dir(dir: &Path) -> anyhow::Result<SaveDirLock> {
    use anyhow::Context as _;
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create save dir {}", dir.display()))?;
    let path = dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let who = match pid.trim() {
                "" => "another flashlm-train run".to_string(),
                p => format!("another flashlm-train run (pid {p})"),
            };
            anyhow::bail!(
                "{who} is using the save dir {}: wait for it to end, or give this run another --save-dir",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut stale = Vec::new();
    for d in [dir.to_path_buf(), dir.join("snapshots")] {
        stale.extend(
            flashlm_core::write::remove_stale_temps(&d)
                .with_context(|| format!("cannot clean {}", d.display()))?,
        );
    }
    if !stale.is_empty() {
        eprintln!("Removed {} temp file(s) left by killed runs in {}", stale.len(), dir.display());
    }
    Ok(SaveDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            state: TrainState {
                config: Config::tiny(),
                step: 12,
                epoch: 1,
                next_batch: 24,
                best_val_loss: Some(5.5),
                patience_used: 1,
                tokens_seen: 999,
                sample_rng: 77,
                seed: 42,
                batch_size: 2,
                grad_accum: 2,
                lr_peak: 4e-3,
                total_steps: 100,
                warmup_steps: 10,
                elapsed_secs: 1.5,
                vocab_hash: 5,
                val_loss: None,
                train_hash: Some(9),
            },
            model: (0..4 * Config::tiny().num_params() as u32 + 5).map(|i| i as u8).collect(),
            optim: Some(vec![9; 77]),
        }
    }

    #[test]
    fn a_second_run_on_a_save_dir_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_save_dir(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(dir.path().join(".lock")).unwrap().trim(), pid);
        let e = open_save_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("(pid {pid}) is using the save dir")), "{e}");
        drop(held);
        let _again = open_save_dir(dir.path()).expect("free once the first run ends");
    }

    #[test]
    fn round_trip_and_damage() {
        let p = Path::new("x.ckpt");
        let ck = sample();
        let bytes = to_bytes(&ck);
        let back = from_bytes(&bytes, p).unwrap();
        assert_eq!(back.state, ck.state);
        assert_eq!(back.model, ck.model);
        assert_eq!(back.optim, ck.optim);

        let e = from_bytes(&bytes[..bytes.len() - 1], p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 100] ^= 0x40;
        assert!(from_bytes(&flipped, p).unwrap_err().to_string().contains("checksum"));
        assert!(
            from_bytes(b"PK\x03\x04 a zip file", p)
                .unwrap_err()
                .to_string()
                .contains("not a FlashLM checkpoint")
        );
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(from_bytes(&v2, p).unwrap_err().to_string().contains("version 2"));
        assert!(from_bytes(&bytes[..20], p).is_err());
    }

    #[test]
    fn valid_checksums_over_nonsense_state_are_refused() {
        let p = Path::new("x.ckpt");
        type Damage = fn(&mut Checkpoint);
        let cases: [(Damage, &str); 9] = [
            (|c| c.state.batch_size = 0, "batch_size 0"),
            (|c| c.state.grad_accum = 0, "grad_accum 0"),
            (|c| c.state.batch_size = usize::MAX, "batch_size"),
            (|c| c.state.lr_peak = -5.0, "lr_peak -5"),
            (|c| c.state.elapsed_secs = -1.0, "elapsed_secs"),
            (|c| c.state.config.dim = 1 << 40, "dim"),
            (|c| c.state.config.n_blocks = 0, "n_blocks must be positive"),
            (|c| c.state.config.seq_len = 1 << 30, "seq_len"),
            (|c| c.model.truncate(100), "too few"),
        ];
        for (damage, want) in cases {
            let mut ck = sample();
            damage(&mut ck);
            let e = from_bytes(&to_bytes(&ck), p).unwrap_err().to_string();
            assert!(e.contains("damaged checkpoint") && e.contains(want), "{want}: {e}");
        }
        assert_eq!(check_lr(4e-3, 1e-5), Ok(()));
        for (peak, min) in [(4e-3, -1.0), (4e-3, f64::NAN), (f64::NAN, 0.0), (0.0, 0.0), (1e-3, 1e-2)] {
            assert!(check_lr(peak, min).is_err(), "{peak} {min}");
        }
    }
}
