//! Stories and documents from Parquet files (SimpleStories, FineWeb-Edu), read with the
//! arrow-rs `parquet` crate one row group and one column at a time: only the text column
//! (and, for a score filter, the score column) is decoded, and a row group's text is
//! dropped as soon as its stories are kept.
//!
//! The text column is found by name: `text` (FineWeb-Edu), else `story` (SimpleStories),
//! else the one given. Null and empty texts are skipped; texts are stripped as the `.txt`
//! reader does.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, bail};
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};

use crate::stories::Stories;

/// Text columns tried, in order, when none is named.
pub const TEXT_COLUMNS: [&str; 2] = ["text", "story"];
/// Score column of FineWeb-Edu (the classifier's score rounded to 0..=5).
pub const SCORE_COLUMN: &str = "int_score";
/// Rows decoded per call.
const BATCH: usize = 1024;

/// How to read a Parquet file.
#[derive(Debug, Clone, Default)]
pub struct ParquetOptions {
    /// Text column (None: [`TEXT_COLUMNS`]).
    pub text_column: Option<String>,
    /// Keep only rows whose [`SCORE_COLUMN`] is at least this (rows without a score go too).
    pub min_int_score: Option<i64>,
}

/// What reading removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParquetStats {
    /// Rows in the files.
    pub rows: u64,
    /// Rows whose text was null or empty.
    pub empty: u64,
    /// Rows below `min_int_score` (or without a score).
    pub low_score: u64,
}

/// Whether a path names a Parquet file.
pub fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Read the stories of one Parquet file; `stories.source_hash` is the xxh3 of its bytes.
pub fn read_parquet(path: &Path, opts: &ParquetOptions) -> anyhow::Result<(Stories, ParquetStats)> {
    let file = flashlm_core::limits::open_regular(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let source_hash = hash_file(path)?;
    let probe = file.try_clone().with_context(|| format!("cannot read {}", path.display()))?;
    read_from(file, probe, source_hash, path, opts)
}

/// [`read_parquet`] of a file's bytes in memory (`name` names it in errors): what the fuzz
/// target runs.
pub fn read_parquet_bytes(
    bytes: &[u8],
    name: &Path,
    opts: &ParquetOptions,
) -> anyhow::Result<(Stories, ParquetStats)> {
    let hash = xxhash_rust::xxh3::xxh3_64(bytes);
    let b = bytes::Bytes::copy_from_slice(bytes);
    read_from(b.clone(), b, hash, name, opts)
}

/// `probe` reads the same bytes as `source`, for the page-header check ([`crate::parquet_pages`]).
fn read_from<R: ChunkReader + 'static>(
    source: R,
    probe: impl ChunkReader,
    source_hash: u64,
    path: &Path,
    opts: &ParquetOptions,
) -> anyhow::Result<(Stories, ParquetStats)> {
    decoder_guard::run(|| decode(source, &probe, source_hash, path, opts)).unwrap_or_else(|msg| {
        bail!(
            "{}: not a readable Parquet story file: the Parquet decoder failed ({msg}); the file is damaged",
            path.display()
        )
    })
}

/// The `parquet` crate's decoders index into page buffers and can panic on a crafted or
/// damaged file (the `parquet_read` fuzz target found a dictionary page whose byte-array
/// lengths run past its end: "range end index 4 out of range"). Decoding runs under
/// `catch_unwind`, and a panic there becomes an error naming the file; a panic hook installed
/// once keeps such a panic quiet on the thread that is decoding and passes every other panic
/// to the hook before it.
mod decoder_guard {
    use std::cell::{Cell, RefCell};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    thread_local! {
        static DECODING: Cell<bool> = const { Cell::new(false) };
        static MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
    }

    fn install_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if DECODING.with(Cell::get) {
                    let msg = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    MESSAGE.with(|m| *m.borrow_mut() = msg);
                } else {
                    previous(info);
                }
            }));
        });
    }

    /// `f()`, or the message of the panic it raised.
    pub(super) fn run<T>(f: impl FnOnce() -> T) -> Result<T, String> {
        install_hook();
        let was = DECODING.with(|d| d.replace(true));
        let r = catch_unwind(AssertUnwindSafe(f));
        DECODING.with(|d| d.set(was));
        r.map_err(|_| MESSAGE.with(|m| std::mem::take(&mut *m.borrow_mut())))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn a_panic_inside_becomes_its_message_and_one_outside_still_unwinds() {
            assert_eq!(super::run(|| 5), Ok(5));
            assert_eq!(
                super::run(|| -> u8 { panic!("range end index 4 out of range") }).unwrap_err(),
                "range end index 4 out of range"
            );
            let n = 3;
            assert_eq!(super::run(|| -> u8 { panic!("index {n}") }).unwrap_err(), "index 3");
            assert!(!super::DECODING.with(std::cell::Cell::get), "the flag is reset");
            assert!(std::panic::catch_unwind(|| panic!("outside")).is_err());
        }
    }
}

fn decode<R: ChunkReader + 'static>(
    source: R,
    probe: &impl ChunkReader,
    source_hash: u64,
    path: &Path,
    opts: &ParquetOptions,
) -> anyhow::Result<(Stories, ParquetStats)> {
    let bad = |why: String| anyhow::anyhow!("{}: not a readable Parquet story file: {why}", path.display());
    let reader = SerializedFileReader::new(source).map_err(|e| bad(e.to_string()))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let find = |name: &str| schema.columns().iter().position(|c| c.path().string() == name);
    let text_col = match &opts.text_column {
        Some(n) => find(n).ok_or_else(|| bad(format!("no column {n:?}")))?,
        None => TEXT_COLUMNS.iter().find_map(|n| find(n)).ok_or_else(|| {
            bad(format!(
                "no text column (looked for {}; name one with --text-column)",
                TEXT_COLUMNS.join(", ")
            ))
        })?,
    };
    let text = schema.column(text_col);
    if text.physical_type() != PhysicalType::BYTE_ARRAY {
        bail!(bad(format!("column {:?} does not hold strings", text.path().string())));
    }
    if text.max_rep_level() > 0 {
        bail!(bad(format!("column {:?} is a list; a flat column is needed", text.path().string())));
    }
    let score_col = match opts.min_int_score {
        Some(_) => {
            Some(find(SCORE_COLUMN).ok_or_else(|| bad(format!("no {SCORE_COLUMN} column to filter on")))?)
        }
        None => None,
    };
    let mut stories = Stories { source_hash, ..Default::default() };
    let mut stats = ParquetStats::default();
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| bad(format!("row group {g}: {e}")))?;
        let rows = usize::try_from(group.metadata().num_rows().max(0)).unwrap_or(usize::MAX);
        stats.rows = stats.rows.saturating_add(rows as u64);
        let def = |c: usize| schema.column(c).max_def_level();
        for c in std::iter::once(text_col).chain(score_col) {
            let (start, len) = group.metadata().column(c).byte_range();
            crate::parquet_pages::check_chunk(probe, start, len)
                .map_err(|e| bad(format!("row group {g}: {e}")))?;
        }
        let texts = read_texts(
            group.get_column_reader(text_col).map_err(|e| bad(e.to_string()))?,
            rows,
            def(text_col),
        )
        .map_err(|e| bad(format!("row group {g}, text column: {e}")))?;
        let scores = match score_col {
            Some(c) => Some(
                read_ints(group.get_column_reader(c).map_err(|e| bad(e.to_string()))?, rows, def(c))
                    .map_err(|e| bad(format!("row group {g}, {SCORE_COLUMN}: {e}")))?,
            ),
            None => None,
        };
        for (i, t) in texts.into_iter().enumerate() {
            if let (Some(min), Some(s)) = (opts.min_int_score, &scores)
                && s[i].is_none_or(|v| v < min)
            {
                stats.low_score += 1;
                continue;
            }
            let Some(bytes) = t else {
                stats.empty += 1;
                continue;
            };
            let text = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => {
                    stories.invalid_utf8 += 1;
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                }
            };
            let trimmed = text.trim();
            if trimmed.is_empty() {
                stats.empty += 1;
                stories.skipped_empty += 1;
                continue;
            }
            stories.text_bytes += trimmed.len() as u64;
            stories.texts.push(if trimmed.len() == text.len() { text } else { trimmed.to_string() });
        }
    }
    Ok((stories, stats))
}

/// xxh3 of a file's bytes, read in 1 MiB pieces.
fn hash_file(path: &Path) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut f = flashlm_core::limits::open_regular(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(h.digest());
        }
        h.update(&buf[..n]);
    }
}

/// Every row of a flat column: `None` where it is null. `rows` is the footer's claim, which
/// may be a lie: room grows with the rows actually decoded (one batch is reserved up front),
/// and rows the column does not hold are an error.
fn read_column<T: DataType, U>(
    mut r: ColumnReaderImpl<T>,
    rows: usize,
    max_def: i16,
    convert: impl Fn(T::T) -> U,
) -> Result<Vec<Option<U>>, String> {
    let mut out = Vec::with_capacity(rows.min(BATCH));
    let (mut defs, mut vals) = (Vec::new(), Vec::new());
    while out.len() < rows {
        defs.clear();
        vals.clear();
        let want = BATCH.min(rows - out.len());
        let (records, values, levels) = if max_def > 0 {
            r.read_records(want, Some(&mut defs), None, &mut vals).map_err(|e| e.to_string())?
        } else {
            r.read_records(want, None, None, &mut vals).map_err(|e| e.to_string())?
        };
        if records == 0 {
            return Err(format!("the column ends after {} of {rows} rows", out.len()));
        }
        let mut v = vals.drain(..values);
        if max_def > 0 {
            for &d in &defs[..levels] {
                out.push(if d == max_def {
                    Some(convert(v.next().ok_or("fewer values than levels")?))
                } else {
                    None
                });
            }
        } else {
            out.extend(v.map(|x| Some(convert(x))));
        }
    }
    out.truncate(rows);
    Ok(out)
}

fn read_texts(col: ColumnReader, rows: usize, max_def: i16) -> Result<Vec<Option<Vec<u8>>>, String> {
    match col {
        ColumnReader::ByteArrayColumnReader(r) => {
            read_column::<ByteArrayType, _>(r, rows, max_def, |b| b.data().to_vec())
        }
        _ => Err("not a string column".into()),
    }
}

fn read_ints(col: ColumnReader, rows: usize, max_def: i16) -> Result<Vec<Option<i64>>, String> {
    match col {
        ColumnReader::Int64ColumnReader(r) => read_column::<Int64Type, _>(r, rows, max_def, |x| x),
        ColumnReader::Int32ColumnReader(r) => read_column::<Int32Type, _>(r, rows, max_def, i64::from),
        _ => Err("not an integer column".into()),
    }
}

/// Write `rows` (text, int_score; either may be null) as a snappy-compressed Parquet file
/// with a text column named `text_column`, an `id` column and an `int_score` column,
/// `per_group` rows per row group: the layout of the hub's shards, for fixtures and tests.
pub fn write_parquet(
    path: &Path,
    text_column: &str,
    rows: &[(Option<&str>, Option<i64>)],
    per_group: usize,
) -> anyhow::Result<()> {
    use parquet::basic::Compression;
    use parquet::data_type::ByteArray;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = format!(
        "message doc {{ OPTIONAL BYTE_ARRAY {text_column} (UTF8); REQUIRED INT64 id; OPTIONAL INT64 int_score; }}"
    );
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&schema)?);
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = SerializedFileWriter::new(file, schema, props)?;
    let per_group = per_group.max(1);
    for (g, chunk) in rows.chunks(per_group).enumerate() {
        let mut rg = w.next_row_group()?;
        let mut col = 0;
        while let Some(mut c) = rg.next_column()? {
            match col {
                0 => {
                    let defs: Vec<i16> = chunk.iter().map(|r| i16::from(r.0.is_some())).collect();
                    let vals: Vec<ByteArray> =
                        chunk.iter().filter_map(|r| r.0).map(ByteArray::from).collect();
                    c.typed::<ByteArrayType>().write_batch(&vals, Some(&defs), None)?;
                }
                1 => {
                    let ids: Vec<i64> = (0..chunk.len()).map(|i| (g * per_group + i) as i64).collect();
                    c.typed::<Int64Type>().write_batch(&ids, None, None)?;
                }
                _ => {
                    let defs: Vec<i16> = chunk.iter().map(|r| i16::from(r.1.is_some())).collect();
                    let vals: Vec<i64> = chunk.iter().filter_map(|r| r.1).collect();
                    c.typed::<Int64Type>().write_batch(&vals, Some(&defs), None)?;
                }
            }
            c.close()?;
            col += 1;
        }
        rg.close()?;
    }
    w.close()?;
    Ok(())
}
