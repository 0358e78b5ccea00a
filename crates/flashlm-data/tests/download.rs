//! Download tests against an HTTP server started by each test on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashlm_data::download::{DownloadError, DownloadOptions, DownloadOutcome, download, part_path};

/// What the test server does with one request.
enum Reply {
    /// Send `status`, the headers, then `body[..send]` (all of it if `send` is None) and close.
    Send { status: &'static str, headers: Vec<String>, body: Vec<u8>, send: Option<usize> },
    /// Like `Send`, then keep the connection open without a byte until the client opens its
    /// next connection (at most `stall`); then send on `ended` whether the client ended it.
    Stall {
        status: &'static str,
        headers: Vec<String>,
        body: Vec<u8>,
        send: usize,
        stall: Duration,
        ended: std::sync::mpsc::Sender<bool>,
    },
}

/// One request as the server saw it: the Range start it asked for, if any.
type Seen = Arc<Mutex<Vec<Option<u64>>>>;

/// Serve up to `max` connections, answering with `handler(n, range_start)`. The thread ends
/// after the last one (or with the test process).
fn serve<F>(max: usize, handler: F) -> (SocketAddr, Seen)
where
    F: Fn(usize, Option<u64>) -> Reply + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        let mut n = 0;
        while n < max {
            match listener.accept() {
                Ok((stream, _)) => {
                    let range = read_request(&stream);
                    seen2.lock().unwrap().push(range);
                    let reply = handler(n, range);
                    n += 1;
                    accepted.store(n, Ordering::SeqCst);
                    // Its own thread, so that a stalled answer does not hold up the next one.
                    let (accepted, me) = (accepted.clone(), n);
                    std::thread::spawn(move || respond(stream, reply, &accepted, me));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, seen)
}

fn read_request(mut stream: &TcpStream) -> Option<u64> {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut b).map(|n| n == 1).unwrap_or(false) {
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("range: bytes="))
        .and_then(|r| r.trim().trim_end_matches('-').parse().ok())
}

/// Answer connection number `me` (1-based); `accepted` counts the connections so far.
fn respond(mut stream: TcpStream, reply: Reply, accepted: &AtomicUsize, me: usize) {
    let (status, headers, body, send, stall) = match reply {
        Reply::Send { status, headers, body, send } => (status, headers, body, send, None),
        Reply::Stall { status, headers, body, send, stall, ended } => {
            (status, headers, body, Some(send), Some((stall, ended)))
        }
    };
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for h in headers {
        out.push_str(&h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes());
    let n = send.unwrap_or(body.len()).min(body.len());
    let _ = stream.write_all(&body[..n]);
    let _ = stream.flush();
    if let Some((longest, ended)) = stall {
        let t = Instant::now();
        let mut by_client = false;
        while !by_client && t.elapsed() < longest {
            by_client = accepted.load(Ordering::SeqCst) > me;
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = ended.send(by_client);
    }
    // Dropping the stream closes the connection (cutting the transfer if n < len).
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// A 200 (no range) or 206 (range) answer for `body`, optionally cut after `send` bytes.
fn ranged(body: &[u8], range: Option<u64>, send: Option<usize>) -> Reply {
    match range {
        None => Reply::Send {
            status: "200 OK",
            headers: vec![format!("Content-Length: {}", body.len())],
            body: body.to_vec(),
            send,
        },
        Some(start) => {
            let rest = body[start as usize..].to_vec();
            Reply::Send {
                status: "206 Partial Content",
                headers: vec![
                    format!("Content-Length: {}", rest.len()),
                    format!("Content-Range: bytes {start}-{}/{}", body.len() - 1, body.len()),
                ],
                body: rest,
                send,
            }
        }
    }
}

fn opts() -> DownloadOptions {
    DownloadOptions {
        retries: 3,
        backoff: Duration::from_millis(1),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        progress: false,
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/datasets/TinyStories-valid.txt")
}

#[test]
fn full_download() {
    let body = data(300_000);
    let b = body.clone();
    let (addr, seen) = serve(1, move |_, r| ranged(&b, r, None));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub/valid.txt");
    let out = download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(
        out,
        DownloadOutcome::Downloaded { bytes: 300_000, resumed_from: 0, attempts: 1, sha256_checked: false }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    assert_eq!(*seen.lock().unwrap(), vec![None]);
    // A second call finds the file; the server (gone now) cannot confirm its size.
    let again = download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(again, DownloadOutcome::AlreadyPresent { bytes: 300_000, verified: false });
}

#[test]
fn transfer_cut_halfway_is_resumed_with_range() {
    let body = data(200_000);
    let b = body.clone();
    // First answer stops after 100,000 bytes although it announced 200,000.
    let (addr, seen) = serve(2, move |n, r| ranged(&b, r, if n == 0 { Some(100_000) } else { None }));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let out = download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(
        out,
        DownloadOutcome::Downloaded { bytes: 200_000, resumed_from: 0, attempts: 2, sha256_checked: false }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], None);
    let resumed_at = seen[1].expect("second request must use Range");
    assert!(resumed_at > 0 && resumed_at <= 100_000, "resumed at {resumed_at}");
}

#[test]
fn part_file_from_an_earlier_run_is_resumed() {
    let body = data(50_000);
    let b = body.clone();
    let (addr, seen) = serve(1, move |_, r| ranged(&b, r, None));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    std::fs::write(part_path(&dest), &body[..12_345]).unwrap();
    let out = download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(
        out,
        DownloadOutcome::Downloaded {
            bytes: 50_000,
            resumed_from: 12_345,
            attempts: 1,
            sha256_checked: false
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(*seen.lock().unwrap(), vec![Some(12_345)]);
}

#[test]
fn server_ignoring_range_restarts_cleanly() {
    let body = data(40_000);
    let b = body.clone();
    let (addr, _) = serve(1, move |_, _| ranged(&b, None, None));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    std::fs::write(part_path(&dest), b"garbage that is not the file").unwrap();
    download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn not_found_fails_at_once() {
    let (addr, seen) = serve(5, |_, _| Reply::Send {
        status: "404 Not Found",
        headers: vec!["Content-Length: 9".into()],
        body: b"not found".to_vec(),
        send: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let err = download(&url(addr), &dest, &opts()).unwrap_err();
    assert!(matches!(err, DownloadError::Http { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("404"));
    assert_eq!(seen.lock().unwrap().len(), 1, "a 404 is not retried");
    assert!(!dest.exists() && !part_path(&dest).exists());
}

#[test]
fn server_errors_are_retried() {
    let body = data(10_000);
    let b = body.clone();
    let (addr, seen) = serve(3, move |n, r| {
        if n < 2 {
            Reply::Send {
                status: "503 Service Unavailable",
                headers: vec!["Content-Length: 0".into()],
                body: vec![],
                send: None,
            }
        } else {
            ranged(&b, r, None)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let out = download(&url(addr), &dest, &opts()).unwrap();
    assert!(matches!(out, DownloadOutcome::Downloaded { attempts: 3, .. }));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[test]
fn short_body_every_time_is_a_size_mismatch() {
    // The server announces 1000 bytes but never sends more than the first 100 of a request.
    let body = data(1000);
    let (addr, _) = serve(4, move |_, r| ranged(&body, r, Some(100)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let err = download(&url(addr), &dest, &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Transfer { attempts: 4, .. }), "{msg}");
    assert!(msg.contains("of 1000") || msg.contains("cut"), "{msg}");
    assert!(!dest.exists(), "an incomplete file must never take the final name");
}

#[test]
fn file_changed_on_server_is_a_size_mismatch() {
    let first = data(1000);
    let (addr, _) = serve(2, move |n, r| {
        if n == 0 {
            ranged(&first, r, Some(500))
        } else {
            // On resume the server reports a different total size.
            ranged(&data(2000), r, None)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let err = download(&url(addr), &dest, &opts()).unwrap_err();
    assert!(matches!(err, DownloadError::SizeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("1000") && err.to_string().contains("2000"));
    assert!(!dest.exists() && !part_path(&dest).exists());
}

#[test]
fn offline_gives_a_one_line_hint() {
    // A port that nothing listens on: bind, note it, close.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let o = DownloadOptions { retries: 1, ..opts() };
    let err = download(&url(addr), &dest, &o).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Offline { .. }), "{msg}");
    assert!(msg.contains("--train-file") && msg.contains("FLASHLM_DATA_DIR"), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(!Path::new(&dest).exists());
}

fn send(status: &'static str, headers: Vec<String>, body: &[u8]) -> Reply {
    Reply::Send { status, headers, body: body.to_vec(), send: None }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn redirect_to_another_host_keeps_the_range_and_the_first_hops_digest() {
    // Hugging Face's resolve/ URL answers 302 to a CDN host with X-Linked-Size / X-Linked-Etag.
    let body = data(30_000);
    let b = body.clone();
    let (cdn, cdn_seen) = serve(1, move |_, r| ranged(&b, r, None));
    let sha = sha256_hex(&body);
    let (hub, hub_seen) = serve(1, move |_, _| {
        send(
            "302 Found",
            vec![
                format!("Location: http://{cdn}/cdn/blob"),
                "Content-Length: 0".into(),
                "X-Linked-Size: 30000".into(),
                format!("X-Linked-Etag: \"{sha}\""),
            ],
            b"",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    std::fs::write(part_path(&dest), &body[..1000]).unwrap();
    let out = download(&url(hub), &dest, &opts()).unwrap();
    assert_eq!(
        out,
        DownloadOutcome::Downloaded { bytes: 30_000, resumed_from: 1000, attempts: 1, sha256_checked: true }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(*hub_seen.lock().unwrap(), vec![Some(1000)]);
    assert_eq!(*cdn_seen.lock().unwrap(), vec![Some(1000)], "the Range header must survive the redirect");
}

#[test]
fn a_digest_mismatch_removes_the_download() {
    let body = data(5000);
    let (addr, _) = serve(1, move |_, r| {
        let Reply::Send { status, mut headers, body, send } = ranged(&body, r, None) else { unreachable!() };
        headers.push(format!("ETag: \"{}\"", "ab".repeat(32)));
        Reply::Send { status, headers, body, send }
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let err = download(&url(addr), &dest, &opts()).unwrap_err();
    assert!(matches!(err, DownloadError::Checksum { .. }), "{err}");
    assert!(!dest.exists() && !part_path(&dest).exists());
}

#[test]
fn redirect_loops_and_endless_redirects_are_refused() {
    let (b, _) =
        serve(5, |_, _| send("301 Moved", vec!["Location: /again".into(), "Content-Length: 0".into()], b""));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    // /datasets/... -> /again -> /again: a loop.
    let err = download(&url(b), &dest, &opts()).unwrap_err();
    assert!(matches!(err, DownloadError::Redirect { .. }) && err.to_string().contains("loop"), "{err}");
    assert!(!err.to_string().contains("offline"));
    // Ever-new targets end at the limit.
    let (c, _) = serve(20, |n, _| {
        send("302 Found", vec![format!("Location: /hop{n}"), "Content-Length: 0".into()], b"")
    });
    let err = download(&url(c), &dest, &opts()).unwrap_err();
    assert!(err.to_string().contains("more than 10 redirects"), "{err}");
    assert!(!dest.exists());
}

#[test]
fn bad_urls_are_refused_with_their_reason_not_as_offline() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    for (u, want) in
        [("file:///etc/passwd", "only http"), ("not a url", "relative URL"), ("ftp://x/y", "only http")]
    {
        let err = download(u, &dest, &opts()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DownloadError::BadUrl { .. }) && msg.contains(want), "{u}: {msg}");
        assert!(!msg.contains("offline"), "{msg}");
    }
}

#[test]
fn an_unannounced_size_is_confirmed_by_a_range_request_and_a_cut_is_resumed() {
    let body = data(20_000);
    let b = body.clone();
    // No Content-Length: the end of the body is the end of the connection. The first answer
    // is cut at 8,000 bytes; the range request that checks the end finds the rest; a last one
    // past the end gets 416.
    let (addr, seen) = serve(3, move |n, r| match (n, r) {
        (0, None) => Reply::Send { status: "200 OK", headers: vec![], body: b.clone(), send: Some(8000) },
        (_, Some(start)) if (start as usize) < b.len() => Reply::Send {
            status: "206 Partial Content",
            headers: vec![format!("Content-Range: bytes {start}-{}/*", b.len() - 1)],
            body: b[start as usize..].to_vec(),
            send: None,
        },
        _ => send("416 Range Not Satisfiable", vec!["Content-Length: 0".into()], b""),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let out = download(&url(addr), &dest, &opts()).unwrap();
    assert!(matches!(out, DownloadOutcome::Downloaded { bytes: 20_000, attempts: 3, .. }), "{out:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(*seen.lock().unwrap(), vec![None, Some(8000), Some(20_000)]);
}

#[test]
fn an_html_page_is_not_the_file() {
    let (addr, _) = serve(1, |_, _| {
        send(
            "200 OK",
            vec!["Content-Type: text/html; charset=utf-8".into(), "Content-Length: 14".into()],
            b"<html>no</html>",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let err = download(&url(addr), &dest, &opts()).unwrap_err();
    assert!(matches!(err, DownloadError::NotTheFile { .. }) && err.to_string().contains("HTML"), "{err}");
    assert!(!dest.exists());
}

#[test]
fn a_stalled_server_times_out_and_the_transfer_resumes() {
    let body = data(10_000);
    let b = body.clone();
    // The stall lasts until the client gives up and reconnects; the client's read timeout is
    // what must end it (the stall's own bound, 15 s, is only there so a broken client fails).
    let (tx, stall_ended) = std::sync::mpsc::channel();
    let (addr, seen) = serve(2, move |n, r| {
        if n == 0 {
            let Reply::Send { status, headers, body, .. } = ranged(&b, r, None) else { unreachable!() };
            let (stall, ended) = (Duration::from_secs(15), tx.clone());
            Reply::Stall { status, headers, body, send: 4000, stall, ended }
        } else {
            ranged(&b, r, None)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let o = DownloadOptions { read_timeout: Duration::from_millis(400), ..opts() };
    let out = download(&url(addr), &dest, &o).unwrap();
    assert!(matches!(out, DownloadOutcome::Downloaded { attempts: 2, .. }), "{out:?}");
    assert!(stall_ended.recv().unwrap(), "the stall was waited out instead of timed out");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(seen.lock().unwrap()[1], Some(4000));
}

#[test]
fn more_bytes_than_announced_wrong_resume_start_and_416() {
    let dir = tempfile::tempdir().unwrap();
    // More bytes than Content-Length says cannot be sent over HTTP/1.1 framing, but a 206
    // whose Content-Range total is smaller than what follows can.
    let (addr, _) = serve(1, |_, _| Reply::Send {
        status: "206 Partial Content",
        headers: vec!["Content-Range: bytes 100-199/150".into(), "Content-Length: 100".into()],
        body: data(100),
        send: None,
    });
    let dest = dir.path().join("a.txt");
    std::fs::write(part_path(&dest), data(100)).unwrap();
    let err = download(&url(addr), &dest, &opts()).unwrap_err();
    assert!(
        matches!(err, DownloadError::SizeMismatch { .. }) && err.to_string().contains("more than"),
        "{err}"
    );
    assert!(!dest.exists() && !part_path(&dest).exists());

    // A 206 starting somewhere else: the part file is dropped and the download restarts.
    let body = data(3000);
    let b = body.clone();
    let (addr, seen) = serve(2, move |n, r| {
        if n == 0 {
            Reply::Send {
                status: "206 Partial Content",
                headers: vec!["Content-Range: bytes 7-2999/3000".into(), "Content-Length: 2993".into()],
                body: b[7..].to_vec(),
                send: None,
            }
        } else {
            ranged(&b, r, None)
        }
    });
    let dest = dir.path().join("b.txt");
    std::fs::write(part_path(&dest), &body[..500]).unwrap();
    download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(*seen.lock().unwrap(), vec![Some(500), None]);

    // 416 for a complete part file: done without another byte.
    let (addr, _) = serve(1, |_, _| {
        send(
            "416 Range Not Satisfiable",
            vec!["Content-Range: bytes */3000".into(), "Content-Length: 0".into()],
            b"",
        )
    });
    let dest = dir.path().join("c.txt");
    std::fs::write(part_path(&dest), &body).unwrap();
    let out = download(&url(addr), &dest, &opts()).unwrap();
    assert!(matches!(out, DownloadOutcome::Downloaded { bytes: 3000, resumed_from: 3000, .. }), "{out:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn a_second_process_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let mut lock = dest.as_os_str().to_os_string();
    lock.push(".lock");
    let held = std::fs::File::create(&lock).unwrap();
    held.lock().unwrap();
    // Another open file description is another owner, as another process would be.
    let err = download("http://127.0.0.1:9/x", &dest, &opts()).unwrap_err();
    assert!(matches!(err, DownloadError::Busy { .. }), "{err}");
    drop(held);
}

#[test]
fn a_truncated_file_is_not_already_present() {
    let body = data(9000);
    let b = body.clone();
    let (addr, seen) = serve(3, move |_, r| match r {
        Some(s) if s as usize >= b.len() => {
            send("416 Range Not Satisfiable", vec![format!("Content-Range: bytes */{}", b.len())], b"")
        }
        r => ranged(&b, r, None),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    std::fs::write(&dest, &body[..4000]).unwrap();
    let out = download(&url(addr), &dest, &opts()).unwrap();
    assert!(matches!(out, DownloadOutcome::Downloaded { bytes: 9000, resumed_from: 4000, .. }), "{out:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    // The whole file is confirmed by the server.
    let again = download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(again, DownloadOutcome::AlreadyPresent { bytes: 9000, verified: true });
    // The size check, the resumed transfer, the size check of the second call.
    assert_eq!(*seen.lock().unwrap(), vec![Some(4000), Some(4000), Some(9000)]);
}

#[test]
fn a_tls_failure_is_named_as_one_not_as_offline() {
    // https:// to a plain-HTTP server: the handshake fails.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten().take(5) {
            // Answer the ClientHello with plain HTTP.
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("valid.txt");
    let err = download(&format!("https://{addr}/x"), &dest, &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Tls { .. }), "{msg}");
    assert!(!msg.contains("offline"), "{msg}");
}
