//! The FlashLM trainer: FlashLM v4's `train.py` on the CPU, with two engines (a fused
//! hand-written step and burn autodiff), checkpoints and the exporter.
//!
//! * [`options`]: what a run is asked to do; [`train::run`]: the loop.
//! * [`engine`]: the [`engine::Engine`] trait and its two engines; [`fused`]: the fused step.
//! * [`schedule`]: learning-rate schedules; [`eval`] / [`generate`]: validation and samples.
//! * [`checkpoint`]: every byte of a checkpoint is read and written there.
//! * [`log`], [`plot`]: `training.log`, `metrics.jsonl`, `loss.png`.
//! * [`export`], [`torch_import`]: `.flm` files, from our checkpoints or the original's.
//!
//! The `flashlm-train` binary is a thin layer over [`train::run`].

pub mod checkpoint;
pub mod engine;
pub mod eval;
pub mod export;
pub mod fused;
pub mod generate;
pub mod log;
pub mod options;
pub mod plot;
pub mod schedule;
pub mod stages;
pub mod summary;
/// The PyTorch checkpoint reader (now in `flashlm-convert`, shared with the bindings).
pub use flashlm_convert::torch as torch_import;
pub mod train;
