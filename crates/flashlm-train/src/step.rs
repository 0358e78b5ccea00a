//! The pieces of one optimizer step: LR schedule, global gradient-norm clipping, the model
//! state as bytes, and tensors from token batches.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use flashlm_model::Bolt;

/// Learning rate at `step`: linear warmup from 0 to `peak` over `warmup` steps, then cosine
/// down to `min` at `total` steps (the original's `get_lr`).
pub fn lr_at(step: u64, total: u64, warmup: u64, peak: f64, min: f64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Learning rate for a run planned by time (`--lr-schedule time`): the same linear warmup over
/// `warmup` steps, then a cosine from `peak` to `min` over the training time left after
/// warmup, so the schedule ends exactly at the time limit however fast the steps are.
/// `secs` is the training time so far, `warmup_end_secs` the time at which warmup ended
/// (`None` while warming up), `limit_secs` the time limit.
pub fn lr_at_time(
    step: u64,
    warmup: u64,
    secs: f64,
    warmup_end_secs: Option<f64>,
    limit_secs: f64,
    peak: f64,
    min: f64,
) -> f64 {
    match warmup_end_secs {
        Some(w) if step >= warmup => {
            let progress = ((secs - w) / (limit_secs - w).max(1e-9)).clamp(0.0, 1.0);
            min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        _ => peak * step.min(warmup) as f64 / warmup.max(1) as f64,
    }
}

/// burn's AdamW with the original's settings ([`flashlm_core::adamw`]).
pub fn adamw() -> ModuleOptimizer {
    use flashlm_core::adamw::{BETA1, BETA2, EPS, WEIGHT_DECAY};
    AdamWConfig::new()
        .with_beta_1(BETA1 as f32)
        .with_beta_2(BETA2 as f32)
        .with_epsilon(EPS as f32)
        .with_weight_decay(WEIGHT_DECAY as f32)
        .init()
}

struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sum_sq: f64,
    finite: bool,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s: f64 = g.square().sum().into_scalar::<f32>() as f64;
            if !s.is_finite() {
                self.finite = false;
            }
            self.sum_sq += s;
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Clip gradients by their global L2 norm like `torch.nn.utils.clip_grad_norm_`:
/// if the norm exceeds `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`.
/// Returns the norm before clipping (NaN/inf if a gradient is not finite).
pub fn clip_global_norm(model: &Bolt, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut v = GradNorm { grads, sum_sq: 0.0, finite: true };
    model.visit(&mut v);
    let norm = if v.finite { v.sum_sq.sqrt() } else { f64::NAN };
    if norm.is_finite() && norm > max_norm {
        let mut s = Scale { grads, factor: max_norm / (norm + 1e-6) };
        model.visit(&mut s);
    }
    norm
}

/// [B, T] token ids as an Int tensor.
pub fn ids_tensor(ids: &[u16], b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

/// Model weights as burnpack bytes.
pub fn model_bytes(model: &Bolt) -> anyhow::Result<Vec<u8>> {
    let bytes =
        model.clone().into_record().into_bytes().map_err(|e| anyhow::anyhow!("saving weights: {e:?}"))?;
    Ok(bytes.to_vec())
}

/// Load weights (and their parameter ids) from burnpack bytes into `model`.
pub fn load_model_bytes(model: Bolt, bytes: &[u8]) -> anyhow::Result<Bolt> {
    let record = burn::store::ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| anyhow::anyhow!("reading weights: {e:?}"))?;
    model.try_load_record(record).map_err(|e| anyhow::anyhow!("loading weights: {e:?}"))
}

/// Optimizer state as burnpack bytes.
pub fn optim_bytes(optim: &ModuleOptimizer) -> anyhow::Result<Vec<u8>> {
    let bytes = optim.to_record().into_bytes().map_err(|e| anyhow::anyhow!("saving optimizer: {e:?}"))?;
    Ok(bytes.to_vec())
}

/// Optimizer state from burnpack bytes.
pub fn load_optim_bytes(optim: ModuleOptimizer, bytes: &[u8]) -> anyhow::Result<ModuleOptimizer> {
    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| anyhow::anyhow!("reading optimizer state: {e:?}"))?;
    Ok(optim.load_record(record))
}

/// The model without autodiff, for evaluation and sampling.
pub fn inference_copy(model: &Bolt) -> Bolt {
    model.valid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_schedule_warms_up_by_steps_then_follows_the_clock() {
        let lr = |step, secs, w| lr_at_time(step, 10, secs, w, 100.0, 1.0, 0.0);
        assert_eq!(lr(0, 0.0, None), 0.0);
        assert_eq!(lr(5, 3.0, None), 0.5);
        // Warmup ended at 20 s: the cosine spans the 80 s left.
        assert_eq!(lr(10, 20.0, Some(20.0)), 1.0);
        assert!((lr(50, 60.0, Some(20.0)) - 0.5).abs() < 1e-12);
        assert!(lr(90, 100.0, Some(20.0)).abs() < 1e-12);
        assert!(lr(99, 130.0, Some(20.0)).abs() < 1e-12, "past the limit it stays at min");
        // The same point in time gives the same rate whatever the step count.
        assert_eq!(lr(40, 60.0, Some(20.0)), lr(400, 60.0, Some(20.0)));
    }

    #[test]
    fn lr_schedule_matches_the_original() {
        assert_eq!(lr_at(0, 1000, 500, 4e-3, 1e-5), 0.0);
        assert!((lr_at(250, 1000, 500, 4e-3, 1e-5) - 2e-3).abs() < 1e-12);
        assert!((lr_at(500, 1000, 500, 4e-3, 1e-5) - 4e-3).abs() < 1e-12);
        assert!((lr_at(750, 1000, 500, 4e-3, 1e-5) - (1e-5 + 0.5 * (4e-3 - 1e-5))).abs() < 1e-12);
        assert!((lr_at(1000, 1000, 500, 4e-3, 1e-5) - 1e-5).abs() < 1e-12);
    }
}
