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
pub mod prepare;
/// Story readers (they live in the tokenizer crate so that inference can use them).
pub use flashlm_tokenizer::stories;
pub mod tokenize;

pub use flashlm_tokenizer as tokenizer;

/// Read story files in order: `.txt` / `.jsonl` (optionally `.zst`) through
/// [`stories::read_story_files`].
pub fn read_stories(paths: &[std::path::PathBuf]) -> anyhow::Result<stories::Stories> {
    Ok(stories::read_story_files(paths)?)
}
