//! A fuzzed token cache: parsed and fully verified. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, tokens)) = flashlm_data::cache::from_bytes(data, std::path::Path::new("fuzz.tokens")) {
        assert_eq!(h.token_count, tokens.len() as u64);
    }
});
