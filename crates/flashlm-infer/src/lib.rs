//! The FlashLM inference engine: packed 2-bit `.flm` models run with add/subtract-only
//! ternary kernels. Never depends on burn, reqwest or tokio
//! (`scripts/check-infer-deps.sh` checks `cargo tree -p flashlm-infer`).
//!
//! * [`format`]: the `.flm` file (writer and a reader that trusts nothing).
//! * [`cpu`], [`vmath`] (from `flashlm-core`): the features dispatch uses (`FLASHLM_ISA` caps
//!   them) and the element-wise math.
//! * [`kernels`]: the kernel tree: ternary products (scalar, portable, AVX2, AVX-512) and the
//!   output heads' kernels, with their references.
//! * [`generate`]: generation as a library: a [`generate::Generation`] per stream that yields
//!   text pieces, and [`generate::step_many`], one batched decode step for many streams.
//! * [`model`]: the model and its streaming forward pass (constant work per token), read top to
//!   bottom like llama2.c's `run.c`.
//! * [`head4`] (= [`kernels::head4`]): the int4 output head (AVX-512 VNNI, AVX2, portable, reference).
//! * [`score`]: each token's log-probability given the ones before it (echo, evaluation harnesses).
//! * [`bundled`]: the pretrained small model compiled into the binary.

pub mod bundled;
pub mod eval;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod sample;
pub mod score;

pub use flashlm_core::{cpu, vmath};
pub use flashlm_tokenizer as tokenizer;
/// The int4 head, also reachable at its old path.
pub use kernels::head4;
