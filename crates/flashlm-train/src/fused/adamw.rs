//! AdamW on the flat parameter buffers.

use rayon::prelude::*;

use flashlm_core::adamw;

use super::{Params, ew};

/// AdamW as PyTorch's `torch.optim.AdamW` (and the original): decoupled weight decay and bias
/// correction, with the settings of [`flashlm_core::adamw`].
#[derive(Debug, Clone)]
pub struct AdamW {
    /// First moments.
    pub m: Params,
    /// Second moments.
    pub v: Params,
    /// Steps taken.
    pub t: u64,
}

impl AdamW {
    /// Zero moments for `p`.
    pub fn new(p: &Params) -> Self {
        Self { m: p.zeros_like(), v: p.zeros_like(), t: 0 }
    }

    /// One update of `p` with `grads` at learning rate `lr`; leaves `grads` all zero, ready to
    /// accumulate the next step.
    pub fn step(&mut self, p: &mut Params, grads: &mut Params, lr: f64) {
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (adamw::BETA1 as f32, adamw::BETA2 as f32);
        let bc1 = 1.0 - adamw::BETA1.powi(t);
        let bc2 = 1.0 - adamw::BETA2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - lr * adamw::WEIGHT_DECAY) as f32;
        let eps = adamw::EPS as f32;
        for (((w, g), m), v) in p
            .buffers_mut()
            .into_iter()
            .zip(grads.buffers_mut())
            .zip(self.m.buffers_mut())
            .zip(self.v.buffers_mut())
        {
            const CHUNK: usize = 1 << 14;
            w.par_chunks_mut(CHUNK)
                .zip(g.par_chunks_mut(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((w, g), m), v)| {
                    ew::adamw(w, g, m, v, [decay, b1, b2, step_size, bc2_sqrt, eps])
                });
        }
    }
}
