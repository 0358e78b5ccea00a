//! `flashlm-serve`: an OpenAI-compatible HTTP server over the FlashLM engine, with continuous
//! batching (every active stream advances in one batched step; [`engine`]).
//!
//! Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (streaming as server-sent
//! events; logprobs, echo, n), `GET /v1/models`, `GET /health`, `GET /metrics`,
//! `POST /tokenize`, `POST /detokenize`, `GET /tokenizer_info`, `GET /props`, and the
//! playground page at `GET /`. Errors use OpenAI's shape
//! ([`api::ApiError`]). The engine is `flashlm-infer`'s library API ([`flashlm_infer::generate`]);
//! this crate adds HTTP, limits and scheduling.

pub mod api;
mod complete;
pub mod conn;
pub mod engine;
pub mod json;
pub mod metrics;
mod pages;
pub mod respond;
mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flashlm_infer::model::Model;
use serde_json::{Value, json};

use api::{ApiError, Endpoint, Limits};
use engine::{EngineConfig, EngineHandle};

/// Everything the server is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The name `/v1/models` lists and responses carry.
    pub model_name: String,
    /// Bearer key every `/v1/` request must carry (None: no key).
    pub api_key: Option<String>,
    /// Request body bytes at most (413 beyond).
    pub max_body_bytes: usize,
    /// Limits on prompts and `max_tokens`.
    pub limits: Limits,
    /// Scheduling: streams, queue, prefill chunk, shutdown grace.
    pub engine: EngineConfig,
    /// A request (queued or running) ends with 504 after this long.
    pub request_timeout: Duration,
    /// Header, idle and body timeouts and the connection limit.
    pub net: conn::NetLimits,
}

impl ServeConfig {
    /// The defaults (also `flashlm-serve`'s flag defaults).
    pub const DEFAULT: ServeConfig = ServeConfig {
        model_name: String::new(),
        api_key: None,
        max_body_bytes: 1 << 20,
        limits: Limits { max_prompt_tokens: 4096, max_tokens: 4096, default_max_tokens: 128, max_n: 8 },
        engine: EngineConfig {
            max_streams: 64,
            max_queue: 256,
            prefill_chunk: 64,
            shutdown_grace: Duration::from_secs(10),
        },
        request_timeout: Duration::from_secs(300),
        net: conn::NetLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        },
    };
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self { model_name: "flashlm".into(), ..Self::DEFAULT }
    }
}

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) model: Arc<Model>,
    pub(crate) engine: EngineHandle,
    pub(crate) config: ServeConfig,
    pub(crate) next_id: AtomicU64,
    started: u64,
}

pub(crate) type Shared = Arc<AppState>;

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// The running server: its router and its engine, for [`serve`] or for tests.
#[derive(Debug)]
pub struct Server {
    state: Shared,
}

impl Server {
    /// Start the engine thread for `model`.
    pub fn new(model: Model, config: ServeConfig) -> std::io::Result<Self> {
        let model = Arc::new(model);
        let engine = EngineHandle::start(model.clone(), config.engine.clone())?;
        let state =
            Arc::new(AppState { model, engine, config, next_id: AtomicU64::new(1), started: unix_now() });
        Ok(Self { state })
    }

    /// The routes, with the body limit, the key check and the request counter.
    pub fn router(&self) -> Router {
        let s = self.state.clone();
        Router::new()
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/health", get(health))
            .route("/metrics", get(metrics_text))
            .route("/tokenize", post(tokens::tokenize))
            .route("/detokenize", post(tokens::detokenize))
            .route("/tokenizer_info", get(tokens::tokenizer_info))
            .route("/props", get(tokens::props))
            .route("/", get(pages::playground))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(s.config.max_body_bytes))
            .layer(middleware::from_fn_with_state(s.clone(), auth))
            .layer(middleware::from_fn_with_state(s.clone(), count))
            .with_state(s)
    }

    /// Serve on `listener` until `shutdown` resolves; then answer new work with 503 (and
    /// `/health` with "stopping") while running streams finish within the grace period (then
    /// they are cut), and return ([`conn::serve`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let engine = self.state.engine.clone();
        let shared = engine.shared.clone();
        let drain = conn::Drain {
            shutdown: Box::pin(shutdown),
            begin: Box::new(move || engine.begin_shutdown()),
            idle: Box::new(move || {
                shared.active.load(Ordering::SeqCst) == 0 && shared.queued.load(Ordering::SeqCst) == 0
            }),
            // The grace for the streams, then a moment for their last bytes.
            bound: self.state.config.engine.shutdown_grace + Duration::from_secs(2),
        };
        let limits = self.state.config.net.clone();
        conn::serve(listener, self.router(), limits, drain).await;
        Ok(())
    }
}

async fn count(State(s): State<Shared>, req: HttpRequest, next: Next) -> Response {
    let path = req.uri().path();
    let endpoint = match path {
        "/v1/completions"
        | "/v1/chat/completions"
        | "/v1/models"
        | "/health"
        | "/metrics"
        | "/tokenize"
        | "/detokenize"
        | "/tokenizer_info"
        | "/props"
        | "/" => path.to_string(),
        _ => "other".to_string(),
    };
    let resp = next.run(req).await;
    s.engine.shared.metrics.request(&endpoint, resp.status().as_u16());
    resp
}

/// Constant-time comparison, so the key cannot be guessed a byte at a time from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(s): State<Shared>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &s.config.api_key
        && req.uri().path().starts_with("/v1/")
    {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok = given
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|g| same(g.trim().as_bytes(), key.as_bytes()));
        if !ok {
            let msg = if given.is_some() {
                "invalid API key"
            } else {
                "missing API key: send Authorization: Bearer KEY"
            };
            let mut r =
                ApiError::new(401, "invalid_request_error", Some("invalid_api_key"), msg).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

async fn not_found(req: HttpRequest) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        Some("not_found"),
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: HttpRequest) -> ApiError {
    ApiError::new(
        405,
        "invalid_request_error",
        Some("method_not_allowed"),
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn health(State(s): State<Shared>) -> Response {
    let stopping = s.engine.shared.stopping.load(Ordering::SeqCst);
    let body = json!({"status": if stopping { "stopping" } else { "ok" }, "active_streams": s.engine.shared.active.load(Ordering::SeqCst), "queue_depth": s.engine.shared.queued.load(Ordering::SeqCst)});
    let status = if stopping { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, axum::Json(body)).into_response()
}

async fn models(State(s): State<Shared>) -> axum::Json<Value> {
    axum::Json(
        json!({"object": "list", "data": [{"id": s.config.model_name, "object": "model", "created": s.started, "owned_by": "flashlm"}]}),
    )
}

async fn metrics_text(State(s): State<Shared>) -> Response {
    let sh = &s.engine.shared;
    let text = sh.metrics.render(sh.queued.load(Ordering::SeqCst), sh.active.load(Ordering::SeqCst));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn completions(State(s): State<Shared>, req: HttpRequest) -> Response {
    complete::generate(s, req, Endpoint::Completions).await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat(State(s): State<Shared>, req: HttpRequest) -> Response {
    complete::generate(s, req, Endpoint::Chat).await.unwrap_or_else(IntoResponse::into_response)
}

/// The body, within `--max-body-bytes` (the router's limit) and `--body-timeout`.
pub(crate) async fn body_of(s: &Shared, req: HttpRequest) -> Result<Bytes, ApiError> {
    use axum::extract::FromRequest;
    let timeout = s.config.net.body_timeout;
    match tokio::time::timeout(timeout, Bytes::from_request(req, &())).await {
        Ok(body) => body.map_err(|e| body_error(&e)),
        Err(_) => Err(ApiError::new(
            408,
            "invalid_request_error",
            Some("request_timeout"),
            format!("the request body did not arrive within {} s (--body-timeout)", timeout.as_secs_f64()),
        )),
    }
}

fn body_error(e: &BytesRejection) -> ApiError {
    let status = e.status().as_u16();
    if status == 413 {
        ApiError::new(
            413,
            "invalid_request_error",
            Some("request_too_large"),
            "the request body is larger than the server's --max-body-bytes",
        )
    } else {
        ApiError::new(status, "invalid_request_error", None, format!("cannot read the request body: {e}"))
    }
}
