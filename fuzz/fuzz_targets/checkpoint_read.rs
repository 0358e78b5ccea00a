//! A fuzzed training checkpoint: parsed, verified and its state validated. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = flashlm_train::checkpoint::from_bytes(data, std::path::Path::new("fuzz.ckpt")) {
        // Whatever is accepted is valid and writes back to the same bytes' meaning.
        assert!(ck.state.validate().is_ok());
        let again = flashlm_train::checkpoint::from_bytes(
            &flashlm_train::checkpoint::to_bytes(&ck),
            std::path::Path::new("again.ckpt"),
        )
        .expect("a checkpoint that was read must read back after writing");
        assert_eq!(again.state, ck.state);
    }
});
