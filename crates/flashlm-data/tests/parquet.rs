//! The Parquet story reader against fixtures the test writes: every row group, nulls,
//! the text column by name, the score filter, and bad files refused with path and reason.

mod common;

use std::path::PathBuf;

use flashlm_data::parquet::{ParquetOptions, read_parquet};
use flashlm_data::{read_stories, read_stories_with};

fn rows(n: usize) -> Vec<(String, Option<i64>)> {
    (0..n).map(|i| (format!("  Story number {i}. It was a sunny day.\n"), Some((i % 6) as i64))).collect()
}

#[test]
fn every_row_group_is_read_in_order_with_nulls_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let owned = rows(2500);
    let mut r: Vec<(Option<&str>, Option<i64>)> = owned.iter().map(|(t, s)| (Some(t.as_str()), *s)).collect();
    r[7] = (None, Some(3));
    r[1500] = (Some("   "), None);
    let p = dir.path().join("simplestories-train-00000-of-00001.parquet");
    common::write_parquet(&p, "story", &r, 1000);
    let (s, st) = read_parquet(&p, &ParquetOptions::default()).unwrap();
    assert_eq!((st.rows, st.empty, st.low_score), (2500, 2, 0));
    assert_eq!(s.texts.len(), 2498);
    assert_eq!(s.texts[0], "Story number 0. It was a sunny day.");
    assert_eq!(s.texts[7], "Story number 8. It was a sunny day.");
    assert_eq!(s.texts.last().unwrap(), "Story number 2499. It was a sunny day.");
    // Mixed with a text file through the common reader; the folder scan finds it.
    let txt = dir.path().join("more-train.txt");
    std::fs::write(&txt, "A last story.\n<|endoftext|>\n").unwrap();
    let both = read_stories(&[p.clone(), txt]).unwrap();
    assert_eq!(both.texts.len(), 2499);
    let (train, _) = flashlm_data::prepare::find_split_files(dir.path()).unwrap();
    assert_eq!(train.len(), 2);
}

#[test]
fn the_score_filter_keeps_rows_at_or_above_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let owned = rows(600);
    let mut r: Vec<(Option<&str>, Option<i64>)> = owned.iter().map(|(t, s)| (Some(t.as_str()), *s)).collect();
    r[3].1 = None; // score 3, now missing: removed too
    let p = dir.path().join("fineweb.parquet");
    common::write_parquet(&p, "text", &r, 128);
    let opts = ParquetOptions { min_int_score: Some(3), ..Default::default() };
    let (s, st) = read_stories_with(std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!(st.low_score, 301);
    assert_eq!(s.texts.len(), 299);
    assert!(s.texts.iter().all(|t| {
        let i: usize = t.split(' ').nth(2).unwrap().trim_end_matches('.').parse().unwrap();
        i % 6 >= 3 && i != 3
    }));
}

#[test]
fn bad_parquet_files_are_refused_with_the_path_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let owned = rows(50);
    let r: Vec<(Option<&str>, Option<i64>)> = owned.iter().map(|(t, s)| (Some(t.as_str()), *s)).collect();
    let good = dir.path().join("good.parquet");
    common::write_parquet(&good, "body", &r, 50);
    let err = |p: &PathBuf, o: &ParquetOptions| format!("{:#}", read_parquet(p, o).unwrap_err());
    let e = err(&good, &ParquetOptions::default());
    assert!(e.contains("good.parquet") && e.contains("no text column"), "{e}");
    let named = ParquetOptions { text_column: Some("body".into()), ..Default::default() };
    assert_eq!(read_parquet(&good, &named).unwrap().0.texts.len(), 50);
    let e = err(&good, &ParquetOptions { text_column: Some("id".into()), ..Default::default() });
    assert!(e.contains("does not hold strings"), "{e}");
    let bytes = std::fs::read(&good).unwrap();
    for (name, data) in [
        ("truncated.parquet", bytes[..bytes.len() / 2].to_vec()),
        ("text.parquet", b"Once upon a time\n".to_vec()),
        ("empty.parquet", Vec::new()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let e = err(&p, &named);
        assert!(e.contains(name) && e.contains("not a readable Parquet"), "{e}");
    }
    // A corrupt page inside an intact footer.
    let mut flipped = bytes.clone();
    for b in &mut flipped[8..bytes.len() / 3] {
        *b ^= 0x5A;
    }
    let p = dir.path().join("flipped.parquet");
    std::fs::write(&p, flipped).unwrap();
    assert!(read_parquet(&p, &named).is_err(), "a corrupt page must not read as stories");
}

/// A copy of `src` whose footer claims `claimed` rows in every row group (the data pages are
/// the real ones): what a crafted or damaged file looks like.
fn with_claimed_rows(src: &std::path::Path, dst: &std::path::Path, claimed: i64) {
    use parquet::file::metadata::ParquetMetaDataWriter;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bytes = std::fs::read(src).unwrap();
    let footer_len = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as usize;
    let data_end = bytes.len() - 8 - footer_len;
    let reader = SerializedFileReader::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut b = reader.metadata().clone().into_builder();
    let groups = b
        .take_row_groups()
        .into_iter()
        .map(|g| g.into_builder().set_num_rows(claimed).build().unwrap())
        .collect();
    let meta = b.set_row_groups(groups).build();
    let mut out = bytes[..data_end].to_vec();
    ParquetMetaDataWriter::new(&mut out, &meta).finish().unwrap();
    std::fs::write(dst, out).unwrap();
}

#[test]
fn a_footer_claiming_more_rows_than_the_file_holds_is_refused_without_allocating_them() {
    let dir = tempfile::tempdir().unwrap();
    let owned = rows(77);
    let r: Vec<(Option<&str>, Option<i64>)> = owned.iter().map(|(t, s)| (Some(t.as_str()), *s)).collect();
    let src = dir.path().join("real.parquet");
    common::write_parquet(&src, "text", &r, 77);
    // 2^31..2^40 rows aborted the process ("memory allocation ... failed"), 2^60 panicked with
    // "capacity overflow"; i64::MAX is the largest claim a footer can make.
    for claimed in [1i64 << 31, 1 << 40, 1 << 60, i64::MAX] {
        let p = dir.path().join(format!("claims-{claimed}.parquet"));
        with_claimed_rows(&src, &p, claimed);
        let e = format!("{:#}", read_parquet(&p, &ParquetOptions::default()).unwrap_err());
        assert!(
            e.contains("claims-") && e.contains(&format!("the column ends after 77 of {claimed} rows")),
            "{e}"
        );
    }
    // The honest copy still reads, from the file and from its bytes alike.
    let p = dir.path().join("same.parquet");
    with_claimed_rows(&src, &p, 77);
    let (a, sa) = read_parquet(&p, &ParquetOptions::default()).unwrap();
    assert_eq!(a.texts.len(), 77);
    let bytes = std::fs::read(&p).unwrap();
    let (b, sb) = flashlm_data::parquet::read_parquet_bytes(&bytes, &p, &ParquetOptions::default()).unwrap();
    assert_eq!((a.texts, a.source_hash, sa), (b.texts, b.source_hash, sb));
}

/// The files the `parquet_read` fuzz target found, each refused with the file's name and the
/// reason before the `parquet` crate sizes anything from its claims:
/// * `decoder-panic`: a dictionary page whose byte-array lengths run past its end, on which
///   the crate's decoder panics; its dictionary claims more values than its bytes hold (any
///   other decoder panic becomes an error too: `decoder_guard`, unit-tested in the crate);
/// * `page-claims-1.4gb`: a 1 KB file whose page claims 1.4 GB uncompressed (the crate
///   reserved and filled that before decompressing: 1.4 GB of RSS);
/// * `dictionary-claims-386m-values`: a dictionary sized at 9.3 GB from a few bytes;
/// * `page-header-read-differently`: a dictionary page header that repeats field 2 with
///   another wire type, hiding a data page claiming 2 GB (the check reads headers as the
///   crate does).
#[test]
fn the_fuzz_found_files_are_refused_before_anything_is_sized_from_them() {
    for (name, why) in [
        ("decoder-panic", "claims 18 values in 21 bytes"),
        ("page-claims-1.4gb", "claims 1476395007 bytes uncompressed"),
        ("dictionary-claims-386m-values", "the dictionary page of a column claims"),
        ("page-header-read-differently", "claims"),
    ] {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.parquet"));
        let e = format!("{:#}", read_parquet(&p, &ParquetOptions::default()).unwrap_err());
        assert!(e.contains(&format!("{name}.parquet")) && e.contains(why), "{name}: {e}");
    }
    // A panic elsewhere still reaches the panic hook and unwinds as before.
    assert!(std::panic::catch_unwind(|| panic!("outside the decoder")).is_err());
}
