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
