//! The training loop: FlashLM v4's `train.py`. It does not know how a step is computed (an
//! [`Engine`]: fused or burn); it plans the run, feeds the batches, evaluates, samples, saves
//! checkpoints and reports.
//!
//! [`run`] reads top to bottom: check the options, read the checkpoint to resume, prepare the
//! data, build the [`Trainer`] (model, engine, state), then [`Trainer::train`] (the loop) and
//! [`Trainer::finish`] (final evaluation, checkpoints, summary).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use burn::tensor::Device;
use flashlm_core::Config;
use flashlm_core::rng::Rng;
use flashlm_data::batch::{TrainBatches, Windows};
use flashlm_data::prepare::PrepareConfig;
use flashlm_data::tokenizer::Tokenizer;
use flashlm_model::{Bolt, cpu_device};
use indicatif::ProgressStyle;

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::engine::{self, Engine};
use crate::eval::{evaluate, samples, story_bpc};
use crate::log::{Log, fmt_secs, read_train_losses, read_val_losses};
use crate::options::{LrSchedule, TrainOptions};
use crate::schedule::{lr_at, lr_at_time};
use crate::stages::{Plan, RunData};
pub use crate::summary::{StopReason, Summary};

/// Run training.
pub fn run(opts: &TrainOptions) -> anyhow::Result<Summary> {
    opts.validate()?;
    let _save_dir = checkpoint::open_save_dir(&opts.output.save_dir)?;
    let resumed = match &opts.resume {
        Some(p) => Some(checkpoint::read_to_resume(p, &opts.model, opts.optim.lr_min)?),
        None => None,
    };
    let t0 = Instant::now();
    let cfg = opts.model;
    let prepare_cfg = PrepareConfig {
        train_files: opts.data.train_files.clone(),
        val_files: opts.data.val_files.clone(),
        out_dir: opts.output.save_dir.clone(),
        vocab_size: cfg.vocab_size,
        vocab_stories: opts.data.vocab_stories,
        tokenizer: opts.data.tokenizer.clone(),
        rebuild_vocab: false,
        compress: true,
        progress: opts.output.progress,
        filter: Default::default(),
        text_column: None,
    };
    let data = RunData::prepare(&prepare_cfg, opts.data.curriculum.as_ref())?;
    if let Some(ck) = &resumed
        && ck.state.vocab_hash != data.tokenizer.fingerprint()
    {
        bail!(
            "the checkpoint was trained with another vocabulary than {}; resume with the same data and --save-dir",
            opts.output.save_dir.join("tokenizer.json").display()
        );
    }
    let log = Log::open(&opts.output.save_dir, opts.output.progress)?;
    let mut trainer = Trainer::new(opts, &data, resumed, log)?;
    trainer.header(&data, t0.elapsed().as_secs_f64());
    trainer.stage_begins(true);
    let reason = trainer.train()?;
    trainer.finish(reason)
}

/// Bits per character of a loss in nats per token.
fn bits_per_char(loss: f64, tokens_per_char: f64) -> f64 {
    loss / std::f64::consts::LN_2 * tokens_per_char
}

/// A fresh model from the run's seed. burn's generator is shared by the whole process: it is
/// seeded and drawn under one lock, so two runs in one process (tests, a library user) cannot
/// take numbers from each other.
fn init_model(cfg: &Config, seed: u64, device: &Device) -> Bolt {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(seed);
    Bolt::init(cfg, device)
}

/// Everything the loop carries from step to step.
struct Trainer<'a> {
    opts: &'a TrainOptions,
    cfg: Config,
    engine: Box<dyn Engine>,
    state: TrainState,
    batches: TrainBatches<'a>,
    val: Windows<'a>,
    stage_vals: Vec<(&'a str, Windows<'a>, f64)>, // a curriculum's own validation sets, tokens per char
    plan: Plan,
    val_files: &'a [PathBuf],
    tok: &'a Tokenizer,
    log: Log,
    rng: Rng,            // sampling
    eval_device: Device, // no autodiff
    batches_per_epoch: u64,
    steps_per_epoch: u64,
    tokens_per_step: u64,
    val_tokens_per_char: f64,   // turns a validation loss into bits per character
    planned: u64,               // the last step this process means to reach
    lr_time_limit: Option<f64>, // `--lr-schedule time`: the limit in seconds
    warmup_end_secs: Option<f64>,
    start: Instant,
    start_step: u64,
    base_elapsed: f64, // training seconds before this process
    last_log: Instant,
    losses: Vec<(u64, f64)>,
    last_eval_step: Option<u64>,
    last_latest_step: Option<u64>,
    last_snapshot_step: Option<u64>,
    snapshots_taken: u32,
}

impl<'a> Trainer<'a> {
    /// The model, the engine and the run state: fresh, or as the checkpoint left them.
    fn new(
        opts: &'a TrainOptions,
        data: &'a RunData,
        resumed: Option<Checkpoint>,
        log: Log,
    ) -> anyhow::Result<Self> {
        let cfg = opts.model;
        let train_w = Windows::new(&data.stages[0].train, cfg.seq_len);
        let val = Windows::new(&data.val.tokens, cfg.seq_len);
        let (batch_size, grad_accum) = match &resumed {
            Some(ck) => (ck.state.batch_size, ck.state.grad_accum),
            None => (opts.optim.batch_size, opts.optim.grad_accum),
        };
        let plan = Plan::new(data, cfg.seq_len, batch_size, grad_accum)?;
        let seed = resumed.as_ref().map_or(opts.seed, |ck| ck.state.seed);
        let start_batch = resumed.as_ref().map_or(0, |ck| ck.state.next_batch);
        let batches = plan.batches(data, cfg.seq_len, (batch_size, grad_accum), seed, start_batch);
        let batches_per_epoch = batches.schedule().batches_per_epoch();
        let steps_per_epoch = batches_per_epoch / grad_accum as u64;
        if steps_per_epoch == 0 && !data.curriculum {
            bail!(
                "the training data gives {} windows of {} tokens: not enough for one step of {} x {} sequences",
                train_w.len(),
                cfg.seq_len + 1,
                batch_size,
                grad_accum
            );
        }
        if val.len() < batch_size {
            bail!(
                "the validation data gives {} windows of {} tokens, fewer than one batch of {batch_size}",
                val.len(),
                cfg.seq_len + 1
            );
        }
        let model = init_model(&cfg, opts.seed, &cpu_device(true));
        let source = opts.resume.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let (state, model, optim) = match resumed {
            Some(ck) => {
                opts.check_resume(&ck.state, data.train_hash(), steps_per_epoch, plan.total.is_some())?;
                if let Some(total) = plan.total {
                    ensure!(
                        ck.state.total_steps == total,
                        "the checkpoint planned {} steps but this curriculum plans {total}: resume with the \
                         curriculum file, batch size and data it was started with",
                        ck.state.total_steps
                    );
                }
                (ck.state, checkpoint::load_model_bytes(model, &ck.model)?, ck.optim)
            }
            None => {
                let hash = data.tokenizer.fingerprint();
                let mut fresh =
                    TrainState::fresh(opts, hash, (batch_size, grad_accum), steps_per_epoch, plan.total)?;
                fresh.train_hash = Some(data.train_hash());
                (fresh, model, None)
            }
        };
        let engine = engine::create(opts.engine, &cfg, model, optim.as_deref(), &source)?;
        let lr_time_limit = match opts.schedule.lr_schedule {
            LrSchedule::Steps => None,
            LrSchedule::Time => {
                let l = opts
                    .schedule
                    .time_limit
                    .context("--lr-schedule time needs a time limit (--minutes or --hours)")?;
                ensure!(state.step == 0, "--lr-schedule time cannot resume a run; start a new one");
                Some(l.as_secs_f64())
            }
        };
        let planned = opts.schedule.max_steps.unwrap_or(state.total_steps).min(state.total_steps);
        Ok(Self {
            opts,
            cfg,
            engine,
            batches,
            val,
            stage_vals: data
                .stages
                .iter()
                .filter_map(|st| {
                    let v = st.val.as_ref()?;
                    Some((st.name.as_str(), Windows::new(&v.tokens, cfg.seq_len), v.tokens_per_char()))
                })
                .collect(),
            plan,
            val_files: &data.val_files,
            tok: &data.tokenizer,
            log,
            rng: Rng::from_state(state.sample_rng),
            eval_device: cpu_device(false),
            batches_per_epoch,
            steps_per_epoch,
            tokens_per_step: (batch_size * grad_accum * cfg.seq_len) as u64,
            val_tokens_per_char: data.val.tokens_per_char(),
            planned,
            lr_time_limit,
            warmup_end_secs: None,
            start: Instant::now(),
            start_step: state.step,
            base_elapsed: state.elapsed_secs,
            last_log: Instant::now(),
            losses: Vec::new(),
            last_eval_step: None,
            last_latest_step: None,
            last_snapshot_step: None,
            snapshots_taken: 0,
            state,
        })
    }

    fn bpc(&self, loss: f64) -> f64 {
        bits_per_char(loss, self.val_tokens_per_char)
    }

    /// The run's header in the log, and the progress line's plan.
    fn header(&mut self, data: &RunData, prepare_secs: f64) {
        let (cfg, s, opts) = (self.cfg, &self.state, self.opts);
        let mut lines = vec![
            String::new(),
            format!("{:=<60}", ""),
            format!(
                "  FlashLM v4 'Bolt' — {} ({}, {} threads)",
                cfg.name(),
                opts.engine.banner(),
                rayon::current_num_threads()
            ),
            format!("{:=<60}", ""),
            format!(
                "  Config: d={}, blocks={}, glu={}, kernel={}, vocab={}",
                cfg.dim, cfg.n_blocks, cfg.glu_hidden, cfg.conv_taps, cfg.vocab_size
            ),
            format!("  Params: {}", cfg.num_params()),
            match opts.engine {
                engine::EngineKind::Fused => {
                    format!("  Engine: fused step; {}", crate::fused::Products::for_this_cpu().describe())
                }
                engine::EngineKind::Burn => "  Engine: burn autodiff".to_string(),
            },
            format!(
                "  Batch: {} x {} accum = {} effective, seq {}",
                s.batch_size,
                s.grad_accum,
                s.batch_size * s.grad_accum,
                cfg.seq_len
            ),
            format!(
                "  LR: {} peak, warmup {}, cosine to {} over {} steps",
                s.lr_peak, s.warmup_steps, opts.optim.lr_min, s.total_steps
            ),
            format!(
                "  Data: {} train tokens ({} windows), {} val tokens; prepared in {prepare_secs:.1}s",
                data.stages.iter().map(|s| s.train.len()).sum::<usize>(),
                data.stages.iter().map(|s| Windows::new(&s.train, cfg.seq_len).len()).sum::<usize>(),
                data.val.tokens.len(),
            ),
        ];
        if let Some(v) = data.vocab_stats {
            lines.push(format!(
                "  Vocab coverage: {:.2}% of {} counted tokens",
                100.0 * v.coverage,
                v.counted_tokens
            ));
        }
        lines.extend(crate::stages::describe(data, &self.plan, self.tokens_per_step));
        if let Some(l) = opts.schedule.time_limit {
            lines.push(format!("  Time limit: {}", fmt_secs(l.as_secs_f64())));
        }
        if s.step > 0 {
            lines.push(format!(
                "  Resumed at step {}, epoch {}, {} tokens seen, best val {:?}",
                s.step, s.epoch, s.tokens_seen, s.best_val_loss
            ));
        }
        if !data.curriculum {
            lines.push(format!("  Steps/epoch: {} | planned: {}", self.steps_per_epoch, s.total_steps));
        }
        lines.push(format!("{:=<60}", ""));
        for l in &lines {
            self.log.line(l);
        }
        let bar = &self.log.bar;
        bar.set_length(self.planned);
        bar.set_position(self.state.step);
        bar.set_style(ProgressStyle::with_template("{spinner} step {pos}/{len} {msg}").expect("template"));
    }

    /// The loop: one optimizer step, then whatever falls due at that step.
    fn train(&mut self) -> anyhow::Result<StopReason> {
        if self.opts.output.snapshot_every.is_some() {
            let dir = self.opts.output.save_dir.join("snapshots");
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        self.start = Instant::now();
        self.last_log = Instant::now();
        self.opts.started.store(true, Ordering::SeqCst);
        loop {
            if let Some(reason) = self.stop_reason() {
                return Ok(reason);
            }
            let lr = self.lr();
            let step_no = self.state.step + 1;
            let r = self.engine.step(&mut self.batches, self.state.grad_accum, lr);
            if !r.loss.is_finite() {
                bail!(
                    "loss became {} at step {step_no}; stopping without saving these weights \
                     (the last good checkpoint is {}). Try a lower --lr",
                    r.loss,
                    self.opts.output.save_dir.join("latest.ckpt").display()
                );
            }
            if !r.grad_norm.is_finite() {
                bail!(
                    "gradient norm became {} at step {step_no}; stopping without saving these weights. Try a lower --lr",
                    r.grad_norm
                );
            }
            self.record_step(r.loss, r.grad_norm, lr);
            let run_secs = self.start.elapsed().as_secs_f64();
            self.maybe_snapshot(run_secs)?;
            if self.maybe_evaluate(run_secs)? {
                self.log.line("Early stopping.");
                return Ok(StopReason::EarlyStop);
            }
            self.maybe_sample_and_save()?;
            // After the stage's last evaluation, so the log reads in order.
            let step = self.state.step;
            if self.plan.stage_ends_at(step) && step < self.state.total_steps {
                self.stage_begins(false);
            }
        }
    }

    /// Whether the run stops before the next step, and why.
    fn stop_reason(&self) -> Option<StopReason> {
        let (s, o) = (&self.state, &self.opts.schedule);
        if self.opts.stop.load(Ordering::SeqCst) {
            Some(StopReason::Interrupted)
        } else if o.time_limit.is_some_and(|l| self.start.elapsed() >= l) {
            Some(StopReason::TimeLimit)
        } else if o.max_steps.is_some_and(|m| s.step >= m) {
            Some(StopReason::MaxSteps)
        } else if s.step >= s.total_steps {
            Some(StopReason::Epochs)
        } else {
            None
        }
    }

    /// The learning rate of the next step.
    fn lr(&mut self) -> f64 {
        let s = &self.state;
        let min = self.opts.optim.lr_min;
        match self.lr_time_limit {
            None => lr_at(s.step, s.total_steps, s.warmup_steps, s.lr_peak, min),
            Some(limit) => {
                let secs = self.start.elapsed().as_secs_f64();
                if s.step >= s.warmup_steps && self.warmup_end_secs.is_none() {
                    self.warmup_end_secs = Some(secs);
                }
                lr_at_time(s.step, s.warmup_steps, secs, self.warmup_end_secs, limit, s.lr_peak, min)
            }
        }
    }

    /// Count a finished step: state, metrics row, progress line and (every few seconds) a log line.
    fn record_step(&mut self, loss: f64, grad_norm: f64, lr: f64) {
        let s = &mut self.state;
        s.step += 1;
        s.tokens_seen += self.tokens_per_step;
        s.next_batch = self.batches.position();
        s.epoch = self.batches.epoch_of(s.next_batch);
        self.losses.push((s.step, loss));
        let run_secs = self.start.elapsed().as_secs_f64();
        let done = (s.step - self.start_step) as f64;
        let tok_s = done * self.tokens_per_step as f64 / run_secs.max(1e-9);
        let eta = match self.opts.schedule.time_limit {
            Some(l) => l.as_secs_f64() - run_secs,
            None => self.planned.saturating_sub(s.step) as f64 * run_secs / done,
        };
        let (step, epoch, tokens) = (s.step, s.epoch, s.tokens_seen);
        self.log.metric(serde_json::json!({
            "kind": "train", "step": step, "epoch": epoch, "loss": loss, "lr": lr,
            "grad_norm": grad_norm, "tokens": tokens, "tok_s": tok_s, "elapsed_s": self.base_elapsed + run_secs,
        }));
        let msg = format!(
            "loss {loss:.4} | lr {lr:.2e} | {tok_s:.0} tok/s | {:.2}M tokens | ETA {}",
            tokens as f64 / 1e6,
            fmt_secs(eta)
        );
        self.log.bar.set_position(step);
        self.log.bar.set_message(msg.clone());
        if self.last_log.elapsed().as_secs_f64() >= self.opts.output.log_every_secs {
            self.log.line(&format!("  Step {step:>6} | {msg}"));
            self.last_log = Instant::now();
        }
    }

    /// Log the stage the next step trains on: at the start of a curriculum run (`start`) and
    /// at every stage switch (a `stage` row in `metrics.jsonl`, a line on `loss.png`).
    fn stage_begins(&mut self, start: bool) {
        if self.plan.total.is_none() {
            return;
        }
        let (step, tokens) = (self.state.step, self.state.tokens_seen);
        let (line, row) = self.plan.stage_line(step, tokens, self.state.batch_size, start);
        self.log.line(&line);
        if !start || step == 0 {
            self.log.metric(row);
        }
    }

    /// A snapshot when the next `--snapshot-minutes` interval has passed.
    fn maybe_snapshot(&mut self, run_secs: f64) -> anyhow::Result<()> {
        if let Some(every) = self.opts.output.snapshot_every
            && run_secs >= every.as_secs_f64() * f64::from(self.snapshots_taken + 1)
        {
            self.snapshots_taken += 1;
            self.snapshot(self.snapshots_taken, self.base_elapsed + run_secs)?;
        }
        Ok(())
    }

    /// Save `snapshots/snap-NNN.ckpt` (weights and state, no optimizer) and log a `snapshot` row.
    fn snapshot(&mut self, index: u32, elapsed_secs: f64) -> anyhow::Result<()> {
        let path = self.opts.output.save_dir.join("snapshots").join(format!("snap-{index:03}.ckpt"));
        self.state.elapsed_secs = elapsed_secs;
        checkpoint::save(&path, &self.state, self.engine.model()?, None, 1)?;
        self.last_snapshot_step = Some(self.state.step);
        self.log.metric(serde_json::json!({
            "kind": "snapshot", "index": index, "step": self.state.step, "tokens": self.state.tokens_seen,
            "elapsed_s": elapsed_secs, "path": path.display().to_string(),
        }));
        Ok(())
    }

    /// Validation when due (every `--eval-every` steps and at each epoch's end); saves
    /// `best.ckpt` on improvement. Returns whether patience ran out.
    fn maybe_evaluate(&mut self, run_secs: f64) -> anyhow::Result<bool> {
        let s = &self.state;
        // A curriculum evaluates at the end of every stage instead of every epoch.
        let epoch_done = match self.plan.total {
            Some(_) => self.plan.stage_ends_at(s.step),
            None => {
                s.next_batch % self.batches_per_epoch < s.grad_accum as u64
                    && s.step.is_multiple_of(self.steps_per_epoch)
            }
        };
        // `--eval-batches 0`: no validation while training (timed comparisons, where it would
        // take wall time the other side does not spend).
        let eval = &self.opts.eval;
        if eval.batches == 0 || !(eval.every.due(s.step) || epoch_done) {
            return Ok(false);
        }
        let vl = self.validation_loss()?;
        self.last_eval_step = Some(self.state.step);
        let best = self.state.best_val_loss.unwrap_or(f64::INFINITY);
        self.log.line(&format!("  >>> Val loss: {vl:.4} (bpc≈{:.4}, best: {best:.4})", self.bpc(vl)));
        self.val_metric(vl, self.base_elapsed + run_secs);
        self.stage_validation(self.base_elapsed + run_secs)?;
        if vl < best {
            self.state.best_val_loss = Some(vl);
            self.state.patience_used = 0;
            self.state.elapsed_secs = self.base_elapsed + run_secs;
            self.save_best()?;
            self.log.line("  New best! Saved best.ckpt");
        } else {
            self.state.patience_used += 1;
            let line =
                format!("  No improvement ({}/{})", self.state.patience_used, self.opts.schedule.patience);
            self.log.line(&line);
        }
        self.plot();
        let patience = self.opts.schedule.patience;
        Ok(patience > 0 && self.state.patience_used >= patience)
    }

    fn validation_loss(&mut self) -> anyhow::Result<f64> {
        let (val, batch, n) = (self.val, self.state.batch_size, self.opts.eval.batches);
        let vl = evaluate(self.engine.model()?, val, batch, n, &self.eval_device).unwrap_or(f64::NAN);
        self.state.val_loss = Some(vl);
        Ok(vl)
    }

    fn val_metric(&mut self, vl: f64, elapsed_s: f64) {
        let bpc = self.bpc(vl);
        self.log.metric(serde_json::json!({
            "kind": "val", "step": self.state.step, "val_loss": vl, "val_bpc": bpc,
            "tokens": self.state.tokens_seen, "elapsed_s": elapsed_s,
        }));
    }

    /// Each curriculum stage's own validation set, logged apart (`val_stage` rows).
    fn stage_validation(&mut self, elapsed_s: f64) -> anyhow::Result<()> {
        let (batch, n) = (self.state.batch_size, self.opts.eval.batches);
        for i in 0..self.stage_vals.len() {
            let (name, windows, per_char) = self.stage_vals[i];
            let vl = evaluate(self.engine.model()?, windows, batch, n, &self.eval_device).unwrap_or(f64::NAN);
            let bpc = bits_per_char(vl, per_char);
            self.log.line(&format!("      stage {name:?} val loss: {vl:.4} (bpc≈{bpc:.4})"));
            self.log.metric(serde_json::json!({
                "kind": "val_stage", "stage": name, "step": self.state.step, "val_loss": vl, "val_bpc": bpc,
                "tokens": self.state.tokens_seen, "elapsed_s": elapsed_s,
            }));
        }
        Ok(())
    }

    fn save_best(&mut self) -> anyhow::Result<()> {
        let path = self.opts.output.save_dir.join("best.ckpt");
        checkpoint::save(&path, &self.state, self.engine.model()?, None, 1)
    }

    /// Checkpoint (model, state and optimizer) at `path`, keeping `keep - 1` older versions.
    fn save_full(&mut self, path: &Path, keep: usize) -> anyhow::Result<()> {
        let optim = self.engine.optim_bytes()?;
        checkpoint::save(path, &self.state, self.engine.model()?, Some(optim), keep)
    }

    /// `loss.png` from the metrics so far (a failure to draw does not stop training).
    fn plot(&self) {
        let dir = &self.opts.output.save_dir;
        let switches: Vec<u64> = crate::log::read_stage_switches(dir);
        let _ = crate::plot::loss_png(
            &dir.join("loss.png"),
            &read_train_losses(dir),
            &read_val_losses(dir),
            &switches,
        );
    }

    fn log_samples(&mut self) -> anyhow::Result<()> {
        let (tokens, seq) = (self.opts.eval.sample_tokens, self.cfg.seq_len);
        let lines = samples(self.engine.model()?, self.tok, tokens, seq, &mut self.rng, &self.eval_device);
        for l in lines {
            self.log.line(&l);
        }
        Ok(())
    }

    /// Samples every `--sample-every` steps, `latest.ckpt` every `--save-every` steps.
    fn maybe_sample_and_save(&mut self) -> anyhow::Result<()> {
        if self.opts.eval.sample_every.due(self.state.step) {
            self.log_samples()?;
        }
        self.state.sample_rng = self.rng.state();
        if self.opts.output.save_every.due(self.state.step) {
            self.state.elapsed_secs = self.base_elapsed + self.start.elapsed().as_secs_f64();
            let latest = self.opts.output.save_dir.join("latest.ckpt");
            self.save_full(&latest, self.opts.output.keep_last)?;
            self.last_latest_step = Some(self.state.step);
            self.log.line(&format!("  Checkpoint: {}", latest.display()));
        }
        Ok(())
    }

    /// After the loop: the last snapshot and validation, the final checkpoints, samples, the
    /// story BPC and the summary.
    fn finish(mut self, reason: StopReason) -> anyhow::Result<Summary> {
        self.log.bar.finish_and_clear();
        let secs = self.start.elapsed().as_secs_f64();
        self.state.elapsed_secs = self.base_elapsed + secs;
        let interrupted = reason == StopReason::Interrupted;
        if interrupted {
            self.log.line("Interrupted: saving a checkpoint...");
        }
        let progressed = self.state.step > self.start_step;
        if self.opts.output.snapshot_every.is_some()
            && self.last_snapshot_step != Some(self.state.step)
            && progressed
        {
            self.snapshot(self.snapshots_taken + 1, self.base_elapsed + secs)?;
        }
        if self.opts.eval.batches > 0 && self.last_eval_step != Some(self.state.step) && progressed {
            let vl = self.validation_loss()?;
            self.log.line(&format!("  >>> Final val loss: {vl:.4} (bpc≈{:.4})", self.bpc(vl)));
            self.val_metric(vl, self.state.elapsed_secs);
            self.stage_validation(self.state.elapsed_secs)?;
            if vl < self.state.best_val_loss.unwrap_or(f64::INFINITY) {
                self.state.best_val_loss = Some(vl);
                self.save_best()?;
            }
        }
        self.state.sample_rng = self.rng.state();
        let dir = self.opts.output.save_dir.clone();
        let final_path = dir.join(if interrupted { "latest.ckpt" } else { "final.ckpt" });
        // latest.ckpt of this very step is replaced in place, so the kept versions stay older steps.
        let keep_latest =
            if self.last_latest_step == Some(self.state.step) { 1 } else { self.opts.output.keep_last };
        self.save_full(&final_path, if interrupted { keep_latest } else { 1 })?;
        if !interrupted {
            self.save_full(&dir.join("latest.ckpt"), keep_latest)?;
        }
        self.plot();
        if !interrupted && progressed && !self.opts.eval.sample_every.due(self.state.step) {
            self.log_samples()?;
        }
        let story_bpc = self.final_story_bpc()?;
        Ok(self.report(reason, secs, final_path, story_bpc))
    }

    /// The original protocol's validation BPC of the final weights (`--final-bpc-stories`).
    fn final_story_bpc(&mut self) -> anyhow::Result<Option<f64>> {
        let n = self.opts.eval.final_bpc_stories;
        if n == 0 {
            return Ok(None);
        }
        let val_stories = flashlm_data::read_stories(self.val_files)?;
        let (b, n) = story_bpc(self.engine.model()?, self.tok, &val_stories.texts, n, &self.eval_device);
        self.log.line(&format!("  Validation BPC (original protocol, {n} stories, final weights): {b:.4}"));
        self.log.metric(serde_json::json!({"kind": "bpc", "step": self.state.step, "protocol": "original", "stories": n, "bpc": b}));
        Ok(Some(b))
    }

    /// The closing lines of the log (ending with the `summary:` line) and the [`Summary`].
    fn report(
        mut self,
        reason: StopReason,
        secs: f64,
        final_path: PathBuf,
        story_bpc: Option<f64>,
    ) -> Summary {
        let s = self.state.clone();
        let steps_this_run = s.step - self.start_step;
        let tokens_per_sec = steps_this_run as f64 * self.tokens_per_step as f64 / secs.max(1e-9);
        let done = if reason == StopReason::Interrupted { "INTERRUPTED" } else { "COMPLETE" };
        let mut lines = vec![
            String::new(),
            format!("{:=<60}", ""),
            format!("  TRAINING {done} ({reason:?})"),
            format!("{:=<60}", ""),
            format!("  Config: {} | Params: {}", self.cfg.name(), self.cfg.num_params()),
            format!(
                "  Steps: {} ({steps_this_run} this run) | Tokens: {} ({:.2}M)",
                s.step,
                s.tokens_seen,
                s.tokens_seen as f64 / 1e6
            ),
            format!("  Time: {} this run | Speed: {tokens_per_sec:.0} tok/s", fmt_secs(secs)),
        ];
        if let Some(b) = s.best_val_loss {
            lines.push(format!("  Best val loss: {b:.4} (bpc≈{:.4})", self.bpc(b)));
        }
        lines.push(format!(
            "  Saved: {} (resume with --resume {})",
            final_path.display(),
            final_path.display()
        ));
        lines.push(format!("{:=<60}", ""));
        for l in &lines {
            self.log.line(l);
        }
        let last_val_bpc = s.val_loss.map(|v| self.bpc(v));
        let summary = format!(
            "summary: steps={} tokens={} secs={secs:.1} tok_s={tokens_per_sec:.0} best_val_loss={:.4} val_bpc={:.4} log_write_errors={}",
            s.step,
            s.tokens_seen,
            s.best_val_loss.unwrap_or(f64::NAN),
            last_val_bpc.unwrap_or(f64::NAN),
            self.log.write_errors
        );
        self.log.line(&summary);
        Summary {
            reason,
            steps: s.step,
            steps_this_run,
            tokens_seen: s.tokens_seen,
            secs,
            tokens_per_sec,
            best_val_loss: s.best_val_loss,
            last_val_loss: s.val_loss,
            last_val_bpc,
            losses: std::mem::take(&mut self.losses),
            final_checkpoint: final_path,
            story_bpc,
            log_write_errors: self.log.write_errors,
        }
    }
}
