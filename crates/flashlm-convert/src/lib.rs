//! Weights into `.flm` files, without burn: [`pack`] serializes named f32 tensors (in the
//! parameter table's order) with a tokenizer, [`torch`] reads the original PyTorch FlashLM v4
//! checkpoints, and [`from_torch`] does both in memory. `flashlm-export` (for our checkpoints
//! and `--torch`) and the Python bindings' `Model.from_torch` all go through here.

pub mod pack;
pub mod torch;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
pub use pack::{ExportReport, pack};

/// Tensors by name: name -> (shape, row-major f32 values).
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Read every f32 tensor of a safetensors file: name -> (shape, values).
pub fn read_safetensors(path: &Path) -> Result<NamedTensors, String> {
    let bytes = flashlm_core::limits::read_regular(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(format!("{}: tensor {name} is {:?}, expected F32", path.display(), view.dtype()));
        }
        let values =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// A PyTorch checkpoint packed into `.flm` bytes.
#[derive(Debug)]
pub struct Converted {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Size of each part.
    pub report: ExportReport,
    /// What was read: the path, the config and where it came from.
    pub description: String,
}

/// Read an original FlashLM v4 checkpoint (`.pt`/`.pth` pickle or `.safetensors`) and its
/// `tokenizer.json`, and pack them (what `flashlm-export --torch` writes).
pub fn from_torch(
    checkpoint: &Path,
    tokenizer: &Path,
    default_seq_len: usize,
    embedding: flashlm_infer::format::EmbeddingDtype,
) -> anyhow::Result<Converted> {
    let tok = flashlm_tokenizer::Tokenizer::load(tokenizer)
        .with_context(|| format!("loading the tokenizer {}", tokenizer.display()))?;
    let imp = torch::read(checkpoint, default_seq_len)?;
    let cfg = imp.config;
    let mut weights = imp.weights;
    let table = flashlm_core::params::table(&cfg);
    let mut ordered = Vec::with_capacity(table.len());
    for spec in &table {
        let (shape, values) = weights
            .remove(&spec.name)
            .with_context(|| format!("{}: missing tensor {}", checkpoint.display(), spec.name))?;
        ordered.push((spec.name.clone(), shape, values));
    }
    if let Some(extra) = weights.keys().next() {
        anyhow::bail!("{}: unexpected tensor {extra} (not a FlashLM v4 parameter)", checkpoint.display());
    }
    let (bytes, report) =
        pack(&cfg, &ordered, &tok, embedding).with_context(|| checkpoint.display().to_string())?;
    Ok(Converted {
        bytes,
        report,
        description: format!("{} (PyTorch; {cfg} from {})", checkpoint.display(), imp.config_source),
    })
}
