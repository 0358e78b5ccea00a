//! The flashlm-infer binary on the committed tiny model: output and bad input.

use std::path::PathBuf;
use std::process::Command;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/engine/tiny.flm")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flashlm-infer")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
#[cfg_attr(target_os = "wasi", ignore = "WASI cannot start processes; runs natively and on aarch64")]
fn generates_deterministically_and_reports_speed() {
    let m = model();
    let m = m.to_str().unwrap();
    let args = ["--model", m, "--prompt", "Zebra", "--max-tokens", "30", "--seed", "5", "--ignore-eos"];
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert!(out.starts_with("Zebra") && out.len() > 5, "{out}");
    assert!(err.contains("tok/s"), "{err}");
    let (_, again, _) = run(&args);
    assert_eq!(out, again, "same seed, same text");
    // The 6-bit kernels (the default, and portable-i6) compute the same integers: the same
    // text; so do the exact ones (scalar and the fastest exact kernel) among themselves.
    let (ok, portable, err) = run(&[&args[..], &["--kernel", "portable-i6"]].concat());
    assert!(ok, "{err}");
    assert_eq!(portable, out, "the portable kernel changed the default's text");
    let (ok, exact, err) = run(&[&args[..], &["--kernel", "exact"]].concat());
    assert!(ok, "{err}");
    let (ok, scalar, err) = run(&[&args[..], &["--kernel", "scalar"]].concat());
    assert!(ok, "{err}");
    assert_eq!(scalar, exact, "the scalar and the fastest exact kernel wrote different text");
}

#[test]
#[cfg_attr(target_os = "wasi", ignore = "WASI cannot start processes; runs natively and on aarch64")]
fn bad_input_gives_a_clear_error() {
    let m = model();
    let m = m.to_str().unwrap();
    for (args, expect) in [
        (vec!["--prompt", "", "--max-tokens", "5"], "empty"),
        (vec!["--model", "/nonexistent.flm", "--prompt", "hi"], "cannot read model"),
        (vec!["--model", env!("CARGO_MANIFEST_DIR"), "--prompt", "hi"], "cannot read model"),
        (vec!["--model", m, "--prompt", ""], "empty"),
        (vec!["--model", m, "--prompt", "hi", "--max-tokens", "0"], "max-tokens"),
        (vec!["--model", m, "--prompt", "qqqqqqqqqqqq"], "vocabulary"),
        (vec!["--model", m, "--prompt", "hi", "--kernel", "neon9"], "unknown kernel"),
        (vec!["--model", m, "--prompt", "hi", "--top-p", "0"], "top-p"),
        (vec!["--model", m], "prompt"),
        (vec!["eval", "--model", m, "--data", "/nonexistent.txt"], "nonexistent"),
        (vec!["--no-such-flag"], "unexpected argument"),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
#[cfg_attr(target_os = "wasi", ignore = "WASI cannot start processes; runs natively and on aarch64")]
fn eval_prints_bpc_for_both_protocols() {
    let dir = tempfile_dir();
    let data = dir.join("stories.txt");
    std::fs::write(&data, "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 !?\n<|endoftext|>\nshort\n<|endoftext|>\n").unwrap();
    let m = model();
    let (ok, out, err) = run(&["eval", "--model", m.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("original") && l.contains("stories 1 ") && l.contains(" bpc ")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("exact") && l.contains("stories 2 ") && l.contains(" bpc ")),
        "{out}"
    );
    // --json: one object per protocol, the same figures.
    let (ok, js, err) =
        run(&["eval", "--model", m.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = js.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{js}");
    for (row, line) in rows.iter().zip(out.lines()) {
        let bpc = line.split_whitespace().skip_while(|w| *w != "bpc").nth(1).unwrap();
        assert_eq!(format!("{:.4}", row["bpc"].as_f64().unwrap()), bpc, "{row} vs {line}");
        assert!(line.starts_with(row["protocol"].as_str().unwrap()), "{row} vs {line}");
    }
    assert_eq!(rows[1]["stories"], 2);
    assert_eq!(rows[0]["cut"], 0);
    assert!(!err.contains("warning"), "{err}");
    // A story longer than the original protocol's 257 tokens: a warning names the cut.
    let long = dir.join("long.txt");
    let story = "Once upon a time there was a little cat who liked to play. ".repeat(40);
    std::fs::write(
        &long,
        format!(
            "{story}\n<|endoftext|>\nA short one, but long enough to be scored by the original protocol.\n"
        ),
    )
    .unwrap();
    let (ok, js, err) =
        run(&["eval", "--model", m.to_str().unwrap(), "--data", long.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: the original protocol scored only the first 257 tokens of 1 of 2 stories"),
        "{err}"
    );
    assert!(js.lines().next().unwrap().contains("\"cut\": 1"), "{js}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("flashlm-infer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `FLASHLM_ISA` caps what dispatch picks: an AVX-512 machine runs the AVX2-only choices,
/// and any machine the portable ones; `--kernel` / `--head` names are checked against it.
#[test]
#[cfg_attr(target_os = "wasi", ignore = "WASI cannot start processes; runs natively and on aarch64")]
fn isa_cap_changes_the_defaults() {
    let m = model();
    let m = m.to_str().unwrap();
    let run_isa = |isa: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flashlm-infer"))
            .args(
                [&["--model", m, "--prompt", "Zebra", "--max-tokens", "5", "--seed", "1"][..], extra]
                    .concat(),
            )
            .env("FLASHLM_ISA", isa)
            .env_remove("FLASHLM_KERNEL")
            .env_remove("FLASHLM_HEAD")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run_isa("portable", &[]);
    assert!(ok, "{err}");
    assert!(err.contains("kernel portable-i6 | head portable"), "{err}");
    let (ok, err) = run_isa("portable", &["--kernel", "avx2"]);
    assert!(!ok && err.contains("kernel avx2 needs AVX2"), "{err}");
    // What the avx2 half needs (AVX2 + FMA + F16C), as the library's dispatch sees it.
    let has_avx2 = flashlm_infer::model::HeadPath::Avx2.runs_here();
    if has_avx2 {
        let (ok, err) = run_isa("avx2", &[]);
        assert!(ok, "{err}");
        assert!(err.contains("kernel avx2-i6 | head avx2"), "{err}");
        let (ok, err) = run_isa("avx2", &["--kernel", "exact"]);
        assert!(ok && err.contains("kernel avx2 | head avx2"), "{err}");
        let (ok, err) = run_isa("avx2", &["--kernel", "avx512"]);
        assert!(!ok && err.contains("needs AVX-512F"), "{err}");
    } else {
        eprintln!("skipped the FLASHLM_ISA=avx2 half: this CPU has no AVX2 + FMA + F16C");
    }
}

/// Started as `cmd &` from a script (SIGINT inherited as ignored), it still stops on SIGINT.
#[test]
#[cfg(unix)]
#[cfg_attr(target_os = "wasi", ignore = "WASI cannot start processes")]
fn sigint_stops_it_even_when_started_with_sigint_ignored() {
    use std::time::{Duration, Instant};
    let exe = env!("CARGO_BIN_EXE_flashlm-infer");
    // `trap '' INT` makes the shell, and what it execs, ignore SIGINT.
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "trap '' INT; exec '{exe}' --prompt Once --temperature 0 --ignore-eos --max-tokens 100000000"
            ),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "it ended before the signal");
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flashlm-infer ignored SIGINT for 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(2), "{status}");
}
