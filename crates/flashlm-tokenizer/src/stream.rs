//! Token-by-token decoding that never emits a broken UTF-8 character.

use crate::Tokenizer;

/// Decodes ids one at a time. GPT-2 tokens can end in the middle of a UTF-8 character
/// (emoji, accented letters); the decoder holds such bytes back until the character is
/// complete. The concatenation of every [`StreamDecoder::push`] and the final
/// [`StreamDecoder::finish`] equals [`Tokenizer::decode`] of all the ids.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    utf8: Utf8Stream,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tok: &'a Tokenizer) -> Self {
        Self { tok, utf8: Utf8Stream::default() }
    }

    /// Add one id; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u16) -> String {
        self.utf8.push(self.tok.token_bytes(id))
    }

    /// Flush what is held back (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}

/// The byte side of [`StreamDecoder`], without the tokenizer borrow: bytes in, complete
/// characters out (for a generator that owns its state and is handed the tokenizer per call).
#[derive(Debug, Clone, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>, // bytes of an incomplete character (at most 3)
}

impl Utf8Stream {
    /// Add bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // The prefix up to valid_up_to is valid UTF-8 by definition.
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        // Invalid bytes: replace them, as a lossy decode of the whole would.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flush what is held back (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::{BASE_VOCAB_SIZE, NUM_SPECIAL, Tokenizer};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// Every GPT-2 id, in id order: ids 4.. map to GPT-2 ids 0..
    fn full() -> &'static Tokenizer {
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(|| {
            Tokenizer::from_id_to_base(BASE_VOCAB_SIZE + NUM_SPECIAL, (0..BASE_VOCAB_SIZE as u32).collect())
                .unwrap()
        })
    }

    #[test]
    fn emoji_split_across_tokens_is_held_back() {
        let tok = full();
        let ids = tok.encode("a 🦖!");
        // The dinosaur is several byte-level tokens; no push may emit a replacement char.
        let mut d = tok.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            let piece = d.push(id);
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "broken char in {piece:?}");
            out.push_str(&piece);
        }
        out.push_str(&d.finish());
        assert_eq!(out, "a 🦖!");
        assert!(ids.len() > 3);
    }

    proptest! {
        #[test]
        fn stream_equals_whole_decode(ids in proptest::collection::vec(0u16..(BASE_VOCAB_SIZE + NUM_SPECIAL) as u16, 0..40)) {
            let tok = full();
            let mut d = tok.stream_decoder();
            let mut out = String::new();
            for &id in &ids {
                out.push_str(&d.push(id));
            }
            out.push_str(&d.finish());
            prop_assert_eq!(out, tok.decode(&ids));
        }

        #[test]
        fn text_round_trips(text in "\\PC{0,60}") {
            let tok = full();
            prop_assert_eq!(tok.decode(&tok.encode(&text)), text);
        }
    }
}
