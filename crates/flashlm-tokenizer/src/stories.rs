//! Reading stories from local files.
//!
//! Accepted inputs (chosen by file name, each optionally `.zst`-compressed):
//! * `.txt`: TinyStories' own format, stories separated by lines that hold exactly
//!   `<|endoftext|>`;
//! * `.jsonl` / `.json`: one JSON object per line with a string field `text`.
//!
//! Every story is stripped of leading and trailing whitespace; empty stories are skipped.
//! Invalid UTF-8 is replaced with U+FFFD and counted. A file that is not text is refused with
//! its path: NUL bytes in its first MiB, more than [`MAX_NOT_TEXT`] of its bytes in invalid
//! UTF-8 sequences or control characters, a `.zst` that does not decompress, or one that
//! expands past [`max_expanded`] (a decompression bomb).

use std::io::Read;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

/// The line that ends a story in TinyStories `.txt` files.
pub const STORY_SEPARATOR: &str = "<|endoftext|>";

/// Errors while reading story files.
#[derive(Debug, thiserror::Error)]
pub enum StoryError {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, so not also a `source`, which would print it twice).
        cause: std::io::Error,
    },
    /// The file is not a story file this reader understands.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Layout of a story file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoryFormat {
    /// `<|endoftext|>`-separated text.
    Txt,
    /// JSON lines with a `text` field.
    Jsonl,
}

impl StoryFormat {
    /// Format and compression of a path, from its name.
    pub fn of_path(path: &Path) -> Result<(Self, bool), StoryError> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        let (stem, zst) = match name.strip_suffix(".zst") {
            Some(s) => (s.to_string(), true),
            None => (name.clone(), false),
        };
        let fmt = if stem.ends_with(".txt") {
            StoryFormat::Txt
        } else if stem.ends_with(".jsonl") || stem.ends_with(".json") {
            StoryFormat::Jsonl
        } else {
            return Err(StoryError::Format {
                path: path.to_path_buf(),
                reason: "unknown story file type: expected .txt or .jsonl, optionally .zst-compressed".into(),
            });
        };
        Ok((fmt, zst))
    }
}

/// Stories read from one or more files.
#[derive(Debug, Clone, Default)]
pub struct Stories {
    /// The stories, stripped, none empty, in file order.
    pub texts: Vec<String>,
    /// Invalid UTF-8 sequences replaced by U+FFFD.
    pub invalid_utf8: u64,
    /// Empty stories skipped.
    pub skipped_empty: u64,
    /// Bytes of text read (after decompression).
    pub text_bytes: u64,
    /// xxh3 of the raw file bytes (as stored), in file order: identifies the source.
    pub source_hash: u64,
}

impl Stories {
    /// Total characters (Unicode scalar values) of all stories.
    pub fn chars(&self) -> u64 {
        self.texts.iter().map(|t| t.chars().count() as u64).sum()
    }
}

/// Read the stories of several files, in the given order.
pub fn read_story_files(paths: &[PathBuf]) -> Result<Stories, StoryError> {
    let mut parts = Vec::with_capacity(paths.len());
    for p in paths {
        parts.push(read_story_file(p)?);
    }
    Ok(Stories::concat(parts))
}

impl Stories {
    /// The stories of several files, in order; the source hash is the xxh3 of the parts'
    /// hashes (little-endian), so it identifies the files and their order.
    pub fn concat(parts: impl IntoIterator<Item = Stories>) -> Stories {
        let mut all = Stories::default();
        let mut h = Xxh3::new();
        for s in parts {
            h.update(&s.source_hash.to_le_bytes());
            all.texts.extend(s.texts);
            all.invalid_utf8 += s.invalid_utf8;
            all.skipped_empty += s.skipped_empty;
            all.text_bytes += s.text_bytes;
        }
        all.source_hash = h.digest();
        all
    }
}

/// The largest share of a story file's bytes that may be invalid UTF-8 or control characters
/// (other than tab, line feed and carriage return). Text files have none or nearly none;
/// random or binary data has far more (a binary file read as stories gives a meaningless BPC).
pub const MAX_NOT_TEXT: f64 = 0.01;

/// The most bytes a `.zst` story file of `compressed` bytes may expand to: 64 MiB plus 64
/// times its size (text compresses 3-8x; a file expanding thousands of times is a bomb, and
/// would take all memory).
pub fn max_expanded(compressed: u64) -> u64 {
    (64 << 20) + compressed.saturating_mul(64)
}

/// Refuse bytes that are not text ([`MAX_NOT_TEXT`]).
fn check_text(bytes: &[u8]) -> Result<(), String> {
    if let Some(pos) = bytes.iter().take(1 << 20).position(|&b| b == 0) {
        return Err(format!("not a text file (NUL byte at offset {pos}); expected UTF-8 stories"));
    }
    let controls =
        bytes.iter().filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f).count();
    let invalid: usize = bytes.utf8_chunks().map(|c| c.invalid().len()).sum();
    let bad = controls + invalid;
    if bad as f64 > MAX_NOT_TEXT * bytes.len() as f64 {
        return Err(format!(
            "not a text file: {:.1}% of its bytes are invalid UTF-8 or control characters (at most {:.0}% is accepted); expected UTF-8 stories",
            100.0 * bad as f64 / bytes.len() as f64,
            MAX_NOT_TEXT * 100.0
        ));
    }
    Ok(())
}

/// Read the stories of one file.
pub fn read_story_file(path: &Path) -> Result<Stories, StoryError> {
    let (fmt, zst) = StoryFormat::of_path(path)?;
    let io = |cause| StoryError::Io { path: path.to_path_buf(), cause };
    let raw = flashlm_core::limits::read_regular(path).map_err(io)?;
    let source_hash = xxhash_rust::xxh3::xxh3_64(&raw);
    let format = |reason: String| StoryError::Format { path: path.to_path_buf(), reason };
    let bytes = if zst {
        let limit = max_expanded(raw.len() as u64);
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&raw[..])
            .and_then(|d| d.take(limit + 1).read_to_end(&mut out))
            .map_err(|e| {
                format(format!("not a valid zstd file ({e}); decompress it or drop the .zst suffix"))
            })?;
        if out.len() as u64 > limit {
            return Err(format(format!(
                "expands to more than {limit} bytes (64 MiB + 64 x its {} compressed bytes): a decompression bomb, not a story file",
                raw.len()
            )));
        }
        out
    } else {
        raw
    };
    check_text(&bytes).map_err(format)?;
    let mut out = match fmt {
        StoryFormat::Txt => parse_txt(&bytes),
        StoryFormat::Jsonl => {
            parse_jsonl(&bytes).map_err(|reason| StoryError::Format { path: path.to_path_buf(), reason })?
        }
    };
    out.text_bytes = bytes.len() as u64;
    out.source_hash = source_hash;
    Ok(out)
}

/// Lossy UTF-8 decoding that counts the replaced sequences.
fn decode_lossy(bytes: &[u8], invalid: &mut u64) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut s = String::with_capacity(bytes.len());
            for chunk in bytes.utf8_chunks() {
                s.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    s.push(char::REPLACEMENT_CHARACTER);
                    *invalid += 1;
                }
            }
            s
        }
    }
}

fn push_story(out: &mut Stories, text: &str) {
    let t = text.trim();
    if t.is_empty() {
        out.skipped_empty += 1;
    } else {
        out.texts.push(t.to_string());
    }
}

/// Split `<|endoftext|>`-separated text (separator lines may end in `\r\n`).
pub fn parse_txt(bytes: &[u8]) -> Stories {
    let mut out = Stories::default();
    let text = decode_lossy(bytes, &mut out.invalid_utf8);
    let mut story = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == STORY_SEPARATOR {
            push_story(&mut out, &story);
            story.clear();
        } else {
            story.push_str(line);
        }
    }
    if !story.trim().is_empty() {
        push_story(&mut out, &story);
    }
    out
}

/// Parse JSON lines with a `text` field.
pub fn parse_jsonl(bytes: &[u8]) -> Result<Stories, String> {
    let mut out = Stories::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = decode_lossy(line, &mut out.invalid_utf8);
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("line {}: not JSON ({e})", i + 1))?;
        let text = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| format!("line {}: no string field \"text\"", i + 1))?;
        push_story(&mut out, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_splits_on_separator_lines_only() {
        let s = parse_txt(
            b"One.\nTwo <|endoftext|> inline.\n<|endoftext|>\n  \n<|endoftext|>\r\nThree.\n<|endoftext|>\n",
        );
        assert_eq!(s.texts, vec!["One.\nTwo <|endoftext|> inline.", "Three."]);
        assert_eq!(s.skipped_empty, 1);
    }

    #[test]
    fn txt_without_final_separator_keeps_last_story() {
        let s = parse_txt(b"A\n<|endoftext|>\nB");
        assert_eq!(s.texts, vec!["A", "B"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let s = parse_txt(b"caf\xe9 ok\n<|endoftext|>\nbad \xff\xfe end\n");
        assert_eq!(s.texts, vec!["caf\u{FFFD} ok", "bad \u{FFFD}\u{FFFD} end"]);
        assert_eq!(s.invalid_utf8, 3);
    }

    #[test]
    fn jsonl_reads_text_field() {
        let s = parse_jsonl(b"{\"text\": \" Hi. \"}\n\n{\"text\": \"\"}\n{\"text\": \"Yo\", \"x\": 1}\n")
            .unwrap();
        assert_eq!(s.texts, vec!["Hi.", "Yo"]);
        assert_eq!(s.skipped_empty, 1);
        assert!(parse_jsonl(b"{\"txt\": 1}").unwrap_err().contains("line 1"));
        assert!(parse_jsonl(b"nope").unwrap_err().contains("not JSON"));
    }

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no temp_dir (tempfile); runs natively and on aarch64")]
    fn binary_and_unknown_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("x.txt");
        std::fs::write(&bin, b"abc\0def").unwrap();
        let e = read_story_file(&bin).unwrap_err().to_string();
        assert!(e.contains("x.txt") && e.contains("not a text file"), "{e}");
        let fake_zst = dir.path().join("y.txt.zst");
        std::fs::write(&fake_zst, b"plain text").unwrap();
        assert!(read_story_file(&fake_zst).unwrap_err().to_string().contains("zstd"));
        let other = dir.path().join("z.parquet");
        std::fs::write(&other, b"PAR1").unwrap();
        assert!(read_story_file(&other).unwrap_err().to_string().contains("unknown story file type"));
        assert!(read_story_file(&dir.path().join("missing.txt")).is_err());
    }

    #[test]
    fn random_bytes_are_not_text_and_rare_bad_bytes_are_fine() {
        // 1 MB of pseudo-random bytes with no NUL (so the NUL check alone lets it through).
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 24) as u8).max(1)
            })
            .collect();
        let e = check_text(&noise).unwrap_err();
        assert!(e.contains("% of its bytes are invalid UTF-8 or control characters"), "{e}");
        let mut text = b"Once upon a time there was a cat. ".repeat(100);
        text.extend_from_slice(b"caf\xe9 \x07");
        assert!(check_text(&text).is_ok(), "two bad bytes in 3,400");
        let mut controls = b"abc".repeat(10);
        controls.extend_from_slice(&[0x1b; 5]);
        assert!(check_text(&controls).is_err(), "escape bytes are not story text");
        assert!(check_text("naïve café, 日本語\r\n\ttab".as_bytes()).is_ok());
    }

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no temp_dir (tempfile); runs natively and on aarch64")]
    fn a_zst_that_expands_past_the_bound_is_refused_without_expanding_it_all() {
        let dir = tempfile::tempdir().unwrap();
        // 200 MiB of one letter compress to a few KB: far past 64 MiB + 64 x that.
        let bomb = dir.path().join("bomb.txt.zst");
        let mut enc = zstd::stream::write::Encoder::new(std::fs::File::create(&bomb).unwrap(), 19).unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..200 {
            std::io::Write::write_all(&mut enc, &block).unwrap();
        }
        enc.finish().unwrap();
        let size = std::fs::metadata(&bomb).unwrap().len();
        assert!(max_expanded(size) < 200 << 20);
        let e = read_story_file(&bomb).unwrap_err().to_string();
        assert!(e.contains("bomb.txt.zst") && e.contains("decompression bomb"), "{e}");
    }

    #[test]
    #[cfg_attr(target_os = "wasi", ignore = "WASI has no temp_dir (tempfile); runs natively and on aarch64")]
    fn zst_and_plain_give_same_stories() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"First story.\n<|endoftext|>\nSecond one.\n<|endoftext|>\n";
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, text).unwrap();
        let z = dir.path().join("a.txt.zst");
        std::fs::write(&z, zstd::encode_all(&text[..], 3).unwrap()).unwrap();
        let a = read_story_file(&plain).unwrap();
        let b = read_story_file(&z).unwrap();
        assert_eq!(a.texts, b.texts);
        assert_ne!(a.source_hash, b.source_hash, "the hash identifies the stored bytes");
    }
}
