//! The parameter table: every tensor of a Bolt model, its name, shape and role, in one fixed
//! order. The burn model (its field order gives the same order, a test checks it), the fused
//! training step, the checkpoint, the exporter, the engine's loader and the PyTorch import all
//! read it; nothing else spells a parameter name.
//!
//! ```text
//! embedding.weight                [V, d]     Embedding (also the tied head)
//! blocks.{i}.norm1.scale          [d]        Norm
//! blocks.{i}.mixer.up.weight      [2d, d]    Ternary (rows 0..d gate, d..2d value)
//! blocks.{i}.mixer.conv.weight    [d, 1, k]  ConvTaps (PyTorch Conv1d layout)
//! blocks.{i}.mixer.down.weight    [d, d]     Ternary
//! blocks.{i}.norm2.scale          [d]        Norm
//! blocks.{i}.ffn.W_gate.weight    [h, d]     Ternary
//! blocks.{i}.ffn.W_up.weight      [h, d]     Ternary
//! blocks.{i}.ffn.W_down.weight    [d, h]     Ternary
//! final_norm.scale                [d]        Norm
//! ```
//! Names and shapes are the original PyTorch `state_dict`'s (linear weights [out, in]).

use crate::Config;

/// Name of the tied embedding / head.
pub const EMBEDDING: &str = "embedding.weight";
/// Name of the norm before the head.
pub const FINAL_NORM: &str = "final_norm.scale";
/// Name of the output head in PyTorch checkpoints that store it separately (it must equal the
/// embedding; FlashLM keeps one copy).
pub const TORCH_HEAD: &str = "head.weight";

/// What a tensor is: decides how it is trained (ternary with the straight-through estimator or
/// float), how it is stored in a `.flm` file and how the engine runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The [V, d] float embedding, tied to the output head.
    Embedding,
    /// RMSNorm gains [d].
    Norm,
    /// A linear layer [out, in] quantised to {-1, 0, +1} · α.
    Ternary,
    /// Depthwise causal conv taps [d, 1, k].
    ConvTaps,
}

/// The tensors of one block, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTensor {
    /// Pre-mixer RMSNorm gains [d].
    Norm1,
    /// Mixer up projection [2d, d].
    Up,
    /// Conv taps [d, 1, k].
    Conv,
    /// Mixer down projection [d, d].
    Down,
    /// Pre-GLU RMSNorm gains [d].
    Norm2,
    /// GLU gate [h, d].
    WGate,
    /// GLU up [h, d].
    WUp,
    /// GLU down [d, h].
    WDown,
}

impl BlockTensor {
    /// Every block tensor, in table order.
    pub const ALL: [BlockTensor; 8] = [
        BlockTensor::Norm1,
        BlockTensor::Up,
        BlockTensor::Conv,
        BlockTensor::Down,
        BlockTensor::Norm2,
        BlockTensor::WGate,
        BlockTensor::WUp,
        BlockTensor::WDown,
    ];

    /// The name inside a block (`mixer.up.weight`).
    pub fn suffix(self) -> &'static str {
        match self {
            BlockTensor::Norm1 => "norm1.scale",
            BlockTensor::Up => "mixer.up.weight",
            BlockTensor::Conv => "mixer.conv.weight",
            BlockTensor::Down => "mixer.down.weight",
            BlockTensor::Norm2 => "norm2.scale",
            BlockTensor::WGate => "ffn.W_gate.weight",
            BlockTensor::WUp => "ffn.W_up.weight",
            BlockTensor::WDown => "ffn.W_down.weight",
        }
    }

    /// The PyTorch shape. (`2d` saturates, so that [`BlockTensor::checked_numel`] of an
    /// absurd config is `None` instead of an overflow.)
    pub fn shape(self, c: &Config) -> Vec<usize> {
        let (d, h, k) = (c.dim, c.glu_hidden, c.conv_taps);
        match self {
            BlockTensor::Norm1 | BlockTensor::Norm2 => vec![d],
            BlockTensor::Up => vec![d.saturating_mul(2), d],
            BlockTensor::Conv => vec![d, 1, k],
            BlockTensor::Down => vec![d, d],
            BlockTensor::WGate | BlockTensor::WUp => vec![h, d],
            BlockTensor::WDown => vec![d, h],
        }
    }

    /// Elements, without overflow (`None` if the count does not fit in a u64).
    pub fn checked_numel(self, c: &Config) -> Option<u64> {
        self.shape(c).into_iter().try_fold(1u64, |a, x| a.checked_mul(x as u64))
    }

    /// The role.
    pub fn role(self) -> Role {
        match self {
            BlockTensor::Norm1 | BlockTensor::Norm2 => Role::Norm,
            BlockTensor::Conv => Role::ConvTaps,
            _ => Role::Ternary,
        }
    }

    /// The full name in block `i` (`blocks.3.mixer.up.weight`).
    pub fn name(self, i: usize) -> String {
        format!("blocks.{i}.{}", self.suffix())
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// PyTorch `state_dict` name.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// What it is.
    pub role: Role,
}

impl ParamSpec {
    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every parameter of a model of shape `c`, in table order (the order of checkpoints and of
/// `Bolt::named_params`).
pub fn table(c: &Config) -> Vec<ParamSpec> {
    let mut out = Vec::with_capacity(2 + c.n_blocks * BlockTensor::ALL.len());
    out.push(ParamSpec { name: EMBEDDING.into(), shape: vec![c.vocab_size, c.dim], role: Role::Embedding });
    for i in 0..c.n_blocks {
        for t in BlockTensor::ALL {
            out.push(ParamSpec { name: t.name(i), shape: t.shape(c), role: t.role() });
        }
    }
    out.push(ParamSpec { name: FINAL_NORM.into(), shape: vec![c.dim], role: Role::Norm });
    out
}

/// Conv taps from the parameter layout [d, 1, k] to time-major [k, d] (row j multiplies the
/// input k-1-j steps back, row k-1 the current one): the layout every kernel runs on.
pub fn taps_time_major(w: &[f32], d: usize, k: usize) -> Vec<f32> {
    transpose(w, d, k)
}

/// The inverse of [`taps_time_major`]: [k, d] back to [d, 1, k].
pub fn taps_param_layout(t: &[f32], d: usize, k: usize) -> Vec<f32> {
    transpose(t, k, d)
}

/// [rows, cols] -> [cols, rows].
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(a.len(), rows * cols, "a [{rows}, {cols}] matrix");
    let mut t = vec![0.0; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_counts_every_parameter_once() {
        for c in [Config::tiny(), Config::small(), Config::large()] {
            let t = table(&c);
            assert_eq!(t.len(), 2 + 8 * c.n_blocks);
            assert_eq!(t.iter().map(ParamSpec::numel).sum::<usize>(), c.num_params());
            let mut names: Vec<&str> = t.iter().map(|p| p.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.len(), "names are unique");
            for b in BlockTensor::ALL {
                assert_eq!(b.checked_numel(&c), Some(b.shape(&c).iter().product::<usize>() as u64));
            }
        }
        assert_eq!(Config::small().num_params(), 4_364_736);
    }

    #[test]
    fn taps_round_trip_and_put_the_current_input_last() {
        let (d, k) = (3, 4);
        let w: Vec<f32> = (0..d * k).map(|i| i as f32).collect();
        let t = taps_time_major(&w, d, k);
        // channel 1, tap k-1 (the current input) is w[1, 0, k-1]
        assert_eq!(t[(k - 1) * d + 1], w[k + k - 1]);
        assert_eq!(taps_param_layout(&t, d, k), w);
    }
}
