//! Reading checkpoints of the original PyTorch FlashLM v4 (`.pt` / `.pth` pickles, or
//! safetensors) so `flashlm-export --torch` can pack them.
//!
//! Accepted layouts: a bare `state_dict`, or a dict holding it under `model_state_dict`,
//! `state_dict` or `model` (optionally beside a `config` dict). Tensor names are the
//! original's (`embedding.weight`, `blocks.0.mixer.up.weight`, ..., `final_norm.scale`);
//! `head.weight`, tied to the embedding, is checked to be equal and dropped. The config comes
//! from `config` when present (keys `vocab_size`, `dim`/`d_model`, `n_blocks`/`n_layers`,
//! `glu_hidden`/`hidden`, `conv_taps`, `seq_len`/`max_seq_len`), else from the shapes, and
//! the two must agree.

use flashlm_core::Config;
use flashlm_core::params::{self, BlockTensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::NamedTensors;
use anyhow::{Context, bail, ensure};
use pytorch_reader::{DType, PickleValue, PytorchReader};

/// A checkpoint read from PyTorch.
#[derive(Debug)]
pub struct Imported {
    /// Model shape (seq_len from the checkpoint's config, else the caller's default).
    pub config: Config,
    /// Where each config value came from, for the user.
    pub config_source: String,
    /// name -> (shape, f32 values), in the parameter table's names (`flashlm_core::params`).
    pub weights: NamedTensors,
}

const STATE_KEYS: [&str; 3] = ["model_state_dict", "state_dict", "model"];

/// Read `path` (`.safetensors` by extension, else a PyTorch pickle). `default_seq_len` is used
/// when the checkpoint does not say.
pub fn read(path: &Path, default_seq_len: usize) -> anyhow::Result<Imported> {
    // A FIFO or device would block or never end in the readers below: refused here first.
    flashlm_core::limits::open_regular(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_safetensors = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (mut weights, cfg_entry) = if is_safetensors {
        let w = crate::read_safetensors(path).map_err(anyhow::Error::msg)?;
        (w, None)
    } else {
        read_pickle(path)?
    };
    ensure!(!weights.is_empty(), "{}: no tensors found", path.display());

    // The tied head must equal the embedding; the engine keeps one copy.
    if let Some((shape, head)) = weights.remove(params::TORCH_HEAD) {
        let emb = weights
            .get(params::EMBEDDING)
            .with_context(|| format!("{} without {}", params::TORCH_HEAD, params::EMBEDDING))?;
        ensure!(
            emb.0 == shape && emb.1 == head,
            "{} differs from {}: FlashLM ties them, this checkpoint does not",
            params::TORCH_HEAD,
            params::EMBEDDING
        );
    }
    let from_shapes = infer_config(&weights, default_seq_len)?;
    let (config, config_source) = match cfg_entry {
        Some(c) => {
            let cfg = config_from_entry(&c, from_shapes.seq_len)?;
            ensure!(
                Config { seq_len: from_shapes.seq_len, ..cfg } == from_shapes,
                "the checkpoint's config ({cfg}) does not match its tensor shapes ({from_shapes})"
            );
            let src = if c.contains_key("seq_len") || c.contains_key("max_seq_len") {
                "the checkpoint's config".to_string()
            } else {
                format!("the checkpoint's config (seq_len {} by default)", cfg.seq_len)
            };
            (cfg, src)
        }
        None => (from_shapes, format!("the tensor shapes (seq_len {default_seq_len} by default)")),
    };
    Ok(Imported { config, config_source, weights })
}

/// Tensors and the `config` entry of a PyTorch pickle.
fn read_pickle(path: &Path) -> anyhow::Result<(NamedTensors, Option<BTreeMap<String, i64>>)> {
    let top = PytorchReader::read_pickle_data(path, None)
        .with_context(|| format!("{}: not a readable PyTorch checkpoint", path.display()))?;
    let PickleValue::Dict(top) = top else {
        bail!("{}: expected a dict (a state_dict or a checkpoint dict) at the top level", path.display());
    };
    let key = STATE_KEYS.into_iter().find(|k| matches!(top.get(*k), Some(PickleValue::Dict(_))));
    let config = match top.get("config") {
        Some(PickleValue::Dict(c)) => Some(
            c.iter()
                .filter_map(|(k, v)| match v {
                    PickleValue::Int(i) => Some((k.clone(), *i)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    };
    let reader = match key {
        Some(k) => PytorchReader::with_top_level_key(path, k),
        None => PytorchReader::new(path),
    }
    .with_context(|| format!("{}: reading tensors", path.display()))?;
    let mut out = HashMap::new();
    for (name, t) in reader.tensors() {
        let bytes = t.read().with_context(|| format!("{}: reading {name}", path.display()))?;
        let values: Vec<f32> = match t.dtype() {
            DType::F32 => {
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            DType::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            DType::F16 => {
                bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            DType::BF16 => {
                bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            other => bail!("{}: tensor {name} has dtype {other:?}, expected a float type", path.display()),
        };
        ensure!(
            values.len() == t.num_elements(),
            "{}: tensor {name} holds {} values for shape {:?}",
            path.display(),
            values.len(),
            t.shape()
        );
        out.insert(name.clone(), (t.shape().to_vec(), values));
    }
    Ok((out, config))
}

fn dims<'a>(w: &'a NamedTensors, name: &str) -> anyhow::Result<&'a [usize]> {
    Ok(&w.get(name).with_context(|| format!("missing tensor {name}: not a FlashLM v4 checkpoint"))?.0)
}

/// The config implied by the tensor shapes.
fn infer_config(w: &NamedTensors, seq_len: usize) -> anyhow::Result<Config> {
    let emb = dims(w, params::EMBEDDING)?;
    ensure!(emb.len() == 2, "{} has shape {emb:?}, expected [vocab, dim]", params::EMBEDDING);
    let (vocab_size, dim) = (emb[0], emb[1]);
    let n_blocks = (0..).take_while(|&i| w.contains_key(&BlockTensor::Norm1.name(i))).count();
    ensure!(n_blocks > 0, "no {} tensors: not a FlashLM v4 checkpoint", BlockTensor::Norm1.name(0));
    let gate = dims(w, &BlockTensor::WGate.name(0))?;
    ensure!(gate.len() == 2 && gate[1] == dim, "{} has shape {gate:?}", BlockTensor::WGate.name(0));
    let conv = dims(w, &BlockTensor::Conv.name(0))?;
    ensure!(
        conv.len() == 3 && conv[0] == dim && conv[1] == 1,
        "{} has shape {conv:?}",
        BlockTensor::Conv.name(0)
    );
    Ok(Config { vocab_size, dim, n_blocks, glu_hidden: gate[0], conv_taps: conv[2], seq_len })
}

/// The config from a `config` dict.
fn config_from_entry(c: &BTreeMap<String, i64>, default_seq_len: usize) -> anyhow::Result<Config> {
    let get = |keys: &[&str]| -> anyhow::Result<usize> {
        let v = keys
            .iter()
            .find_map(|k| c.get(*k))
            .with_context(|| format!("the checkpoint's config has no {}", keys.join(" / ")))?;
        usize::try_from(*v)
            .ok()
            .filter(|&v| v > 0)
            .with_context(|| format!("config {}: {v} is not valid", keys[0]))
    };
    Ok(Config {
        vocab_size: get(&["vocab_size"])?,
        dim: get(&["dim", "d_model"])?,
        n_blocks: get(&["n_blocks", "n_layers"])?,
        glu_hidden: get(&["glu_hidden", "hidden", "ffn_hidden"])?,
        conv_taps: get(&["kernel_size"])?,
        seq_len: get(&["seq_len", "max_seq_len"]).unwrap_or(default_seq_len),
    })
}
