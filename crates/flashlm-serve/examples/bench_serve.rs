//! Load generator for `scripts/bench-serve.sh`: N concurrent streaming clients on loopback,
//! each sending completion requests back to back for a fixed time; prints aggregate tokens/s,
//! p50/p99 time to first token and p50/p99 gap between streamed chunks.
//!
//! Usage: bench_serve ADDR CONCURRENCY SECONDS MAX_TOKENS [SERVER_PID]
//! (with SERVER_PID, the server's resident memory is printed at the start and the end;
//! with `LOGPROBS=K` in the environment, every request asks for `logprobs: K`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Stats {
    requests: usize,
    errors: usize,
    tokens: u64,
    ttft: Vec<f64>, // ms
    gaps: Vec<f64>, // ms
}

/// One streaming request: (time to first chunk, gaps, completion tokens), or an error.
fn request(addr: &str, body: &str) -> Result<(f64, Vec<f64>, u64), String> {
    let t0 = Instant::now();
    let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nhost: bench\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| e.to_string())?;
    if !status.contains(" 200 ") {
        return Err(status.trim().to_string());
    }
    let (mut first, mut last, mut gaps, mut tokens) = (None, None::<Instant>, Vec::new(), 0u64);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the stream ended before [DONE]".into());
        }
        let Some(data) = line.trim_end().strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        if data.contains("\"error\"") {
            return Err(data.to_string());
        }
        let now = Instant::now();
        if let Some(l) = last {
            gaps.push(now.duration_since(l).as_secs_f64() * 1e3);
        }
        last = Some(now);
        first.get_or_insert(now.duration_since(t0).as_secs_f64() * 1e3);
        if let Some(i) = data.find("\"completion_tokens\":") {
            let rest = &data[i + 20..];
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            tokens = rest[..end].parse().unwrap_or(0);
        }
    }
    Ok((first.unwrap_or(0.0), gaps, tokens))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn rss_kb(pid: &str, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(|l| l[field.len()..].trim().to_string()))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: bench_serve ADDR CONCURRENCY SECONDS MAX_TOKENS [SERVER_PID]");
        std::process::exit(2);
    }
    let (addr, n, secs, max_tokens) = (
        a[1].clone(),
        a[2].parse::<usize>().expect("CONCURRENCY"),
        a[3].parse::<f64>().expect("SECONDS"),
        a[4].parse::<usize>().expect("MAX_TOKENS"),
    );
    let pid = a.get(5).cloned();
    if let Some(p) = &pid {
        eprintln!("server RSS at start: {}", rss_kb(p, "VmRSS:"));
    }
    let logprobs = match std::env::var("LOGPROBS") {
        Ok(k) if !k.is_empty() => {
            format!(r#", "logprobs": {}"#, k.parse::<u32>().expect("LOGPROBS must be a number"))
        }
        _ => String::new(),
    };
    let logprobs = &logprobs;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let stats: Vec<Stats> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let addr = addr.clone();
                sc.spawn(move || {
                    let mut st = Stats::default();
                    let mut k = 0;
                    while Instant::now() < deadline {
                        let body = format!(
                            r#"{{"prompt": "Once upon a time, there was a little", "max_tokens": {max_tokens}, "ignore_eos": true, "seed": {}, "stream": true{logprobs}}}"#,
                            i * 1000 + k
                        );
                        k += 1;
                        st.requests += 1;
                        match request(&addr, &body) {
                            Ok((ttft, gaps, tokens)) => {
                                st.ttft.push(ttft);
                                st.gaps.extend(gaps);
                                st.tokens += tokens;
                            }
                            Err(e) => {
                                if st.errors < 3 {
                                    eprintln!("client {i}: {e}");
                                }
                                st.errors += 1;
                            }
                        }
                    }
                    st
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut all = Stats::default();
    for s in stats {
        all.requests += s.requests;
        all.errors += s.errors;
        all.tokens += s.tokens;
        all.ttft.extend(s.ttft);
        all.gaps.extend(s.gaps);
    }
    println!(
        "streams {n:>3} | requests {:>5} errors {} | {:>8.0} tok/s | ttft p50 {:>7.2} ms p99 {:>7.2} ms | gap p50 {:>6.3} ms p99 {:>6.3} ms",
        all.requests,
        all.errors,
        all.tokens as f64 / wall,
        pct(&mut all.ttft, 0.5),
        pct(&mut all.ttft, 0.99),
        pct(&mut all.gaps, 0.5),
        pct(&mut all.gaps, 0.99)
    );
    if let Some(p) = &pid {
        eprintln!("server RSS at end: {} (peak {})", rss_kb(p, "VmRSS:"), rss_kb(p, "VmHWM:"));
    }
    if all.errors > 0 {
        std::process::exit(1);
    }
}
