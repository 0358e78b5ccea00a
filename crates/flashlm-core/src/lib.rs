//! The facts of a FlashLM model that every part of the toolchain shares, written once: the
//! burn model, the fused training step, the exporter, the PyTorch import and the inference
//! engine all depend on this crate. It has no burn, no network and no command line.
//!
//! * [`config`]: the model shape [`Config`] and the constants (norm and quantiser epsilons,
//!   AdamW's settings).
//! * [`params`]: the parameter table (names, shapes, order, roles) and the conv-tap layout.
//! * [`quant`]: the quantisers (ternary, int8 rows, int4 groups).
//! * [`vmath`] and [`cpu`]: element-wise math compiled per instruction set
//!   ([`multiversion!`]) and the feature checks dispatch uses (`FLASHLM_ISA` caps them).
//! * [`rng`]: the seeded generators (data order, sampling).
//! * [`limits`] and [`write`]: bounds on what input may ask for, crash-safe file writes.

pub mod config;
pub mod cpu;
pub mod limits;
pub mod params;
pub mod quant;
pub mod rng;
pub mod vmath;
pub mod write;

pub use config::{Config, NORM_EPS, QUANT_EPS, adamw};
