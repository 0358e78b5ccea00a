//! Parquet fixtures written by the tests themselves.

use std::path::Path;

/// [`flashlm_data::parquet::write_parquet`], panicking on failure.
#[allow(dead_code)]
pub fn write_parquet(path: &Path, text_column: &str, rows: &[(Option<&str>, Option<i64>)], per_group: usize) {
    flashlm_data::parquet::write_parquet(path, text_column, rows, per_group).unwrap();
}
