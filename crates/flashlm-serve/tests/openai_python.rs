//! The official `openai` Python package (installed by `.ci/run` from PyPI) against the
//! server: completions, chat, streaming, errors (`tests/openai_client.py`).

mod common;

use std::process::Command;

#[test]
fn the_openai_python_client_works_against_the_server() {
    let probe = Command::new("python3").args(["-c", "import openai"]).output();
    let missing = match &probe {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Some(format!("python3: {e}")),
    };
    if let Some(why) = missing {
        // CI installs it (.ci/run); anywhere else, say why it did not run.
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have the openai package: {why}");
        eprintln!("skipped: the openai Python package is not installed (pip install openai): {why}");
        return;
    }
    let mut c = common::config();
    c.api_key = Some("test-key".into());
    let s = common::start(c);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new("python3").args([script, &s.url, "test-key"]).output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai_client.py failed:\n{so}\n{se}");
    eprintln!("{}", so.trim());
}
