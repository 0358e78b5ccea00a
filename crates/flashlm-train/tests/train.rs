//! End-to-end trainer checks on the tiny config and the shared TinyStories text.

use flashlm_core::Config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use std::time::Duration;

use flashlm_train::checkpoint;
use flashlm_train::engine::EngineKind;
use flashlm_train::log::read_train_losses;
use flashlm_train::options::{
    DataOptions, EvalOptions, Every, LrSchedule, OptimOptions, OutputOptions, ScheduleOptions, TrainOptions,
};
use flashlm_train::train::{StopReason, run};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("FLASHLM_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    assert!(
        dir.join("tinystories-valid.txt.zst").exists(),
        "no TinyStories text in {} (set FLASHLM_DATA_DIR)",
        dir.display()
    );
    dir
}

fn opts(save_dir: &Path) -> TrainOptions {
    let d = data_dir();
    TrainOptions {
        model: Config::tiny(),
        engine: EngineKind::Fused,
        seed: 42,
        resume: None,
        given: Default::default(),
        data: DataOptions {
            train_files: vec![
                d.join("tinystories-train-v1.txt.zst"),
                d.join("tinystories-train-v2gpt4.txt.zst"),
            ],
            val_files: vec![d.join("tinystories-valid.txt.zst")],
            vocab_stories: 50_000,
            tokenizer: None,
            curriculum: None,
        },
        optim: OptimOptions { batch_size: 4, grad_accum: 1, lr_peak: 4e-3, lr_min: 1e-5, warmup: 10 },
        schedule: ScheduleOptions {
            epochs: 1,
            time_limit: None,
            max_steps: None,
            lr_schedule: LrSchedule::Steps,
            patience: 100,
        },
        eval: EvalOptions {
            every: Every::steps(10),
            batches: 4,
            sample_every: Every::steps(1000),
            sample_tokens: 8,
            final_bpc_stories: 0,
        },
        output: OutputOptions {
            save_dir: save_dir.to_path_buf(),
            save_every: Every::steps(1000),
            keep_last: 2,
            snapshot_every: None,
            log_every_secs: 1e9,
            progress: false,
        },
        stop: Arc::new(AtomicBool::new(false)),
        started: Arc::new(AtomicBool::new(false)),
    }
}

/// `opts(dir)` with some fields changed: `with(dir, |o| o.schedule.max_steps = Some(5))`.
fn with(save_dir: &Path, f: impl FnOnce(&mut TrainOptions)) -> TrainOptions {
    let mut o = opts(save_dir);
    f(&mut o);
    o
}

#[test]
fn eval_batches_zero_means_no_validation() {
    // Timed comparisons turn validation off; with the defaults it runs every 10 steps here.
    let dir = tempfile::tempdir().unwrap();
    let s = run(&with(dir.path(), |o| {
        o.schedule.max_steps = Some(25);
        o.eval.batches = 0;
    }))
    .unwrap();
    assert_eq!(s.steps, 25);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert!(!metrics.contains("\"val\""), "a validation row was written");
    assert!(!dir.path().join("best.ckpt").exists() && dir.path().join("final.ckpt").exists());
}

#[test]
fn time_schedule_with_snapshots_ends_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let o = with(dir.path(), |o| {
        o.schedule.epochs = 1000;
        o.schedule.time_limit = Some(Duration::from_millis(2500));
        o.schedule.lr_schedule = LrSchedule::Time;
        o.output.snapshot_every = Some(Duration::from_millis(800));
        o.eval.every = Every::OFF;
    });
    let s = run(&o).unwrap();
    assert_eq!(s.reason, StopReason::TimeLimit);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let snaps: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "snapshot").collect();
    // At 0.8, 1.6 and 2.4 s, then the end (unless the last step landed exactly on one).
    assert!((3..=4).contains(&snaps.len()), "{} snapshots", snaps.len());
    let mut last_elapsed = 0.0;
    for (i, r) in snaps.iter().enumerate() {
        let e = r["elapsed_s"].as_f64().unwrap();
        assert!(e >= 0.8 * (i + 1).min(3) as f64 && e > last_elapsed, "snapshot {i} at {e} s");
        last_elapsed = e;
        let ck = checkpoint::read(Path::new(r["path"].as_str().unwrap())).unwrap();
        assert_eq!(ck.state.step, r["step"].as_u64().unwrap());
        assert_eq!(ck.state.tokens_seen, r["tokens"].as_u64().unwrap());
    }
    assert_eq!(snaps.last().unwrap()["step"].as_u64(), Some(s.steps), "the last snapshot is the final model");
    // The schedule ran its course: the last steps' LR is near the minimum, not the peak.
    let lrs: Vec<f64> =
        rows.iter().filter(|r| r["kind"] == "train").map(|r| r["lr"].as_f64().unwrap()).collect();
    let peak = lrs.iter().cloned().fold(0.0, f64::max);
    assert!(peak > 0.9 * o.optim.lr_peak, "warmup reached the peak: {peak}");
    assert!(*lrs.last().unwrap() < 0.1 * o.optim.lr_peak, "last LR {}", lrs.last().unwrap());

    let tmp = tempfile::tempdir().unwrap();
    let e = run(&with(tmp.path(), |o| o.schedule.lr_schedule = LrSchedule::Time));
    assert!(e.unwrap_err().to_string().contains("time limit"));
}

#[test]
fn resume_gives_the_same_losses_as_an_uninterrupted_run() {
    for engine in [EngineKind::Fused, EngineKind::Burn] {
        resume_check(engine);
    }
}

fn resume_check(engine: EngineKind) {
    let a = tempfile::tempdir().unwrap();
    let straight = run(&with(a.path(), |o| {
        o.schedule.max_steps = Some(24);
        o.optim.grad_accum = 2;
        o.engine = engine;
    }))
    .unwrap();
    assert_eq!(straight.steps, 24);

    let b = tempfile::tempdir().unwrap();
    let first = run(&with(b.path(), |o| {
        o.schedule.max_steps = Some(11);
        o.optim.grad_accum = 2;
        o.engine = engine;
    }))
    .unwrap();
    assert_eq!(first.reason, StopReason::MaxSteps);
    let resumed = run(&with(b.path(), |o| {
        o.schedule.max_steps = Some(24);
        o.optim.grad_accum = 2;
        o.resume = Some(b.path().join("latest.ckpt"));
        o.engine = engine;
        // Every flag a resume takes from the checkpoint, given with the checkpoint's value.
        let all = true;
        o.given = flashlm_train::options::Given {
            batch: all,
            grad_accum: all,
            lr: all,
            warmup: all,
            seed: all,
            epochs: all,
        };
    }))
    .unwrap();
    assert_eq!(resumed.steps_this_run, 13);
    let joined: Vec<(u64, f64)> = first.losses.iter().chain(&resumed.losses).copied().collect();
    assert_eq!(joined.len(), straight.losses.len());
    for ((sa, la), (sb, lb)) in straight.losses.iter().zip(&joined) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-6 * la.abs(),
            "{engine:?} step {sa}: {la} uninterrupted vs {lb} resumed"
        );
    }
    // The metrics file of the resumed directory holds every step once.
    assert_eq!(read_train_losses(b.path()).len(), 24);
    assert!(b.path().join("loss.png").exists() && b.path().join("training.log").exists());
}

#[test]
fn fused_and_burn_engines_train_alike() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fused = run(&with(a.path(), |o| {
        o.schedule.max_steps = Some(30);
    }))
    .unwrap();
    let burn = run(&with(b.path(), |o| {
        o.schedule.max_steps = Some(30);
        o.engine = EngineKind::Burn;
    }))
    .unwrap();
    for ((s, lf), (_, lb)) in fused.losses.iter().zip(&burn.losses) {
        assert!((lf - lb).abs() <= 1e-3 * lb.abs(), "step {s}: fused {lf} vs burn {lb}");
    }
    let (vf, vb) = (fused.last_val_loss.unwrap(), burn.last_val_loss.unwrap());
    assert!((vf - vb).abs() <= 1e-3 * vb, "validation loss: fused {vf} vs burn {vb}");
    // A checkpoint resumes only with the engine that wrote it.
    let c = tempfile::tempdir().unwrap();
    let o = with(c.path(), |o| {
        o.schedule.max_steps = Some(31);
        o.resume = Some(a.path().join("latest.ckpt"));
        o.engine = EngineKind::Burn;
    });
    let err = format!("{:#}", run(&o).unwrap_err());
    assert!(err.contains("--engine fused"), "{err}");
}

#[test]
fn two_hundred_steps_reduce_validation_loss() {
    let dir = tempfile::tempdir().unwrap();
    let s = run(&with(dir.path(), |o| {
        o.schedule.max_steps = Some(200);
        o.eval.every = Every::steps(100);
        o.optim.warmup = 20;
    }))
    .unwrap();
    let ln_v = (Config::tiny().vocab_size as f64).ln();
    let first_val = flashlm_train::log::read_val_losses(dir.path())[0].1;
    let last = s.last_val_loss.unwrap();
    assert!(last < first_val - 0.2, "val loss went {first_val} (step 100) -> {last} (step 200)");
    assert!(last < ln_v - 1.5, "val loss {last} is not far below ln(V) = {ln_v}");
    let first_train = s.losses[0].1;
    assert!((first_train - ln_v).abs() < 0.1, "initial loss {first_train} vs ln(V) {ln_v}");
}

#[test]
fn bad_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(&with(dir.path(), |o| {
        o.schedule.max_steps = Some(3);
    }))
    .unwrap();
    let latest = dir.path().join("latest.ckpt");

    let truncated = dir.path().join("truncated.ckpt");
    let bytes = std::fs::read(&latest).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_ckpt = dir.path().join("training.log");
    let other = tempfile::tempdir().unwrap();
    for (path, config, expect) in [
        (truncated.clone(), Config::tiny(), "truncated"),
        (not_ckpt, Config::tiny(), "not a FlashLM checkpoint"),
        (latest.clone(), Config { dim: 48, ..Config::tiny() }, "another model"),
        (dir.path().join("best.ckpt"), Config::tiny(), "weights only"),
    ] {
        let o = with(other.path(), |o| {
            o.model = config;
            o.schedule.max_steps = Some(5);
            o.resume = Some(path.clone());
        });
        let err = format!("{:#}", run(&o).unwrap_err());
        assert!(err.contains(expect), "{}: {err}", path.display());
    }
    // Nothing was written by the refused runs.
    assert!(!other.path().join("final.ckpt").exists());
}

#[test]
fn cli_stops_on_nan_and_saves_on_ctrl_c() {
    let exe = env!("CARGO_BIN_EXE_flashlm-train");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(exe)
        .args(["--tiny", "--quiet", "--max-steps", "20", "--lr", "1e30", "--warmup", "0", "--save-dir"])
        .arg(dir.path())
        .env("FLASHLM_DATA_DIR", data_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("at step") && !err.contains("panicked"), "{err}");
    assert!(!dir.path().join("final.ckpt").exists() && !dir.path().join("latest.ckpt").exists());

    // Ctrl-C (SIGINT) mid-run: a resumable checkpoint is written, the exit is orderly.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(exe)
        .args(["--tiny", "--quiet", "--max-steps", "1000000", "--log-every", "1000", "--save-dir"])
        .arg(dir.path())
        .env("FLASHLM_DATA_DIR", data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first step is done (its row is in metrics.jsonl), then interrupt.
    let metrics = dir.path().join("metrics.jsonl");
    while !std::fs::read_to_string(&metrics).is_ok_and(|l| l.contains("\"train\"")) {
        assert!(child.try_wait().unwrap().is_none(), "training exited before its first step");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("INTERRUPTED"), "{stdout}");
    let ck = flashlm_train::checkpoint::read(&dir.path().join("latest.ckpt")).unwrap();
    assert!(ck.state.step > 0 && ck.optim.is_some());
}

#[test]
fn patience_zero_never_stops_early_and_latest_versions_are_kept() {
    // Validation every 2 steps with a high LR: without patience it would stop early.
    let dir = tempfile::tempdir().unwrap();
    let s = run(&with(dir.path(), |o| {
        o.schedule.max_steps = Some(12);
        o.eval.every = Every::steps(2);
        o.output.save_every = Every::steps(4);
        o.schedule.patience = 0;
        o.output.keep_last = 3;
    }))
    .unwrap();
    assert_eq!(s.reason, StopReason::MaxSteps);
    assert_eq!(s.steps, 12);
    assert_eq!(s.log_write_errors, 0);
    // latest.ckpt is the end; latest.1 and latest.2 the two saves before it (the end's own
    // second write of step 12 replaces it in place).
    let step = |name: &str| flashlm_train::checkpoint::read(&dir.path().join(name)).unwrap().state.step;
    assert_eq!(step("latest.ckpt"), 12);
    assert_eq!(step("latest.1.ckpt"), 8);
    assert_eq!(step("latest.2.ckpt"), 4);
    assert!(!dir.path().join("latest.3.ckpt").exists());
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_under_the_logs_is_reported_and_counted_not_fatal() {
    // /dev/full accepts the open and fails every write with ENOSPC.
    let dir = tempfile::tempdir().unwrap();
    for name in ["training.log", "metrics.jsonl"] {
        std::os::unix::fs::symlink("/dev/full", dir.path().join(name)).unwrap();
    }
    let s = run(&with(dir.path(), |o| {
        o.schedule.max_steps = Some(5);
        o.eval.batches = 0;
    }))
    .unwrap();
    assert_eq!(s.steps, 5);
    assert!(s.log_write_errors >= 5, "{} failed writes counted", s.log_write_errors);
    assert!(dir.path().join("final.ckpt").exists());
}

/// A two-stage curriculum on the tiny config: V1 stories for 20 steps, then V2-GPT4 stories
/// (a quarter of every batch still V1) for 20 more, each stage with its own validation set.
fn curriculum_opts(save_dir: &Path, spec_dir: &Path) -> TrainOptions {
    let d = data_dir();
    let spec = spec_dir.join("curriculum.toml");
    std::fs::write(
        &spec,
        format!(
            "[[stage]]\nname = \"v1\"\ntrain_files = [{:?}]\nval_files = [{:?}]\ntokens = 2560\n\n\
             [[stage]]\nname = \"v2gpt4\"\ntrain_files = [{:?}]\nval_files = [{:?}]\ntokens = 2560\nmix_previous = 0.25\n",
            d.join("tinystories-train-v1.txt.zst"),
            d.join("tinystories-valid.txt.zst"),
            d.join("tinystories-train-v2gpt4.txt.zst"),
            d.join("extra/tinystories-train-v1valsplit-0606-1000.txt.zst"),
        ),
    )
    .unwrap();
    with(save_dir, |o| {
        o.data.train_files.clear();
        o.data.curriculum = Some(flashlm_data::curriculum::Curriculum::load(&spec).unwrap());
    })
}

#[test]
fn a_curriculum_switches_stages_and_resumes_exactly_across_the_boundary() {
    let spec = tempfile::tempdir().unwrap();
    let a = tempfile::tempdir().unwrap();
    let straight = run(&curriculum_opts(a.path(), spec.path())).unwrap();
    // 2560 tokens / (4 x 32) per step = 20 steps per stage; the schedule spans both.
    assert_eq!((straight.steps, straight.reason), (40, StopReason::Epochs));
    let metrics = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stages: Vec<(u64, &str)> = rows
        .iter()
        .filter(|r| r["kind"] == "stage")
        .map(|r| (r["step"].as_u64().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    assert_eq!(stages, vec![(0, "v1"), (20, "v2gpt4")]);
    // Every evaluation reports both stages' validation sets apart (steps 10, 20, 30, 40).
    for name in ["v1", "v2gpt4"] {
        let steps: Vec<u64> = rows
            .iter()
            .filter(|r| r["kind"] == "val_stage" && r["stage"] == name)
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![10, 20, 30, 40], "{name}");
    }
    let log = std::fs::read_to_string(a.path().join("training.log")).unwrap();
    assert!(log.contains("Stage 2/2 \"v2gpt4\" begins at step 21"), "{log}");
    assert!(log.contains("1 of 4 windows per batch from \"v1\""), "{log}");
    // The LR schedule spans the whole curriculum: it is still high at the switch.
    let lr_at = |step: u64| {
        rows.iter().find(|r| r["kind"] == "train" && r["step"] == step).unwrap()["lr"].as_f64().unwrap()
    };
    assert!(lr_at(21) > 0.5 * 4e-3 && lr_at(40) < 1e-4, "{} {}", lr_at(21), lr_at(40));

    // Stopped in stage 1 (step 13), then in stage 2 (step 27), then run to the end.
    let b = tempfile::tempdir().unwrap();
    let mut joined = Vec::new();
    for (stop, resume) in [(Some(13), false), (Some(27), true), (None, true)] {
        let mut o = curriculum_opts(b.path(), spec.path());
        o.schedule.max_steps = stop;
        if resume {
            o.resume = Some(b.path().join("latest.ckpt"));
        }
        joined.extend(run(&o).unwrap().losses);
    }
    assert_eq!(joined.len(), straight.losses.len());
    for ((sa, la), (sb, lb)) in straight.losses.iter().zip(&joined) {
        assert_eq!(sa, sb);
        assert!((la - lb).abs() <= 1e-6 * la.abs(), "step {sa}: {la} uninterrupted vs {lb} resumed");
    }
    // A resume with another curriculum is refused.
    let mut o = curriculum_opts(b.path(), spec.path());
    if let Some(c) = o.data.curriculum.as_mut() {
        c.stages[1].length = flashlm_data::curriculum::StageLength::Tokens(5120);
    }
    o.resume = Some(b.path().join("latest.ckpt"));
    let err = format!("{:#}", run(&o).unwrap_err());
    assert!(err.contains("curriculum plans 60"), "{err}");
}
