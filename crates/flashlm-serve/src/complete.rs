//! `/v1/completions` and `/v1/chat/completions`: parse, encode the prompts, score an echoed
//! prompt, queue one engine job per choice (prompts x `n`), and answer with one JSON
//! response or a stream of server-sent events whose chunks carry each choice's text and
//! logprobs as they come.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::Request as HttpRequest;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use flashlm_infer::generate::{FinishReason, Generation};
use flashlm_infer::score::prompt_logprobs;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::{self, ApiError, Endpoint, Prompt};
use crate::engine::{Event, Job, Refused};
use crate::respond::{self, Choice, Meta, Scored};
use crate::{Shared, body_of, unix_now};

/// What a choice starts with when the request echoes its prompt.
#[derive(Debug, Clone, Default)]
struct Echo {
    text: String,        // the prompt as given (token ids: their decoded text)
    tokens: Vec<Scored>, // the prompt's tokens with their logprobs (with logprobs only)
}

/// One choice as it grows.
#[derive(Debug, Clone, Default)]
struct Acc {
    text: String,
    tokens: Vec<Scored>,
    offset: usize, // characters of logprob tokens so far (text_offset)
    finish: Option<FinishReason>,
    completion_tokens: usize,
    started: bool, // a stream has sent this choice's first chunk
}

pub(crate) async fn generate(s: Shared, req: HttpRequest, endpoint: Endpoint) -> Result<Response, ApiError> {
    let body = body_of(&s, req).await?;
    let model = &s.model;
    let req = api::parse(&body, endpoint, &s.config.limits, model.config.vocab_size)?;
    let param = endpoint.prompt_param();
    let mut encoded = Vec::with_capacity(req.prompts.len());
    for p in &req.prompts {
        let ids = match p {
            Prompt::Text(t) if t.trim().is_empty() => {
                return Err(ApiError::invalid(param, "the prompt is empty"));
            }
            Prompt::Text(t) => model.tokenizer.encode(t),
            Prompt::Ids(ids) => ids.clone(),
        };
        if ids.len() > s.config.limits.max_prompt_tokens {
            let mut e = ApiError::invalid(
                param,
                format!(
                    "the prompt has {} tokens; this server accepts at most {}",
                    ids.len(),
                    s.config.limits.max_prompt_tokens
                ),
            );
            e.code = Some("context_length_exceeded");
            return Err(e);
        }
        encoded.push(ids);
    }
    let prompt_tokens: usize = encoded.iter().map(Vec::len).sum();
    let echoes =
        if req.echo { echo(&s, &req, &encoded).await? } else { vec![Echo::default(); encoded.len()] };
    let (tx, rx) = mpsc::unbounded_channel();
    let choices = encoded.len() * req.n;
    if req.params.max_tokens > 0 {
        // Check every choice before queueing any.
        let mut jobs = Vec::with_capacity(choices);
        for (pi, ids) in encoded.iter().enumerate() {
            for i in 0..req.n {
                let mut params = req.params.clone();
                params.seed = params.seed.wrapping_add(i as u64);
                let generation = Generation::from_ids(model, ids.clone(), params)
                    .map_err(|e| ApiError::invalid(param, e.to_string()))?;
                let deadline = Instant::now() + s.config.request_timeout;
                jobs.push(Job { generation, index: pi * req.n + i, events: tx.clone(), deadline });
            }
        }
        for job in jobs {
            s.engine.submit(job).map_err(refused)?;
        }
    } else {
        for i in 0..choices {
            let _ = tx.send((i, Event::Done { finish: FinishReason::Length, completion_tokens: 0 }));
        }
    }
    drop(tx);
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let meta = Meta {
        id: format!("{prefix}-{n}"),
        created: unix_now(),
        model: s.config.model_name.clone(),
        endpoint,
    };
    // Choice i of prompt p starts with prompt p's echo.
    let accs: Vec<Acc> = (0..choices)
        .map(|c| {
            let e = &echoes[c / req.n];
            Acc { text: e.text.clone(), tokens: e.tokens.clone(), ..Acc::default() }
        })
        .collect();
    let run = Run { s: s.clone(), meta, logprobs: req.params.logprobs.is_some(), prompt_tokens, accs, rx };
    if req.stream { Ok(run.stream(req.include_usage)) } else { run.collect().await }
}

fn refused(r: Refused) -> ApiError {
    match r {
        Refused::Busy => ApiError::new(
            429,
            "rate_limit_error",
            Some("queue_full"),
            "the server is at its limit of streams and queued requests; retry later",
        ),
        Refused::Stopping => {
            ApiError::new(503, "server_error", Some("shutting_down"), "the server is shutting down")
        }
    }
}

/// The echoed prompts: their text and, with logprobs, each token's logprobs given the ones
/// before it (scored off the async threads).
async fn echo(s: &Shared, req: &api::Request, encoded: &[Vec<u16>]) -> Result<Vec<Echo>, ApiError> {
    let mut out = Vec::with_capacity(encoded.len());
    for (p, ids) in req.prompts.iter().zip(encoded) {
        let text = match p {
            Prompt::Text(t) => t.clone(),
            Prompt::Ids(ids) => s.model.tokenizer.decode(ids),
        };
        let tokens = match req.params.logprobs {
            None => Vec::new(),
            Some(k) => {
                let (model, ids) = (s.model.clone(), ids.clone());
                let lps =
                    tokio::task::spawn_blocking(move || prompt_logprobs(&model, &ids, k).map(|l| (ids, l)))
                        .await
                        .map_err(|e| {
                            ApiError::new(500, "server_error", None, format!("scoring failed: {e}"))
                        })?
                        .map_err(|e| ApiError::new(500, "server_error", None, e.to_string()))?;
                lps.0.into_iter().zip(lps.1).collect()
            }
        };
        out.push(Echo { text, tokens });
    }
    Ok(out)
}

/// A request's choices being generated.
struct Run {
    s: Shared,
    meta: Meta,
    logprobs: bool,
    prompt_tokens: usize,
    accs: Vec<Acc>,
    rx: mpsc::UnboundedReceiver<(usize, Event)>,
}

impl Run {
    fn usage(&self) -> Value {
        respond::usage(self.prompt_tokens, self.accs.iter().map(|a| a.completion_tokens).sum())
    }

    fn logprobs_of(&self, tokens: &[Scored], offset: &mut usize) -> Option<Value> {
        self.logprobs.then(|| respond::logprobs(&self.s.model.tokenizer, self.meta.endpoint, tokens, offset))
    }

    async fn collect(mut self) -> Result<Response, ApiError> {
        let mut left = self.accs.len();
        while left > 0 {
            let Some((i, ev)) = self.rx.recv().await else {
                return Err(ApiError::new(
                    500,
                    "server_error",
                    None,
                    "the engine stopped before the request finished",
                ));
            };
            let a = &mut self.accs[i];
            match ev {
                Event::Text(t, lp) => {
                    a.text.push_str(&t);
                    a.tokens.extend(lp.map(|l| (l.id, Some(l))));
                }
                Event::Done { finish, completion_tokens } => {
                    (a.finish, a.completion_tokens) = (Some(finish), completion_tokens);
                    left -= 1;
                }
                Event::Failed { status, kind, message } => {
                    return Err(ApiError::new(status, kind, None, message));
                }
            }
        }
        let choices: Vec<Choice> = self
            .accs
            .iter()
            .enumerate()
            .map(|(index, a)| Choice {
                index,
                text: Some(a.text.clone()),
                logprobs: self.logprobs_of(&a.tokens, &mut 0),
                finish: a.finish,
            })
            .collect();
        Ok(axum::Json(respond::response(&self.meta, &choices, self.usage())).into_response())
    }

    /// The chunks one event gives (the echo first, in the choice's first chunk).
    fn chunks(&mut self, i: usize, ev: Event, out: &mut VecDeque<String>) -> bool {
        let first = !self.accs[i].started;
        self.accs[i].started = true;
        let (mut text, mut tokens) = if first {
            (std::mem::take(&mut self.accs[i].text), std::mem::take(&mut self.accs[i].tokens))
        } else {
            (String::new(), Vec::new())
        };
        let mut finish = None;
        match ev {
            Event::Text(t, lp) => {
                text.push_str(&t);
                tokens.extend(lp.map(|l| (l.id, Some(l))));
            }
            Event::Done { finish: f, completion_tokens } => {
                finish = Some(f);
                (self.accs[i].finish, self.accs[i].completion_tokens) = (Some(f), completion_tokens);
            }
            Event::Failed { status, kind, message } => {
                out.push_back(ApiError::new(status, kind, None, message).body().to_string());
                return false;
            }
        }
        let mut offset = self.accs[i].offset;
        let logprobs = self.logprobs_of(&tokens, &mut offset);
        self.accs[i].offset = offset;
        let all_done = self.accs.iter().all(|a| a.finish.is_some());
        // A chat delta without new text has no content field (the finish chunk).
        let text = (self.meta.endpoint == Endpoint::Completions || !text.is_empty() || first).then_some(text);
        let c = Choice { index: i, text, logprobs, finish };
        let usage = (finish.is_some() && all_done).then(|| self.usage());
        out.push_back(respond::chunk(&self.meta, &c, first, usage).to_string());
        true
    }

    fn stream(self, include_usage: bool) -> Response {
        struct St {
            run: Run,
            queue: VecDeque<String>,
            ended: bool,
        }
        let st = St { run: self, queue: VecDeque::new(), ended: false };
        let stream = futures_util::stream::unfold(st, move |mut st| async move {
            loop {
                if let Some(d) = st.queue.pop_front() {
                    return Some((Ok::<_, Infallible>(SseEvent::default().data(d)), st));
                }
                if st.ended {
                    return None;
                }
                // The engine sends every choice's end; an error ends the whole stream.
                let ok = match st.run.rx.recv().await {
                    Some((i, ev)) => st.run.chunks(i, ev, &mut st.queue),
                    None => {
                        let e = ApiError::new(500, "server_error", None, "the engine stopped");
                        st.queue.push_back(e.body().to_string());
                        false
                    }
                };
                let all_done = st.run.accs.iter().all(|a| a.finish.is_some());
                if !ok || all_done {
                    if ok && include_usage {
                        let u = respond::usage_chunk(&st.run.meta, st.run.usage());
                        st.queue.push_back(u.to_string());
                    }
                    st.queue.push_back("[DONE]".into());
                    st.ended = true;
                }
            }
        });
        Sse::new(stream).into_response()
    }
}
