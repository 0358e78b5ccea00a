//! The FlashLM trainer: FlashLM v4's `train.py` on burn autodiff (CPU), plus checkpoints.
//!
//! The `flashlm-train` binary is a thin layer over [`train::run`].

pub mod checkpoint;
pub mod export;
pub mod fused;
pub mod generate;
pub mod parity;
pub mod plot;
pub mod step;
pub mod torch_import;
pub mod train;
