//! Slow, idle and too many clients against the real `flashlm-serve` binary on 127.0.0.1, and
//! what it answers while it shuts down. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Bin {
    child: Child,
    addr: String,
    stderr: BufReader<std::process::ChildStderr>,
    /// What it printed before its address line.
    before: String,
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary through `sh -c` (so a `ulimit` can go first) on a free port.
// The child is waited for by `Bin`'s Drop (or at once when it exits early).
#[allow(clippy::zombie_processes)]
fn start_with(prefix: &str, args: &[&str]) -> Bin {
    let exe = env!("CARGO_BIN_EXE_flashlm-serve");
    let mut cmd = format!("{prefix} exec '{exe}' --port 0");
    for a in args {
        cmd.push_str(&format!(" '{a}'"));
    }
    let mut child = Command::new("sh").args(["-c", &cmd]).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!("flashlm-serve exited: {seen}");
        }
        if let Some(rest) = line.split(" on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return Bin { child, addr, stderr, before: seen };
        }
        seen.push_str(&line);
    }
}

fn start(args: &[&str]) -> Bin {
    start_with("", args)
}

fn connect(addr: &str) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// Read until the server closes the connection (or 20 s pass: a failure). Returns what came.
fn read_to_close(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /health` on a fresh connection: (status line, whole response).
fn health(addr: &str) -> String {
    let mut c = connect(addr);
    c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    read_to_close(&mut c)
}

#[test]
fn a_body_shorter_than_its_length_gets_408_and_the_connection_closes() {
    let s = start(&["--body-timeout", "1"]);
    let mut c = connect(&s.addr);
    let t0 = Instant::now();
    c.write_all(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"prompt\":").unwrap();
    let got = read_to_close(&mut c);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("--body-timeout"), "{got}");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
}

#[test]
fn slowloris_and_idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let s = start(&["--header-timeout", "1"]);
    let t0 = Instant::now();
    // 500 clients that send part of a request head and then nothing.
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut c = connect(&s.addr);
            c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ").unwrap();
            c
        })
        .collect();
    // One that made a request and keeps the connection open, idle.
    let mut idle = connect(&s.addr);
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    read_to_close(&mut idle);
    for c in &mut slow {
        read_to_close(c);
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "closing took {:?}", t0.elapsed());
    assert!(health(&s.addr).starts_with("HTTP/1.1 200"));
}

#[test]
fn idle_connections_past_the_limit_make_room_and_busy_ones_get_503() {
    let s = start(&["--max-connections", "20", "--header-timeout", "60", "--body-timeout", "60"]);
    // 40 idle connections: the oldest are closed as new ones come, /health still answers.
    let idle: Vec<TcpStream> = (0..40).map(|_| connect(&s.addr)).collect();
    let t0 = Instant::now();
    assert!(health(&s.addr).starts_with("HTTP/1.1 200"));
    assert!(t0.elapsed() < Duration::from_secs(2), "health took {:?}", t0.elapsed());
    drop(idle);
    // 20 busy connections (each inside a request whose body is still coming): one more gets
    // 503 and is closed.
    let mut busy = Vec::new();
    for _ in 0..20 {
        let mut c = connect(&s.addr);
        c.write_all(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{").unwrap();
        busy.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let got = health(&s.addr);
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("too_many_connections"), "{got}");
    drop(busy);
    let t0 = Instant::now();
    while !health(&s.addr).starts_with("HTTP/1.1 200") {
        assert!(t0.elapsed() < Duration::from_secs(5), "the busy connections' slots were never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[cfg(unix)]
fn under_a_small_descriptor_limit_idle_sockets_do_not_starve_health() {
    let s = start_with("ulimit -n 256 &&", &["--header-timeout", "60"]);
    assert!(s.before.contains("--max-connections lowered from 1024 to 224"), "{}", s.before);
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(&s.addr)).collect();
    let t0 = Instant::now();
    let got = health(&s.addr);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(t0.elapsed() < Duration::from_secs(3), "health took {:?}", t0.elapsed());
    drop(idle);
}

#[test]
#[cfg(unix)]
fn during_shutdown_health_says_stopping_and_new_work_gets_503() {
    let mut s = start(&["--shutdown-grace", "3", "--max-tokens-limit", "1000000"]);
    // A long stream keeps the server in its grace period.
    let addr = s.addr.clone();
    let stream = std::thread::spawn(move || {
        let mut c = connect(&addr);
        let body =
            r#"{"prompt": "Once upon a time", "max_tokens": 1000000, "ignore_eos": true, "stream": true}"#;
        write!(c, "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
        read_to_close(&mut c)
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &s.child.id().to_string()]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let h = health(&s.addr);
    assert!(h.starts_with("HTTP/1.1 503") && h.contains("stopping"), "{h}");
    let mut c = connect(&s.addr);
    let body = r#"{"prompt": "Once", "max_tokens": 4}"#;
    write!(c, "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    let got = read_to_close(&mut c);
    assert!(got.starts_with("HTTP/1.1 503") && got.contains("shutting_down"), "{got}");
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "flashlm-serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let all = stream.join().unwrap();
    assert!(all.contains("\"finish_reason\":\"length\"") && all.contains("[DONE]"), "{all}");
    let mut rest = String::new();
    s.stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn a_public_address_without_a_key_is_warned_about() {
    let s = start(&["--host", "0.0.0.0"]);
    assert!(s.before.contains("warning") && s.before.contains("no API key"), "{}", s.before);
    for args in [
        &["--host", "127.0.0.1"][..],
        &["--host", "0.0.0.0", "--api-key", "k"],
        &["--host", "0.0.0.0", "--allow-public-without-key"],
    ] {
        let s = start(args);
        assert!(!s.before.contains("warning"), "{args:?}: {}", s.before);
    }
}
