//! The C API from C and from Rust: the committed header is what cbindgen writes today; the C
//! example builds with the system compiler against the static library (directly and through
//! the pkg-config file), runs, and runs clean under valgrind; bad arguments give error codes.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;

use flashlm::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn header() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include/flashlm.h")
}

#[test]
fn the_committed_header_is_what_cbindgen_generates() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::Builder::new().with_crate(dir).with_config(config).generate().unwrap().write(&mut out);
    let fresh = String::from_utf8(out).unwrap();
    if std::env::var_os("FLASHLM_BLESS").is_some() {
        std::fs::write(header(), &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(header()).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/flashlm.h is out of date: run `FLASHLM_BLESS=1 cargo test -p flashlm-capi --test capi` and commit it"
    );
}

/// target/release (or debug): where cargo put libflashlm.a next to this test's binary.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn cc() -> Option<String> {
    ["cc", "gcc", "clang"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .map(str::to_string)
}

fn compile(cc: &str, out: &Path, flags: &[String]) {
    compile_file(cc, &root().join("examples/c/generate.c"), out, flags);
}

fn compile_file(cc: &str, src: &Path, out: &Path, flags: &[String]) {
    let mut cmd = Command::new(cc);
    cmd.arg(src).arg("-Wall").arg("-Werror").arg("-o").arg(out).args(flags);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

/// `valgrind --error-exitcode=1 --leak-check=full --suppressions=crates/flashlm-capi/valgrind.supp`
/// (the README's command).
fn valgrind() -> Command {
    let mut c = Command::new("valgrind");
    c.args(["--error-exitcode=1", "--leak-check=full"]).arg(format!(
        "--suppressions={}",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("valgrind.supp").display()
    ));
    c
}

/// tests/c/misuse.c: a foreign pointer, a free inside the callback, a double free and a use
/// after free each give their status code, natively and under valgrind (no invalid read).
#[test]
fn handle_misuse_is_reported_and_valgrind_clean() {
    let Some(cc) = cc() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI has a C compiler");
        eprintln!("skipped: no C compiler (cc, gcc, clang) on this machine");
        return;
    };
    let lib = lib_dir().join("libflashlm.a");
    assert!(lib.exists(), "{} was not built (scripts/test.sh builds it)", lib.display());
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("misuse");
    let inc = format!("-I{}", header().parent().unwrap().display());
    let flags = [inc, lib.display().to_string(), "-lm".into(), "-lpthread".into(), "-ldl".into()];
    compile_file(&cc, &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/misuse.c"), &exe, &flags);
    let run = Command::new(&exe).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "misuse: ok\n");
    match Command::new("valgrind").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let v = valgrind().arg(&exe).output().unwrap();
            let err = String::from_utf8_lossy(&v.stderr);
            assert!(v.status.success() && !err.contains("Invalid read"), "valgrind found errors:\n{err}");
            assert_eq!(String::from_utf8_lossy(&v.stdout), "misuse: ok\n");
        }
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI installs valgrind (.ci/run)");
            eprintln!("skipped the valgrind run: valgrind is not installed (apt-get install valgrind)");
        }
    }
}

#[test]
fn the_c_example_builds_runs_and_is_clean_under_valgrind() {
    let Some(cc) = cc() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI has a C compiler");
        eprintln!("skipped: no C compiler (cc, gcc, clang) on this machine");
        return;
    };
    let lib = lib_dir().join("libflashlm.a");
    assert!(
        lib.exists(),
        "{} was not built: run `cargo build --release -p flashlm-capi` first (scripts/test.sh does)",
        lib.display()
    );
    let dir = std::env::temp_dir().join(format!("flashlm-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("generate");
    let inc = format!("-I{}", header().parent().unwrap().display());
    let libs = ["-lm", "-lpthread", "-ldl"].map(String::from);
    let mut flags = vec![inc, lib.display().to_string()];
    flags.extend(libs.iter().cloned());
    compile(&cc, &exe, &flags);
    let run = Command::new(&exe).arg("Once upon a time").output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{so}\n{se}");
    assert!(so.starts_with("Once upon a time") && so.len() > 40, "{so}");
    assert!(se.contains("generated") && se.contains("tokens"), "{se}");
    // The same text as the library gives for those parameters.
    let m = flashlm_model_load_bundled();
    let mut p = flashlm_default_params();
    p.max_tokens = 60;
    p.seed = 7;
    let text = generate_text(m, "Once upon a time", &p).unwrap();
    unsafe { flashlm_model_free(m) };
    assert_eq!(so.trim_end_matches('\n'), format!("Once upon a time{text}"));
    // A missing model file: exit 1 with the reason.
    let bad = Command::new(&exe).args(["Hi", "/nonexistent.flm"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.flm"));

    // pkg-config: the .pc file (prefix filled in) gives working flags.
    let prefix = dir.join("prefix");
    std::fs::create_dir_all(prefix.join("lib/pkgconfig")).unwrap();
    std::fs::create_dir_all(prefix.join("include")).unwrap();
    std::fs::copy(&lib, prefix.join("lib/libflashlm.a")).unwrap();
    std::fs::copy(header(), prefix.join("include/flashlm.h")).unwrap();
    let pc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("flashlm.pc.in"))
        .unwrap()
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(prefix.join("lib/pkgconfig/flashlm.pc"), pc).unwrap();
    match Command::new("pkg-config")
        .args(["--cflags", "--libs", "--static", "flashlm"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
    {
        Ok(o) if o.status.success() => {
            let flags: Vec<String> =
                String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect();
            let exe2 = dir.join("generate-pc");
            compile(&cc, &exe2, &flags);
            let out = Command::new(&exe2).output().unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout) == so,
                "pkg-config build differs"
            );
        }
        Ok(o) => panic!("pkg-config refused flashlm.pc: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => eprintln!("skipped the pkg-config build: no pkg-config ({e})"),
    }

    match Command::new("valgrind").arg("--version").output() {
        Ok(o) if o.status.success() => {
            // The README's command, as written (its suppressions name the process-lifetime
            // caches valgrind calls "possibly lost"; every other kind still fails).
            let v = valgrind().arg(&exe).arg("Once upon a time").output().unwrap();
            let err = String::from_utf8_lossy(&v.stderr);
            assert!(v.status.success(), "valgrind found errors:\n{err}");
            assert!(
                err.contains("possibly lost: 0 bytes") && err.contains("definitely lost: 0 bytes"),
                "{err}"
            );
            assert_eq!(String::from_utf8_lossy(&v.stdout), so, "the same text under valgrind");
            eprintln!("valgrind: clean ({})", String::from_utf8_lossy(&o.stdout).trim());
        }
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI installs valgrind (.ci/run)");
            eprintln!("skipped the valgrind run: valgrind is not installed (apt-get install valgrind)");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

unsafe extern "C" fn collect(text: *const c_char, len: usize, user: *mut c_void) -> c_int {
    // SAFETY: the library passes a valid NUL-terminated string of `len` bytes, and `user` is
    // the &mut String given to flashlm_generate.
    let (s, out) = unsafe { (CStr::from_ptr(text).to_str().unwrap(), &mut *user.cast::<String>()) };
    assert_eq!(s.len(), len);
    out.push_str(s);
    0
}

unsafe extern "C" fn stop_at_once(_: *const c_char, _: usize, _: *mut c_void) -> c_int {
    1
}

fn generate_text(m: *const FlashlmModel, prompt: &str, p: &FlashlmParams) -> Result<String, (c_int, String)> {
    let prompt = CString::new(prompt).unwrap();
    let mut out = String::new();
    let mut tokens = 0u32;
    let rc = unsafe {
        flashlm_generate(m, prompt.as_ptr(), p, Some(collect), (&raw mut out).cast(), &raw mut tokens)
    };
    if rc == FLASHLM_OK { Ok(out) } else { Err((rc, last_error())) }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(flashlm_last_error()) }.to_string_lossy().into_owned()
}

#[test]
fn null_and_invalid_arguments_return_error_codes() {
    let p = flashlm_default_params();
    let prompt = CString::new("Once").unwrap();
    let m = flashlm_model_load_bundled();
    assert!(!m.is_null());
    unsafe {
        assert!(flashlm_model_load(std::ptr::null()).is_null());
        assert!(last_error().contains("path is NULL"), "{}", last_error());
        let missing = CString::new("/nonexistent/model.flm").unwrap();
        assert!(flashlm_model_load(missing.as_ptr()).is_null());
        assert!(last_error().contains("/nonexistent/model.flm"), "{}", last_error());
        let not_a_model = CString::new(file!()).unwrap();
        assert!(flashlm_model_load(not_a_model.as_ptr()).is_null());
        assert!(!last_error().is_empty());
        assert_eq!(
            flashlm_generate(
                std::ptr::null(),
                prompt.as_ptr(),
                &p,
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            FLASHLM_ERR_ARGUMENT
        );
        assert!(last_error().contains("model is NULL"));
        assert_eq!(
            flashlm_generate(m, std::ptr::null(), &p, None, std::ptr::null_mut(), std::ptr::null_mut()),
            FLASHLM_ERR_ARGUMENT
        );
        let bad_utf8 = [0xffu8, 0xfe, 0];
        assert_eq!(
            flashlm_generate(
                m,
                bad_utf8.as_ptr().cast(),
                &p,
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            FLASHLM_ERR_ARGUMENT
        );
        assert!(last_error().contains("UTF-8"));
        let mut q = p;
        q.max_tokens = 0;
        assert_eq!(
            flashlm_generate(m, prompt.as_ptr(), &q, None, std::ptr::null_mut(), std::ptr::null_mut()),
            FLASHLM_ERR_ARGUMENT
        );
        assert!(last_error().contains("max_tokens"), "{}", last_error());
        q = p;
        q.top_p = 0.0;
        assert_eq!(
            flashlm_generate(m, prompt.as_ptr(), &q, None, std::ptr::null_mut(), std::ptr::null_mut()),
            FLASHLM_ERR_ARGUMENT
        );
        // A pointer that is not a model is refused, not followed.
        let fake = [0u64; 8];
        assert_eq!(
            flashlm_generate(
                fake.as_ptr().cast(),
                prompt.as_ptr(),
                &p,
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            FLASHLM_ERR_ARGUMENT
        );
        // NULL params and callback: the defaults, text dropped.
        let mut n = 0u32;
        assert_eq!(
            flashlm_generate(m, prompt.as_ptr(), std::ptr::null(), None, std::ptr::null_mut(), &raw mut n),
            FLASHLM_OK
        );
        assert!(n >= 1);
        assert_eq!(
            flashlm_generate(
                m,
                prompt.as_ptr(),
                &p,
                Some(stop_at_once),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            FLASHLM_STOPPED
        );
        let mut bpc = 0.0f64;
        assert_eq!(flashlm_eval_bpc(m, prompt.as_ptr(), 7, 5, &raw mut bpc), FLASHLM_ERR_ARGUMENT);
        assert_eq!(
            flashlm_eval_bpc(m, missing.as_ptr(), FLASHLM_PROTOCOL_EXACT, 5, &raw mut bpc),
            FLASHLM_ERR_IO
        );
        assert_eq!(
            flashlm_eval_bpc(m, missing.as_ptr(), FLASHLM_PROTOCOL_EXACT, 5, std::ptr::null_mut()),
            FLASHLM_ERR_ARGUMENT
        );
        assert_eq!(flashlm_model_free(std::ptr::null_mut()), FLASHLM_OK);
        assert_eq!(flashlm_model_free(m), FLASHLM_OK);
        // A dangling address no model was ever at: refused without reading it (a read of
        // page 0 would crash the test).
        let bogus = 16 as *mut FlashlmModel;
        assert_eq!(
            flashlm_generate(bogus, prompt.as_ptr(), &p, None, std::ptr::null_mut(), std::ptr::null_mut()),
            FLASHLM_ERR_ARGUMENT
        );
        assert_eq!(flashlm_model_free(bogus), FLASHLM_ERR_ARGUMENT);
        assert!(last_error().contains("not a live flashlm_model"), "{}", last_error());
        assert_eq!(CStr::from_ptr(flashlm_version()).to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}

#[test]
fn eval_bpc_matches_the_library_and_generation_is_deterministic() {
    let m = flashlm_model_load_bundled();
    let fixture = root().join("tests/fixtures/stories/tiny.txt");
    let path = CString::new(fixture.display().to_string()).unwrap();
    let mut bpc = 0.0;
    let rc = unsafe { flashlm_eval_bpc(m, path.as_ptr(), FLASHLM_PROTOCOL_ORIGINAL, 20, &raw mut bpc) };
    assert_eq!(rc, FLASHLM_OK, "{}", last_error());
    let model = flashlm_infer::model::Model::load(None, flashlm_infer::kernels::Kernel::detect()).unwrap();
    let want =
        flashlm_infer::eval::evaluate_file(&model, &fixture, 20, flashlm_infer::eval::Protocol::Original, 1)
            .unwrap();
    assert_eq!(bpc, want.bpc());
    let p = flashlm_default_params();
    let a = generate_text(m, "The cat", &p).unwrap();
    // Two threads on one model at once give the same text as one.
    let texts: Vec<String> = std::thread::scope(|s| {
        let mp = m as usize;
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(move || {
                    generate_text(mp as *const FlashlmModel, "The cat", &flashlm_default_params()).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(texts.iter().all(|t| *t == a));
    // The sampling fields reach the library's sampler: the same text as the library's.
    let mut q = p;
    (q.min_p, q.presence_penalty, q.frequency_penalty, q.repetition_penalty) = (0.05, 0.5, 0.3, 1.2);
    let got = generate_text(m, "The cat", &q).unwrap();
    let lp = flashlm_infer::generate::GenerateParams {
        sampler: flashlm_infer::sample::Sampler { min_p: 0.05, ..Default::default() },
        penalties: flashlm_infer::sample::Penalties {
            presence: 0.5,
            frequency: 0.3,
            repetition: 1.2,
            ..Default::default()
        },
        ..Default::default()
    };
    let want =
        flashlm_infer::generate::Generation::new(&model, "The cat", lp).unwrap().run(&model).unwrap().0;
    assert_eq!(got, want);
    assert_ne!(got, a);
    q.repetition_penalty = 0.0;
    assert_eq!(generate_text(m, "The cat", &q).unwrap_err().0, FLASHLM_ERR_ARGUMENT);
    // The logit bias: a -100 on the first token the plain run writes bans it.
    let first = flashlm_infer::generate::Generation::new(&model, "The cat", Default::default())
        .unwrap()
        .step(&model)
        .unwrap();
    let banned = model.tokenizer.encode(first.text.as_str())[0];
    let (ids, values) = ([u32::from(banned)], [-100.0f32]);
    let mut b = p;
    (b.logit_bias_ids, b.logit_bias_values, b.logit_bias_len) = (ids.as_ptr(), values.as_ptr(), 1);
    let got = generate_text(m, "The cat", &b).unwrap();
    let lp =
        flashlm_infer::generate::GenerateParams { logit_bias: vec![(banned, -100.0)], ..Default::default() };
    let want =
        flashlm_infer::generate::Generation::new(&model, "The cat", lp).unwrap().run(&model).unwrap().0;
    assert_eq!(got, want);
    assert!(!model.tokenizer.encode(&got).contains(&banned) || got != a);
    for (ids, values, len) in [([10_000u32], [1.0f32], 1usize), ([5], [101.0], 1)] {
        (b.logit_bias_ids, b.logit_bias_values, b.logit_bias_len) = (ids.as_ptr(), values.as_ptr(), len);
        assert_eq!(generate_text(m, "The cat", &b).unwrap_err().0, FLASHLM_ERR_ARGUMENT);
    }
    (b.logit_bias_ids, b.logit_bias_len) = (std::ptr::null(), 1);
    assert_eq!(generate_text(m, "The cat", &b).unwrap_err().0, FLASHLM_ERR_ARGUMENT);
    unsafe { flashlm_model_free(m) };
}
