//! SIGTERM (a scheduler's preemption) and SIGHUP (a closed terminal) save like Ctrl-C: the
//! current step finishes, latest.ckpt is written, and the exit code is 128 + the signal.
#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flashlm_train::checkpoint;

#[test]
fn sigterm_and_sighup_save_a_checkpoint_and_exit_with_the_signals_code() {
    let stories = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/stories/tiny.txt");
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP"), (libc::SIGINT, "Ctrl-C")] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flashlm-train"))
            .args([
                "--tiny",
                "--minutes",
                "10",
                "--epochs",
                "100000",
                "--batch",
                "2",
                "--eval-batches",
                "0",
                "--save-every",
                "1000000",
            ])
            .args(["--sample-every", "1000000", "--final-bpc-stories", "0", "--patience", "0", "--quiet"])
            .arg("--train-file")
            .arg(&stories)
            .arg("--val-file")
            .arg(&stories)
            .arg("--save-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the first step is done (its row is in metrics.jsonl); the child must be
        // alive all along.
        let metrics = dir.path().join("metrics.jsonl");
        while !std::fs::read_to_string(&metrics).is_ok_and(|l| l.contains("\"train\"")) {
            assert!(child.try_wait().unwrap().is_none(), "{name}: training exited before its first step");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(128 + sig), "{name}: {err}\n{text}");
        assert!(err.contains(name), "{name}: {err}");
        let ck = checkpoint::read(&dir.path().join("latest.ckpt")).unwrap();
        assert!(ck.state.step > 0, "{name}: no step saved");
        assert!(ck.optim.is_some(), "{name}: the checkpoint must resume");
        assert!(!dir.path().join("final.ckpt").exists());
    }
}

/// A signal while the data is still being read (here ~10 MB of stories to tokenize) ends the
/// run at once: there is nothing to save yet, and waiting for a first step could take minutes.
#[test]
fn a_signal_before_the_first_step_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/stories/tiny.txt"),
    )
    .unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, tiny.repeat(16_000)).unwrap();
    let save = dir.path().join("run");
    let t0 = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashlm-train"))
        .args(["--tiny", "--max-steps", "5", "--eval-batches", "0", "--sample-every", "off"])
        .args(["--final-bpc-stories", "0", "--quiet", "--train-file"])
        .arg(&big)
        .arg("--val-file")
        .arg(&big)
        .arg("--save-dir")
        .arg(&save)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the signal");
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let sent = t0.elapsed();
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed() - sent;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{err}");
    assert!(err.contains("SIGTERM before the first training step"), "{err}");
    assert!(took < Duration::from_millis(500), "it took {took:?} to stop");
    assert!(!save.join("latest.ckpt").exists() && !save.join("final.ckpt").exists());
}
