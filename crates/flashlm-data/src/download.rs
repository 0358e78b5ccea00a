//! Downloading TinyStories from the Hugging Face dataset repository.
//!
//! Downloads are resumable: bytes go to `<file>.part`, a retry asks for the rest with an HTTP
//! `Range` header, and the file is renamed into place only when its size matches what the
//! server announced. Transient failures (connection errors, cut transfers, 5xx) are retried
//! with exponential backoff; a 4xx is final.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};

/// Where the dataset lives (override with `--base-url` or `FLASHLM_HF_BASE_URL`).
pub const DEFAULT_BASE_URL: &str = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main";

/// Which TinyStories release to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetVersion {
    /// `TinyStories-train.txt` / `TinyStories-valid.txt` (GPT-3.5 + GPT-4 stories; FlashLM v4's data).
    V1,
    /// `TinyStoriesV2-GPT4-train.txt` / `TinyStoriesV2-GPT4-valid.txt` (GPT-4 only).
    V2Gpt4,
}

impl DatasetVersion {
    /// File names of the (train, validation) splits.
    pub fn files(self) -> (&'static str, &'static str) {
        match self {
            DatasetVersion::V1 => ("TinyStories-train.txt", "TinyStories-valid.txt"),
            DatasetVersion::V2Gpt4 => ("TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt"),
        }
    }
}

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Delay before the first retry; doubles every retry (capped at 60 s).
    pub backoff: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed without receiving a byte.
    pub read_timeout: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            retries: 5,
            backoff: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            progress: true,
        }
    }
}

/// What a download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// The file was already complete on disk; nothing was fetched.
    AlreadyPresent {
        /// Its size.
        bytes: u64,
    },
    /// The file was fetched (`resumed_from` bytes were already in the `.part` file).
    Downloaded {
        /// Final size.
        bytes: u64,
        /// Bytes that came from an earlier, interrupted download.
        resumed_from: u64,
        /// Attempts used (1 = no retry).
        attempts: u32,
    },
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server could not be reached at all.
    #[error(
        "cannot reach {url} ({detail}). Are you offline? Download TinyStories on another machine and \
         point FlashLM at the files: `--train-file FILE --val-file FILE`, or put them in a folder and \
         use `--data-dir DIR` / FLASHLM_DATA_DIR"
    )]
    Offline {
        /// The URL.
        url: String,
        /// The connection error.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("{url}: server answered HTTP {status}")]
    Http {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The bytes received do not match the size the server announced.
    #[error("{url}: size mismatch: {detail}")]
    SizeMismatch {
        /// The URL.
        url: String,
        /// What differed.
        detail: String,
    },
    /// The transfer kept failing.
    #[error("{url}: transfer failed after {attempts} attempts: {detail} (run again to resume)")]
    Transfer {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        detail: String,
    },
    /// A local file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `dest` with `.part` appended.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".part");
    PathBuf::from(s)
}

enum Attempt {
    Done(u64),
    Retry(String),
}

/// Download `url` to `dest` (see the module docs). An existing `dest` is kept as it is.
pub fn download(url: &str, dest: &Path, opts: &DownloadOptions) -> Result<DownloadOutcome, DownloadError> {
    let io = |source| DownloadError::Io { path: dest.to_path_buf(), source };
    if let Ok(meta) = fs::metadata(dest) {
        return Ok(DownloadOutcome::AlreadyPresent { bytes: meta.len() });
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(opts.connect_timeout)
        // Blocking reqwest applies this to each read, not to the whole transfer.
        .timeout(opts.read_timeout)
        .build()
        .map_err(|e| DownloadError::Transfer { url: url.into(), attempts: 0, detail: e.to_string() })?;
    let part = part_path(dest);
    let resumed_from = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bar = if opts.progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(name);

    let mut announced: Option<u64> = None;
    let mut last_error = String::new();
    let mut connected_once = false;
    let attempts = opts.retries + 1;
    for attempt in 1..=attempts {
        if attempt > 1 {
            let factor = 1u32 << (attempt - 2).min(16);
            std::thread::sleep(opts.backoff.saturating_mul(factor).min(Duration::from_secs(60)));
        }
        match one_attempt(&client, url, &part, &mut announced, &bar, &mut connected_once)? {
            Attempt::Done(bytes) => {
                fs::rename(&part, dest).map_err(io)?;
                bar.finish_and_clear();
                return Ok(DownloadOutcome::Downloaded { bytes, resumed_from, attempts: attempt });
            }
            Attempt::Retry(e) => last_error = e,
        }
    }
    bar.abandon();
    if !connected_once {
        return Err(DownloadError::Offline { url: url.into(), detail: last_error });
    }
    Err(DownloadError::Transfer { url: url.into(), attempts, detail: last_error })
}

/// Parse `bytes START-END/TOTAL` (TOTAL may be `*`) into (start, total).
fn parse_content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = range.split_once('-').and_then(|(a, _)| a.trim().parse().ok());
    Some((start, total))
}

fn one_attempt(
    client: &reqwest::blocking::Client,
    url: &str,
    part: &Path,
    announced: &mut Option<u64>,
    bar: &ProgressBar,
    connected_once: &mut bool,
) -> Result<Attempt, DownloadError> {
    let io = |source| DownloadError::Io { path: part.to_path_buf(), source };
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = match req.send() {
        Ok(r) => r,
        Err(e) => {
            let detail = if e.is_connect() || e.is_timeout() {
                format!("connection failed: {e}")
            } else {
                e.to_string()
            };
            return Ok(Attempt::Retry(detail));
        }
    };
    *connected_once = true;
    let status = resp.status();
    let header_u64 = |r: &reqwest::blocking::Response, h| {
        r.headers().get(h).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok()).map(str::to_string)
    };
    let content_range = header_u64(&resp, CONTENT_RANGE).and_then(|v| parse_content_range(&v));
    let content_length = header_u64(&resp, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());

    let (start, total) = match status {
        StatusCode::PARTIAL_CONTENT => match content_range {
            Some((Some(start), total)) => (start, total),
            _ => return Ok(Attempt::Retry("206 without a usable Content-Range".into())),
        },
        StatusCode::OK => (0, content_length),
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let total = content_range.and_then(|(_, t)| t).or(*announced);
            if total == Some(have) && have > 0 {
                return Ok(Attempt::Done(have));
            }
            // The partial file does not fit what the server has: start over.
            fs::remove_file(part).map_err(io)?;
            return Ok(Attempt::Retry(format!("server refused range from byte {have}; restarting")));
        }
        s if s.is_server_error()
            || s == StatusCode::TOO_MANY_REQUESTS
            || s == StatusCode::REQUEST_TIMEOUT =>
        {
            return Ok(Attempt::Retry(format!("HTTP {}", s.as_u16())));
        }
        s => return Err(DownloadError::Http { url: url.into(), status: s.as_u16() }),
    };
    if let (Some(prev), Some(now)) = (*announced, total)
        && prev != now
    {
        let _ = fs::remove_file(part);
        return Err(DownloadError::SizeMismatch {
            url: url.into(),
            detail: format!(
                "the file changed on the server ({prev} bytes, now {now}); partial download removed"
            ),
        });
    }
    if total.is_some() {
        *announced = total;
    }
    // A 200 ignores our range (or we had nothing): start from zero.
    let mut file = if start == 0 {
        File::create(part).map_err(io)?
    } else if start == have {
        OpenOptions::new().append(true).open(part).map_err(io)?
    } else {
        fs::remove_file(part).map_err(io)?;
        return Ok(Attempt::Retry(format!("server resumed at byte {start}, expected {have}")));
    };
    let mut written = start;
    if let Some(t) = total {
        bar.set_length(t);
    }
    bar.set_position(written);
    bar.reset_eta();
    let mut buf = vec![0u8; 1 << 16];
    let started = Instant::now();
    loop {
        match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                file.write_all(&buf[..n]).map_err(io)?;
                written += n as u64;
                bar.set_position(written);
                if let Some(t) = total
                    && written > t
                {
                    drop(file);
                    let _ = fs::remove_file(part);
                    return Err(DownloadError::SizeMismatch {
                        url: url.into(),
                        detail: format!(
                            "received more than the announced {t} bytes; partial download removed"
                        ),
                    });
                }
            }
            Err(e) => {
                file.sync_all().map_err(io)?;
                return Ok(Attempt::Retry(format!(
                    "transfer cut at byte {written} after {:.1}s: {e}",
                    started.elapsed().as_secs_f64()
                )));
            }
        }
    }
    file.sync_all().map_err(io)?;
    match total {
        Some(t) if written < t => {
            Ok(Attempt::Retry(format!("size mismatch: received {written} of {t} announced bytes")))
        }
        _ => Ok(Attempt::Done(written)),
    }
}

/// Download the train and validation files of `version` into `dir`; returns their paths.
pub fn download_tinystories(
    base_url: &str,
    version: DatasetVersion,
    dir: &Path,
    opts: &DownloadOptions,
) -> Result<(PathBuf, PathBuf), DownloadError> {
    let (train, valid) = version.files();
    let mut out = Vec::new();
    for f in [valid, train] {
        let url = format!("{}/{f}", base_url.trim_end_matches('/'));
        let dest = dir.join(f);
        let outcome = download(&url, &dest, opts)?;
        if let DownloadOutcome::AlreadyPresent { bytes } = outcome {
            eprintln!("{}: already present ({bytes} bytes)", dest.display());
        }
        out.push(dest);
    }
    Ok((out[1].clone(), out[0].clone()))
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
    fn part_path_appends_suffix() {
        assert_eq!(part_path(Path::new("/a/b.txt")), PathBuf::from("/a/b.txt.part"));
    }
}
