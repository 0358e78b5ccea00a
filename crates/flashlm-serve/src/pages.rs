//! The playground page at `GET /`: one static file compiled into the binary (no build step),
//! which streams a story from `/v1/completions` and colours each token by its probability.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page (`src/playground.html`).
pub const PLAYGROUND: &str = include_str!("playground.html");

pub(crate) async fn playground() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], PLAYGROUND)
        .into_response()
}
