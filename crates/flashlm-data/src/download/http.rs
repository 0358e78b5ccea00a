//! The HTTP side of a download: URL checks, one GET with manual redirects (never from https to
//! http, the `Range` kept on every hop), the server's size and digest hints, the probe of a file
//! already present.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

use super::{DownloadError, MAX_REDIRECTS};

/// What the server said about the file besides its body. Hugging Face's `resolve/` answers
/// with a redirect to a CDN that carries `X-Linked-Size` and `X-Linked-Etag` (the SHA-256 of
/// LFS files) on the first hop; they are kept across the redirects.
#[derive(Debug, Clone, Default)]
pub(super) struct Hints {
    /// Size of the whole file.
    pub(super) size: Option<u64>,
    /// Its SHA-256, lower-case hex.
    pub(super) sha256: Option<String>,
}

impl Hints {
    /// Keep what is already known; fill the rest from `other`.
    pub(super) fn merge(&mut self, other: Hints) {
        self.size = self.size.or(other.size);
        self.sha256 = self.sha256.take().or(other.sha256);
    }

    pub(super) fn absorb(&mut self, h: &reqwest::header::HeaderMap) {
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string());
        if self.size.is_none() {
            self.size = text("x-linked-size").and_then(|v| v.parse().ok());
        }
        if self.sha256.is_none() {
            self.sha256 = ["x-linked-etag", "etag"].iter().find_map(|n| {
                let v = text(n)?;
                let v = v.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
                (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
            });
        }
    }
}

/// A request that got no response.
pub(super) struct SendFailure {
    pub(super) detail: String,
    /// Connection refused, DNS failure or timeout: what being offline looks like.
    pub(super) offline: bool,
}

pub(super) fn check_url(url: &str) -> Result<reqwest::Url, DownloadError> {
    let bad = |detail: String| DownloadError::BadUrl { url: url.into(), detail };
    let u = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        s => Err(bad(format!("the scheme is {s}:, only http:// and https:// are supported"))),
    }
}

/// The message of an error and all its causes, once each.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// GET `url` (asking for the bytes from `start` on when `start > 0`), following redirects by
/// hand so that the Range header goes along to another host, https never turns into http, a
/// loop ends, and the first hop's [`Hints`] are kept.
pub(super) fn get(
    client: &reqwest::blocking::Client,
    url: &str,
    start: u64,
) -> Result<Result<(reqwest::blocking::Response, Hints), SendFailure>, DownloadError> {
    let mut cur = check_url(url)?;
    let mut hints = Hints::default();
    let mut seen = vec![cur.clone()];
    loop {
        let mut req = client.get(cur.clone());
        if start > 0 {
            req = req.header(RANGE, format!("bytes={start}-"));
        }
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) => {
                let detail = chain(&e);
                let lower = detail.to_ascii_lowercase();
                // rustls's errors, by their messages (reqwest does not expose the type).
                const TLS: [&str; 7] = [
                    "certificate",
                    "tls",
                    "handshake",
                    "corrupt message",
                    "peer is incompatible",
                    "peer misbehaved",
                    "alert",
                ];
                if TLS.iter().any(|w| lower.contains(w)) {
                    return Err(DownloadError::Tls { url: cur.to_string(), detail });
                }
                return Ok(Err(SendFailure { offline: e.is_connect() || e.is_timeout(), detail }));
            }
        };
        hints.absorb(resp.headers());
        if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Ok((resp, hints)));
        }
        let redirect = |detail: String| DownloadError::Redirect { url: url.into(), detail };
        let location =
            resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                redirect(format!("HTTP {} without a Location header", resp.status().as_u16()))
            })?;
        let next = next_hop(&cur, location).map_err(redirect)?;
        if seen.contains(&next) {
            return Err(redirect(format!("redirect loop at {next}")));
        }
        if seen.len() > MAX_REDIRECTS {
            return Err(redirect(format!("more than {MAX_REDIRECTS} redirects")));
        }
        seen.push(next.clone());
        cur = next;
    }
}

/// Where a redirect from `cur` to `location` goes: relative targets resolved, only http(s),
/// never from https down to http.
pub(super) fn next_hop(cur: &reqwest::Url, location: &str) -> Result<reqwest::Url, String> {
    let next = cur.join(location).map_err(|e| format!("bad redirect target {location:?}: {e}"))?;
    if cur.scheme() == "https" && next.scheme() != "https" {
        return Err(format!("refusing a redirect from https to {next} (a downgrade)"));
    }
    if !matches!(next.scheme(), "http" | "https") {
        return Err(format!("refusing a redirect to {next}: only http:// and https:// are supported"));
    }
    Ok(next)
}

/// What the server says about a file already on disk.
pub(super) enum Probe {
    /// Same size.
    Complete,
    /// The server's file is larger: ours was cut.
    Shorter,
    /// Ours is larger than the server's.
    Longer(u64),
    /// The server could not tell (offline, no size given).
    Unknown,
}

pub(super) fn header_text(r: &reqwest::blocking::Response, h: reqwest::header::HeaderName) -> Option<String> {
    r.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string)
}

pub(super) fn probe(client: &reqwest::blocking::Client, url: &str, len: u64) -> Result<Probe, DownloadError> {
    let (resp, hints) = match get(client, url, len)? {
        Ok(r) => r,
        Err(_) => return Ok(Probe::Unknown),
    };
    let range = header_text(&resp, CONTENT_RANGE).and_then(|v| parse_content_range(&v));
    let length = header_text(&resp, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    let total = match resp.status() {
        StatusCode::RANGE_NOT_SATISFIABLE | StatusCode::PARTIAL_CONTENT => range.and_then(|(_, t)| t),
        StatusCode::OK => length,
        _ => None,
    }
    .or(hints.size);
    Ok(match total {
        Some(t) if t == len => Probe::Complete,
        Some(t) if t > len => Probe::Shorter,
        Some(t) => Probe::Longer(t),
        None => Probe::Unknown,
    })
}

/// Parse `bytes START-END/TOTAL` (TOTAL may be `*`) into (start, total).
pub(super) fn parse_content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = range.split_once('-').and_then(|(a, _)| a.trim().parse().ok());
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((Some(100), Some(200))));
        assert_eq!(parse_content_range("bytes */200"), Some((None, Some(200))));
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((Some(0), None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn redirects_resolve_relative_targets_and_never_downgrade() {
        let https = reqwest::Url::parse("https://huggingface.co/datasets/x/resolve/main/a.txt").unwrap();
        assert_eq!(next_hop(&https, "/b.txt").unwrap().as_str(), "https://huggingface.co/b.txt");
        assert_eq!(next_hop(&https, "https://cdn.example/a").unwrap().host_str(), Some("cdn.example"));
        assert!(next_hop(&https, "http://cdn.example/a").unwrap_err().contains("downgrade"));
        assert!(next_hop(&https, "file:///etc/passwd").unwrap_err().contains("downgrade"));
        let http = reqwest::Url::parse("http://127.0.0.1:8/a").unwrap();
        assert!(next_hop(&http, "https://127.0.0.1:9/b").is_ok(), "an upgrade is fine");
        assert!(next_hop(&http, "file:///etc/passwd").unwrap_err().contains("only http"));
    }
}
