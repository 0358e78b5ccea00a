//! Parity with the original PyTorch FlashLM v4: the same tiny model, the same batch, the
//! same steps. `scripts/reference/parity.py` computes the PyTorch side; the committed
//! fixture in `tests/fixtures/parity/` lets CI compare without PyTorch. Shared by
//! `tests/parity.rs` and the `parity` / `engine_golden` examples (`#[path]`-included: test
//! support, not part of the library).

use flashlm_core::Config;
use std::collections::HashMap;

use burn::optim::GradientsParams;
use burn::tensor::Device;
use flashlm_model::Bolt;

use flashlm_train::engine::{burn_adamw, clip_global_norm};
use flashlm_train::eval::ids_tensor;
use flashlm_train::schedule::lr_at;

/// The parity model: small enough to commit its weights.
pub const PARITY_CONFIG: Config =
    Config { vocab_size: 256, dim: 16, n_blocks: 2, glu_hidden: 32, conv_taps: 8, seq_len: 16 };
/// Sequences in the parity batch.
pub const PARITY_BATCH: usize = 2;
/// Optimizer steps compared.
pub const PARITY_STEPS: usize = 6;
/// LR schedule of the compared steps: (total, warmup, peak, min).
pub const PARITY_LR: (u64, u64, f64, f64) = (20, 2, 4e-3, 1e-5);

/// The parity batch: (tokens, targets), [PARITY_BATCH * seq_len] each.
pub fn parity_batch() -> (Vec<u16>, Vec<u16>) {
    let n = PARITY_BATCH * (PARITY_CONFIG.seq_len + 1);
    let mut x: u64 = 12345;
    let stream: Vec<u16> = (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % PARITY_CONFIG.vocab_size as u64) as u16
        })
        .collect();
    let t = PARITY_CONFIG.seq_len;
    let (mut inp, mut tgt) = (Vec::new(), Vec::new());
    for w in stream.chunks(t + 1) {
        inp.extend_from_slice(&w[..t]);
        tgt.extend_from_slice(&w[1..]);
    }
    (inp, tgt)
}

/// What FlashLM computes on the parity batch.
#[derive(Debug, Clone)]
pub struct ParityOutputs {
    /// [B, T, V] logits of the initial weights.
    pub logits: Vec<f32>,
    /// Loss of the initial weights.
    pub loss: f32,
    /// Gradient of every parameter at the initial weights (before clipping).
    pub grads: HashMap<String, Vec<f32>>,
    /// Loss before each of PARITY_STEPS AdamW steps (clip 1.0, the LR schedule above),
    /// always on the same batch.
    pub step_losses: Vec<f32>,
}

/// Run the parity computation on an autodiff device.
pub fn compute(model: Bolt, device: &Device) -> ParityOutputs {
    let (inp, tgt) = parity_batch();
    let t = PARITY_CONFIG.seq_len;
    let x = || ids_tensor(&inp, PARITY_BATCH, t, device);
    let y = || ids_tensor(&tgt, PARITY_BATCH, t, device);
    let logits: Vec<f32> = model.forward(x()).inner().into_data().try_to_vec::<f32>().expect("f32");
    let loss_t = model.loss(x(), y());
    let loss: f32 = loss_t.clone().into_scalar();
    let raw = loss_t.backward();
    let mut grads = HashMap::new();
    let names = model.named_params();
    let g = GradientsParams::from_grads(raw, &model);
    for p in &names {
        let v: Option<Vec<f32>> = match p.shape.len() {
            1 => g.get::<1>(p.id).map(|t| t.into_data().try_to_vec::<f32>().expect("f32")),
            2 => g.get::<2>(p.id).map(|t| t.into_data().try_to_vec::<f32>().expect("f32")),
            3 => g.get::<3>(p.id).map(|t| t.into_data().try_to_vec::<f32>().expect("f32")),
            _ => None,
        };
        if let Some(v) = v {
            grads.insert(p.name.clone(), v);
        }
    }
    let mut model = model;
    let mut optim = burn_adamw();
    let mut step_losses = Vec::new();
    let (total, warmup, peak, min) = PARITY_LR;
    for step in 0..PARITY_STEPS as u64 {
        let l = model.loss(x(), y());
        step_losses.push(l.clone().into_scalar::<f32>());
        let mut g = GradientsParams::from_grads(l.backward(), &model);
        clip_global_norm(&model, &mut g, 1.0);
        model = optim.step(lr_at(step, total, warmup, peak, min), model, g);
    }
    ParityOutputs { logits, loss, grads, step_losses }
}
