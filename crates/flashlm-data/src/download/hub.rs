//! Parquet datasets from the Hugging Face hub: SimpleStories and FineWeb-Edu.
//!
//! The shard list comes from the hub's tree API
//! (`GET {base}/api/datasets/{repo}/tree/main/{folder}`: a JSON array of
//! `{"type", "path", "size", "lfs": {"oid", "size"}}`, paged with a `Link: <...>; rel="next"`
//! header). Each shard is fetched from `{base}/datasets/{repo}/resolve/main/{path}` with the
//! same resumable, retried download as TinyStories, then checked against the listed size
//! and SHA-256 (`lfs.oid`) and opened as Parquet; a shard that fails a check is removed and
//! named in the error. Shards are saved under names the folder scan sorts into splits:
//! `simplestories-train-00000-of-00004.parquet`, `simplestories-valid-...` (the hub's `test`
//! split), `fineweb-edu-train-000_00000.parquet`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DownloadError, DownloadOptions, DownloadOutcome, download, verify_sha256};

/// The hub (override with `--base-url` or `FLASHLM_HF_ENDPOINT`).
pub const DEFAULT_HUB_URL: &str = "https://huggingface.co";

/// A Parquet dataset on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubDataset {
    /// `SimpleStories/SimpleStories` (MIT): about 2.1M train and 21K test stories, text in `story`.
    SimpleStories,
    /// `HuggingFaceFW/fineweb-edu`, subset `sample-10BT` (ODC-By): text in `text`, score in `int_score`.
    FinewebEdu,
}

impl HubDataset {
    /// Repository id.
    pub fn repo(self) -> &'static str {
        match self {
            HubDataset::SimpleStories => "SimpleStories/SimpleStories",
            HubDataset::FinewebEdu => "HuggingFaceFW/fineweb-edu",
        }
    }

    /// Folder of the shards in the repository.
    pub fn folder(self) -> &'static str {
        match self {
            HubDataset::SimpleStories => "data",
            HubDataset::FinewebEdu => "sample/10BT",
        }
    }

    /// Local file name of a shard at `path` in the repository (None: not a shard we take).
    pub fn local_name(self, path: &str) -> Option<String> {
        let file = path.rsplit('/').next()?;
        if !file.ends_with(".parquet") || file.contains("..") || file.starts_with('.') {
            return None;
        }
        match self {
            HubDataset::SimpleStories => {
                let (split, rest) = file.split_once('-')?;
                let split = match split {
                    "train" => "train",
                    "test" | "validation" | "valid" => "valid",
                    _ => return None,
                };
                Some(format!("simplestories-{split}-{rest}"))
            }
            HubDataset::FinewebEdu => Some(format!("fineweb-edu-train-{file}")),
        }
    }
}

/// One shard in the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Path in the repository.
    pub path: String,
    /// Size in bytes the hub lists.
    pub size: u64,
    /// SHA-256 the hub lists (LFS files), lowercase hex.
    pub sha256: Option<String>,
    /// Local file name.
    pub local: String,
}

/// Which shards to fetch.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardLimits {
    /// At most this many (in listing order, per split).
    pub max_shards: Option<usize>,
    /// At most this many bytes in all (whole shards only).
    pub max_bytes: Option<u64>,
}

/// Most listing pages followed.
const MAX_PAGES: usize = 1000;

/// The dataset's shards, sorted by path, validation shards first (they are small).
pub fn list_shards(base: &str, ds: HubDataset, opts: &DownloadOptions) -> Result<Vec<Shard>, DownloadError> {
    let base = base.trim_end_matches('/');
    let mut url = format!("{base}/api/datasets/{}/tree/main/{}", ds.repo(), ds.folder());
    super::http::check_url(&url)?;
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.read_timeout)
        .build()
        .map_err(|e| DownloadError::Transfer {
            url: url.clone(),
            attempts: 0,
            detail: super::http::chain(&e),
        })?;
    let mut shards = Vec::new();
    for _ in 0..MAX_PAGES {
        let (body, next) = get_listing(&client, &url, opts)?;
        let bad = |detail: String| DownloadError::NotTheFile { url: url.clone(), detail };
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the shard listing is not a JSON array of files: {e}")))?;
        for e in entries {
            if e["type"] != "file" {
                continue;
            }
            let path = e["path"].as_str().ok_or_else(|| bad("a listed file has no path".into()))?.to_string();
            let Some(local) = ds.local_name(&path) else { continue };
            let size = e["lfs"]["size"]
                .as_u64()
                .or_else(|| e["size"].as_u64())
                .ok_or_else(|| bad(format!("{path} has no size")))?;
            let sha256 = e["lfs"]["oid"]
                .as_str()
                .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase);
            shards.push(Shard { path, size, sha256, local });
        }
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    shards.sort_by(|a, b| {
        (!a.local.contains("-valid-"), &a.path).cmp(&(!b.local.contains("-valid-"), &b.path))
    });
    shards.dedup_by(|a, b| a.path == b.path);
    if shards.is_empty() {
        return Err(DownloadError::NotTheFile {
            url: format!("{base}/api/datasets/{}/tree/main/{}", ds.repo(), ds.folder()),
            detail: "the listing names no Parquet shards".into(),
        });
    }
    Ok(shards)
}

/// The shards `limits` allow: per split (train, valid), the first `max_shards`; then whole
/// shards in order while the total stays within `max_bytes`.
pub fn select_shards(shards: &[Shard], limits: ShardLimits) -> Vec<Shard> {
    let mut out = Vec::new();
    let mut per_split = [0usize; 2];
    let mut bytes = 0u64;
    for s in shards {
        let split = usize::from(s.local.contains("-valid-"));
        if limits.max_shards.is_some_and(|m| per_split[split] >= m) {
            continue;
        }
        if limits.max_bytes.is_some_and(|m| bytes.saturating_add(s.size) > m) {
            continue;
        }
        per_split[split] += 1;
        bytes += s.size;
        out.push(s.clone());
    }
    out
}

/// GET a listing page with retries on connection errors and 5xx; its body and the next page.
fn get_listing(
    client: &reqwest::blocking::Client,
    url: &str,
    opts: &DownloadOptions,
) -> Result<(Vec<u8>, Option<String>), DownloadError> {
    let mut delay = opts.backoff;
    let mut last = String::new();
    for attempt in 0..=opts.retries {
        if attempt > 0 {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(60));
        }
        match client.get(url).header("Accept", "application/json").send() {
            Ok(r) if r.status().is_success() => {
                let next = r
                    .headers()
                    .get_all(reqwest::header::LINK)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .find(|l| l.contains("rel=\"next\""))
                    .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_string()));
                let body = r.bytes().map_err(|e| DownloadError::Transfer {
                    url: url.into(),
                    attempts: attempt + 1,
                    detail: super::http::chain(&e),
                })?;
                return Ok((body.to_vec(), next));
            }
            Ok(r) if r.status().is_server_error() => last = format!("HTTP {}", r.status().as_u16()),
            Ok(r) => return Err(DownloadError::Http { url: url.into(), status: r.status().as_u16() }),
            Err(e) if e.is_connect() && attempt == opts.retries => {
                return Err(DownloadError::Offline { url: url.into(), detail: super::http::chain(&e) });
            }
            Err(e) => last = super::http::chain(&e),
        }
    }
    Err(DownloadError::Transfer { url: url.into(), attempts: opts.retries + 1, detail: last })
}

/// What [`download_dataset`] fetched.
#[derive(Debug, Clone)]
pub struct FetchedShard {
    /// The shard.
    pub shard: Shard,
    /// Where it is.
    pub path: PathBuf,
    /// What the download did.
    pub outcome: DownloadOutcome,
}

/// Download the selected shards of `ds` into `dir` (resuming `.part` files) and check each.
pub fn download_dataset(
    base: &str,
    ds: HubDataset,
    dir: &Path,
    limits: ShardLimits,
    opts: &DownloadOptions,
) -> Result<Vec<FetchedShard>, DownloadError> {
    let all = list_shards(base, ds, opts)?;
    let chosen = select_shards(&all, limits);
    if chosen.is_empty() {
        return Err(DownloadError::NotTheFile {
            url: format!("{}/api/datasets/{}", base.trim_end_matches('/'), ds.repo()),
            detail: format!(
                "no shard fits --max-bytes {} (the smallest listed is {} bytes)",
                limits.max_bytes.unwrap_or(0),
                all.iter().map(|s| s.size).min().unwrap_or(0)
            ),
        });
    }
    let mut out = Vec::with_capacity(chosen.len());
    for shard in chosen {
        let url =
            format!("{}/datasets/{}/resolve/main/{}", base.trim_end_matches('/'), ds.repo(), shard.path);
        let dest = dir.join(&shard.local);
        let outcome = download(&url, &dest, opts)?;
        check_shard(&url, &dest, &shard)?;
        out.push(FetchedShard { shard, path: dest, outcome });
    }
    Ok(out)
}

/// The listed size and SHA-256, then the Parquet footer; a shard that fails is removed.
fn check_shard(url: &str, dest: &Path, shard: &Shard) -> Result<(), DownloadError> {
    let len =
        std::fs::metadata(dest).map_err(|err| DownloadError::Io { path: dest.to_path_buf(), err })?.len();
    if len != shard.size {
        let _ = std::fs::remove_file(dest);
        return Err(DownloadError::SizeMismatch {
            url: url.into(),
            detail: format!(
                "the hub lists {} bytes, {} has {len}; removed, run again",
                shard.size,
                dest.display()
            ),
        });
    }
    verify_sha256(url, dest, shard.sha256.as_deref())?;
    let file =
        std::fs::File::open(dest).map_err(|err| DownloadError::Io { path: dest.to_path_buf(), err })?;
    if let Err(e) = parquet::file::reader::SerializedFileReader::new(file) {
        let _ = std::fs::remove_file(dest);
        return Err(DownloadError::NotTheFile {
            url: url.into(),
            detail: format!("{} is not a readable Parquet file ({e}); removed, run again", dest.display()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_sort_into_splits() {
        let s = HubDataset::SimpleStories;
        assert_eq!(
            s.local_name("data/train-00000-of-00004.parquet").unwrap(),
            "simplestories-train-00000-of-00004.parquet"
        );
        assert_eq!(
            s.local_name("data/test-00000-of-00001.parquet").unwrap(),
            "simplestories-valid-00000-of-00001.parquet"
        );
        assert_eq!(s.local_name("data/README.md"), None);
        assert_eq!(s.local_name("data/other-0.parquet"), None);
        let f = HubDataset::FinewebEdu;
        assert_eq!(
            f.local_name("sample/10BT/000_00000.parquet").unwrap(),
            "fineweb-edu-train-000_00000.parquet"
        );
    }

    #[test]
    fn limits_take_whole_shards_in_order() {
        let sh = |p: &str, size| Shard {
            path: p.into(),
            size,
            sha256: None,
            local: HubDataset::SimpleStories.local_name(p).unwrap(),
        };
        let all = vec![
            sh("data/test-0.parquet", 10),
            sh("data/train-0.parquet", 100),
            sh("data/train-1.parquet", 100),
        ];
        assert_eq!(select_shards(&all, ShardLimits::default()).len(), 3);
        let one = select_shards(&all, ShardLimits { max_shards: Some(1), max_bytes: None });
        assert_eq!(
            one.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
            ["data/test-0.parquet", "data/train-0.parquet"]
        );
        assert_eq!(select_shards(&all, ShardLimits { max_shards: None, max_bytes: Some(150) }).len(), 2);
        assert!(select_shards(&all, ShardLimits { max_shards: None, max_bytes: Some(5) }).is_empty());
    }
}
