//! SimpleStories / FineWeb-Edu downloads against a hub the test serves on 127.0.0.1: the
//! tree API (two pages), Parquet shards with Range support, a resume, a 404, corrupt shards,
//! the shard limits, then the prepare step on what came down (filters included).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashlm_data::download::hub::{HubDataset, ShardLimits, download_dataset};
use flashlm_data::download::{DownloadError, DownloadOptions, DownloadOutcome, part_path};
use sha2::Digest;

/// Path -> (status line, extra headers, body).
type Routes = Arc<Mutex<HashMap<String, (String, Vec<String>, Vec<u8>)>>>;
/// Requests seen: (path, Range start).
type Seen = Arc<Mutex<Vec<(String, Option<u64>)>>>;

fn serve(routes: Routes) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (routes, seen) = (routes.clone(), seen2.clone());
            std::thread::spawn(move || answer(stream, &routes, &seen));
        }
    });
    (addr, seen)
}

fn answer(mut s: TcpStream, routes: &Routes, seen: &Seen) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).map(|n| n == 1).unwrap_or(false) {
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let range: Option<u64> = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(str::to_string))
        .and_then(|r| r.trim().trim_end_matches('-').parse().ok());
    seen.lock().unwrap().push((path.clone(), range));
    let route = routes.lock().unwrap().get(&path).cloned();
    let (status, mut headers, body) = match route {
        None => ("404 Not Found".to_string(), vec![], b"not found".to_vec()),
        Some((status, headers, body)) => match range {
            Some(start) if status.starts_with("200") && start >= body.len() as u64 => (
                "416 Range Not Satisfiable".into(),
                vec![format!("Content-Range: bytes */{}", body.len())],
                vec![],
            ),
            Some(start) if status.starts_with("200") => (
                "206 Partial Content".into(),
                vec![format!("Content-Range: bytes {start}-{}/{}", body.len() - 1, body.len())],
                body[start as usize..].to_vec(),
            ),
            _ => (status, headers, body),
        },
    };
    headers.push(format!("Content-Length: {}", body.len()));
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for h in headers {
        out.push_str(&h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes());
    if method != "HEAD" {
        let _ = s.write_all(&body);
    }
}

fn sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn parquet_bytes(dir: &Path, name: &str, column: &str, texts: &[String], scores: &[i64]) -> Vec<u8> {
    let p = dir.join(name);
    let rows: Vec<(Option<&str>, Option<i64>)> =
        texts.iter().zip(scores.iter().cycle()).map(|(t, &s)| (Some(t.as_str()), Some(s))).collect();
    common::write_parquet(&p, column, &rows, 64);
    std::fs::read(&p).unwrap()
}

fn stories(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} story {i}: Once upon a time a cat named Tom {i} saw a dog.")).collect()
}

fn opts() -> DownloadOptions {
    DownloadOptions {
        retries: 1,
        backoff: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        progress: false,
    }
}

/// A SimpleStories hub: test shard and train shard 0 on the first listing page, train shard
/// 1 on the second.
fn simplestories_hub(tmp: &Path) -> (Routes, HashMap<&'static str, Vec<u8>>) {
    let repo = "/datasets/SimpleStories/SimpleStories/resolve/main/data";
    let mut shards = HashMap::new();
    shards.insert(
        "test-00000-of-00001.parquet",
        parquet_bytes(tmp, "t.parquet", "story", &stories("valid", 40), &[1]),
    );
    shards.insert(
        "train-00000-of-00002.parquet",
        parquet_bytes(tmp, "a.parquet", "story", &stories("train a", 300), &[1]),
    );
    shards.insert(
        "train-00001-of-00002.parquet",
        parquet_bytes(tmp, "b.parquet", "story", &stories("train b", 200), &[1]),
    );
    let entry = |name: &str| {
        let b = &shards[name];
        serde_json::json!({"type": "file", "path": format!("data/{name}"), "size": b.len(),
            "lfs": {"oid": sha(b), "size": b.len(), "pointerSize": 134}})
    };
    let page1 = serde_json::json!([entry("test-00000-of-00001.parquet"), entry("train-00000-of-00002.parquet"),
        {"type": "directory", "path": "data/sub"}, {"type": "file", "path": "data/README.md", "size": 10}]);
    let page2 = serde_json::json!([entry("train-00001-of-00002.parquet")]);
    let routes: Routes = Arc::default();
    {
        let mut r = routes.lock().unwrap();
        let api = "/api/datasets/SimpleStories/SimpleStories/tree/main/data";
        r.insert(
            api.into(),
            (
                "200 OK".into(),
                vec![format!("Link: <{{BASE}}{api}?cursor=2>; rel=\"next\"")],
                page1.to_string().into_bytes(),
            ),
        );
        r.insert(format!("{api}?cursor=2"), ("200 OK".into(), vec![], page2.to_string().into_bytes()));
        for (name, b) in &shards {
            r.insert(format!("{repo}/{name}"), ("200 OK".into(), vec![], b.clone()));
        }
    }
    (routes, shards)
}

/// `flashlm-data ARGS...` (paths included), its stdout; fails the test on a non-zero exit.
fn flashlm_data(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_flashlm-data")).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    text
}

/// The Link header needs the server's own address.
fn fix_links(routes: &Routes, base: &str) {
    for v in routes.lock().unwrap().values_mut() {
        for h in &mut v.1 {
            *h = h.replace("{BASE}", base);
        }
    }
}

#[test]
fn simplestories_downloads_resumes_and_prepares() {
    let tmp = tempfile::tempdir().unwrap();
    let (routes, shards) = simplestories_hub(tmp.path());
    let (addr, seen) = serve(routes.clone());
    let base = format!("http://{addr}");
    fix_links(&routes, &base);
    let dir = tmp.path().join("simplestories");
    // Half of train shard 0 is already there from a cut transfer.
    std::fs::create_dir_all(&dir).unwrap();
    let a = &shards["train-00000-of-00002.parquet"];
    std::fs::write(part_path(&dir.join("simplestories-train-00000-of-00002.parquet")), &a[..a.len() / 2])
        .unwrap();
    let got =
        download_dataset(&base, HubDataset::SimpleStories, &dir, ShardLimits::default(), &opts()).unwrap();
    let names: Vec<&str> = got.iter().map(|f| f.shard.local.as_str()).collect();
    assert_eq!(
        names,
        [
            "simplestories-valid-00000-of-00001.parquet",
            "simplestories-train-00000-of-00002.parquet",
            "simplestories-train-00001-of-00002.parquet"
        ]
    );
    assert!(
        matches!(got[1].outcome, DownloadOutcome::Downloaded { resumed_from, .. } if resumed_from == (a.len() / 2) as u64)
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(p, r)| p.ends_with("train-00000-of-00002.parquet") && *r == Some((a.len() / 2) as u64)),
        "the resume asked for the rest with a Range"
    );
    for f in &got {
        assert_eq!(std::fs::read(&f.path).unwrap(), shards[f.shard.path.trim_start_matches("data/")]);
    }
    // A second run finds everything in place.
    let again =
        download_dataset(&base, HubDataset::SimpleStories, &dir, ShardLimits::default(), &opts()).unwrap();
    assert!(again.iter().all(|f| matches!(f.outcome, DownloadOutcome::AlreadyPresent { .. })));

    // The prepare step reads the folder: Parquet train and valid shards by name.
    let out = tmp.path().join("prep");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let text =
        flashlm_data(&["prepare", "--quiet", "--seq-len", "16", "--data-dir", &p(&dir), "--out", &p(&out)]);
    assert!(text.contains("train: 500 stories") && text.contains("valid: 40 stories"), "{text}");
}

#[test]
fn limits_select_shards_and_the_cli_reports_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (routes, shards) = simplestories_hub(tmp.path());
    let (addr, _) = serve(routes.clone());
    let base = format!("http://{addr}");
    fix_links(&routes, &base);
    let dir = tmp.path().join("d");
    let d = dir.to_str().unwrap();
    let args = [
        "download",
        "--dataset",
        "simplestories",
        "--quiet",
        "--max-shards",
        "1",
        "--base-url",
        &base,
        "--dir",
        d,
    ];
    let text = flashlm_data(&args);
    assert!(text.contains("2 shard(s) of SimpleStories/SimpleStories"), "{text}");
    assert!(!dir.join("simplestories-train-00001-of-00002.parquet").exists());
    let small = shards["test-00000-of-00001.parquet"].len() as u64;
    let limited = download_dataset(
        &base,
        HubDataset::SimpleStories,
        &dir,
        ShardLimits { max_shards: None, max_bytes: Some(small) },
        &opts(),
    )
    .unwrap();
    assert_eq!(limited.len(), 1);
    let e = download_dataset(
        &base,
        HubDataset::SimpleStories,
        &dir,
        ShardLimits { max_shards: None, max_bytes: Some(10) },
        &opts(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no shard fits --max-bytes 10"), "{e}");
}

#[test]
fn a_missing_dataset_and_corrupt_shards_are_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let routes: Routes = Arc::default();
    let (addr, _) = serve(routes.clone());
    let base = format!("http://{addr}");
    // Nothing served: the listing is a 404.
    let e = download_dataset(&base, HubDataset::FinewebEdu, tmp.path(), ShardLimits::default(), &opts())
        .unwrap_err();
    assert!(matches!(e, DownloadError::Http { status: 404, .. }), "{e}");
    assert!(e.to_string().contains("/api/datasets/HuggingFaceFW/fineweb-edu/tree/main/sample/10BT"), "{e}");

    // Shard 0: bytes that do not match the listed SHA-256. Shard 1: the listed SHA-256 of
    // bytes that are not Parquet.
    let good = parquet_bytes(tmp.path(), "g.parquet", "text", &stories("web", 50), &[3]);
    let mut bad = good.clone();
    bad[10] ^= 0xFF;
    let junk = vec![b'x'; good.len()];
    let api = "/api/datasets/HuggingFaceFW/fineweb-edu/tree/main/sample/10BT";
    let list = |name: &str, sha: String, size: usize| {
        serde_json::json!([{"type": "file", "path": format!("sample/10BT/{name}"), "size": size, "lfs": {"oid": sha, "size": size}}])
            .to_string()
            .into_bytes()
    };
    let resolve = "/datasets/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT";
    {
        let mut r = routes.lock().unwrap();
        r.insert(api.into(), ("200 OK".into(), vec![], list("000_00000.parquet", sha(&good), good.len())));
        r.insert(format!("{resolve}/000_00000.parquet"), ("200 OK".into(), vec![], bad));
    }
    let dir = tmp.path().join("fw");
    let e =
        download_dataset(&base, HubDataset::FinewebEdu, &dir, ShardLimits::default(), &opts()).unwrap_err();
    assert!(
        matches!(e, DownloadError::Checksum { .. }) && e.to_string().contains("000_00000.parquet"),
        "{e}"
    );
    assert!(!dir.join("fineweb-edu-train-000_00000.parquet").exists(), "a corrupt shard is removed");
    {
        let mut r = routes.lock().unwrap();
        r.insert(api.into(), ("200 OK".into(), vec![], list("000_00001.parquet", sha(&junk), junk.len())));
        r.insert(format!("{resolve}/000_00001.parquet"), ("200 OK".into(), vec![], junk));
    }
    let e =
        download_dataset(&base, HubDataset::FinewebEdu, &dir, ShardLimits::default(), &opts()).unwrap_err();
    assert!(e.to_string().contains("not a readable Parquet file"), "{e}");
    assert!(!dir.join("fineweb-edu-train-000_00001.parquet").exists());

    // A good shard: downloaded, then prepared with every filter; the counts are printed.
    let mut texts = stories("web", 60);
    texts[5] = texts[4].clone(); // a duplicate
    texts[6] = "Too short.".into();
    texts[7] = format!("{} {}", texts[7], "long ".repeat(100));
    texts[8] = "\u{4e00}\u{4e01}\u{4e02}\u{4e03}\u{4e04} \u{4e05}\u{4e06}\u{4e07}\u{4e08}\u{4e09} ".repeat(3);
    let scores: Vec<i64> = (0..60).map(|i| if i % 10 == 9 { 2 } else { 3 }).collect();
    let rows: Vec<(Option<&str>, Option<i64>)> =
        texts.iter().zip(&scores).map(|(t, &s)| (Some(t.as_str()), Some(s))).collect();
    let p = tmp.path().join("ok.parquet");
    common::write_parquet(&p, "text", &rows, 16);
    let ok = std::fs::read(&p).unwrap();
    {
        let mut r = routes.lock().unwrap();
        r.insert(api.into(), ("200 OK".into(), vec![], list("000_00002.parquet", sha(&ok), ok.len())));
        r.insert(format!("{resolve}/000_00002.parquet"), ("200 OK".into(), vec![], ok));
    }
    let got = download_dataset(&base, HubDataset::FinewebEdu, &dir, ShardLimits::default(), &opts()).unwrap();
    let val = tmp.path().join("valid.txt");
    std::fs::write(&val, "A validation story about a cat.\n<|endoftext|>\n").unwrap();
    // A vocabulary counted on English stories only leaves the CJK document all UNK.
    let english = tmp.path().join("english-train.txt");
    std::fs::write(&english, stories("web", 60).join("\n<|endoftext|>\n")).unwrap();
    let vocab = tmp.path().join("vocab");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    flashlm_data(&[
        "prepare",
        "--quiet",
        "--train-file",
        &p(&english),
        "--val-file",
        &p(&val),
        "--out",
        &p(&vocab),
    ]);
    let out = tmp.path().join("prep");
    let (tok, shard) = (p(&vocab.join("tokenizer.json")), p(&got[0].path));
    let text = flashlm_data(&[
        "prepare",
        "--quiet",
        "--seq-len",
        "16",
        "--min-int-score",
        "3",
        "--tokenizer",
        &tok,
        "--min-chars",
        "20",
        "--max-chars",
        "200",
        "--dedup",
        "--min-vocab-coverage",
        "0.5",
        "--train-file",
        &shard,
        "--val-file",
        &p(&val),
        "--out",
        &p(&out),
    ]);
    assert!(
        text.contains(
            "filters: read 60 | removed: empty 0, int_score 6, too short 1, too long 1, duplicates 1, vocab coverage 1 | kept 50"
        ),
        "{text}"
    );
    let kept = flashlm_data::read_stories(&[out.join("train-filtered.jsonl.zst")]).unwrap();
    assert_eq!(kept.texts.len(), 50);
    assert!(text.contains("train: 50 stories"), "{text}");
}
