//! Continuous batching: one engine thread owns the decode loop. Each step it takes in the
//! requests that arrived (up to `max_streams` active, the rest wait in a queue), prefills a
//! bounded number of prompt tokens, advances every ready stream by one token in one batched
//! step ([`step_many`]: each weight read once for all of them), and sends each stream's new
//! text to its request. A stream whose client went away is dropped at the next step; one
//! past its deadline ends with a timeout error; at shutdown, running streams may finish
//! within the grace period and are then cut.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashlm_infer::generate::{FinishReason, Generation, step_many};
use flashlm_infer::model::{Model, StepBuffers};
use flashlm_infer::sample::TokenLogprob;
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

/// What the engine sends back to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Text that is final (never a broken character; never part of a stop string), and the
    /// token sampled in this step with its logprobs when the request asked for them (its
    /// text may be held back for a later event, or cut by a stop string).
    Text(String, Option<TokenLogprob>),
    /// The stream ended normally.
    Done {
        /// Why.
        finish: FinishReason,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The stream ended with an error (timeout, non-finite activations).
    Failed {
        /// HTTP status the request would get.
        status: u16,
        /// OpenAI error type.
        kind: &'static str,
        /// The message.
        message: String,
    },
}

/// One request's stream, as the engine holds it.
#[derive(Debug)]
pub struct Job {
    /// The prompt (encoded) and its sampler.
    pub generation: Generation,
    /// Which choice of its request (events carry it).
    pub index: usize,
    /// Where its events go; closed when the client went away.
    pub events: UnboundedSender<(usize, Event)>,
    /// When it must have finished.
    pub deadline: Instant,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Streams decoded together at most; the others wait.
    pub max_streams: usize,
    /// Requests waiting at most beyond those (then 429).
    pub max_queue: usize,
    /// Prompt tokens prefilled per step, across all streams (bounds the stall of the
    /// running streams when a long prompt arrives).
    pub prefill_chunk: usize,
    /// How long running streams may go on after shutdown begins.
    pub shutdown_grace: Duration,
}

/// State shared by the HTTP side and the engine thread.
#[derive(Debug)]
pub struct Shared {
    /// Requests submitted and not yet admitted.
    pub queued: AtomicUsize,
    /// Streams being decoded.
    pub active: AtomicUsize,
    /// Set when shutdown begins: new requests get 503.
    pub stopping: AtomicBool,
    cut_at: Mutex<Option<Instant>>, // when running streams are cut (shutdown + grace)
    /// Counters and gauges for `/metrics`.
    pub metrics: Metrics,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full.
    Busy,
    /// The server is shutting down.
    Stopping,
}

/// The HTTP side's handle on the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    jobs: Sender<Job>,
    /// Shared state.
    pub shared: Arc<Shared>,
    config: EngineConfig,
}

impl EngineHandle {
    /// Start the engine thread for `model`.
    pub fn start(model: Arc<Model>, config: EngineConfig) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            cut_at: Mutex::new(None),
            metrics: Metrics::default(),
        });
        let (s, c) = (shared.clone(), config.clone());
        std::thread::Builder::new().name("flashlm-engine".into()).spawn(move || run(&model, &rx, &s, &c))?;
        Ok(Self { jobs, shared, config })
    }

    /// Queue a stream, unless the queue is full or the server is stopping.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(Refused::Stopping);
        }
        let limit = self.config.max_queue + self.config.max_streams;
        let s = &self.shared;
        // Waiting + running may not pass the limit: reserve a place first.
        s.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q + s.active.load(Ordering::SeqCst) < limit).then_some(q + 1)
            })
            .map_err(|_| Refused::Busy)?;
        self.jobs.send(job).map_err(|_| {
            s.queued.fetch_sub(1, Ordering::SeqCst);
            Refused::Stopping
        })
    }

    /// Begin shutdown: refuse new requests; running and queued streams have `grace` left.
    pub fn begin_shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let mut cut = self.shared.cut_at.lock().unwrap_or_else(|e| e.into_inner());
        cut.get_or_insert(Instant::now() + self.config.shutdown_grace);
    }

    /// Streams running or waiting.
    pub fn in_flight(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst) + self.shared.active.load(Ordering::SeqCst)
    }
}

impl Job {
    fn send(&self, e: Event) {
        let _ = self.events.send((self.index, e));
    }
}

/// Why a job leaves before it finished.
fn expired(job: &Job, now: Instant, metrics: &Metrics) -> bool {
    if job.events.is_closed() {
        metrics.dropped("disconnect");
        return true;
    }
    if now >= job.deadline {
        metrics.dropped("timeout");
        job.send(Event::Failed {
            status: 504,
            kind: "timeout_error",
            message: "the request did not finish within the server's --request-timeout".into(),
        });
        return true;
    }
    false
}

fn run(model: &Model, rx: &Receiver<Job>, shared: &Shared, cfg: &EngineConfig) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut active: Vec<Job> = Vec::new();
    let mut scratch = StepBuffers::default();
    loop {
        if active.is_empty() && waiting.is_empty() {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(job) => waiting.push_back(job),
                Err(RecvTimeoutError::Timeout) => {
                    shared.metrics.idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            waiting.push_back(job);
        }
        let now = Instant::now();
        let cut = shared.cut_at.lock().map(|c| c.is_some_and(|t| now >= t)).unwrap_or(true);
        // Waiting jobs whose client left or whose time ran out go first.
        let before = waiting.len();
        waiting.retain(|j| !expired(j, now, &shared.metrics));
        shared.queued.fetch_sub(before - waiting.len(), Ordering::SeqCst);
        while active.len() < cfg.max_streams
            && let Some(job) = waiting.pop_front()
        {
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            active.push(job);
        }
        active.retain_mut(|j| {
            if expired(j, now, &shared.metrics) {
                return false;
            }
            if cut {
                shared.metrics.dropped("shutdown");
                let piece = j.generation.cut();
                if !piece.text.is_empty() {
                    j.send(Event::Text(piece.text, None));
                }
                j.send(Event::Done {
                    finish: FinishReason::Length,
                    completion_tokens: j.generation.generated(),
                });
                return false;
            }
            true
        });
        if cut {
            // Nothing waiting is ever started after the grace period.
            for j in waiting.drain(..) {
                shared.queued.fetch_sub(1, Ordering::SeqCst);
                j.send(Event::Failed {
                    status: 503,
                    kind: "server_error",
                    message: "the server shut down before this request started".into(),
                });
            }
        }
        shared.active.store(active.len(), Ordering::SeqCst);
        if active.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let mut budget = cfg.prefill_chunk.max(1);
        for j in active.iter_mut() {
            if budget == 0 {
                break;
            }
            let fed = j.generation.prefill(model, budget);
            budget -= fed;
            shared.metrics.prefilled(fed);
        }
        let mut gens: Vec<&mut Generation> = active.iter_mut().map(|j| &mut j.generation).collect();
        let ready = gens.iter().filter(|g| g.next_input().is_some()).count();
        let mut results = step_many(model, &mut scratch, &mut gens).into_iter();
        // One result per job, in order: keep the jobs that go on.
        active.retain(|j| match results.next() {
            Some(Ok(p)) => {
                if !p.text.is_empty() || p.logprob.is_some() {
                    j.send(Event::Text(p.text, p.logprob));
                }
                let Some(finish) = p.finish else { return true };
                j.send(Event::Done { finish, completion_tokens: j.generation.generated() });
                false
            }
            Some(Err(e)) => {
                j.send(Event::Failed { status: 500, kind: "server_error", message: e.to_string() });
                false
            }
            None => true,
        });
        shared.active.store(active.len(), Ordering::SeqCst);
        shared.metrics.step(ready, t0.elapsed());
    }
}
