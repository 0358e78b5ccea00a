//! The training loop: FlashLM v4's `train.py` on burn autodiff.

use flashlm_core::Config;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use flashlm_data::batch::{TrainBatches, Windows, val_batches};
use flashlm_data::prepare::{PrepareConfig, prepare};
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::eval::{ORIGINAL_MAX_TOKENS, Protocol, select};
use flashlm_infer::sample::{Rng, Sampler};
use flashlm_model::{Bolt, cpu_device};
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::fused;
use crate::generate::{SampleSettings, generate};
use crate::step::{
    adamw, clip_global_norm, ids_tensor, inference_copy, load_model_bytes, load_optim_bytes, lr_at,
    lr_at_time, model_bytes, optim_bytes,
};

/// Prompts sampled during training (as the original).
pub const SAMPLE_PROMPTS: [&str; 3] = ["Once upon a time", "The little girl", "One day, a boy named"];

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Model shape.
    pub config: Config,
    /// Checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// Epochs to plan (the LR schedule spans them).
    pub epochs: u64,
    /// Stop after this much training time.
    pub time_limit: Option<Duration>,
    /// Stop after this many optimizer steps (total, counting resumed ones).
    pub max_steps: Option<u64>,
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
    /// Seed for init, data order and sampling.
    pub seed: u64,
    /// Where checkpoints, logs, tokenizer and token caches go.
    pub save_dir: PathBuf,
    /// Training story files.
    pub train_files: Vec<PathBuf>,
    /// Validation story files.
    pub val_files: Vec<PathBuf>,
    /// Training stories counted for the vocabulary.
    pub vocab_stories: usize,
    /// Existing tokenizer to use.
    pub tokenizer: Option<PathBuf>,
    /// Evaluate every N steps.
    pub eval_every: u64,
    /// Validation batches per evaluation; 0: no validation while training.
    pub eval_batches: usize,
    /// Print samples every N steps.
    pub sample_every: u64,
    /// Write `latest.ckpt` every N steps.
    pub save_every: u64,
    /// Early stop after this many evaluations without improvement (0: never stop early).
    pub patience: u32,
    /// `latest.ckpt` versions kept: the current one and `latest.1.ckpt` ... (at least 1).
    pub keep_last: usize,
    /// Tokens per sample.
    pub sample_tokens: usize,
    /// Seconds between log lines.
    pub log_every_secs: f64,
    /// Show a live progress line.
    pub progress: bool,
    /// At the end, the original protocol's validation BPC over this many stories (0: skip).
    pub final_bpc_stories: usize,
    /// Set by Ctrl-C: save and stop.
    pub stop: Arc<AtomicBool>,
    /// How a step is computed.
    pub engine: Engine,
    /// What the cosine LR schedule spans.
    pub lr_schedule: LrSchedule,
    /// Save `snapshots/snap-NNN.ckpt` every this much training time (and at the end).
    pub snapshot_every: Option<Duration>,
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
    /// Check every option before any work starts, each with a message naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.config.validate().map_err(|e| anyhow::anyhow!("invalid model config: {e}"))?;
        ensure!(
            (1..=checkpoint::MAX_BATCH).contains(&self.batch_size),
            "--batch must be between 1 and {}",
            checkpoint::MAX_BATCH
        );
        ensure!(
            (1..=checkpoint::MAX_GRAD_ACCUM).contains(&self.grad_accum),
            "--grad-accum must be between 1 and {}",
            checkpoint::MAX_GRAD_ACCUM
        );
        checkpoint::check_lr(self.lr_peak, self.lr_min)
            .map_err(|e| anyhow::anyhow!("--lr / --lr-min: {e}"))?;
        ensure!(self.epochs > 0, "--epochs must be at least 1");
        ensure!(
            self.eval_every > 0 && self.save_every > 0 && self.sample_every > 0,
            "--eval-every, --sample-every and --save-every must be positive"
        );
        ensure!(self.keep_last > 0, "--keep-last must be at least 1");
        ensure!(
            self.log_every_secs.is_finite() && self.log_every_secs >= 0.0,
            "--log-every must be a number of seconds, 0 or more"
        );
        for (what, d) in [("the time limit", self.time_limit), ("--snapshot-minutes", self.snapshot_every)] {
            if let Some(d) = d {
                ensure!(!d.is_zero() && d.as_secs_f64() <= MAX_DURATION_SECS, "{what} must be positive");
            }
        }
        Ok(())
    }
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

/// How a training step is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The hand-written step of [`crate::fused`] (the default: fastest).
    Fused,
    /// burn autodiff on the `flashlm-model` graph (the reference).
    Burn,
}

/// Magic at the start of a fused run's optimizer state in a checkpoint.
const FUSED_OPTIM_MAGIC: &[u8; 8] = b"FLMADAM1";

/// A fused run's AdamW state as bytes: magic, steps (u64 LE), then a safetensors blob of the
/// first (`m.<name>`) and second (`v.<name>`) moments.
fn fused_optim_bytes(cfg: &Config, opt: &fused::AdamW) -> anyhow::Result<Vec<u8>> {
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
fn fused_optim_from_bytes(cfg: &Config, bytes: &[u8]) -> anyhow::Result<fused::AdamW> {
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

/// The burn model with the fused parameters' values.
fn model_of(cfg: &Config, model: Bolt, p: &fused::Params) -> anyhow::Result<Bolt> {
    let named = p.named(cfg).into_iter().map(|(n, s, v)| (n, (s, v.to_vec()))).collect();
    model.with_weights(&named).map_err(anyhow::Error::msg)
}

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
    /// Ctrl-C.
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

/// `training.log`, `metrics.jsonl` and the progress line. A failed write (a full disk) does
/// not stop training: the first one is reported, every one is counted for the summary.
struct Log {
    file: File,
    metrics: File,
    bar: ProgressBar,
    write_errors: u64,
}

impl Log {
    fn line(&mut self, s: &str) {
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

    fn metric(&mut self, v: serde_json::Value) {
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

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// Mean loss over the first `max` validation batches, in order.
pub fn evaluate(model: &Bolt, val: Windows<'_>, batch: usize, max: usize, device: &Device) -> Option<f64> {
    let m = inference_copy(model);
    let (mut sum, mut n) = (0.0f64, 0usize);
    for b in val_batches(val, batch, max) {
        let x = ids_tensor(&b.inputs, b.batch_size, b.seq_len, device);
        let y = ids_tensor(&b.targets, b.batch_size, b.seq_len, device);
        sum += m.loss(x, y).into_scalar::<f32>() as f64;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Validation BPC with FlashLM v4's protocol (`eval_bpc.py`): the first `max` stories longer
/// than 50 characters, tokens cut at 257, tokens 1.. predicted, BPC = summed NLL /
/// (characters · ln 2). `flashlm-infer eval --protocol original` computes the same figure
/// with the packed engine.
pub fn story_bpc(
    model: &Bolt,
    tok: &Tokenizer,
    stories: &[String],
    max: usize,
    device: &Device,
) -> (f64, usize) {
    let m = inference_copy(model);
    let (mut nll, mut chars, mut n) = (0.0f64, 0u64, 0usize);
    for text in select(stories, max, Protocol::Original) {
        let mut ids = tok.encode(text);
        if ids.len() < 2 {
            continue;
        }
        ids.truncate(ORIGINAL_MAX_TOKENS);
        let t = ids.len() - 1;
        let x = ids_tensor(&ids[..t], 1, t, device);
        let y = ids_tensor(&ids[1..], 1, t, device);
        nll += m.loss(x, y).into_scalar::<f32>() as f64 * t as f64;
        chars += text.chars().count() as u64;
        n += 1;
    }
    (nll / (chars.max(1) as f64 * std::f64::consts::LN_2), n)
}

fn samples(
    model: &Bolt,
    tok: &Tokenizer,
    opts: &TrainOptions,
    rng: &mut Rng,
    device: &Device,
    log: &mut Log,
) {
    let m = inference_copy(model);
    log.line("--- Samples ---");
    for p in SAMPLE_PROMPTS {
        let ids = tok.encode(p);
        let settings = SampleSettings {
            max_new: opts.sample_tokens,
            seq_len: opts.config.seq_len,
            sampler: Sampler { temperature: 0.8, top_k: 50, top_p: 1.0 },
        };
        let out = generate(&m, &ids, settings, rng, device);
        let text: String = tok.decode(&out).chars().take(400).collect();
        log.line(&format!("  > {}", text.replace('\n', " ")));
    }
}

/// The optimizer whose state goes into a checkpoint.
enum OptimRef<'a> {
    Burn(&'a burn::optim::ModuleOptimizer),
    Fused(&'a fused::AdamW),
}

/// Write a checkpoint, keeping `keep - 1` older versions beside it.
fn save(
    path: &Path,
    state: &TrainState,
    model: &Bolt,
    optim: Option<OptimRef<'_>>,
    keep: usize,
) -> anyhow::Result<()> {
    let ck = Checkpoint {
        state: state.clone(),
        model: model_bytes(model)?,
        optim: match optim {
            Some(OptimRef::Burn(o)) => Some(optim_bytes(o)?),
            Some(OptimRef::Fused(o)) => Some(fused_optim_bytes(&state.config, o)?),
            None => None,
        },
    };
    checkpoint::write_keeping(path, &ck, keep)?;
    Ok(())
}

fn optim_ref<'a>(burn: &'a burn::optim::ModuleOptimizer, fused: &'a Option<fused::AdamW>) -> OptimRef<'a> {
    match fused {
        Some(f) => OptimRef::Fused(f),
        None => OptimRef::Burn(burn),
    }
}

fn check_loss(lv: f64, step_no: u64, opts: &TrainOptions) -> anyhow::Result<()> {
    if !lv.is_finite() {
        bail!(
            "loss became {lv} at step {step_no}; stopping without saving these weights \
             (the last good checkpoint is {}). Try a lower --lr",
            opts.save_dir.join("latest.ckpt").display()
        );
    }
    Ok(())
}

fn check_norm(norm: f64, step_no: u64) -> anyhow::Result<()> {
    if !norm.is_finite() {
        bail!(
            "gradient norm became {norm} at step {step_no}; stopping without saving these weights. Try a lower --lr"
        );
    }
    Ok(())
}

/// Run training.
pub fn run(opts: &TrainOptions) -> anyhow::Result<Summary> {
    let cfg = opts.config;
    opts.validate()?;
    std::fs::create_dir_all(&opts.save_dir)
        .with_context(|| format!("cannot create save dir {}", opts.save_dir.display()))?;
    // Temp files of earlier runs killed in the middle of a write.
    let mut stale = Vec::new();
    for dir in [opts.save_dir.clone(), opts.save_dir.join("snapshots")] {
        stale.extend(
            flashlm_core::write::remove_stale_temps(&dir)
                .with_context(|| format!("cannot clean {}", dir.display()))?,
        );
    }
    if !stale.is_empty() {
        eprintln!("Removed {} temp file(s) left by killed runs in {}", stale.len(), opts.save_dir.display());
    }

    // ---- Resume: read and check before anything expensive ----
    let resumed = match &opts.resume {
        Some(p) => {
            let ck = checkpoint::read_for_resume(p)?;
            checkpoint::check_lr(ck.state.lr_peak, opts.lr_min)
                .map_err(|e| anyhow::anyhow!("{}: {e} (set --lr-min)", p.display()))?;
            if ck.state.config != cfg {
                bail!(
                    "{} is a checkpoint of another model ({}); this run is {}. Pass the matching --small/--large, or no size flag",
                    p.display(),
                    ck.state.config,
                    cfg
                );
            }
            if ck.optim.is_none() {
                bail!(
                    "{} holds weights only (a best-model file) and cannot resume training; resume from latest.ckpt or final.ckpt",
                    p.display()
                );
            }
            Some(ck)
        }
        None => None,
    };

    // ---- Data ----
    let t0 = Instant::now();
    let data = prepare(&PrepareConfig {
        train_files: opts.train_files.clone(),
        val_files: opts.val_files.clone(),
        out_dir: opts.save_dir.clone(),
        vocab_size: cfg.vocab_size,
        vocab_stories: opts.vocab_stories,
        tokenizer: opts.tokenizer.clone(),
        rebuild_vocab: false,
        compress: true,
        progress: opts.progress,
    })?;
    let tok = data.tokenizer.clone();
    if let Some(ck) = &resumed
        && ck.state.vocab_hash != tok.fingerprint()
    {
        bail!(
            "the checkpoint was trained with another vocabulary than {}; resume with the same data and --save-dir",
            opts.save_dir.join("tokenizer.json").display()
        );
    }
    let train_w = Windows::new(&data.train.tokens, cfg.seq_len);
    let val_w = Windows::new(&data.val.tokens, cfg.seq_len);

    let mut log = Log {
        file: OpenOptions::new().create(true).append(true).open(opts.save_dir.join("training.log"))?,
        metrics: OpenOptions::new().create(true).append(true).open(opts.save_dir.join("metrics.jsonl"))?,
        bar: if opts.progress { ProgressBar::new(0) } else { ProgressBar::hidden() },
        write_errors: 0,
    };

    // ---- Model and optimizer ----
    let device = cpu_device(true);
    let eval_device = cpu_device(false);
    // burn's generator is shared by the whole process: seed and draw under one lock, so that
    // two runs in one process (tests, a library user) cannot take numbers from each other.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let mut model = {
        let _guard = INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        device.seed(opts.seed);
        Bolt::init(&cfg, &device)
    };
    let mut optim = adamw();
    let (batch_size, grad_accum) = match &resumed {
        Some(ck) => (ck.state.batch_size, ck.state.grad_accum),
        None => (opts.batch_size, opts.grad_accum),
    };
    let mut batches = TrainBatches::new(train_w, batch_size, opts.seed, 0);
    let batches_per_epoch = batches.schedule().batches_per_epoch();
    let steps_per_epoch = batches_per_epoch / grad_accum as u64;
    if steps_per_epoch == 0 {
        bail!(
            "the training data gives {} windows of {} tokens: not enough for one step of {} x {} sequences",
            train_w.len(),
            cfg.seq_len + 1,
            batch_size,
            grad_accum
        );
    }
    if val_w.len() < batch_size {
        bail!(
            "the validation data gives {} windows of {} tokens, fewer than one batch of {batch_size}",
            val_w.len(),
            cfg.seq_len + 1
        );
    }
    let mut state = TrainState {
        config: cfg,
        step: 0,
        epoch: 0,
        next_batch: 0,
        best_val_loss: None,
        patience_used: 0,
        tokens_seen: 0,
        sample_rng: Rng::new(opts.seed ^ 0x5EED).state(),
        seed: opts.seed,
        batch_size,
        grad_accum,
        lr_peak: opts.lr_peak,
        total_steps: steps_per_epoch.checked_mul(opts.epochs).with_context(|| {
            format!(
                "--epochs {} x {steps_per_epoch} steps per epoch is more steps than fit in a u64",
                opts.epochs
            )
        })?,
        warmup_steps: opts.warmup,
        elapsed_secs: 0.0,
        vocab_hash: tok.fingerprint(),
        val_loss: None,
    };
    let mut fused_opt: Option<fused::AdamW> = None;
    if let Some(ck) = resumed {
        model = load_model_bytes(model, &ck.model)?;
        let ob = ck.optim.as_deref().expect("checked above");
        let is_fused = ob.starts_with(FUSED_OPTIM_MAGIC);
        match (opts.engine, is_fused) {
            (Engine::Fused, true) => fused_opt = Some(fused_optim_from_bytes(&cfg, ob)?),
            (Engine::Burn, false) => optim = load_optim_bytes(optim, ob)?,
            (Engine::Fused, false) => {
                let path = opts.resume.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                match load_optim_bytes(adamw(), ob) {
                    Ok(_) => bail!("{path} holds burn optimizer state: resume it with --engine burn"),
                    Err(e) => bail!("{path}: the optimizer state is neither fused nor burn state ({e:#})"),
                }
            }
            (Engine::Burn, true) => bail!(
                "{} holds fused optimizer state: resume it with --engine fused (the default)",
                opts.resume.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
        state = ck.state;
        batches = TrainBatches::new(train_w, batch_size, state.seed, state.next_batch);
    }
    // The fused engine trains flat copies of the weights; `model` is refreshed from them
    // before every evaluation, sample and checkpoint.
    let mut params = match opts.engine {
        Engine::Fused => Some(fused::Params::from_model(&cfg, &model).map_err(anyhow::Error::msg)?),
        Engine::Burn => None,
    };
    if let Some(p) = &params
        && fused_opt.is_none()
    {
        fused_opt = Some(fused::AdamW::new(p));
    }
    let mut fused_grads: Option<fused::Params> = None;
    let mut fused_scratch = fused::Scratch::default();
    let mut rng = Rng::from_state(state.sample_rng);
    let tokens_per_step = (batch_size * grad_accum * cfg.seq_len) as u64;
    let val_tokens_per_char = data.val.tokens.len() as f64 / data.val.chars.max(1) as f64;
    let bpc = |loss: f64| loss / std::f64::consts::LN_2 * val_tokens_per_char;

    // ---- Header ----
    let threads = rayon::current_num_threads();
    log.line("");
    log.line(&format!("{:=<60}", ""));
    log.line(&format!(
        "  FlashLM v4 'Bolt' — {} (burn {}, {threads} threads)",
        cfg.name(),
        flashlm_model::backend_name()
    ));
    log.line(&format!("{:=<60}", ""));
    log.line(&format!(
        "  Config: d={}, blocks={}, glu={}, kernel={}, vocab={}",
        cfg.dim, cfg.n_blocks, cfg.glu_hidden, cfg.kernel_size, cfg.vocab_size
    ));
    log.line(&format!("  Params: {}", cfg.num_params()));
    log.line(&format!(
        "  Batch: {batch_size} x {grad_accum} accum = {} effective, seq {}",
        batch_size * grad_accum,
        cfg.seq_len
    ));
    log.line(&format!(
        "  LR: {} peak, warmup {}, cosine to {} over {} steps",
        state.lr_peak, state.warmup_steps, opts.lr_min, state.total_steps
    ));
    log.line(&format!(
        "  Data: {} train tokens ({} windows), {} val tokens; prepared in {:.1}s",
        data.train.tokens.len(),
        train_w.len(),
        data.val.tokens.len(),
        t0.elapsed().as_secs_f64()
    ));
    if let Some(s) = data.vocab_stats {
        log.line(&format!(
            "  Vocab coverage: {:.2}% of {} counted tokens",
            100.0 * s.coverage,
            s.counted_tokens
        ));
    }
    if let Some(l) = opts.time_limit {
        log.line(&format!("  Time limit: {}", fmt_secs(l.as_secs_f64())));
    }
    if state.step > 0 {
        log.line(&format!(
            "  Resumed at step {}, epoch {}, {} tokens seen, best val {:?}",
            state.step, state.epoch, state.tokens_seen, state.best_val_loss
        ));
    }
    log.line(&format!("  Steps/epoch: {steps_per_epoch} | planned: {}", state.total_steps));
    log.line(&format!("{:=<60}", ""));

    let planned = opts.max_steps.unwrap_or(state.total_steps).min(state.total_steps);
    log.bar.set_length(planned);
    log.bar.set_position(state.step);
    log.bar.set_style(ProgressStyle::with_template("{spinner} step {pos}/{len} {msg}").expect("template"));

    let time_schedule_limit = match opts.lr_schedule {
        LrSchedule::Steps => None,
        LrSchedule::Time => {
            let l =
                opts.time_limit.context("--lr-schedule time needs a time limit (--minutes or --hours)")?;
            ensure!(state.step == 0, "--lr-schedule time cannot resume a run; start a new one");
            Some(l.as_secs_f64())
        }
    };
    let mut warmup_end_secs: Option<f64> = None;
    let snapshot_dir = opts.save_dir.join("snapshots");
    if opts.snapshot_every.is_some() {
        std::fs::create_dir_all(&snapshot_dir)
            .with_context(|| format!("cannot create {}", snapshot_dir.display()))?;
    }
    let mut snapshots_taken = 0u32;
    let mut last_snapshot_step = u64::MAX;

    // ---- Loop ----
    let start = Instant::now();
    let start_step = state.step;
    let base_elapsed = state.elapsed_secs;
    let mut last_log = Instant::now();
    let mut losses = Vec::new();
    let mut last_eval_step = u64::MAX;
    let mut last_latest_step = u64::MAX;
    let reason = loop {
        if opts.stop.load(Ordering::SeqCst) {
            break StopReason::Interrupted;
        }
        if opts.time_limit.is_some_and(|l| start.elapsed() >= l) {
            break StopReason::TimeLimit;
        }
        if opts.max_steps.is_some_and(|m| state.step >= m) {
            break StopReason::MaxSteps;
        }
        if state.step >= state.total_steps {
            break StopReason::Epochs;
        }
        let step_no = state.step + 1;
        let lr = match time_schedule_limit {
            None => lr_at(state.step, state.total_steps, state.warmup_steps, state.lr_peak, opts.lr_min),
            Some(limit) => {
                let secs = start.elapsed().as_secs_f64();
                if state.step >= state.warmup_steps && warmup_end_secs.is_none() {
                    warmup_end_secs = Some(secs);
                }
                lr_at_time(
                    state.step,
                    state.warmup_steps,
                    secs,
                    warmup_end_secs,
                    limit,
                    state.lr_peak,
                    opts.lr_min,
                )
            }
        };
        let (step_loss, norm) = match (&mut params, &mut fused_opt) {
            (Some(p), Some(opt)) => {
                // Zero at first; AdamW::step leaves them zero after every step.
                let grads = fused_grads.get_or_insert_with(|| p.zeros_like());
                let mut step_loss = 0.0f64;
                for _ in 0..grad_accum {
                    let tb = batches.next().expect("non-empty schedule");
                    let lv = f64::from(fused::forward_backward_with(
                        &mut fused_scratch,
                        &cfg,
                        p,
                        grads,
                        &tb.batch.inputs,
                        &tb.batch.targets,
                        tb.batch.seq_len,
                        threads,
                    ));
                    check_loss(lv, step_no, opts)?;
                    step_loss += lv / grad_accum as f64;
                }
                if grad_accum > 1 {
                    fused::scale_grads(grads, 1.0 / grad_accum as f32);
                }
                let norm = fused::clip_global_norm(grads, flashlm_core::adamw::MAX_GRAD_NORM);
                check_norm(norm, step_no)?;
                opt.step(p, grads, lr);
                (step_loss, norm)
            }
            _ => {
                let mut acc = GradientsAccumulator::<Bolt>::new();
                let mut step_loss = 0.0f64;
                for _ in 0..grad_accum {
                    let tb = batches.next().expect("non-empty schedule");
                    let x = ids_tensor(&tb.batch.inputs, tb.batch.batch_size, tb.batch.seq_len, &device);
                    let y = ids_tensor(&tb.batch.targets, tb.batch.batch_size, tb.batch.seq_len, &device);
                    let loss = model.loss(x, y);
                    let lv = loss.clone().into_scalar::<f32>() as f64;
                    check_loss(lv, step_no, opts)?;
                    step_loss += lv / grad_accum as f64;
                    let loss = if grad_accum > 1 { loss.div_scalar(grad_accum as f64) } else { loss };
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    acc.accumulate(&model, grads);
                }
                let mut grads = acc.grads();
                let norm = clip_global_norm(&model, &mut grads, flashlm_core::adamw::MAX_GRAD_NORM);
                check_norm(norm, step_no)?;
                model = optim.step(lr, model, grads);
                (step_loss, norm)
            }
        };
        state.step = step_no;
        state.tokens_seen += tokens_per_step;
        state.next_batch = batches.position();
        state.epoch = state.next_batch / batches_per_epoch;
        losses.push((state.step, step_loss));

        let run_secs = start.elapsed().as_secs_f64();
        let tok_s = (state.step - start_step) as f64 * tokens_per_step as f64 / run_secs.max(1e-9);
        let eta = match opts.time_limit {
            Some(l) => l.as_secs_f64() - run_secs,
            None => (planned.saturating_sub(state.step)) as f64 * run_secs / (state.step - start_step) as f64,
        };
        log.metric(serde_json::json!({
            "kind": "train", "step": state.step, "epoch": state.epoch, "loss": step_loss, "lr": lr,
            "grad_norm": norm, "tokens": state.tokens_seen, "tok_s": tok_s, "elapsed_s": base_elapsed + run_secs,
        }));
        let msg = format!(
            "loss {step_loss:.4} | lr {lr:.2e} | {tok_s:.0} tok/s | {:.2}M tokens | ETA {}",
            state.tokens_seen as f64 / 1e6,
            fmt_secs(eta)
        );
        log.bar.set_position(state.step);
        log.bar.set_message(msg.clone());
        if last_log.elapsed().as_secs_f64() >= opts.log_every_secs {
            log.line(&format!("  Step {:>6} | {msg}", state.step));
            last_log = Instant::now();
        }

        // ---- Snapshots (for quality-against-time curves) ----
        if let Some(every) = opts.snapshot_every
            && run_secs >= every.as_secs_f64() * f64::from(snapshots_taken + 1)
        {
            if let Some(p) = &params {
                model = model_of(&cfg, model, p)?;
            }
            snapshots_taken += 1;
            last_snapshot_step = state.step;
            snapshot(&snapshot_dir, snapshots_taken, &mut state, &model, base_elapsed + run_secs, &mut log)?;
        }

        // ---- Evaluation ----
        let epoch_done = state.next_batch % batches_per_epoch < grad_accum as u64
            && state.step.is_multiple_of(steps_per_epoch);
        // `--eval-batches 0`: no validation while training (timed comparisons, where it would
        // take wall time the other side does not spend).
        let eval_now = opts.eval_batches > 0 && (state.step.is_multiple_of(opts.eval_every) || epoch_done);
        let wants_model = eval_now
            || state.step.is_multiple_of(opts.sample_every)
            || state.step.is_multiple_of(opts.save_every);
        if wants_model && let Some(p) = &params {
            model = model_of(&cfg, model, p)?;
        }
        if eval_now {
            let vl = evaluate(&model, val_w, batch_size, opts.eval_batches, &eval_device).unwrap_or(f64::NAN);
            last_eval_step = state.step;
            state.val_loss = Some(vl);
            let best = state.best_val_loss.unwrap_or(f64::INFINITY);
            log.line(&format!("  >>> Val loss: {vl:.4} (bpc≈{:.4}, best: {best:.4})", bpc(vl)));
            log.metric(serde_json::json!({
                "kind": "val", "step": state.step, "val_loss": vl, "val_bpc": bpc(vl), "tokens": state.tokens_seen,
                "elapsed_s": base_elapsed + run_secs,
            }));
            if vl < best {
                state.best_val_loss = Some(vl);
                state.patience_used = 0;
                state.elapsed_secs = base_elapsed + run_secs;
                save(&opts.save_dir.join("best.ckpt"), &state, &model, None, 1)?;
                log.line("  New best! Saved best.ckpt");
            } else {
                state.patience_used += 1;
                log.line(&format!("  No improvement ({}/{})", state.patience_used, opts.patience));
            }
            let _ = crate::plot::loss_png(
                &opts.save_dir.join("loss.png"),
                &read_train_losses(&opts.save_dir),
                &read_val_losses(&opts.save_dir),
            );
            if opts.patience > 0 && state.patience_used >= opts.patience {
                log.line("Early stopping.");
                break StopReason::EarlyStop;
            }
        }
        if state.step.is_multiple_of(opts.sample_every) {
            samples(&model, &tok, opts, &mut rng, &eval_device, &mut log);
        }
        state.sample_rng = rng.state();
        if state.step.is_multiple_of(opts.save_every) {
            state.elapsed_secs = base_elapsed + start.elapsed().as_secs_f64();
            let latest = opts.save_dir.join("latest.ckpt");
            save(&latest, &state, &model, Some(optim_ref(&optim, &fused_opt)), opts.keep_last)?;
            last_latest_step = state.step;
            log.line(&format!("  Checkpoint: {}", latest.display()));
        }
    };
    log.bar.finish_and_clear();
    if let Some(p) = &params {
        model = model_of(&cfg, model, p)?;
    }
    let secs = start.elapsed().as_secs_f64();
    state.elapsed_secs = base_elapsed + secs;

    if reason == StopReason::Interrupted {
        log.line("Interrupted: saving a checkpoint...");
    }
    if opts.snapshot_every.is_some() && last_snapshot_step != state.step && state.step > start_step {
        snapshot(&snapshot_dir, snapshots_taken + 1, &mut state, &model, base_elapsed + secs, &mut log)?;
    }
    if opts.eval_batches > 0 && last_eval_step != state.step && state.step > start_step {
        let vl = evaluate(&model, val_w, batch_size, opts.eval_batches, &eval_device).unwrap_or(f64::NAN);
        state.val_loss = Some(vl);
        log.line(&format!("  >>> Final val loss: {vl:.4} (bpc≈{:.4})", bpc(vl)));
        log.metric(serde_json::json!({
            "kind": "val", "step": state.step, "val_loss": vl, "val_bpc": bpc(vl), "tokens": state.tokens_seen,
            "elapsed_s": state.elapsed_secs,
        }));
        if vl < state.best_val_loss.unwrap_or(f64::INFINITY) {
            state.best_val_loss = Some(vl);
            save(&opts.save_dir.join("best.ckpt"), &state, &model, None, 1)?;
        }
    }
    state.sample_rng = rng.state();
    let final_path =
        opts.save_dir.join(if reason == StopReason::Interrupted { "latest.ckpt" } else { "final.ckpt" });
    // latest.ckpt of this very step is replaced in place, so the kept versions stay older steps.
    let keep_latest = if last_latest_step == state.step { 1 } else { opts.keep_last };
    let keep = if reason == StopReason::Interrupted { keep_latest } else { 1 };
    save(&final_path, &state, &model, Some(optim_ref(&optim, &fused_opt)), keep)?;
    if reason != StopReason::Interrupted {
        save(
            &opts.save_dir.join("latest.ckpt"),
            &state,
            &model,
            Some(optim_ref(&optim, &fused_opt)),
            keep_latest,
        )?;
    }
    let _ = crate::plot::loss_png(
        &opts.save_dir.join("loss.png"),
        &read_train_losses(&opts.save_dir),
        &read_val_losses(&opts.save_dir),
    );
    if reason != StopReason::Interrupted
        && state.step > start_step
        && !state.step.is_multiple_of(opts.sample_every)
    {
        samples(&model, &tok, opts, &mut rng, &eval_device, &mut log);
    }

    let mut story_bpc_value = None;
    if opts.final_bpc_stories > 0 {
        let val_stories = flashlm_data::stories::read_story_files(&opts.val_files)?;
        let (b, n) = story_bpc(&model, &tok, &val_stories.texts, opts.final_bpc_stories, &eval_device);
        log.line(&format!("  Validation BPC (original protocol, {n} stories, final weights): {b:.4}"));
        log.metric(serde_json::json!({"kind": "bpc", "step": state.step, "protocol": "original", "stories": n, "bpc": b}));
        story_bpc_value = Some(b);
    }
    let steps_this_run = state.step - start_step;
    let tokens_per_sec = steps_this_run as f64 * tokens_per_step as f64 / secs.max(1e-9);
    log.line("");
    log.line(&format!("{:=<60}", ""));
    log.line(&format!(
        "  TRAINING {} ({reason:?})",
        if reason == StopReason::Interrupted { "INTERRUPTED" } else { "COMPLETE" }
    ));
    log.line(&format!("{:=<60}", ""));
    log.line(&format!("  Config: {} | Params: {}", cfg.name(), cfg.num_params()));
    log.line(&format!(
        "  Steps: {} ({} this run) | Tokens: {} ({:.2}M)",
        state.step,
        steps_this_run,
        state.tokens_seen,
        state.tokens_seen as f64 / 1e6
    ));
    log.line(&format!("  Time: {} this run | Speed: {tokens_per_sec:.0} tok/s", fmt_secs(secs)));
    if let Some(b) = state.best_val_loss {
        log.line(&format!("  Best val loss: {b:.4} (bpc≈{:.4})", bpc(b)));
    }
    log.line(&format!("  Saved: {} (resume with --resume {})", final_path.display(), final_path.display()));
    log.line(&format!("{:=<60}", ""));
    log.line(&format!(
        "summary: steps={} tokens={} secs={secs:.1} tok_s={tokens_per_sec:.0} best_val_loss={:.4} val_bpc={:.4} log_write_errors={}",
        state.step,
        state.tokens_seen,
        state.best_val_loss.unwrap_or(f64::NAN),
        state.val_loss.map(bpc).unwrap_or(f64::NAN),
        log.write_errors
    ));
    Ok(Summary {
        reason,
        steps: state.step,
        steps_this_run,
        tokens_seen: state.tokens_seen,
        secs,
        tokens_per_sec,
        best_val_loss: state.best_val_loss,
        last_val_loss: state.val_loss,
        last_val_bpc: state.val_loss.map(bpc),
        losses,
        final_checkpoint: final_path,
        story_bpc: story_bpc_value,
        log_write_errors: log.write_errors,
    })
}

/// Save `dir/snap-NNN.ckpt` (weights and state, no optimizer) and log a `snapshot` metric.
fn snapshot(
    dir: &Path,
    index: u32,
    state: &mut TrainState,
    model: &Bolt,
    elapsed_secs: f64,
    log: &mut Log,
) -> anyhow::Result<()> {
    let path = dir.join(format!("snap-{index:03}.ckpt"));
    state.elapsed_secs = elapsed_secs;
    save(&path, state, model, None, 1)?;
    log.metric(serde_json::json!({
        "kind": "snapshot", "index": index, "step": state.step, "tokens": state.tokens_seen,
        "elapsed_s": elapsed_secs, "path": path.display().to_string(),
    }));
    Ok(())
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
