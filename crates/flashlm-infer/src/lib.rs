//! The FlashLM inference engine (packed 2-bit `.flm` models, add/subtract-only kernels).
//!
//! Not built yet: the engine lands with issue 4. Today this crate only pins the rule that
//! inference depends on the tokenizer and never on burn, reqwest or tokio
//! (`scripts/check-infer-deps.sh` checks `cargo tree -p flashlm-infer`).

pub use flashlm_tokenizer as tokenizer;
