//! `flashlm-serve`: serve a FlashLM model over an OpenAI-compatible HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::Model;
use flashlm_serve::api::Limits;
use flashlm_serve::conn::NetLimits;
use flashlm_serve::engine::EngineConfig;
use flashlm_serve::{ServeConfig, Server};

/// The library's defaults are the flags' defaults (written once, in `ServeConfig::default`).
const DEFAULTS: ServeConfig = ServeConfig::DEFAULT;

#[derive(Parser, Debug)]
#[command(
    name = "flashlm-serve",
    version,
    about = "OpenAI-compatible HTTP server for FlashLM models (continuous batching)"
)]
struct Cli {
    /// The .flm model; without it, the bundled small model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The name /v1/models lists (default: the file's stem, or "flashlm-small").
    #[arg(long)]
    model_name: Option<String>,
    /// Address to bind: loopback unless you say otherwise (e.g. 0.0.0.0).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require "Authorization: Bearer KEY" on /v1/ requests (also FLASHLM_API_KEY).
    #[arg(long, env = "FLASHLM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Ternary kernel (as flashlm-infer --kernel).
    #[arg(long, env = "FLASHLM_KERNEL", default_value = "auto")]
    kernel: String,
    /// Threads for each batched step (the streams of a step are split across them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Streams decoded together at most; more requests wait in the queue.
    #[arg(long, default_value_t = DEFAULTS.engine.max_streams)]
    max_streams: usize,
    /// Requests waiting at most (beyond that: 429).
    #[arg(long, default_value_t = DEFAULTS.engine.max_queue)]
    max_queue: usize,
    /// Prompt tokens prefilled per step across all streams (bounds the stall a long prompt
    /// causes the running streams).
    #[arg(long, default_value_t = DEFAULTS.engine.prefill_chunk)]
    prefill_chunk: usize,
    /// Prompt tokens at most (400 beyond).
    #[arg(long, default_value_t = DEFAULTS.limits.max_prompt_tokens)]
    max_prompt_tokens: usize,
    /// max_tokens at most (400 beyond).
    #[arg(long, default_value_t = DEFAULTS.limits.max_tokens)]
    max_tokens_limit: usize,
    /// max_tokens when a request gives none.
    #[arg(long, default_value_t = DEFAULTS.limits.default_max_tokens)]
    default_max_tokens: usize,
    /// Choices per request at most: prompts x n (400 beyond); they are decoded together.
    #[arg(long, default_value_t = DEFAULTS.limits.max_n)]
    max_n: usize,
    /// Request body bytes at most (413 beyond).
    #[arg(long, default_value_t = DEFAULTS.max_body_bytes)]
    max_body_bytes: usize,
    /// Seconds a request may take, queued and running (504 beyond).
    #[arg(long, default_value_t = DEFAULTS.request_timeout.as_secs_f64())]
    request_timeout: f64,
    /// Seconds running streams may go on after SIGTERM / Ctrl-C before they are cut.
    #[arg(long, default_value_t = DEFAULTS.engine.shutdown_grace.as_secs_f64())]
    shutdown_grace: f64,
    /// Seconds a request's headers may take to arrive, counted from the connection's start or
    /// the end of its previous response (so also how long a kept-alive connection may idle).
    #[arg(long, default_value_t = DEFAULTS.net.header_timeout.as_secs_f64())]
    header_timeout: f64,
    /// Seconds a request's body may take to arrive after its headers (408 beyond).
    #[arg(long, default_value_t = DEFAULTS.net.body_timeout.as_secs_f64())]
    body_timeout: f64,
    /// Open connections at most (lowered to fit the descriptor limit, `ulimit -n`). At the
    /// limit a new connection closes the longest-idle one; if every one is busy, it gets 503.
    #[arg(long, default_value_t = DEFAULTS.net.max_connections)]
    max_connections: usize,
    /// Listen on a non-loopback address without --api-key, without the warning.
    #[arg(long)]
    allow_public_without_key: bool,
}

fn seconds(name: &str, x: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        x.is_finite() && x > 0.0 && x < 1e7,
        "--{name} must be a positive number of seconds, not {x}"
    );
    Ok(Duration::from_secs_f64(x))
}

fn config(cli: &Cli) -> anyhow::Result<ServeConfig> {
    for (name, v) in [
        ("max-streams", cli.max_streams),
        ("prefill-chunk", cli.prefill_chunk),
        ("max-prompt-tokens", cli.max_prompt_tokens),
        ("max-tokens-limit", cli.max_tokens_limit),
        ("default-max-tokens", cli.default_max_tokens),
        ("max-n", cli.max_n),
        ("max-body-bytes", cli.max_body_bytes),
        ("max-connections", cli.max_connections),
    ] {
        anyhow::ensure!(v > 0, "--{name} must be at least 1");
    }
    if let Some(k) = &cli.api_key {
        anyhow::ensure!(!k.trim().is_empty(), "--api-key is empty");
    }
    let model_name = cli.model_name.clone().unwrap_or_else(|| {
        cli.model
            .as_ref()
            .and_then(|p| p.file_stem())
            .map_or_else(|| "flashlm-small".to_string(), |s| s.to_string_lossy().into_owned())
    });
    Ok(ServeConfig {
        model_name,
        api_key: cli.api_key.clone(),
        max_body_bytes: cli.max_body_bytes,
        limits: Limits {
            max_prompt_tokens: cli.max_prompt_tokens,
            max_tokens: cli.max_tokens_limit,
            default_max_tokens: cli.default_max_tokens,
            max_n: cli.max_n,
        },
        engine: EngineConfig {
            max_streams: cli.max_streams,
            max_queue: cli.max_queue,
            prefill_chunk: cli.prefill_chunk,
            shutdown_grace: seconds("shutdown-grace", cli.shutdown_grace)?,
        },
        request_timeout: seconds("request-timeout", cli.request_timeout)?,
        net: NetLimits {
            header_timeout: seconds("header-timeout", cli.header_timeout)?,
            body_timeout: seconds("body-timeout", cli.body_timeout)?,
            max_connections: connections(cli.max_connections),
        },
    })
}

/// `--max-connections`, lowered (with a note) to what the descriptor limit allows.
fn connections(wanted: usize) -> usize {
    let (n, lowered) = flashlm_serve::conn::connections_allowed(wanted);
    if let Some(limit) = lowered {
        eprintln!(
            "flashlm-serve: --max-connections lowered from {wanted} to {n} (the descriptor limit is {limit}; raise it with ulimit -n)"
        );
    }
    n
}

/// Whether `host` is a loopback address (or `localhost`).
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn load(cli: &Cli) -> anyhow::Result<Model> {
    let kernel = Kernel::from_name(&cli.kernel).map_err(anyhow::Error::msg)?;
    flashlm_core::limits::check_threads(cli.threads).map_err(anyhow::Error::msg)?;
    let mut model = Model::load(cli.model.as_deref(), kernel)?;
    model.set_threads(cli.threads).map_err(anyhow::Error::msg)?;
    Ok(model)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("flashlm-serve: shutting down (running streams have the grace period to finish)");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config(&cli)?;
    let model = load(&cli)?;
    let listener = tokio::net::TcpListener::bind((cli.host.as_str(), cli.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", cli.host, cli.port))?;
    let addr = listener.local_addr()?;
    if !is_loopback(&cli.host) && config.api_key.is_none() && !cli.allow_public_without_key {
        eprintln!(
            "flashlm-serve: warning: listening on {addr}, reachable from other machines, with no API key: anyone who can reach it can use it. Set --api-key (or FLASHLM_API_KEY), bind 127.0.0.1, or pass --allow-public-without-key to silence this."
        );
    }
    eprintln!(
        "flashlm-serve: {} (kernel {}, head {}, {} thread(s)) on http://{addr} | max {} streams, queue {}{}",
        config.model_name,
        model.kernel.name(),
        model.head.name(),
        cli.threads,
        config.engine.max_streams,
        config.engine.max_queue,
        if config.api_key.is_some() { ", API key required" } else { "" }
    );
    let server = Server::new(model, config).context("cannot start the engine thread")?;
    server.serve(listener, shutdown_signal()).await?;
    eprintln!("flashlm-serve: stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
