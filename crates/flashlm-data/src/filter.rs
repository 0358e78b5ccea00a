//! Document filters for web text (FineWeb-Edu), applied by `flashlm-data prepare` to the
//! training documents, in this order:
//!
//! 1. `--min-int-score N`: the `int_score` column of Parquet rows (read time, see
//!    [`crate::parquet::ParquetOptions`]);
//! 2. `--min-chars` / `--max-chars`: length in characters after stripping;
//! 3. `--dedup`: exact duplicates (same text, byte for byte) after the first;
//! 4. `--min-vocab-coverage F`: documents whose GPT-2 tokens fall in the vocabulary less
//!    than this share (after the vocabulary is built, so it needs one built from a sample
//!    of the same text, or `--tokenizer`).
//!
//! Each filter's count is printed by the prepare step.

use std::collections::HashSet;

use flashlm_tokenizer::{Tokenizer, UNK_ID};
use rayon::prelude::*;

/// Which filters run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FilterConfig {
    /// Keep Parquet rows with `int_score >= N`.
    pub min_int_score: Option<i64>,
    /// Drop documents shorter than this many characters.
    pub min_chars: Option<usize>,
    /// Drop documents longer than this many characters.
    pub max_chars: Option<usize>,
    /// Drop exact duplicates.
    pub dedup: bool,
    /// Drop documents with less than this share of in-vocabulary tokens (0..=1).
    pub min_vocab_coverage: Option<f64>,
}

impl FilterConfig {
    /// Whether any filter runs.
    pub fn any(&self) -> bool {
        *self != FilterConfig::default()
    }

    /// Check the values.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let (Some(a), Some(b)) = (self.min_chars, self.max_chars) {
            anyhow::ensure!(a <= b, "--min-chars {a} is above --max-chars {b}");
        }
        if let Some(c) = self.min_vocab_coverage {
            anyhow::ensure!(
                (0.0..=1.0).contains(&c),
                "--min-vocab-coverage must be between 0 and 1 (it is {c})"
            );
        }
        Ok(())
    }
}

/// Documents each filter removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Documents read (Parquet rows, or stories of text files).
    pub read: u64,
    /// Null or empty texts.
    pub empty: u64,
    /// Below `--min-int-score` (or without a score).
    pub low_score: u64,
    /// Shorter than `--min-chars`.
    pub too_short: u64,
    /// Longer than `--max-chars`.
    pub too_long: u64,
    /// Exact duplicates.
    pub duplicates: u64,
    /// Below `--min-vocab-coverage`.
    pub low_coverage: u64,
    /// Documents kept.
    pub kept: u64,
}

impl std::fmt::Display for FilterStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {} | removed: empty {}, int_score {}, too short {}, too long {}, duplicates {}, vocab coverage {} | kept {}",
            self.read,
            self.empty,
            self.low_score,
            self.too_short,
            self.too_long,
            self.duplicates,
            self.low_coverage,
            self.kept
        )
    }
}

/// Filters 2 and 3 (length, duplicates), in place.
pub fn by_length_and_duplicates(texts: &mut Vec<String>, cfg: &FilterConfig, stats: &mut FilterStats) {
    let mut seen = HashSet::new();
    texts.retain(|t| {
        let chars = t.chars().count();
        if cfg.min_chars.is_some_and(|m| chars < m) {
            stats.too_short += 1;
            return false;
        }
        if cfg.max_chars.is_some_and(|m| chars > m) {
            stats.too_long += 1;
            return false;
        }
        if cfg.dedup && !seen.insert(xxhash_rust::xxh3::xxh3_128(t.as_bytes())) {
            stats.duplicates += 1;
            return false;
        }
        true
    });
    stats.kept = texts.len() as u64;
}

/// Share of a document's tokens that are not UNK.
pub fn vocab_coverage(tok: &Tokenizer, text: &str) -> f64 {
    let mut ids = Vec::new();
    tok.encode_into(text, &mut ids);
    if ids.is_empty() {
        return 1.0;
    }
    1.0 - ids.iter().filter(|&&t| t == UNK_ID).count() as f64 / ids.len() as f64
}

/// Filter 4 (vocabulary coverage), in place, on all cores.
pub fn by_vocab_coverage(texts: &mut Vec<String>, tok: &Tokenizer, min: f64, stats: &mut FilterStats) {
    let keep: Vec<bool> = texts.par_iter().map(|t| vocab_coverage(tok, t) >= min).collect();
    let mut k = keep.iter();
    texts.retain(|_| *k.next().expect("one flag per text"));
    stats.low_coverage += keep.iter().filter(|&&x| !x).count() as u64;
    stats.kept = texts.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_duplicate_filters_count_what_they_remove() {
        let mut t: Vec<String> =
            ["short", "a fine document", "a fine document", "x".repeat(50).as_str(), "another one!"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let cfg = FilterConfig { min_chars: Some(6), max_chars: Some(40), dedup: true, ..Default::default() };
        let mut st = FilterStats::default();
        by_length_and_duplicates(&mut t, &cfg, &mut st);
        assert_eq!(t, vec!["a fine document".to_string(), "another one!".to_string()]);
        assert_eq!((st.too_short, st.too_long, st.duplicates, st.kept), (1, 1, 1, 2));
        assert!(
            FilterConfig { min_chars: Some(5), max_chars: Some(4), ..Default::default() }.validate().is_err()
        );
        assert!(FilterConfig { min_vocab_coverage: Some(1.5), ..Default::default() }.validate().is_err());
        assert!(!FilterConfig::default().any() && cfg.any());
    }
}
