//! Counters and gauges for `GET /metrics` (Prometheus text format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every figure `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>, // (endpoint, status) -> count
    dropped: Mutex<BTreeMap<&'static str, u64>>,   // reason -> streams ended early
    prompt_tokens: AtomicU64,                      // prompt tokens prefilled
    completion_tokens: AtomicU64,                  // tokens sampled
    steps: AtomicU64,                              // batched decode steps
    step_micros: AtomicU64,                        // time in them
    rate: Mutex<Rate>,                             // tokens/s over the last window
}

/// Tokens per second over windows of about a second.
#[derive(Debug, Default)]
struct Rate {
    start: Option<Instant>, // when the current window began
    tokens: u64,            // tokens in it
    last: f64,              // the rate of the last full window
}

impl Rate {
    fn add(&mut self, tokens: u64) {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        self.tokens += tokens;
        let secs = now.duration_since(start).as_secs_f64();
        if secs >= 1.0 {
            self.last = self.tokens as f64 / secs;
            self.start = Some(now);
            self.tokens = 0;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// A request finished with `status`.
    pub fn request(&self, endpoint: &str, status: u16) {
        *lock(&self.requests).entry((endpoint.to_string(), status)).or_default() += 1;
    }

    /// A stream ended early.
    pub fn dropped(&self, reason: &'static str) {
        *lock(&self.dropped).entry(reason).or_default() += 1;
    }

    /// Prompt tokens went in.
    pub fn prefilled(&self, n: usize) {
        self.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One batched step produced `tokens` tokens in `took`.
    pub fn step(&self, tokens: usize, took: Duration) {
        self.completion_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        lock(&self.rate).add(tokens as u64);
    }

    /// The engine had nothing to do for a while: the rate decays to zero.
    pub fn idle(&self) {
        lock(&self.rate).add(0);
    }

    /// The Prometheus text.
    pub fn render(&self, queued: usize, active: usize) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(s, "{name}{labels} {value}");
            }
        };
        let requests = lock(&self.requests)
            .iter()
            .map(|((e, st), n)| (format!("{{endpoint=\"{e}\",status=\"{st}\"}}"), n.to_string()))
            .collect();
        metric("flashlm_requests_total", "counter", "HTTP requests by endpoint and status.", requests);
        let one = |v: String| vec![(String::new(), v)];
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "flashlm_prompt_tokens_total",
            "counter",
            "Prompt tokens prefilled.",
            one(get(&self.prompt_tokens)),
        );
        metric(
            "flashlm_completion_tokens_total",
            "counter",
            "Tokens generated.",
            one(get(&self.completion_tokens)),
        );
        metric("flashlm_engine_steps_total", "counter", "Batched decode steps.", one(get(&self.steps)));
        metric(
            "flashlm_engine_step_seconds_total",
            "counter",
            "Time spent in batched decode steps.",
            one(format!("{}", self.step_micros.load(Ordering::Relaxed) as f64 / 1e6)),
        );
        let dropped =
            lock(&self.dropped).iter().map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n.to_string())).collect();
        metric("flashlm_streams_dropped_total", "counter", "Streams ended early, by reason.", dropped);
        metric(
            "flashlm_queue_depth",
            "gauge",
            "Requests waiting for a stream slot.",
            one(queued.to_string()),
        );
        metric("flashlm_active_streams", "gauge", "Streams being decoded.", one(active.to_string()));
        let rate = lock(&self.rate).last;
        metric(
            "flashlm_tokens_per_second",
            "gauge",
            "Tokens generated per second (last second).",
            one(format!("{rate:.1}")),
        );
        s
    }
}
