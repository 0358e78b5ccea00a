//! Text samples during training, generated like the original: the whole window (last
//! `seq_len` tokens) is recomputed for every new token; temperature and top-k sampling.

use burn::tensor::Device;
use flashlm_infer::sample::{Rng, Sampler};
use flashlm_model::Bolt;

use crate::eval::ids_tensor;

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct SampleSettings {
    /// New tokens to generate.
    pub max_new: usize,
    /// Context window (the model's training length).
    pub seq_len: usize,
    /// Temperature / top-k / top-p, as in flashlm-infer.
    pub sampler: Sampler,
}

/// Continue `prompt` with an inference (non-autodiff) model.
pub fn generate(model: &Bolt, prompt: &[u16], s: SampleSettings, rng: &mut Rng, device: &Device) -> Vec<u16> {
    let mut ids = prompt.to_vec();
    for _ in 0..s.max_new {
        let start = ids.len().saturating_sub(s.seq_len);
        let window = &ids[start..];
        let logits = model.forward(ids_tensor(window, 1, window.len(), device));
        let v = logits.dims()[2];
        let last: Vec<f32> = logits
            .narrow(1, window.len() - 1, 1)
            .reshape([v])
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 logits");
        ids.push(s.sampler.sample(&last, rng) as u16);
    }
    ids
}
