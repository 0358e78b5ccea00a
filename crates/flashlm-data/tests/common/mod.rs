//! Parquet fixtures written by the tests themselves (the `parquet` crate's writer).

use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Write `rows` (text, int_score; either may be null) to `path` as a snappy-compressed
/// Parquet file with a text column named `text_column`, an `id` column and an `int_score`
/// column, `per_group` rows per row group.
#[allow(dead_code)]
pub fn write_parquet(path: &Path, text_column: &str, rows: &[(Option<&str>, Option<i64>)], per_group: usize) {
    let schema = format!(
        "message doc {{ OPTIONAL BYTE_ARRAY {text_column} (UTF8); REQUIRED INT64 id; OPTIONAL INT64 int_score; }}"
    );
    let schema = Arc::new(parse_message_type(&schema).unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut w = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    for (g, chunk) in rows.chunks(per_group.max(1)).enumerate() {
        let mut rg = w.next_row_group().unwrap();
        let mut col = 0;
        while let Some(mut c) = rg.next_column().unwrap() {
            match col {
                0 => {
                    let defs: Vec<i16> = chunk.iter().map(|r| i16::from(r.0.is_some())).collect();
                    let vals: Vec<ByteArray> =
                        chunk.iter().filter_map(|r| r.0).map(ByteArray::from).collect();
                    c.typed::<ByteArrayType>().write_batch(&vals, Some(&defs), None).unwrap();
                }
                1 => {
                    let ids: Vec<i64> = (0..chunk.len()).map(|i| (g * per_group + i) as i64).collect();
                    c.typed::<Int64Type>().write_batch(&ids, None, None).unwrap();
                }
                _ => {
                    let defs: Vec<i16> = chunk.iter().map(|r| i16::from(r.1.is_some())).collect();
                    let vals: Vec<i64> = chunk.iter().filter_map(|r| r.1).collect();
                    c.typed::<Int64Type>().write_batch(&vals, Some(&defs), None).unwrap();
                }
            }
            c.close().unwrap();
            col += 1;
        }
        rg.close().unwrap();
    }
    w.close().unwrap();
}
