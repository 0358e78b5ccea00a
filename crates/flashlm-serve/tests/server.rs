//! The server against its clients on loopback: responses and their shapes, streaming,
//! continuous batching (a stream's text does not depend on its neighbours), limits, errors,
//! disconnects, timeouts and shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::{TestServer, config, start, streamed_text};
use flashlm_infer::generate::{GenerateParams, Generation};
use flashlm_infer::sample::Sampler;
use serde_json::Value;

/// What the library gives for the same request (the server must agree).
fn library_text(prompt: &str, max_tokens: usize, seed: u64, temperature: f32, top_k: usize) -> String {
    let m = common::model();
    let p = GenerateParams {
        max_tokens,
        sampler: Sampler { temperature, top_k, top_p: 1.0, min_p: 0.0 },
        seed,
        stop: vec![],
        ignore_eos: false,
        ..GenerateParams::default()
    };
    Generation::new(&m, prompt, p).unwrap().run(&m).unwrap().0
}

#[test]
fn completions_chat_models_health_and_metrics() {
    let s = start(config());
    let (st, v) = s.post("/v1/completions", r#"{"model": "x", "prompt": "Once upon a time", "max_tokens": 30, "seed": 7, "temperature": 0.8, "top_k": 40}"#);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "flashlm-small");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text, library_text("Once upon a time", 30, 7, 0.8, 40));
    let usage = &v["usage"];
    let prompt_tokens = common::model().tokenizer.encode("Once upon a time").len() as u64;
    assert_eq!(usage["prompt_tokens"], prompt_tokens);
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=30).contains(&completion));
    assert_eq!(usage["total_tokens"], prompt_tokens + completion);
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert_eq!(finish, if completion == 30 { "length" } else { "stop" });

    let (st, v) = s.post(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 30, "seed": 7, "temperature": 0.8, "top_k": 40}"#,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    // One user message folds to its content: the same text as the completion.
    assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap(), text);

    let (st, body) = s.get("/v1/models");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((st, v["data"][0]["id"].as_str()), (200, Some("flashlm-small")));
    let (st, body) = s.get("/health");
    assert_eq!(st, 200);
    assert!(body.contains("\"ok\""), "{body}");
    let (_, m) = s.get("/metrics");
    assert!(m.contains("flashlm_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1"), "{m}");
    assert!(s.metric("flashlm_completion_tokens_total") >= completion as f64);
    assert!(s.metric("flashlm_prompt_tokens_total") >= 1.0);
    for name in ["flashlm_queue_depth", "flashlm_active_streams", "flashlm_tokens_per_second"] {
        assert!(m.contains(&format!("# TYPE {name} gauge")), "{name}: {m}");
    }
}

#[test]
fn streaming_sends_the_same_text_in_chunks_then_usage_and_done() {
    let s = start(config());
    let body = r#"{"prompt": "The little dog", "max_tokens": 40, "seed": 3, "stream": true, "stream_options": {"include_usage": true}}"#;
    let events = s.stream("/v1/completions", body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.len() >= 4, "{events:?}");
    let (_, whole) = s.post("/v1/completions", &body.replace("\"stream\": true", "\"stream\": false"));
    assert_eq!(streamed_text(&events), whole["choices"][0]["text"].as_str().unwrap());
    let parsed: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let finish_chunk = &parsed[parsed.len() - 2];
    assert!(finish_chunk["choices"][0]["finish_reason"].is_string());
    assert_eq!(finish_chunk["usage"], whole["usage"]);
    // include_usage: a last chunk with no choices and the usage.
    let last = &parsed[parsed.len() - 1];
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert_eq!(last["usage"], whole["usage"]);
    assert!(parsed[..parsed.len() - 2].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));

    let chat = s.stream(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "The little dog"}], "max_tokens": 40, "seed": 3, "stream": true}"#,
    );
    let first: Value = serde_json::from_str(&chat[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chat), whole["choices"][0]["text"].as_str().unwrap());
}

#[test]
fn a_request_gives_the_same_text_alone_or_among_63_others() {
    let s = start(config());
    let req = |i: usize| {
        format!(
            r#"{{"prompt": "Once upon a time, a {} named Tom", "max_tokens": 48, "seed": {i}, "ignore_eos": true, "stream": {}}}"#,
            ["cat", "boy", "bird", "tree"][i % 4],
            i.is_multiple_of(2)
        )
    };
    let run = |i: usize| -> String {
        if i.is_multiple_of(2) {
            streamed_text(&s.stream("/v1/completions", &req(i)))
        } else {
            let (st, v) = s.post("/v1/completions", &req(i));
            assert_eq!(st, 200, "{v}");
            v["choices"][0]["text"].as_str().unwrap().to_string()
        }
    };
    let alone: Vec<String> = [0, 1, 37].iter().map(|&i| run(i)).collect();
    let steps_before = s.metric("flashlm_engine_steps_total");
    let together: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..64).map(|i| sc.spawn(move || run(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, &i) in [0, 1, 37].iter().enumerate() {
        assert_eq!(together[i], alone[k], "request {i}");
    }
    for (i, t) in together.iter().enumerate() {
        assert_eq!(t, &library_text_ignore_eos(&req_prompt(i), i as u64), "request {i}");
    }
    // 64 requests of 48 tokens in far fewer than 64 * 48 steps: they were batched.
    let steps = s.metric("flashlm_engine_steps_total") - steps_before;
    assert!(steps < 64.0 * 48.0 / 2.0, "{steps} steps for 64 x 48 tokens");
}

fn req_prompt(i: usize) -> String {
    format!("Once upon a time, a {} named Tom", ["cat", "boy", "bird", "tree"][i % 4])
}

fn library_text_ignore_eos(prompt: &str, seed: u64) -> String {
    let m = common::model();
    let p = GenerateParams {
        max_tokens: 48,
        // The server's defaults (the command line's).
        sampler: Sampler::default(),
        seed,
        stop: vec![],
        ignore_eos: true,
        ..GenerateParams::default()
    };
    Generation::new(&m, prompt, p).unwrap().run(&m).unwrap().0
}

fn assert_error(status_body: (u16, Value), status: u16, param: Option<&str>) {
    let (st, v) = status_body;
    assert_eq!(st, status, "{v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("code").is_some() && e.get("param").is_some(), "{v}");
    assert_eq!(e["param"].as_str(), param, "{v}");
}

#[test]
fn bad_requests_get_openai_errors() {
    let mut c = config();
    c.limits.max_prompt_tokens = 20;
    c.max_body_bytes = 4096;
    let s = start(c);
    assert_error(s.post("/v1/completions", "{not json"), 400, None);
    assert_error(s.post("/v1/completions", r#"{"prompt": "hi", "max_tokens": -3}"#), 400, Some("max_tokens"));
    assert_error(
        s.post("/v1/completions", r#"{"prompt": "hi", "temperature": 9}"#),
        400,
        Some("temperature"),
    );
    assert_error(s.post("/v1/completions", r#"{"prompt": "   "}"#), 400, Some("prompt"));
    let long = "word ".repeat(50);
    let (st, v) = s.post("/v1/completions", &format!(r#"{{"prompt": "{long}"}}"#));
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_error((st, v), 400, Some("prompt"));
    assert_error(s.post("/v1/chat/completions", r#"{"messages": "hi"}"#), 400, Some("messages"));
    let huge = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(10_000));
    let (st, v) = s.post("/v1/completions", &huge);
    assert_eq!(v["error"]["code"], "request_too_large");
    assert_error((st, v), 413, None);
    assert_error(s.post("/v1/nothing", "{}"), 404, None);
    let (st, body) = s.get("/v1/completions");
    assert_eq!(st, 405, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    // The server is still fine.
    let (st, _) = s.post("/v1/completions", r#"{"prompt": "hi", "max_tokens": 2}"#);
    assert_eq!(st, 200);
    let m = s.get("/metrics").1;
    assert!(m.contains("status=\"400\""), "{m}");
}

#[test]
fn the_api_key_is_required_when_set() {
    let mut c = config();
    c.api_key = Some("sekrit".into());
    let s = start(c);
    assert_error(s.post("/v1/completions", r#"{"prompt": "hi"}"#), 401, None);
    let client = TestServer::client();
    let send = |auth: &str| {
        client
            .post(format!("{}/v1/completions", s.url))
            .header("authorization", auth)
            .body(r#"{"prompt": "hi", "max_tokens": 2}"#)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send("Bearer wrong"), 401);
    assert_eq!(send("Basic sekrit"), 401);
    assert_eq!(send("Bearer sekrit"), 200);
    // Health and metrics stay open for probes.
    assert_eq!(s.get("/health").0, 200);
}

/// A raw streaming request whose client reads one event and then hangs up.
fn start_and_abandon(addr: std::net::SocketAddr, body: &str) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended early");
    }
}

#[test]
fn full_server_answers_429_and_a_gone_client_frees_its_stream() {
    let mut c = config();
    c.engine.max_streams = 1;
    c.engine.max_queue = 0;
    let s = start(c);
    let long = r#"{"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true, "stream": true}"#;
    start_and_abandon(s.addr, long);
    // The abandoned stream is dropped at the next step; then the slot is free again.
    let t0 = Instant::now();
    while s.metric("flashlm_streams_dropped_total{reason=\"disconnect\"}") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the disconnected stream was never dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Hold the one slot with a live stream, then one more request is refused.
    let mut c2 = std::net::TcpStream::connect(s.addr).unwrap();
    write!(
        c2,
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{long}",
        long.len()
    )
    .unwrap();
    let mut r2 = BufReader::new(c2.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        r2.read_line(&mut line).unwrap();
    }
    let (st, v) = s.post("/v1/completions", r#"{"prompt": "hi", "max_tokens": 2}"#);
    assert_eq!(v["error"]["code"], "queue_full");
    assert_error((st, v), 429, None);
    drop(r2);
    drop(c2);
    let t0 = Instant::now();
    loop {
        let (st, _) = s.post("/v1/completions", r#"{"prompt": "hi", "max_tokens": 2}"#);
        if st == 200 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the slot never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_request_past_its_deadline_gets_504() {
    let mut c = config();
    c.request_timeout = Duration::from_millis(100);
    let s = start(c);
    let (st, v) = s.post("/v1/completions", r#"{"prompt": "Once", "max_tokens": 4096, "ignore_eos": true}"#);
    assert_eq!(v["error"]["type"], "timeout_error");
    assert_error((st, v), 504, None);
    let events = s.stream(
        "/v1/completions",
        r#"{"prompt": "Once", "max_tokens": 4096, "ignore_eos": true, "stream": true}"#,
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["type"], "timeout_error", "{events:?}");
}

#[test]
fn shutdown_lets_streams_end_within_the_grace_period() {
    let s = start(config());
    let addr = s.addr;
    let reader = common::long_stream_in_thread(addr);
    std::thread::sleep(Duration::from_millis(150));
    let t0 = Instant::now();
    s.stop();
    // Grace 0.5 s; the bound is grace + 2 s.
    assert!(t0.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t0.elapsed());
    let all = reader.join().unwrap();
    assert!(all.contains("\"finish_reason\":\"length\""), "{all}");
    assert!(all.contains("data: [DONE]"), "{all}");
}

#[test]
fn the_binary_binds_loopback_and_stops_on_sigterm_within_the_grace_period() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashlm-serve"))
        .args(["--port", "0", "--shutdown-grace", "0.5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "binds loopback by default: {line}");
    let reader = common::long_stream_in_thread(addr);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("flashlm-serve did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let all = reader.join().unwrap();
    assert!(all.contains("data: [DONE]") && all.contains("\"finish_reason\":\"length\""), "{all}");
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("shutting down") && rest.contains("stopped"), "{rest}");
}

#[test]
fn a_non_streamed_request_whose_client_hangs_up_is_dropped() {
    let s = start(config());
    let body = r#"{"prompt": "Once upon a time", "max_tokens": 4096, "ignore_eos": true}"#;
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    write!(c, "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    drop(c);
    let t0 = Instant::now();
    while s.metric("flashlm_streams_dropped_total{reason=\"disconnect\"}") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the abandoned request was never dropped");
        std::thread::sleep(Duration::from_millis(10));
    }
    // It stopped well before its 4096 tokens, and its slot is free.
    assert!(s.metric("flashlm_completion_tokens_total") < 4096.0);
    while s.metric("flashlm_active_streams") != 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the stream stayed active");
        std::thread::sleep(Duration::from_millis(10));
    }
}
