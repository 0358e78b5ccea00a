//! Download tests against an HTTP server started by each test on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashlm_data::download::{DownloadError, DownloadOptions, DownloadOutcome, download, part_path};

/// What the test server does with one request.
enum Reply {
    /// Send `status`, the headers, then `body[..send]` (all of it if `send` is None) and close.
    Send { status: &'static str, headers: Vec<String>, body: Vec<u8>, send: Option<usize> },
}

/// One request as the server saw it: the Range start it asked for, if any.
type Seen = Arc<Mutex<Vec<Option<u64>>>>;

/// Serve up to `max` connections (for at most 20 s), answering with `handler(n, range_start)`.
fn serve<F>(max: usize, handler: F) -> (SocketAddr, Seen)
where
    F: Fn(usize, Option<u64>) -> Reply + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        while n < max && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let range = read_request(&stream);
                    seen2.lock().unwrap().push(range);
                    respond(stream, handler(n, range));
                    n += 1;
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

fn respond(mut stream: TcpStream, reply: Reply) {
    let Reply::Send { status, headers, body, send } = reply;
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
    assert_eq!(out, DownloadOutcome::Downloaded { bytes: 300_000, resumed_from: 0, attempts: 1 });
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    assert_eq!(*seen.lock().unwrap(), vec![None]);
    // A second call finds the file and fetches nothing.
    let again = download(&url(addr), &dest, &opts()).unwrap();
    assert_eq!(again, DownloadOutcome::AlreadyPresent { bytes: 300_000 });
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
    assert_eq!(out, DownloadOutcome::Downloaded { bytes: 200_000, resumed_from: 0, attempts: 2 });
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
    assert_eq!(out, DownloadOutcome::Downloaded { bytes: 50_000, resumed_from: 12_345, attempts: 1 });
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
