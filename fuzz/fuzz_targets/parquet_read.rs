//! A fuzzed Parquet story file: read as the trainer and `prepare` read one (the text column,
//! and the score column for the filter). Nothing may panic, abort or allocate from a claim the
//! bytes cannot back (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch that).
#![no_main]

use flashlm_data::parquet::{ParquetOptions, read_parquet_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = std::path::Path::new("fuzz.parquet");
    for opts in [ParquetOptions::default(), ParquetOptions { min_int_score: Some(3), ..Default::default() }] {
        if let Ok((stories, stats)) = read_parquet_bytes(data, name, &opts) {
            assert!(stories.texts.len() as u64 <= stats.rows);
        }
    }
});
