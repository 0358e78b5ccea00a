//! Packing a trained model into a `.flm` file for `flashlm-infer` (the bytes are written by
//! `flashlm_convert::pack`, shared with `--torch` and the Python bindings).

use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::EmbeddingDtype;
use flashlm_model::Bolt;

pub use flashlm_convert::ExportReport;

/// Serialize `model` (trained with context `seq_len`) and its tokenizer.
pub fn export(
    model: &Bolt,
    seq_len: usize,
    tok: &Tokenizer,
    embedding: EmbeddingDtype,
) -> anyhow::Result<(Vec<u8>, ExportReport)> {
    let named: Vec<(String, Vec<usize>, Vec<f32>)> =
        model.named_params().into_iter().map(|p| (p.name, p.shape, p.values)).collect();
    flashlm_convert::pack(&model.config(seq_len), &named, tok, embedding)
}
