//! A server on an ephemeral loopback port, in its own thread and runtime, for the tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use flashlm_infer::bundled;
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::Model;
use flashlm_serve::{ServeConfig, Server};
use serde_json::Value;

pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

pub fn config() -> ServeConfig {
    let mut c = ServeConfig { model_name: "flashlm-small".into(), ..ServeConfig::default() };
    c.engine.shutdown_grace = Duration::from_millis(500);
    c
}

pub fn model() -> Model {
    Model::from_bytes(bundled::BYTES, Kernel::detect()).unwrap()
}

pub fn start(config: ServeConfig) -> TestServer {
    let model = model();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let server = Server::new(model, config).unwrap();
            server
                .serve(listener, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).expect("the server did not start");
    TestServer { url: format!("http://{addr}"), addr, stop: Some(stop_tx), thread: Some(thread) }
}

impl TestServer {
    /// Begin shutdown and wait for `serve` to return.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("the server thread panicked");
        }
    }

    pub fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
    }

    fn send(&self, path: &str, body: &str) -> reqwest::blocking::Response {
        Self::client()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    }

    /// POST a JSON body; (status, parsed body).
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self.send(path, body);
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = Self::client().get(format!("{}{path}", self.url)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// POST with "stream": the `data:` payloads in order (the last is "[DONE]").
    pub fn stream(&self, path: &str, body: &str) -> Vec<String> {
        let r = self.send(path, body);
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        BufReader::new(r)
            .lines()
            .map(Result::unwrap)
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }

    /// A metric's value from /metrics (0 if absent).
    pub fn metric(&self, line_start: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(line_start).and_then(|r| r.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The concatenated text of a completion stream's chunks (chat: the deltas' content).
pub fn streamed_text(events: &[String]) -> String {
    let mut s = String::new();
    for e in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["text"].as_str() {
                s.push_str(t);
            }
            if let Some(t) = c["delta"]["content"].as_str() {
                s.push_str(t);
            }
        }
    }
    s
}

/// A long streamed completion over a raw connection, read until the server closes it (in a
/// thread: the caller shuts the server down meanwhile).
pub fn long_stream_in_thread(addr: impl std::net::ToSocketAddrs + Send + 'static) -> JoinHandle<String> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let body =
            r#"{"prompt": "Once upon a time", "max_tokens": 4096, "ignore_eos": true, "stream": true}"#;
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(c, "POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            .unwrap();
        let mut all = String::new();
        c.read_to_string(&mut all).unwrap();
        all
    })
}
