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
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE};

mod http;
pub mod hub;
use http::{Hints, Probe, chain, check_url, get, header_text, parse_content_range, probe};

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
        /// Whether the server confirmed that size (false: it could not be asked, e.g. offline).
        verified: bool,
    },
    /// The file was fetched (`resumed_from` bytes were already in the `.part` file, or in a
    /// truncated file of an earlier run).
    Downloaded {
        /// Final size.
        bytes: u64,
        /// Bytes that came from an earlier, interrupted download.
        resumed_from: u64,
        /// Attempts used (1 = no retry).
        attempts: u32,
        /// Whether the bytes were checked against the server's published SHA-256.
        sha256_checked: bool,
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
    /// The URL cannot be downloaded from (not http/https, malformed).
    #[error("{url}: not a usable download URL: {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// TLS failed (a certificate the system does not trust, an intercepting proxy, a wrong clock).
    #[error("{url}: TLS error: {detail} (an intercepting proxy, or a wrong system clock?)")]
    Tls {
        /// The URL.
        url: String,
        /// The TLS error.
        detail: String,
    },
    /// Redirects that loop, go on too long, or downgrade https to http.
    #[error("{url}: {detail}")]
    Redirect {
        /// The URL.
        url: String,
        /// What was wrong.
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
    /// The server sent something that is not the file (an HTML error or login page).
    #[error("{url}: {detail}")]
    NotTheFile {
        /// The URL.
        url: String,
        /// What came instead.
        detail: String,
    },
    /// The bytes received do not match the size the server announced.
    #[error("{url}: size mismatch: {detail}")]
    SizeMismatch {
        /// The URL.
        url: String,
        /// What differed.
        detail: String,
    },
    /// The bytes received do not match the SHA-256 the server published.
    #[error(
        "{url}: SHA-256 mismatch: the server publishes {expected}, the download has {found}; removed, run again"
    )]
    Checksum {
        /// The URL.
        url: String,
        /// Published digest (hex).
        expected: String,
        /// Digest of the bytes received (hex).
        found: String,
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
    /// Another process is downloading the same file.
    #[error("{path}: another download of this file is running (its lock is held); wait for it to finish")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// A local file could not be written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (part of the message, not a separate source, so it is printed once).
        err: std::io::Error,
    },
}

/// `dest` with `.part` appended.
pub fn part_path(dest: &Path) -> PathBuf {
    suffixed(dest, ".part")
}

fn suffixed(dest: &Path, suffix: &str) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Most redirects followed (as curl and browsers).
pub const MAX_REDIRECTS: usize = 10;

enum Attempt {
    Done(u64),
    Retry(String),
}

/// State carried from one attempt to the next.
struct Progress {
    /// The size the server announced first.
    announced: Option<u64>,
    /// The server's published facts.
    hints: Hints,
    /// Some response came back (the server is reachable).
    connected_once: bool,
    /// The last attempt read to the end of a body whose size nobody announced.
    eof_unverified: bool,
}

/// Download `url` to `dest` (see the module docs). An existing `dest` is checked against the
/// server's size when the server can be reached: kept if it matches, resumed if it is shorter.
pub fn download(url: &str, dest: &Path, opts: &DownloadOptions) -> Result<DownloadOutcome, DownloadError> {
    let io = |err| DownloadError::Io { path: dest.to_path_buf(), err };
    check_url(url)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(opts.connect_timeout)
        // Blocking reqwest applies this to each read of the body, not to the whole transfer.
        .timeout(opts.read_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| DownloadError::Transfer { url: url.into(), attempts: 0, detail: chain(&e) })?;
    // One process per file: two writers on one .part would interleave their bytes.
    let lock_path = suffixed(dest, ".lock");
    let lock = File::create(&lock_path).map_err(|err| DownloadError::Io { path: lock_path.clone(), err })?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(DownloadError::Busy { path: lock_path }),
        Err(fs::TryLockError::Error(err)) => return Err(DownloadError::Io { path: lock_path, err }),
    }
    let result = download_locked(&client, url, dest, opts);
    let _ = fs::remove_file(&lock_path);
    drop(lock);
    result
}

fn download_locked(
    client: &reqwest::blocking::Client,
    url: &str,
    dest: &Path,
    opts: &DownloadOptions,
) -> Result<DownloadOutcome, DownloadError> {
    let io = |err| DownloadError::Io { path: dest.to_path_buf(), err };
    let part = part_path(dest);
    if let Ok(meta) = fs::metadata(dest) {
        if !meta.is_file() {
            return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
        }
        match probe(client, url, meta.len())? {
            Probe::Complete => {
                return Ok(DownloadOutcome::AlreadyPresent { bytes: meta.len(), verified: true });
            }
            Probe::Unknown => {
                return Ok(DownloadOutcome::AlreadyPresent { bytes: meta.len(), verified: false });
            }
            Probe::Longer(t) => {
                return Err(DownloadError::SizeMismatch {
                    url: url.into(),
                    detail: format!(
                        "{} has {} bytes but the server's file has {t}; remove it and run again",
                        dest.display(),
                        meta.len()
                    ),
                });
            }
            // A file cut by an earlier tool or a full disk: resume it.
            Probe::Shorter => fs::rename(dest, &part).map_err(io)?,
        }
    }
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

    let mut st =
        Progress { announced: None, hints: Hints::default(), connected_once: false, eof_unverified: false };
    let mut last_error = String::new();
    let attempts = opts.retries.saturating_add(1);
    for attempt in 1..=attempts {
        if attempt > 1 {
            let factor = 1u32 << (attempt - 2).min(16);
            std::thread::sleep(opts.backoff.saturating_mul(factor).min(Duration::from_secs(60)));
        }
        match one_attempt(client, url, &part, &mut st, &bar)? {
            Attempt::Done(bytes) => {
                let sha256_checked = verify_sha256(url, &part, st.hints.sha256.as_deref())?;
                fs::rename(&part, dest).map_err(io)?;
                bar.finish_and_clear();
                return Ok(DownloadOutcome::Downloaded {
                    bytes,
                    resumed_from,
                    attempts: attempt,
                    sha256_checked,
                });
            }
            Attempt::Retry(e) => last_error = e,
        }
    }
    bar.abandon();
    if !st.connected_once {
        return Err(DownloadError::Offline { url: url.into(), detail: last_error });
    }
    Err(DownloadError::Transfer { url: url.into(), attempts, detail: last_error })
}

/// Check `part` against the published digest; a mismatch removes it. Returns whether a
/// digest was there to check.
fn verify_sha256(url: &str, part: &Path, expected: Option<&str>) -> Result<bool, DownloadError> {
    use sha2::Digest;
    let Some(expected) = expected else { return Ok(false) };
    let io = |err| DownloadError::Io { path: part.to_path_buf(), err };
    let mut f = File::open(part).map_err(io)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let found: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if found != expected {
        let _ = fs::remove_file(part);
        return Err(DownloadError::Checksum { url: url.into(), expected: expected.into(), found });
    }
    Ok(true)
}

/// One request for the rest of `part` (a `Range` from its length) and the answer's status
/// handled: the body received, or why to retry.
fn one_attempt(
    client: &reqwest::blocking::Client,
    url: &str,
    part: &Path,
    st: &mut Progress,
    bar: &ProgressBar,
) -> Result<Attempt, DownloadError> {
    let io = |err| DownloadError::Io { path: part.to_path_buf(), err };
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let (resp, hints) = match get(client, url, have)? {
        Ok(r) => r,
        Err(f) => {
            let detail = if f.offline { format!("connection failed: {}", f.detail) } else { f.detail };
            return Ok(Attempt::Retry(detail));
        }
    };
    st.connected_once = true;
    st.hints.merge(hints);
    let eof_unverified = std::mem::take(&mut st.eof_unverified);
    let status = resp.status();
    let content_range = header_text(&resp, CONTENT_RANGE).and_then(|v| parse_content_range(&v));
    let content_length = header_text(&resp, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    let html = header_text(&resp, reqwest::header::CONTENT_TYPE)
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/html"));
    if html && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
        return Err(DownloadError::NotTheFile {
            url: url.into(),
            detail: "the server sent an HTML page instead of the file (an error or login page?)".into(),
        });
    }

    let (start, total) = match status {
        StatusCode::PARTIAL_CONTENT => match content_range {
            Some((Some(start), total)) => (start, total.or(st.hints.size)),
            _ => return Ok(Attempt::Retry("206 without a usable Content-Range".into())),
        },
        StatusCode::OK => (0, content_length.or(st.hints.size)),
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let total = content_range.and_then(|(_, t)| t).or(st.announced).or(st.hints.size);
            // A range from our end is past the file: we have all of it (when we read to the
            // end of an unannounced body just before, the server has no more than that).
            if have > 0 && (total == Some(have) || (total.is_none() && eof_unverified)) {
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
    if let (Some(prev), Some(now)) = (st.announced, total)
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
        st.announced = total;
    }
    // A 200 ignores our range (or we had nothing): start from zero.
    let file = if start == 0 {
        File::create(part).map_err(io)?
    } else if start == have {
        OpenOptions::new().append(true).open(part).map_err(io)?
    } else {
        fs::remove_file(part).map_err(io)?;
        return Ok(Attempt::Retry(format!("server resumed at byte {start}, expected {have}")));
    };
    receive(resp, file, (start, total), url, part, st, bar)
}

/// Read the body of `resp` into `file` (already at byte `start`), checking it against the
/// announced `total`: done, or why to retry.
fn receive(
    mut resp: reqwest::blocking::Response,
    mut file: File,
    (start, total): (u64, Option<u64>),
    url: &str,
    part: &Path,
    st: &mut Progress,
    bar: &ProgressBar,
) -> Result<Attempt, DownloadError> {
    let io = |err| DownloadError::Io { path: part.to_path_buf(), err };
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
                    "transfer cut at byte {written} after {:.1}s: {}",
                    started.elapsed().as_secs_f64(),
                    chain(&e)
                )));
            }
        }
    }
    file.sync_all().map_err(io)?;
    match total {
        Some(t) if written < t => {
            Ok(Attempt::Retry(format!("size mismatch: received {written} of {t} announced bytes")))
        }
        Some(_) => Ok(Attempt::Done(written)),
        // With a published digest the end can be checked by content.
        None if st.hints.sha256.is_some() => Ok(Attempt::Done(written)),
        // Nothing says how long the file is, so a connection cut here would look complete:
        // ask for the bytes after our end; only a 416 confirms we have them all.
        None => {
            st.eof_unverified = true;
            Ok(Attempt::Retry(format!(
                "the server announced no size; {written} bytes received, checking the end with a range request"
            )))
        }
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
        if let DownloadOutcome::AlreadyPresent { bytes, verified } = outcome {
            let how =
                if verified { "the server's size" } else { "not checked: the server could not be asked" };
            eprintln!("{}: already present ({bytes} bytes; {how})", dest.display());
        }
        out.push(dest);
    }
    Ok((out[1].clone(), out[0].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_path_appends_suffix() {
        assert_eq!(part_path(Path::new("/a/b.txt")), PathBuf::from("/a/b.txt.part"));
    }
}
