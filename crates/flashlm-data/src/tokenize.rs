//! Parallel tokenization and vocabulary counting (all cores, with a progress bar).

use std::time::Instant;

use flashlm_tokenizer::{EOS_ID, Tokenizer, VocabCounter};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Stories per parallel work item: large enough to amortise scheduling, small enough to
/// balance two cores on a few thousand stories.
const CHUNK: usize = 64;

/// A progress bar over bytes of text (hidden when `show` is false).
pub fn bytes_bar(total: u64, label: &str, show: bool) -> ProgressBar {
    let bar = if show { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

/// Figures of one tokenization run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenizeStats {
    /// Stories tokenized.
    pub stories: u64,
    /// Tokens produced (one EOS per story included).
    pub tokens: u64,
    /// Tokens that became UNK.
    pub unk: u64,
    /// Bytes of text tokenized.
    pub bytes: u64,
    /// Wall time in seconds.
    pub secs: f64,
}

impl TokenizeStats {
    /// Throughput in MB/s of text (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }
}

/// Tokenize stories in order, each followed by [`EOS_ID`], on all rayon threads.
pub fn tokenize_stories(tok: &Tokenizer, stories: &[String], progress: bool) -> (Vec<u16>, TokenizeStats) {
    let start = Instant::now();
    let bytes: u64 = stories.iter().map(|s| s.len() as u64).sum();
    let bar = bytes_bar(bytes, "tokenizing", progress);
    let parts: Vec<Vec<u16>> = stories
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut out = Vec::with_capacity(chunk.iter().map(|s| s.len() / 3).sum());
            for s in chunk {
                tok.encode_into(s, &mut out);
                out.push(EOS_ID);
            }
            bar.inc(chunk.iter().map(|s| s.len() as u64).sum());
            out
        })
        .collect();
    bar.finish_and_clear();
    let mut tokens = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for p in parts {
        tokens.extend_from_slice(&p);
    }
    let unk = tokens.iter().filter(|&&t| t == flashlm_tokenizer::UNK_ID).count() as u64;
    let stats = TokenizeStats {
        stories: stories.len() as u64,
        tokens: tokens.len() as u64,
        unk,
        bytes,
        secs: start.elapsed().as_secs_f64(),
    };
    (tokens, stats)
}

/// Count GPT-2 ids over stories in parallel; the result equals one sequential pass
/// (first-seen order included), so ties break exactly as in the original.
pub fn count_vocab(stories: &[String], progress: bool) -> VocabCounter {
    let bytes: u64 = stories.iter().map(|s| s.len() as u64).sum();
    let bar = bytes_bar(bytes, "counting", progress);
    let parts: Vec<VocabCounter> = stories
        .par_chunks(CHUNK * 4)
        .map(|chunk| {
            let mut c = VocabCounter::new();
            for s in chunk {
                c.add_text(s);
            }
            bar.inc(chunk.iter().map(|s| s.len() as u64).sum());
            c
        })
        .collect();
    bar.finish_and_clear();
    let mut total = VocabCounter::new();
    for p in &parts {
        total.merge(p);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stories() -> Vec<String> {
        (0..300).map(|i| format!("Story {i}: the cat number {} sat on mat {}.", i * 7, i % 13)).collect()
    }

    #[test]
    fn parallel_equals_sequential() {
        let s = stories();
        let par = count_vocab(&s, false);
        let mut seq = VocabCounter::new();
        for t in &s {
            seq.add_text(t);
        }
        assert_eq!(par.most_common(usize::MAX), seq.most_common(usize::MAX));
        let (tok, _) = par.build(60).unwrap();
        let (ids, st) = tokenize_stories(&tok, &s, false);
        let mut expect = Vec::new();
        for t in &s {
            expect.extend(tok.encode(t));
            expect.push(EOS_ID);
        }
        assert_eq!(ids, expect);
        assert_eq!(st.stories, 300);
        assert_eq!(st.unk, expect.iter().filter(|&&t| t == flashlm_tokenizer::UNK_ID).count() as u64);
    }
}
