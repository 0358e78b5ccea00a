//! FlashLM's data pipeline: TinyStories download, story readers, the vocabulary build,
//! zstd token caches and batching.
//!
//! ```text
//!  download (HF, resumable) ─┐
//!  local .txt/.jsonl[.zst] ──┴─▶ stories ─▶ vocab (first 50k train stories) ─▶ token caches
//!                                                                          └─▶ windows ─▶ batches
//! ```

pub mod batch;
pub mod cache;
pub mod curriculum;
/// The resumable download (cargo feature `download`, on for the `flashlm-data` binary).
#[cfg(feature = "download")]
pub mod download;
pub mod filter;
pub mod parquet;
mod parquet_pages;
pub mod prepare;
/// Story readers (they live in the tokenizer crate so that inference can use them).
pub use flashlm_tokenizer::stories;
pub mod tokenize;

pub use flashlm_tokenizer as tokenizer;

/// Read story files in order: `.txt` / `.jsonl` (optionally `.zst`) through
/// [`stories::read_story_file`], `.parquet` through [`parquet::read_parquet`] (its text
/// column found by name). The source hash combines the files' hashes as
/// [`stories::read_story_files`] does, so caches of text files stay valid.
pub fn read_stories(paths: &[std::path::PathBuf]) -> anyhow::Result<stories::Stories> {
    read_stories_with(paths, &parquet::ParquetOptions::default()).map(|(s, _)| s)
}

/// [`read_stories`] with Parquet options (text column, score filter), and what they removed.
pub fn read_stories_with(
    paths: &[std::path::PathBuf],
    opts: &parquet::ParquetOptions,
) -> anyhow::Result<(stories::Stories, parquet::ParquetStats)> {
    let mut stats = parquet::ParquetStats::default();
    let mut parts = Vec::with_capacity(paths.len());
    for p in paths {
        parts.push(if parquet::is_parquet(p) {
            let (s, st) = parquet::read_parquet(p, opts)?;
            stats.rows += st.rows;
            stats.empty += st.empty;
            stats.low_score += st.low_score;
            s
        } else {
            stories::read_story_file(p)?
        });
    }
    Ok((stories::Stories::concat(parts), stats))
}

/// Whether `path` is a story file the readers take (by its name).
pub fn is_story_file(path: &std::path::Path) -> bool {
    parquet::is_parquet(path) || stories::StoryFormat::of_path(path).is_ok()
}
