//! Write story files as a Parquet shard laid out like the hub's (a demo and fixture maker):
//!
//! ```text
//! cargo run --release -p flashlm-data --example stories_to_parquet -- OUT.parquet COLUMN STORIES...
//! ```
//!
//! `COLUMN` is the text column's name (`story` as SimpleStories, `text` as FineWeb-Edu). Each
//! row gets `int_score` = its index modulo 6, so the score filter has something to remove.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 4, "usage: stories_to_parquet OUT.parquet COLUMN STORY_FILE...");
    let files: Vec<std::path::PathBuf> = args[3..].iter().map(Into::into).collect();
    let stories = flashlm_data::read_stories(&files)?;
    let rows: Vec<(Option<&str>, Option<i64>)> =
        stories.texts.iter().enumerate().map(|(i, t)| (Some(t.as_str()), Some((i % 6) as i64))).collect();
    flashlm_data::parquet::write_parquet(std::path::Path::new(&args[1]), &args[2], &rows, 1000)?;
    println!("{}: {} rows, column {:?} and int_score", args[1], rows.len(), args[2]);
    Ok(())
}
