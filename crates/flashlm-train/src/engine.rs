//! The two ways a training step can be computed, behind one trait, so the training loop
//! (`train::run`) does not know which one it runs:
//!
//! * [`Fused`]: the hand-written forward/backward of [`crate::fused`] on flat buffers, with
//!   its own AdamW (the default: fastest);
//! * [`Burn`]: burn autodiff on the `flashlm-model` graph with burn's AdamW (the reference).
//!
//! Both take the same batches in the same order, clip the global gradient norm to
//! [`flashlm_core::adamw::MAX_GRAD_NORM`] and apply AdamW with the original's settings.

use anyhow::Context;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use flashlm_core::{Config, adamw};
use flashlm_data::batch::TrainBatches;
use flashlm_model::Bolt;

use crate::checkpoint;
use crate::eval::ids_tensor;
use crate::fused;

/// Which engine a run uses (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// The hand-written step of [`crate::fused`] (the default: fastest).
    Fused,
    /// burn autodiff on the `flashlm-model` graph (the reference).
    Burn,
}

impl EngineKind {
    /// What the run's banner says of it (evaluation and samples run the burn model either way).
    pub fn banner(self) -> String {
        let backend = flashlm_model::backend_name();
        match self {
            EngineKind::Fused => format!("fused step; evaluation on burn {backend}"),
            EngineKind::Burn => format!("burn {backend} autodiff"),
        }
    }
}

/// One optimizer step's figures.
#[derive(Debug, Clone, Copy)]
pub struct StepResult {
    /// Mean training loss over the step's micro-batches (nats per token).
    pub loss: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
}

/// A training engine: owns the weights and the optimizer state.
pub trait Engine {
    /// One optimizer step: `grad_accum` micro-batches from `batches` (forward and backward,
    /// gradients averaged), global-norm clipping, one AdamW update at learning rate `lr`.
    /// A non-finite loss or norm is returned as it is; the caller stops on it.
    fn step(&mut self, batches: &mut TrainBatches<'_>, grad_accum: usize, lr: f64) -> StepResult;

    /// The burn model with the current weights (evaluation, samples, checkpoints).
    fn model(&mut self) -> anyhow::Result<&Bolt>;

    /// The optimizer state as checkpoint bytes ([`checkpoint::fused_optim_bytes`] or burn's
    /// record).
    fn optim_bytes(&self) -> anyhow::Result<Vec<u8>>;
}

/// The engine `kind` for `model`, with optimizer state from a checkpoint (`optim`, read from
/// `source`) or fresh.
pub fn create(
    kind: EngineKind,
    cfg: &Config,
    model: Bolt,
    optim: Option<&[u8]>,
    source: &str,
) -> anyhow::Result<Box<dyn Engine>> {
    let Some(ob) = optim else {
        return Ok(match kind {
            EngineKind::Fused => Box::new(Fused::new(cfg, model, None)?),
            EngineKind::Burn => Box::new(Burn::new(model, burn_adamw())),
        });
    };
    Ok(match (kind, checkpoint::is_fused_optim(ob)) {
        (EngineKind::Fused, true) => {
            Box::new(Fused::new(cfg, model, Some(checkpoint::fused_optim_from_bytes(cfg, ob)?))?)
        }
        (EngineKind::Fused, false) => match checkpoint::load_optim_bytes(burn_adamw(), ob) {
            Ok(_) => anyhow::bail!("{source} holds burn optimizer state: resume it with --engine burn"),
            Err(e) => anyhow::bail!("{source}: the optimizer state is neither fused nor burn state ({e:#})"),
        },
        (EngineKind::Burn, true) => {
            anyhow::bail!("{source} holds fused optimizer state: resume it with --engine fused (the default)")
        }
        (EngineKind::Burn, false) => {
            Box::new(Burn::new(model, checkpoint::load_optim_bytes(burn_adamw(), ob)?))
        }
    })
}

/// The fused engine: flat copies of the weights, their gradients, AdamW moments and the
/// step's reusable buffers. `model` is refreshed from the flat weights when asked for.
#[derive(Debug)]
pub struct Fused {
    cfg: Config,
    params: fused::Params,
    grads: fused::Params, // zero between steps (AdamW::step clears them)
    opt: fused::AdamW,
    scratch: fused::Scratch,
    model: Option<Bolt>, // None only if a refresh failed
    model_stale: bool,   // params changed since `model` was refreshed
}

impl Fused {
    /// From a burn model's weights, with `opt` (or fresh AdamW moments).
    pub fn new(cfg: &Config, model: Bolt, opt: Option<fused::AdamW>) -> anyhow::Result<Self> {
        let params = fused::Params::from_model(cfg, &model).map_err(anyhow::Error::msg)?;
        let opt = opt.unwrap_or_else(|| fused::AdamW::new(&params));
        let grads = params.zeros_like();
        Ok(Self {
            cfg: *cfg,
            params,
            grads,
            opt,
            scratch: fused::Scratch::with_products(fused::Products::for_this_cpu()),
            model: Some(model),
            model_stale: false,
        })
    }
}

impl Engine for Fused {
    fn step(&mut self, batches: &mut TrainBatches<'_>, grad_accum: usize, lr: f64) -> StepResult {
        let threads = rayon::current_num_threads();
        let mut loss = 0.0f64;
        for _ in 0..grad_accum {
            let tb = batches.next().expect("non-empty schedule");
            let b = &tb.batch;
            let (p, g, s) = (&self.params, &mut self.grads, &mut self.scratch);
            let lv =
                fused::forward_backward_with(s, &self.cfg, p, g, &b.inputs, &b.targets, b.seq_len, threads);
            loss += f64::from(lv) / grad_accum as f64;
        }
        if grad_accum > 1 {
            fused::scale_grads(&mut self.grads, 1.0 / grad_accum as f32);
        }
        let grad_norm = fused::clip_global_norm(&mut self.grads, adamw::MAX_GRAD_NORM);
        self.opt.step(&mut self.params, &mut self.grads, lr);
        self.model_stale = true;
        StepResult { loss, grad_norm }
    }

    fn model(&mut self) -> anyhow::Result<&Bolt> {
        let model = self.model.take().context("the model was lost by an earlier failed refresh")?;
        self.model = Some(if self.model_stale {
            let named =
                self.params.named(&self.cfg).into_iter().map(|(n, s, v)| (n, (s, v.to_vec()))).collect();
            model.with_weights(&named).map_err(anyhow::Error::msg)?
        } else {
            model
        });
        self.model_stale = false;
        Ok(self.model.as_ref().expect("just set"))
    }

    fn optim_bytes(&self) -> anyhow::Result<Vec<u8>> {
        checkpoint::fused_optim_bytes(&self.cfg, &self.opt)
    }
}

/// The burn engine: the autodiff model and burn's AdamW.
pub struct Burn {
    model: Option<Bolt>, // None only while a step moves it through the optimizer
    optim: ModuleOptimizer,
    device: Device,
}

impl std::fmt::Debug for Burn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burn").field("device", &self.device).finish_non_exhaustive()
    }
}

impl Burn {
    /// From a model (on an autodiff device) and an optimizer.
    pub fn new(model: Bolt, optim: ModuleOptimizer) -> Self {
        let device = model.devices()[0].clone();
        Self { model: Some(model), optim, device }
    }
}

impl Engine for Burn {
    fn step(&mut self, batches: &mut TrainBatches<'_>, grad_accum: usize, lr: f64) -> StepResult {
        let model = self.model.take().expect("model present between steps");
        let mut acc = GradientsAccumulator::<Bolt>::new();
        let mut loss_sum = 0.0f64;
        for _ in 0..grad_accum {
            let tb = batches.next().expect("non-empty schedule");
            let b = &tb.batch;
            let x = ids_tensor(&b.inputs, b.batch_size, b.seq_len, &self.device);
            let y = ids_tensor(&b.targets, b.batch_size, b.seq_len, &self.device);
            let loss = model.loss(x, y);
            loss_sum += loss.clone().into_scalar::<f32>() as f64 / grad_accum as f64;
            let loss = if grad_accum > 1 { loss.div_scalar(grad_accum as f64) } else { loss };
            acc.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
        }
        let mut grads = acc.grads();
        let grad_norm = clip_global_norm(&model, &mut grads, adamw::MAX_GRAD_NORM);
        self.model = Some(self.optim.step(lr, model, grads));
        StepResult { loss: loss_sum, grad_norm }
    }

    fn model(&mut self) -> anyhow::Result<&Bolt> {
        Ok(self.model.as_ref().expect("model present between steps"))
    }

    fn optim_bytes(&self) -> anyhow::Result<Vec<u8>> {
        checkpoint::optim_bytes(&self.optim)
    }
}

/// burn's AdamW with the original's settings ([`flashlm_core::adamw`]).
pub fn burn_adamw() -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(adamw::BETA1 as f32)
        .with_beta_2(adamw::BETA2 as f32)
        .with_epsilon(adamw::EPS as f32)
        .with_weight_decay(adamw::WEIGHT_DECAY as f32)
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

/// Clip burn gradients by their global L2 norm like `torch.nn.utils.clip_grad_norm_`: if the
/// norm exceeds `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`. Returns
/// the norm before clipping (NaN if a gradient is not finite).
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
