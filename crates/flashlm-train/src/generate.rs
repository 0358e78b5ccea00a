//! Text samples during training, generated like the original: the whole window (last
//! `seq_len` tokens) is recomputed for every new token; temperature and top-k sampling.

use burn::tensor::Device;
use flashlm_data::batch::SplitMix64;
use flashlm_model::Bolt;

use crate::step::ids_tensor;

/// Pick the next token from logits: greedy when `temperature <= 0`, else sample from the
/// softmax of `logits / temperature` restricted to the `top_k` largest (0 = no limit).
pub fn sample_logits(logits: &[f32], temperature: f32, top_k: usize, rng: &mut SplitMix64) -> usize {
    if temperature <= 0.0 {
        return logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
            .0;
    }
    let mut threshold = f32::NEG_INFINITY;
    if top_k > 0 && top_k < logits.len() {
        let mut sorted: Vec<f32> = logits.to_vec();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        threshold = sorted[top_k - 1];
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&v| if v >= threshold { (((v - max) / temperature) as f64).exp() } else { 0.0 })
        .collect();
    let total: f64 = weights.iter().sum();
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc && *w > 0.0 {
            return i;
        }
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct SampleSettings {
    /// New tokens to generate.
    pub max_new: usize,
    /// Context window (the model's training length).
    pub seq_len: usize,
    /// Softmax temperature (<= 0: greedy).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
}

/// Continue `prompt` with an inference (non-autodiff) model.
pub fn generate(
    model: &Bolt,
    prompt: &[u16],
    s: SampleSettings,
    rng: &mut SplitMix64,
    device: &Device,
) -> Vec<u16> {
    let (temperature, top_k) = (s.temperature, s.top_k);
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
        ids.push(sample_logits(&last, temperature, top_k, rng) as u16);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_k() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        let mut rng = SplitMix64::new(1);
        assert_eq!(sample_logits(&logits, 0.0, 0, &mut rng), 1);
        for _ in 0..200 {
            let i = sample_logits(&logits, 1.0, 2, &mut rng);
            assert!(i == 1 || i == 2, "top-2 sampled {i}");
        }
        // With a high temperature and no limit every token shows up.
        let mut seen = [false; 4];
        for _ in 0..2000 {
            seen[sample_logits(&logits, 5.0, 0, &mut rng)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
