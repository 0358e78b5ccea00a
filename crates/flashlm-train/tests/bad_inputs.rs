//! Every bad invocation in `tests/bad_inputs.txt`, run against the real binaries: a clear
//! message, exit code 1 or 2, no panic, no abort.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flashlm_infer::format::{self, EmbeddingDtype, Kind, TensorOut};
use flashlm_train::checkpoint::{self, Checkpoint};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of the workspace: this package's from Cargo, the others beside them (`cargo test
/// --workspace` builds every binary before it runs a test).
fn binary(name: &str) -> PathBuf {
    match name {
        "flashlm-train" => PathBuf::from(env!("CARGO_BIN_EXE_flashlm-train")),
        "flashlm-export" => PathBuf::from(env!("CARGO_BIN_EXE_flashlm-export")),
        other => {
            let p = Path::new(env!("CARGO_BIN_EXE_flashlm-train")).with_file_name(other);
            assert!(p.exists(), "{} is not built: run cargo test --workspace", p.display());
            p
        }
    }
}

/// A tiny model's file with some tensors replaced.
fn crafted_flm(
    base: &[u8],
    edit: impl Fn(&str, &mut TensorOut),
    embedding: Option<EmbeddingDtype>,
) -> Vec<u8> {
    let f = format::read(base).unwrap();
    let mut header = f.header;
    if let Some(e) = embedding {
        header.embedding = e;
    }
    let mut names: Vec<&String> = f.tensors.keys().collect();
    names.sort();
    let tensors: Vec<TensorOut> = names
        .into_iter()
        .map(|n| {
            let t = &f.tensors[n];
            let mut out = TensorOut {
                name: n.clone(),
                kind: t.kind,
                shape: t.dims().to_vec(),
                scale: t.scale,
                data: t.data.to_vec(),
            };
            edit(n, &mut out);
            out
        })
        .collect();
    format::write(&header, &tensors).unwrap()
}

/// Norm gains of 3e38 and ternary scales of 60,000: each value finite, together far past f32.
fn overflow_edit(name: &str, t: &mut TensorOut) {
    if name.ends_with("norm1.scale") || name.ends_with("norm2.scale") {
        t.data = std::iter::repeat_n(3e38f32.to_le_bytes(), t.data.len() / 4).flatten().collect();
    }
    if t.kind == Kind::Ternary {
        t.scale = 60_000.0;
    }
}

/// Build the files the table refers to; returns the placeholder values.
fn fixtures(dir: &Path) -> HashMap<&'static str, String> {
    let mut m = HashMap::new();
    let stories = workspace().join("tests/fixtures/stories/tiny.txt");
    m.insert("dir", dir.display().to_string());
    m.insert("stories", stories.display().to_string());

    // A real checkpoint: two steps of the tiny model on the fixture stories.
    let run = dir.join("run");
    let out = Command::new(binary("flashlm-train"))
        .args([
            "--tiny",
            "--max-steps",
            "2",
            "--batch",
            "2",
            "--eval-batches",
            "0",
            "--final-bpc-stories",
            "0",
        ])
        .args(["--sample-tokens", "4", "--quiet", "--train-file"])
        .arg(&stories)
        .arg("--val-file")
        .arg(&stories)
        .arg("--save-dir")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = run.join("final.ckpt");
    m.insert("good_ckpt", good.display().to_string());
    let ck = checkpoint::read(&good).unwrap();
    type Damage = fn(&mut Checkpoint);
    let damaged: [(&str, Damage); 7] = [
        ("ck_optim", |c| c.optim = Some(vec![7; 64])),
        ("ck_batch0", |c| c.state.batch_size = 0),
        ("ck_accum0", |c| c.state.grad_accum = 0),
        ("ck_dim", |c| c.state.config.dim = 1 << 40),
        ("ck_params", |c| {
            c.state.config.dim = 1 << 14;
            c.state.config.n_blocks = 1024;
        }),
        ("ck_lr", |c| c.state.lr_peak = -5.0),
        ("ck_short", |c| c.model.truncate(1000)),
    ];
    for (name, damage) in damaged {
        let mut c = ck.clone();
        damage(&mut c);
        let p = run.join(format!("{name}.ckpt"));
        std::fs::write(&p, checkpoint::to_bytes(&c)).unwrap();
        m.insert(name, p.display().to_string());
    }
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    let flipped = run.join("flipped.ckpt");
    std::fs::write(&flipped, bytes).unwrap();
    m.insert("ck_flipped", flipped.display().to_string());

    // The same stories with other words: other training data for the same vocabulary.
    let other = dir.join("other.txt");
    std::fs::write(&other, std::fs::read_to_string(&stories).unwrap().replace("the", "a")).unwrap();
    m.insert("other_stories", other.display().to_string());
    let run_tok = dir.join("run_tok.json");
    std::fs::copy(run.join("tokenizer.json"), &run_tok).unwrap();
    m.insert("run_tok", run_tok.display().to_string());
    // A save dir this test process holds, as a running flashlm-train would.
    let locked = dir.join("locked");
    std::mem::forget(flashlm_train::checkpoint::open_save_dir(&locked).unwrap());
    m.insert("locked_dir", locked.display().to_string());
    // A full-size vocabulary of GPT-2 ids that story text never uses: nearly all UNK.
    let rare =
        flashlm_data::tokenizer::Tokenizer::from_id_to_base(10_000, (40_000..49_996).collect()).unwrap();
    let tok_unk = dir.join("tok_unk.json");
    rare.save(&tok_unk, None).unwrap();
    m.insert("tok_unk", tok_unk.display().to_string());

    let tok = flashlm_data::tokenizer::Tokenizer::from_id_to_base(256, (0..252).collect()).unwrap();
    let tok256 = dir.join("tok256.json");
    tok.save(&tok256, None).unwrap();
    m.insert("tok256", tok256.display().to_string());

    // Models: the engine's tiny golden model, edited.
    let base = std::fs::read(workspace().join("tests/fixtures/engine/tiny.flm")).unwrap();
    let (v, d) = {
        let h = format::read(&base).unwrap().header;
        (h.config.vocab_size, h.config.dim)
    };
    let nan_f16 = crafted_flm(
        &base,
        |n, t| {
            if n == "embedding.weight" {
                t.kind = Kind::F16;
                t.data =
                    (0..v * d).flat_map(|i| if i == 3 { 0x7E00u16 } else { 0x2E66 }.to_le_bytes()).collect();
            }
        },
        Some(EmbeddingDtype::F16),
    );
    // Every value finite, together too large for f32.
    let overflow = crafted_flm(&base, overflow_edit, None);
    let mut big_scale = base.clone();
    // The first ternary entry's scale, patched in place (the writer refuses to write it):
    // the directory (offset at byte 52, count at 48) has 80-byte entries, scale at 36, kind at 40.
    let u = |o: usize, n: usize| base[o..o + n].iter().rev().fold(0usize, |a, &b| a << 8 | b as usize);
    let (count, dir_at) = (u(48, 4), u(52, 8));
    let entry = (0..count)
        .map(|i| dir_at + i * format::ENTRY_LEN)
        .find(|&o| u(o + 40, 4) == Kind::Ternary as usize)
        .expect("a ternary tensor");
    big_scale[entry + 36..entry + 40].copy_from_slice(&3e38f32.to_le_bytes());
    let small = std::fs::read(workspace().join("models/flashlm-small.flm")).unwrap();
    let overflow_small = crafted_flm(&small, overflow_edit, None);
    #[cfg(unix)]
    {
        let zero = dir.join("zero.txt");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        m.insert("zero_txt", zero.display().to_string());
        // FIFOs with no writer under every input name (a plain open would block forever).
        for (key, name) in [
            ("fifo_txt", "fifo.txt"),
            ("fifo_json", "fifo.json"),
            ("fifo_toml", "fifo.toml"),
            ("fifo_parquet", "fifo.parquet"),
            ("fifo_flm", "fifo.flm"),
            ("fifo_ckpt", "fifo.ckpt"),
        ] {
            let p = dir.join(name);
            assert!(Command::new("mkfifo").arg(&p).status().unwrap().success(), "mkfifo {}", p.display());
            m.insert(key, p.display().to_string());
        }
    }
    // 1 MB of pseudo-random bytes without NUL, and a zstd file expanding 200 MiB.
    let mut x = 7u32;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((x >> 24) as u8).max(1)
        })
        .collect();
    let noise_txt = dir.join("noise.txt");
    std::fs::write(&noise_txt, noise).unwrap();
    m.insert("noise_txt", noise_txt.display().to_string());
    let bomb = dir.join("bomb.txt.zst");
    std::fs::write(&bomb, zstd::encode_all(&vec![b'a'; 200 << 20][..], 19).unwrap()).unwrap();
    m.insert("bomb_zst", bomb.display().to_string());
    let panic_pq = workspace().join("crates/flashlm-data/tests/fixtures/decoder-panic.parquet");
    m.insert("decoder_panic_parquet", panic_pq.display().to_string());
    for (name, bytes) in [
        ("flm_overflow_small", overflow_small),
        ("flm_nan_f16", nan_f16),
        ("flm_overflow", overflow),
        ("flm_big_scale", big_scale),
        ("flm_truncated", base[..base.len() / 2].to_vec()),
    ] {
        let p = dir.join(format!("{name}.flm"));
        std::fs::write(&p, bytes).unwrap();
        m.insert(name, p.display().to_string());
    }
    m
}

/// Run to the end, or kill it after 60 s (a hang is a failure, not a stuck test).
fn run_bounded(cmd: &mut Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            let mut err = out.stderr.clone();
            err.extend_from_slice(b"\n[killed: still running after 60 s]");
            return std::process::Output { stderr: err, ..out };
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn every_bad_invocation_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let vars = fixtures(dir.path());
    let table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs.txt")).unwrap();
    let mut failures = Vec::new();
    let mut rows = 0;
    for line in table.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let parts: Vec<&str> = line.splitn(3, " | ").collect();
        assert_eq!(parts.len(), 3, "bad table line: {line}");
        let (bin, args, want) = (parts[0], parts[1], parts[2]);
        let args: Vec<String> = args
            .split_whitespace()
            .map(|a| vars.iter().fold(a.to_string(), |a, (k, v)| a.replace(&format!("{{{k}}}"), v)))
            .collect();
        let out = run_bounded(Command::new(binary(bin)).args(&args).current_dir(dir.path()));
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        rows += 1;
        let ok = matches!(code, Some(1 | 2)) && err.contains(want) && !err.contains("panicked");
        // An OS error is printed once, not once per layer of context.
        let once = err.matches("(os error").count() <= 1;
        println!("{bin} {} -> exit {code:?}: {}", args.join(" "), err.lines().next().unwrap_or(""));
        if !ok || !once {
            failures
                .push(format!("{bin} {}\n  exit {code:?}, wanted {want:?}\n  stderr: {err}", args.join(" ")));
        }
    }
    assert!(rows >= 50, "only {rows} rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} bad invocations misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
