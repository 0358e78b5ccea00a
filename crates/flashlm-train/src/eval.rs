//! Evaluation and samples during training, on the burn model without autodiff: the mean
//! validation loss, the original protocol's story BPC, and text samples.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use flashlm_core::rng::Rng;
use flashlm_data::batch::{Windows, val_batches};
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::eval::{ORIGINAL_MAX_TOKENS, Protocol, select};
use flashlm_infer::sample::Sampler;
use flashlm_model::Bolt;

use crate::generate::{SampleSettings, generate};

/// Prompts sampled during training (as the original).
pub const SAMPLE_PROMPTS: [&str; 3] = ["Once upon a time", "The little girl", "One day, a boy named"];

/// [B, T] token ids as an Int tensor.
pub fn ids_tensor(ids: &[u16], b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

/// The model without autodiff, for evaluation and sampling.
pub fn inference_copy(model: &Bolt) -> Bolt {
    model.valid()
}

/// Mean loss over the first `max` validation batches, in order.
pub fn evaluate(model: &Bolt, val: Windows<'_>, batch: usize, max: usize, device: &Device) -> Option<f64> {
    let m = inference_copy(model);
    let (mut sum, mut n) = (0.0f64, 0usize);
    for b in val_batches(val, batch, max) {
        let x = ids_tensor(&b.inputs, b.batch_size, b.seq_len, device);
        let y = ids_tensor(&b.targets, b.batch_size, b.seq_len, device);
        sum += m.loss(x, y).into_scalar::<f32>() as f64;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Validation BPC with FlashLM v4's protocol (`eval_bpc.py`): the first `max` stories longer
/// than 50 characters, tokens cut at 257, tokens 1.. predicted, BPC = summed NLL /
/// (characters · ln 2). `flashlm-infer eval --protocol original` computes the same figure
/// with the packed engine.
pub fn story_bpc(
    model: &Bolt,
    tok: &Tokenizer,
    stories: &[String],
    max: usize,
    device: &Device,
) -> (f64, usize) {
    let m = inference_copy(model);
    let (mut nll, mut chars, mut n) = (0.0f64, 0u64, 0usize);
    for text in select(stories, max, Protocol::Original) {
        let mut ids = tok.encode(text);
        if ids.len() < 2 {
            continue;
        }
        ids.truncate(ORIGINAL_MAX_TOKENS);
        let t = ids.len() - 1;
        let x = ids_tensor(&ids[..t], 1, t, device);
        let y = ids_tensor(&ids[1..], 1, t, device);
        nll += m.loss(x, y).into_scalar::<f32>() as f64 * t as f64;
        chars += text.chars().count() as u64;
        n += 1;
    }
    (nll / (chars.max(1) as f64 * std::f64::consts::LN_2), n)
}

/// One sample for each of [`SAMPLE_PROMPTS`] (temperature 0.8, top-k 50, as the original),
/// `tokens` new tokens each in a window of `seq_len`: the lines to log.
pub fn samples(
    model: &Bolt,
    tok: &Tokenizer,
    tokens: usize,
    seq_len: usize,
    rng: &mut Rng,
    device: &Device,
) -> Vec<String> {
    let m = inference_copy(model);
    let mut lines = vec!["--- Samples ---".to_string()];
    for p in SAMPLE_PROMPTS {
        let ids = tok.encode(p);
        let settings = SampleSettings {
            max_new: tokens,
            seq_len,
            sampler: Sampler { temperature: 0.8, top_k: 50, top_p: 1.0, min_p: 0.0 },
        };
        let out = generate(&m, &ids, settings, rng, device);
        lines.push(format!("  > {}", sample_line(tok, &out)));
    }
    lines
}

/// A sample as one log line: newlines as spaces, at most 400 characters, and the stories the
/// model wrote one after another (past its end-of-story token) kept apart by " <|endoftext|> ".
pub fn sample_line(tok: &Tokenizer, ids: &[u16]) -> String {
    let stories: Vec<String> = ids
        .split(|&t| t == flashlm_data::tokenizer::EOS_ID)
        .map(|s| tok.decode(s).replace('\n', " "))
        .collect();
    stories.join(" <|endoftext|> ").chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_keeps_stories_apart() {
        let tok = flashlm_infer::model::Model::from_bytes(
            flashlm_infer::bundled::BYTES,
            flashlm_infer::kernels::Kernel::Scalar,
        )
        .unwrap()
        .tokenizer;
        let eos = flashlm_data::tokenizer::EOS_ID;
        let mut ids = tok.encode("The end.\nThey were happy.");
        ids.push(eos);
        ids.extend(tok.encode("Once upon a time"));
        assert_eq!(sample_line(&tok, &ids), "The end. They were happy. <|endoftext|> Once upon a time");
        let long = tok.encode(&"a ".repeat(500));
        assert_eq!(sample_line(&tok, &long).chars().count(), 400);
    }
}
