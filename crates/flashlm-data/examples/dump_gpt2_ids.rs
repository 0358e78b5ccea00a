//! Print the GPT-2 (r50k_base) ids of the first N stories of some story files, one story
//! per line (space-separated ids). Input for `scripts/reference/vocab_reference.py`, which
//! builds the vocabulary with Python's `Counter.most_common` exactly as FlashLM v4 does.
//!
//! cargo run --release -p flashlm-data --example dump_gpt2_ids -- 50000 FILE... > ids.txt

use std::io::Write;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().ok_or_else(|| anyhow::anyhow!("usage: dump_gpt2_ids N FILE..."))?.parse()?;
    let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    anyhow::ensure!(!files.is_empty(), "usage: dump_gpt2_ids N FILE...");
    let stories = flashlm_data::stories::read_story_files(&files)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for s in stories.texts.iter().take(n) {
        let ids = flashlm_data::tokenizer::gpt2_encode(s);
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", line.join(" "))?;
    }
    Ok(())
}
