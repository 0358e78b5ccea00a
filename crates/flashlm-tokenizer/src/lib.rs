//! FlashLM's tokenizer: GPT-2 BPE (`r50k_base`, embedded, works offline) folded into a
//! small vocabulary of the most frequent GPT-2 ids, exactly as FlashLM v4 builds it.
//!
//! ```text
//!  text ──GPT-2 BPE──▶ base ids (0..50257) ──base_to_id──▶ our ids (0..vocab_size)
//!                                                         0 PAD, 1 UNK, 2 BOS, 3 EOS,
//!                                                         4.. most frequent base ids
//! ```
//!
//! * [`VocabCounter`] counts base ids over the first N training stories and builds the
//!   vocabulary with the tie-breaking of Python's `Counter.most_common` (equal counts keep
//!   the order in which ids were first seen), so the same stories give the same ids as the
//!   original's `tokenizer.json`.
//! * [`Tokenizer`] encodes (unknown base ids become [`UNK_ID`]) and decodes (specials are
//!   dropped); [`StreamDecoder`] decodes token by token without ever emitting half of a
//!   UTF-8 character.
//! * [`Tokenizer::save`] / [`Tokenizer::load`] use a versioned JSON file that the original's
//!   Python loader can read too; [`Tokenizer::load`] also reads the original's files.

mod json;
pub mod stories;
mod stream;

use std::path::Path;

use tiktoken_rs::CoreBPE;

pub use stream::{StreamDecoder, Utf8Stream};

/// Padding id.
pub const PAD_ID: u16 = 0;
/// Id of every GPT-2 token outside the vocabulary.
pub const UNK_ID: u16 = 1;
/// Beginning of sequence.
pub const BOS_ID: u16 = 2;
/// End of story: appended after every story in the token stream.
pub const EOS_ID: u16 = 3;
/// Number of special ids before the first ordinary one.
pub const NUM_SPECIAL: usize = 4;
/// FlashLM v4's vocabulary size.
pub const DEFAULT_VOCAB_SIZE: usize = 10_000;
/// How many training stories FlashLM v4 counts to build its vocabulary.
pub const DEFAULT_VOCAB_STORIES: usize = 50_000;
/// Ids in GPT-2's `r50k_base` encoding, `<|endoftext|>` (50256) included.
pub const BASE_VOCAB_SIZE: usize = 50_257;
/// Largest vocabulary that fits the u16 token streams used everywhere.
pub const MAX_VOCAB_SIZE: usize = flashlm_core::limits::shape::MAX_VOCAB;

/// Everything that can go wrong when building, loading or saving a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        err: std::io::Error,
    },
    /// The file is not JSON, or not a tokenizer.
    #[error("{path}: not a tokenizer file: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A tokenizer file written by a newer FlashLM.
    #[error(
        "{path}: tokenizer format version {found} is not supported (this build reads version {supported}); \
         rebuild the vocabulary with `flashlm-data prepare` or upgrade flashlm"
    )]
    UnsupportedVersion {
        /// The file.
        path: String,
        /// Version in the file.
        found: u64,
        /// Version this build reads.
        supported: u32,
    },
    /// The vocabulary itself is inconsistent.
    #[error("invalid vocabulary: {0}")]
    Invalid(String),
}

/// The GPT-2 BPE (`r50k_base`), loaded once from the ranks embedded in `tiktoken-rs`.
pub fn gpt2() -> &'static CoreBPE {
    tiktoken_rs::r50k_base_singleton()
}

/// GPT-2 ids of `text`, with `<|endoftext|>` treated as ordinary text (as in stories).
pub fn gpt2_encode(text: &str) -> Vec<u32> {
    gpt2().encode_ordinary(text)
}

/// Figures about a vocabulary build.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VocabStats {
    /// Texts (stories) counted.
    pub texts: u64,
    /// GPT-2 tokens counted.
    pub counted_tokens: u64,
    /// Distinct GPT-2 ids seen.
    pub distinct: u64,
    /// GPT-2 ids kept in the vocabulary.
    pub kept: u64,
    /// Share of counted tokens whose id was kept (0..=1).
    pub coverage: f64,
    /// Most texts the build was allowed to count (the `max_texts` setting).
    #[serde(default)]
    pub max_texts: u64,
    /// Hash of the source the texts came from (0 when unknown); lets callers detect a
    /// vocabulary built from other files.
    #[serde(default)]
    pub source_hash: u64,
}

/// Counts GPT-2 ids over a stream of texts, remembering first-seen order
/// (the state of Python's `collections.Counter`).
#[derive(Debug, Clone)]
pub struct VocabCounter {
    counts: Vec<u64>, // [BASE_VOCAB_SIZE] occurrences of each base id
    order: Vec<u32>,  // base ids in the order they were first seen
    texts: u64,
    total: u64,
}

impl Default for VocabCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl VocabCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self { counts: vec![0; BASE_VOCAB_SIZE], order: Vec::new(), texts: 0, total: 0 }
    }

    /// Count the GPT-2 ids of one text.
    pub fn add_text(&mut self, text: &str) {
        let ids = gpt2_encode(text);
        self.add_ids(&ids);
    }

    /// Count already-encoded GPT-2 ids of one text. Ids outside `r50k_base` are ignored.
    pub fn add_ids(&mut self, ids: &[u32]) {
        self.texts += 1;
        for &id in ids {
            let Some(c) = self.counts.get_mut(id as usize) else { continue };
            if *c == 0 {
                self.order.push(id);
            }
            *c += 1;
            self.total += 1;
        }
    }

    /// Append the counts of `later`, which counted texts that come after this counter's
    /// texts in stream order (so first-seen order stays that of one sequential pass).
    pub fn merge(&mut self, later: &VocabCounter) {
        for &id in &later.order {
            if self.counts[id as usize] == 0 {
                self.order.push(id);
            }
            self.counts[id as usize] += later.counts[id as usize];
        }
        self.texts += later.texts;
        self.total += later.total;
    }

    /// Texts counted so far.
    pub fn texts(&self) -> u64 {
        self.texts
    }

    /// The `n` most common base ids with their counts, in `Counter.most_common(n)` order:
    /// count descending, ties in first-seen order.
    pub fn most_common(&self, n: usize) -> Vec<(u32, u64)> {
        let mut ids = self.order.clone();
        // A stable sort keeps first-seen order among equal counts, like Python's sorted().
        ids.sort_by(|a, b| self.counts[*b as usize].cmp(&self.counts[*a as usize]));
        ids.truncate(n);
        ids.into_iter().map(|id| (id, self.counts[id as usize])).collect()
    }

    /// Build a vocabulary of `vocab_size` ids: the specials, then the most common base ids.
    pub fn build(&self, vocab_size: usize) -> Result<(Tokenizer, VocabStats), TokenizerError> {
        if !(NUM_SPECIAL + 1..=MAX_VOCAB_SIZE).contains(&vocab_size) {
            return Err(TokenizerError::Invalid(format!(
                "vocab size {vocab_size} must be between {} and {MAX_VOCAB_SIZE}",
                NUM_SPECIAL + 1
            )));
        }
        let top = self.most_common(vocab_size - NUM_SPECIAL);
        let kept_tokens: u64 = top.iter().map(|&(_, c)| c).sum();
        let stats = VocabStats {
            texts: self.texts,
            counted_tokens: self.total,
            distinct: self.order.len() as u64,
            kept: top.len() as u64,
            coverage: if self.total == 0 { 0.0 } else { kept_tokens as f64 / self.total as f64 },
            max_texts: self.texts,
            source_hash: 0,
        };
        let tok = Tokenizer::from_id_to_base(vocab_size, top.into_iter().map(|(id, _)| id).collect())?;
        Ok((tok, stats))
    }
}

/// The FlashLM vocabulary: our ids <-> GPT-2 ids, and the bytes of every token.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab_size: usize,      // model vocabulary size (ids 0..vocab_size)
    id_to_base: Vec<u32>,   // [kept] GPT-2 id of our id NUM_SPECIAL + i
    base_to_id: Vec<u16>,   // [BASE_VOCAB_SIZE] our id of each GPT-2 id, UNK_ID if not kept
    bytes: Vec<u8>,         // bytes of all tokens, concatenated
    byte_offsets: Vec<u32>, // [vocab_size + 1] token id's bytes are bytes[off[id]..off[id+1]]
}

impl Tokenizer {
    /// A tokenizer whose id `NUM_SPECIAL + i` is GPT-2 id `id_to_base[i]`.
    /// Ids past `NUM_SPECIAL + id_to_base.len()` are valid model ids that decode to nothing.
    pub fn from_id_to_base(vocab_size: usize, id_to_base: Vec<u32>) -> Result<Self, TokenizerError> {
        if !(NUM_SPECIAL + 1..=MAX_VOCAB_SIZE).contains(&vocab_size) {
            return Err(TokenizerError::Invalid(format!(
                "vocab size {vocab_size} must be between {} and {MAX_VOCAB_SIZE}",
                NUM_SPECIAL + 1
            )));
        }
        if id_to_base.len() > vocab_size - NUM_SPECIAL {
            return Err(TokenizerError::Invalid(format!(
                "{} ordinary tokens do not fit a vocabulary of {vocab_size} ({NUM_SPECIAL} specials)",
                id_to_base.len()
            )));
        }
        let mut base_to_id = vec![UNK_ID; BASE_VOCAB_SIZE];
        for (i, &base) in id_to_base.iter().enumerate() {
            let our = (NUM_SPECIAL + i) as u16;
            let slot = base_to_id.get_mut(base as usize).ok_or_else(|| {
                TokenizerError::Invalid(format!(
                    "id {our} maps to GPT-2 id {base}, outside r50k_base (0..{BASE_VOCAB_SIZE})"
                ))
            })?;
            if *slot != UNK_ID {
                return Err(TokenizerError::Invalid(format!(
                    "GPT-2 id {base} appears twice (ids {} and {our})",
                    *slot
                )));
            }
            *slot = our;
        }
        let mut bytes = Vec::new();
        let mut byte_offsets = Vec::with_capacity(vocab_size + 1);
        byte_offsets.push(0u32);
        for id in 0..vocab_size {
            if let Some(&base) = id.checked_sub(NUM_SPECIAL).and_then(|i| id_to_base.get(i)) {
                let b = gpt2()
                    .decode_bytes(&[base])
                    .map_err(|e| TokenizerError::Invalid(format!("GPT-2 id {base} has no bytes: {e:?}")))?;
                bytes.extend_from_slice(&b);
            }
            byte_offsets.push(bytes.len() as u32);
        }
        Ok(Self { vocab_size, id_to_base, base_to_id, bytes, byte_offsets })
    }

    /// Build the vocabulary from texts, FlashLM v4 style: count the GPT-2 ids of the first
    /// `max_texts` texts and keep the `vocab_size - 4` most common.
    pub fn build<'a, I>(
        texts: I,
        max_texts: usize,
        vocab_size: usize,
    ) -> Result<(Self, VocabStats), TokenizerError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut counter = VocabCounter::new();
        for text in texts.into_iter().take(max_texts) {
            counter.add_text(text);
        }
        let (tok, mut stats) = counter.build(vocab_size)?;
        stats.max_texts = max_texts as u64;
        Ok((tok, stats))
    }

    /// Model vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// GPT-2 ids of ids `NUM_SPECIAL..`, in id order.
    pub fn id_to_base(&self) -> &[u32] {
        &self.id_to_base
    }

    /// Our id of a GPT-2 id ([`UNK_ID`] if it is not in the vocabulary).
    pub fn base_to_id(&self, base: u32) -> u16 {
        self.base_to_id.get(base as usize).copied().unwrap_or(UNK_ID)
    }

    /// Encode text into ids. GPT-2 tokens outside the vocabulary become [`UNK_ID`].
    pub fn encode(&self, text: &str) -> Vec<u16> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    /// Encode text, appending the ids to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u16>) {
        out.extend(gpt2_encode(text).into_iter().map(|b| self.base_to_id(b)));
    }

    /// The bytes a token stands for (empty for specials and unknown ids).
    pub fn token_bytes(&self, id: u16) -> &[u8] {
        let id = id as usize;
        if id >= self.vocab_size {
            return &[];
        }
        &self.bytes[self.byte_offsets[id] as usize..self.byte_offsets[id + 1] as usize]
    }

    /// Decode ids into text. Specials and ids without a token are dropped; byte sequences
    /// that are not UTF-8 become U+FFFD (as tiktoken's `decode(errors="replace")`).
    pub fn decode(&self, ids: &[u16]) -> String {
        let mut buf = Vec::new();
        for &id in ids {
            buf.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A decoder that turns ids into text one at a time, holding back partial characters.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// A stable 64-bit fingerprint of the vocabulary (used to key token caches).
    pub fn fingerprint(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"flashlm-vocab/r50k_base/v1");
        h.update(&(self.vocab_size as u64).to_le_bytes());
        for &b in &self.id_to_base {
            h.update(&b.to_le_bytes());
        }
        h.digest()
    }

    /// Save as JSON (format [`json::FORMAT_VERSION`]), atomically: temp file, fsync, rename.
    pub fn save(&self, path: &Path, stats: Option<&VocabStats>) -> Result<(), TokenizerError> {
        let text = json::to_json(self, stats);
        flashlm_core::write::write_atomic(path, text.as_bytes())
            .map_err(|err| TokenizerError::Io { path: path.display().to_string(), err })
    }

    /// Load a tokenizer saved by [`Tokenizer::save`] or by the original FlashLM
    /// (`{"vocab_size", "id_to_base", "base_to_id"}`).
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        Ok(Self::load_with_stats(path)?.0)
    }

    /// Like [`Tokenizer::load`], also returning the build figures saved with it, if any.
    pub fn load_with_stats(path: &Path) -> Result<(Self, Option<VocabStats>), TokenizerError> {
        let text = flashlm_core::limits::read_regular(path)
            .map_err(|err| TokenizerError::Io { path: path.display().to_string(), err })?;
        json::from_json_with_stats(&text, &path.display().to_string())
    }

    /// Parse a tokenizer from JSON bytes (either format); `name` is used in errors.
    pub fn from_json_bytes(bytes: &[u8], name: &str) -> Result<Self, TokenizerError> {
        json::from_json(bytes, name)
    }

    /// The JSON text [`Tokenizer::save`] writes.
    pub fn to_json(&self, stats: Option<&VocabStats>) -> String {
        json::to_json(self, stats)
    }
}

pub use json::FORMAT_VERSION;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_common_breaks_ties_by_first_seen() {
        // Python: Counter([5, 7, 7, 5, 9, 3, 9, 11]).most_common()
        //   == [(5, 2), (7, 2), (9, 2), (3, 1), (11, 1)]
        let mut c = VocabCounter::new();
        c.add_ids(&[5, 7, 7, 5, 9, 3, 9, 11]);
        assert_eq!(c.most_common(10), vec![(5, 2), (7, 2), (9, 2), (3, 1), (11, 1)]);
        assert_eq!(c.most_common(2), vec![(5, 2), (7, 2)]);
    }

    #[test]
    fn merge_equals_one_sequential_pass() {
        let streams: [&[u32]; 3] = [&[10, 11, 10], &[12, 11, 13, 13], &[14, 12, 10, 15]];
        let mut seq = VocabCounter::new();
        for s in streams {
            seq.add_ids(s);
        }
        let mut merged = VocabCounter::new();
        for s in streams {
            let mut part = VocabCounter::new();
            part.add_ids(s);
            merged.merge(&part);
        }
        assert_eq!(seq.most_common(100), merged.most_common(100));
        assert_eq!(seq.texts(), merged.texts());
        assert_eq!(seq.most_common(100), vec![(10, 3), (11, 2), (12, 2), (13, 2), (14, 1), (15, 1)]);
    }

    #[test]
    fn build_reports_coverage_and_maps_unknowns() {
        let texts = ["the cat sat on the mat", "the dog sat", "a zebra"];
        let (tok, stats) = Tokenizer::build(texts.iter().copied(), 10, NUM_SPECIAL + 3).unwrap();
        assert_eq!(stats.texts, 3);
        assert_eq!(stats.kept, 3);
        // "the"/" the" ... whatever the top three are, coverage is their share.
        let total: u64 = texts.iter().map(|t| gpt2_encode(t).len() as u64).sum();
        assert_eq!(stats.counted_tokens, total);
        assert!(stats.coverage > 0.0 && stats.coverage < 1.0);
        let ids = tok.encode("a zebra");
        assert!(ids.contains(&UNK_ID));
        assert_eq!(tok.decode(&[BOS_ID, EOS_ID, PAD_ID, UNK_ID]), "");
    }

    #[test]
    fn full_vocab_round_trips_text() {
        let text = "Once upon a time, a tiny \u{1F996} said “hi” — naïve café.";
        let (tok, _) = Tokenizer::build([text], 1, BASE_VOCAB_SIZE + NUM_SPECIAL).unwrap();
        let ids = tok.encode(text);
        assert!(!ids.contains(&UNK_ID));
        assert_eq!(tok.decode(&ids), text);
    }

    #[test]
    fn rejects_bad_vocabularies() {
        assert!(Tokenizer::from_id_to_base(3, vec![]).is_err());
        assert!(Tokenizer::from_id_to_base(6, vec![1, 2, 3]).is_err());
        assert!(Tokenizer::from_id_to_base(10, vec![1, 1]).is_err());
        assert!(Tokenizer::from_id_to_base(10, vec![BASE_VOCAB_SIZE as u32]).is_err());
        assert!(Tokenizer::from_id_to_base(MAX_VOCAB_SIZE + 1, vec![]).is_err());
    }

    #[test]
    fn fingerprint_depends_on_ids_and_size() {
        let a = Tokenizer::from_id_to_base(10, vec![1, 2]).unwrap();
        let b = Tokenizer::from_id_to_base(10, vec![2, 1]).unwrap();
        let c = Tokenizer::from_id_to_base(11, vec![1, 2]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
