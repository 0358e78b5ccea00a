//! `flashlm-train`: train FlashLM v4 "Bolt" on a CPU (the original `train.py`'s interface).

use flashlm_core::Config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use flashlm_data::prepare::{DEFAULT_DATA_DIR, find_split_files, resolve_split_files};
use flashlm_train::engine::EngineKind;
use flashlm_train::options::{
    DataOptions, EvalOptions, Every, Given, LrSchedule, OptimOptions, OutputOptions, ScheduleOptions,
    TrainOptions, duration_arg,
};
use flashlm_train::train::{StopReason, run};

#[derive(ValueEnum, Debug, Clone, Copy)]
enum EngineArg {
    Fused,
    Burn,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ScheduleArg {
    Steps,
    Time,
}

#[derive(Parser, Debug)]
#[command(
    name = "flashlm-train",
    version,
    about = "Train FlashLM v4 'Bolt' ternary language models on a CPU",
    // `--minutes -1` is a bad value to report, not an unknown flag.
    allow_negative_numbers = true
)]
struct Cli {
    /// Small config: d=192, 6 blocks, h=512, seq 256 (4.36M params).
    #[arg(long, conflicts_with_all = ["large", "tiny"])]
    small: bool,
    /// Large config: d=384, 8 blocks, h=1024, seq 512. Default when >= 8 cores and >= 32 GB RAM.
    #[arg(long, conflicts_with = "tiny")]
    large: bool,
    /// Tiny config for smoke tests: d=32, 2 blocks, h=64, seq 32.
    #[arg(long)]
    tiny: bool,
    /// Continue from a checkpoint (latest.ckpt or final.ckpt); its model size is used.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Epochs to plan; the LR schedule spans them.
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Time limit in hours.
    #[arg(long, conflicts_with = "minutes")]
    hours: Option<f64>,
    /// Time limit in minutes.
    #[arg(long)]
    minutes: Option<f64>,
    /// What the cosine LR schedule spans: `steps` (the planned epochs, as the original) or
    /// `time` (the --minutes/--hours limit: it ends exactly when time is up).
    #[arg(long, value_enum, default_value_t = ScheduleArg::Steps)]
    lr_schedule: ScheduleArg,
    /// Save snapshots/snap-NNN.ckpt every this many minutes of training (and at the end),
    /// e.g. for quality-against-time curves (scripts/quality-run.sh).
    #[arg(long)]
    snapshot_minutes: Option<f64>,
    /// Stop after this many optimizer steps in total.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Sequences per micro-batch (default: small 8 on any machine: on 2 cores ~25% more
    /// tokens/s than 2, and every published figure uses it; large max(4, min(64, 2*cores))).
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per optimizer step (default: small 1, large 2).
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Peak learning rate (default: small 4e-3, large 3e-3).
    #[arg(long)]
    lr: Option<f64>,
    /// Final learning rate of the cosine schedule.
    #[arg(long, default_value_t = 1e-5)]
    lr_min: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// Random seed (init, data order, samples).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Directory for checkpoints, logs, tokenizer and token caches.
    #[arg(long, default_value = "checkpoints")]
    save_dir: PathBuf,
    /// Folder with story files (`*train*`, `*valid*`); used when --train-file/--val-file are absent.
    #[arg(long, env = "FLASHLM_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Training story file (.txt / .jsonl, optionally .zst). Repeatable.
    #[arg(long = "train-file")]
    train_files: Vec<PathBuf>,
    /// Train in stages from a curriculum file (TOML or JSON; docs/CURRICULUM.md): each stage
    /// names its files, its length and a mixing share of the stage before. The LR schedule
    /// spans all stages (--epochs is unused).
    #[arg(long, conflicts_with = "train_files")]
    curriculum: Option<PathBuf>,
    /// Validation story file. Repeatable.
    #[arg(long = "val-file")]
    val_files: Vec<PathBuf>,
    /// Use this tokenizer.json (ours or the original's) instead of building the vocabulary.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Training stories counted to build the vocabulary.
    #[arg(long, default_value_t = 50_000)]
    vocab_stories: usize,
    /// Worker threads (default: all cores; at most 4 per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Evaluate every N steps (`off`: only at each epoch's end and at the end).
    #[arg(long, default_value = "1000")]
    eval_every: Every,
    /// Validation batches per evaluation (0: no validation while training, so no early
    /// stopping and no best.ckpt; for timed comparisons).
    #[arg(long, default_value_t = 50)]
    eval_batches: usize,
    /// Print samples every N steps (`off`: only at the end).
    #[arg(long, default_value = "2000")]
    sample_every: Every,
    /// Write latest.ckpt every N steps (`off`: only at the end and on a signal).
    #[arg(long, default_value = "5000")]
    save_every: Every,
    /// Early stop after N evaluations without improvement (0: never stop early).
    #[arg(long, default_value_t = 3)]
    patience: u32,
    /// Versions of latest.ckpt kept: latest.ckpt, latest.1.ckpt (the one before), ...
    #[arg(long, default_value_t = 2)]
    keep_last: usize,
    /// Tokens generated per sample.
    #[arg(long, default_value_t = 150)]
    sample_tokens: usize,
    /// At the end, report validation BPC (FlashLM v4's protocol) over this many stories (0: skip).
    #[arg(long, default_value_t = 500)]
    final_bpc_stories: usize,
    /// Seconds between log lines.
    #[arg(long, default_value_t = 30.0)]
    log_every: f64,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// How a step is computed: `fused` (hand-written forward/backward, the fast default) or
    /// `burn` (burn autodiff on the reference graph). A checkpoint resumes with the engine that
    /// wrote it.
    #[arg(long, value_enum, default_value_t = EngineArg::Fused)]
    engine: EngineArg,
}

fn total_ram_gb() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(4.0)
}

/// Keep freed tensor buffers in the heap instead of returning them to the OS after every op:
/// burn allocates and frees large buffers each step, and glibc's default thresholds turn
/// that into mmap/munmap churn and page faults (measured ~1.2-1.5x on this workload).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called right after parsing the
    // command line, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The flags, and which of those a resume takes from its checkpoint were typed explicitly.
fn parse_cli() -> (Cli, Given) {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let on_command_line = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let given = Given {
        batch: on_command_line("batch"),
        grad_accum: on_command_line("grad_accum"),
        lr: on_command_line("lr"),
        warmup: on_command_line("warmup"),
        seed: on_command_line("seed"),
        epochs: on_command_line("epochs"),
    };
    (cli, given)
}

fn real_main() -> anyhow::Result<ExitCode> {
    let (cli, given) = parse_cli();
    // burn's graph allocates and frees large tensors all the time; the fused engine allocates
    // a few large buffers per step from two threads, which one arena would serialise.
    if matches!(cli.engine, EngineArg::Burn) {
        tune_malloc();
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    if let Some(n) = cli.threads {
        flashlm_core::limits::check_threads(n).map_err(anyhow::Error::msg)?;
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    // The model size: explicit flag, else the checkpoint's, else auto by hardware.
    let resume_cfg = match &cli.resume {
        Some(p) if !(cli.small || cli.large || cli.tiny) => {
            Some(flashlm_train::checkpoint::read_for_resume(p)?.state.config)
        }
        _ => None,
    };
    let auto_large = cores >= 8 && total_ram_gb() >= 32.0;
    let config = if cli.tiny {
        Config::tiny()
    } else if cli.large {
        Config::large()
    } else if cli.small {
        Config::small()
    } else if let Some(c) = resume_cfg {
        c
    } else if auto_large {
        Config::large()
    } else {
        Config::small()
    };
    let large = config == Config::large();
    let batch = cli.batch.unwrap_or(if large { (2 * cores).clamp(4, 64) } else { 8 });
    let grad_accum = cli.grad_accum.unwrap_or(if large { 2 } else { 1 });
    let lr = cli.lr.unwrap_or(if large { 3e-3 } else { 4e-3 });
    let time_limit = match (cli.hours, cli.minutes) {
        (Some(h), _) => Some(duration_arg("--hours", h * 3600.0)?),
        (_, Some(m)) => Some(duration_arg("--minutes", m * 60.0)?),
        _ => None,
    };
    let snapshot_every =
        cli.snapshot_minutes.map(|m| duration_arg("--snapshot-minutes", m * 60.0)).transpose()?;
    anyhow::ensure!(
        cli.lr_schedule == ScheduleArg::Steps || time_limit.is_some(),
        "--lr-schedule time needs a time limit: add --minutes or --hours"
    );
    let (stop, started) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let signal = Arc::new(AtomicI32::new(0));
    watch_signals(stop.clone(), started.clone(), signal.clone())?;

    let data_dir = cli.data_dir.clone();
    let mut opts = TrainOptions {
        model: config,
        engine: match cli.engine {
            EngineArg::Fused => EngineKind::Fused,
            EngineArg::Burn => EngineKind::Burn,
        },
        seed: cli.seed,
        resume: cli.resume,
        given,
        data: DataOptions {
            train_files: cli.train_files,
            val_files: cli.val_files,
            vocab_stories: cli.vocab_stories,
            tokenizer: cli.tokenizer,
            curriculum: cli
                .curriculum
                .as_deref()
                .map(flashlm_data::curriculum::Curriculum::load)
                .transpose()?,
        },
        optim: OptimOptions {
            batch_size: batch,
            grad_accum,
            lr_peak: lr,
            lr_min: cli.lr_min,
            warmup: cli.warmup,
        },
        schedule: ScheduleOptions {
            epochs: cli.epochs,
            time_limit,
            max_steps: cli.max_steps,
            lr_schedule: match cli.lr_schedule {
                ScheduleArg::Steps => LrSchedule::Steps,
                ScheduleArg::Time => LrSchedule::Time,
            },
            patience: cli.patience,
        },
        eval: EvalOptions {
            every: cli.eval_every,
            batches: cli.eval_batches,
            sample_every: cli.sample_every,
            sample_tokens: cli.sample_tokens,
            final_bpc_stories: cli.final_bpc_stories,
        },
        output: OutputOptions {
            save_dir: cli.save_dir,
            save_every: cli.save_every,
            keep_last: cli.keep_last,
            snapshot_every,
            log_every_secs: cli.log_every,
            progress: !cli.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        },
        stop,
        started,
    };
    // Every flag is checked before the data is looked for.
    opts.validate()?;
    resolve_data(&mut opts, &data_dir)?;
    let summary = run(&opts)?;
    Ok(if summary.reason == StopReason::Interrupted {
        // The shell's convention for "ended by signal N".
        ExitCode::from(128 + signal.load(Ordering::SeqCst).clamp(1, 127) as u8)
    } else {
        ExitCode::SUCCESS
    })
}

/// The story files of the run: a curriculum's main validation set (its own `val_files`, else
/// --val-file, else the data folder's), or the plain run's train and validation files.
fn resolve_data(opts: &mut TrainOptions, data_dir: &std::path::Path) -> anyhow::Result<()> {
    match &opts.data.curriculum {
        // A curriculum's main validation set: its own `val_files`, else --val-file, else the
        // data folder's.
        Some(c) if !c.val_files.is_empty() => opts.data.val_files = c.val_files.clone(),
        Some(_) if !opts.data.val_files.is_empty() => {}
        Some(_) => {
            let (_, v) = find_split_files(data_dir).with_context(|| {
                format!(
                    "the curriculum names no val_files and the data folder {} cannot be read \
                     (add val_files to the curriculum, --val-file, or --data-dir)",
                    data_dir.display()
                )
            })?;
            anyhow::ensure!(
                !v.is_empty(),
                "no validation files: add val_files to the curriculum or pass --val-file"
            );
            opts.data.val_files = v;
        }
        None => {
            let (train_files, val_files) = resolve_split_files(
                data_dir,
                std::mem::take(&mut opts.data.train_files),
                std::mem::take(&mut opts.data.val_files),
            )?;
            opts.data.train_files = train_files;
            opts.data.val_files = val_files;
        }
    }
    Ok(())
}

/// SIGINT (Ctrl-C), SIGTERM (a batch scheduler's preemption, `kill`) and SIGHUP (a closed
/// terminal) all finish the current step, save `latest.ckpt` and exit with 128 + the signal's
/// number; a second signal exits at once without saving. Before the first step (the data
/// still being read, the vocabulary built) there is nothing to save: the first signal exits
/// at once.
fn watch_signals(
    stop: Arc<AtomicBool>,
    started: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let name = match sig {
                SIGINT => "Ctrl-C",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            if !started.load(Ordering::SeqCst) {
                let _ = writeln!(
                    std::io::stderr(),
                    "\n{name} before the first training step: nothing to save; exiting."
                );
                std::process::exit(128 + sig);
            }
            if stop.swap(true, Ordering::SeqCst) {
                let _ = writeln!(std::io::stderr(), "\nSecond signal ({name}): exiting without saving.");
                std::process::exit(128 + sig);
            }
            signal.store(sig, Ordering::SeqCst);
            let _ = writeln!(
                std::io::stderr(),
                "\n{name}: finishing the current step, then saving a checkpoint (again to abort)..."
            );
        }
    });
    Ok(())
}
