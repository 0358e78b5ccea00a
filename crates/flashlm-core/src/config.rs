//! The model's shape ([`Config`]) and the constants every implementation shares.
//!
//! One struct serves the burn model, the fused training step, checkpoints (as JSON, so the
//! field names are part of the checkpoint format) and the `.flm` header.

use crate::params::BlockTensor;

/// RMSNorm epsilon (as the original).
pub const NORM_EPS: f64 = 1e-6;
/// Added to mean|W| before dividing (as the original).
pub const QUANT_EPS: f64 = 1e-8;

/// The optimizer as the original: `torch.optim.AdamW(betas=(0.9, 0.95), eps=1e-8,
/// weight_decay=0.01)` on every parameter, gradients clipped to a global L2 norm of 1.
pub mod adamw {
    /// β₁.
    pub const BETA1: f64 = 0.9;
    /// β₂.
    pub const BETA2: f64 = 0.95;
    /// ε.
    pub const EPS: f64 = 1e-8;
    /// Decoupled weight decay.
    pub const WEIGHT_DECAY: f64 = 0.01;
    /// Largest global gradient L2 norm (`clip_grad_norm_(params, 1.0)`).
    pub const MAX_GRAD_NORM: f64 = 1.0;
}

/// Model shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Vocabulary size (rows of the tied embedding).
    pub vocab_size: usize,
    /// Model width d.
    pub dim: usize,
    /// Number of BoltBlocks.
    pub n_blocks: usize,
    /// GLU hidden width h.
    pub glu_hidden: usize,
    /// Causal depthwise conv taps k (the original's `kernel_size`; that is also its name in a
    /// checkpoint's JSON).
    #[serde(rename = "kernel_size")]
    pub conv_taps: usize,
    /// Training context length.
    pub seq_len: usize,
}

impl Config {
    /// FlashLM v4 small: d=192, 6 blocks, h=512, seq 256 (4,364,736 parameters).
    pub const fn small() -> Self {
        Self { vocab_size: 10_000, dim: 192, n_blocks: 6, glu_hidden: 512, conv_taps: 8, seq_len: 256 }
    }

    /// FlashLM v4 large: d=384, 8 blocks, h=1024, seq 512.
    pub const fn large() -> Self {
        Self { vocab_size: 10_000, dim: 384, n_blocks: 8, glu_hidden: 1024, conv_taps: 8, seq_len: 512 }
    }

    /// A tiny model for tests and smoke runs.
    pub const fn tiny() -> Self {
        Self { vocab_size: 10_000, dim: 32, n_blocks: 2, glu_hidden: 64, conv_taps: 8, seq_len: 32 }
    }

    /// Short name: `v4-small`, `v4-large` or `custom`.
    pub fn name(&self) -> &'static str {
        if *self == Self::small() {
            "v4-small"
        } else if *self == Self::large() {
            "v4-large"
        } else if *self == Self::tiny() {
            "tiny"
        } else {
            "custom"
        }
    }

    /// Exact parameter count (the tied head adds none), summed over [`crate::params::table`].
    pub fn num_params(&self) -> usize {
        self.checked_num_params().expect("parameter count overflows") as usize
    }

    /// Largest parameter count a config may have (4G parameters, 16 GB of f32 weights before the
    /// optimizer's two moments): a bound that stops a damaged file from asking for terabytes.
    pub const MAX_PARAMS: u64 = 1 << 32;

    /// [`Self::num_params`] without overflow: `None` if it does not fit in a u64.
    pub fn checked_num_params(&self) -> Option<u64> {
        let block = BlockTensor::ALL.iter().try_fold(0u64, |a, t| a.checked_add(t.checked_numel(self)?))?;
        let [v, d, n] = [self.vocab_size, self.dim, self.n_blocks].map(|x| x as u64);
        v.checked_mul(d)?.checked_add(n.checked_mul(block)?)?.checked_add(d)
    }

    /// Check that the shape makes sense: every size positive and within the bounds the `.flm`
    /// header also enforces ([`crate::limits::shape`]), at most
    /// [`Self::MAX_PARAMS`] parameters.
    pub fn validate(&self) -> Result<(), String> {
        use crate::limits::shape;
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, shape::MAX_VOCAB),
            ("dim", self.dim, shape::MAX_DIM),
            ("n_blocks", self.n_blocks, shape::MAX_BLOCKS),
            ("glu_hidden", self.glu_hidden, shape::MAX_HIDDEN),
            ("conv_taps", self.conv_taps, shape::MAX_TAPS),
            ("seq_len", self.seq_len, shape::MAX_SEQ_LEN),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
            if v > max {
                return Err(format!("{name} {v} exceeds {max}"));
            }
        }
        match self.checked_num_params() {
            Some(p) if p <= Self::MAX_PARAMS => Ok(()),
            _ => Err(format!("{self} has more than {} parameters", Self::MAX_PARAMS)),
        }
    }
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (d={}, blocks={}, h={}, k={}, seq={}, vocab={})",
            self.name(),
            self.dim,
            self.n_blocks,
            self.glu_hidden,
            self.conv_taps,
            self.seq_len,
            self.vocab_size
        )
    }
}

#[cfg(test)]
mod config_tests {
    use super::Config;

    #[test]
    fn validate_bounds_every_size_and_the_parameter_count() {
        for c in [Config::tiny(), Config::small(), Config::large()] {
            c.validate().unwrap();
            assert_eq!(c.checked_num_params(), Some(c.num_params() as u64));
        }
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::small();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.dim = 0).contains("dim must be positive"));
        assert!(bad(|c| c.dim = usize::MAX).contains("dim"));
        assert!(bad(|c| c.dim = crate::limits::shape::MAX_DIM + 1).contains("dim"));
        assert!(bad(|c| c.vocab_size = 70_000).contains("vocab_size 70000 exceeds 65536"));
        assert!(bad(|c| c.seq_len = usize::MAX).contains("seq_len"));
        // Each size within its bound, the product not.
        let e = bad(|c| {
            c.dim = 1 << 14;
            c.n_blocks = 1024;
            c.glu_hidden = 1 << 16;
        });
        assert!(e.contains("parameters"), "{e}");
    }
}
