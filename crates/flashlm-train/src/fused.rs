//! A hand-written training step for the Bolt model: forward, backward and nothing else,
//! on flat f32 buffers with the `gemm` crate for the matrix products and rayon for the rest
//! (llm.c style). The burn model in `flashlm-model` stays the reference: tests check this
//! step's loss and every gradient against it and against PyTorch (tolerance 1e-4).
//!
//! What it saves over the generic burn graph:
//! * the tied head and the cross-entropy run in chunks of rows, so the [N, V] logits and their
//!   softmax are never materialised whole (N = batch · seq);
//! * each ternary weight is quantised once per step (the straight-through estimator makes the
//!   weight gradient the gradient of the quantised weight);
//! * element-wise work is fused into single passes (norms, gates, SiLU-GLU, conv);
//! * buffers are plain `Vec<f32>`s, no tensor bookkeeping or autodiff graph.
//!
//! Shapes: N = B·T token positions, d model width, h GLU width, k conv taps, V vocabulary.

use flashlm_core::params::{self, taps_param_layout, taps_time_major};
use flashlm_core::quant::ternary_values;
use flashlm_core::{Config, NORM_EPS, adamw};
use gemm::Parallelism;
use rayon::prelude::*;

use flashlm_model::NamedTensors;

/// One block's parameters (or gradients), PyTorch layout.
#[derive(Debug, Clone)]
pub struct BlockParams {
    /// [d] RMSNorm gains before the mixer.
    pub norm1: Vec<f32>,
    /// [2d, d] mixer up projection (rows 0..d gate, d..2d value).
    pub up: Vec<f32>,
    /// [d, 1, k] depthwise causal conv taps.
    pub conv: Vec<f32>,
    /// [d, d] mixer down projection.
    pub down: Vec<f32>,
    /// [d] RMSNorm gains before the GLU.
    pub norm2: Vec<f32>,
    /// [h, d] GLU gate.
    pub w_gate: Vec<f32>,
    /// [h, d] GLU up.
    pub w_up: Vec<f32>,
    /// [d, h] GLU down.
    pub w_down: Vec<f32>,
}

/// All parameters (or gradients) of a Bolt model as flat buffers.
#[derive(Debug, Clone)]
pub struct Params {
    /// [V, d] tied embedding / head.
    pub embedding: Vec<f32>,
    /// The blocks.
    pub blocks: Vec<BlockParams>,
    /// [d] final RMSNorm gains.
    pub final_norm: Vec<f32>,
}

impl BlockParams {
    /// Every buffer, in the order of [`params::BlockTensor::ALL`].
    pub fn fields(&self) -> [&Vec<f32>; 8] {
        [&self.norm1, &self.up, &self.conv, &self.down, &self.norm2, &self.w_gate, &self.w_up, &self.w_down]
    }

    /// Every buffer, mutable, in the order of [`params::BlockTensor::ALL`].
    pub fn fields_mut(&mut self) -> [&mut Vec<f32>; 8] {
        [
            &mut self.norm1,
            &mut self.up,
            &mut self.conv,
            &mut self.down,
            &mut self.norm2,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }

    /// A block of zero-length buffers, to be filled through [`BlockParams::fields_mut`].
    fn empty() -> Self {
        let e = Vec::new;
        Self { norm1: e(), up: e(), conv: e(), down: e(), norm2: e(), w_gate: e(), w_up: e(), w_down: e() }
    }
}

impl Params {
    /// From named tensors (the names and shapes of [`params::table`]), checking every shape.
    pub fn from_named(cfg: &Config, w: &NamedTensors) -> Result<Self, String> {
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            let (s, vals) = w.get(name).ok_or_else(|| format!("missing tensor {name}"))?;
            if s != shape {
                return Err(format!("{name}: shape {s:?}, expected {shape:?}"));
            }
            Ok(vals.clone())
        };
        let mut out = Self {
            embedding: Vec::new(),
            blocks: (0..cfg.n_blocks).map(|_| BlockParams::empty()).collect(),
            final_norm: Vec::new(),
        };
        for (buf, spec) in out.buffers_mut().into_iter().zip(params::table(cfg)) {
            *buf = get(&spec.name, &spec.shape)?;
        }
        Ok(out)
    }

    /// (name, shape, values) of every tensor, in [`params::table`] order.
    pub fn named(&self, cfg: &Config) -> Vec<(String, Vec<usize>, &[f32])> {
        params::table(cfg).into_iter().zip(self.buffers()).map(|(p, b)| (p.name, p.shape, &b[..])).collect()
    }

    /// Every buffer, in [`params::table`] order.
    pub fn buffers(&self) -> Vec<&Vec<f32>> {
        let mut out = vec![&self.embedding];
        for b in &self.blocks {
            out.extend(b.fields());
        }
        out.push(&self.final_norm);
        out
    }

    /// Every buffer, mutable, in [`params::table`] order.
    pub fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out = vec![&mut self.embedding];
        for b in &mut self.blocks {
            out.extend(b.fields_mut());
        }
        out.push(&mut self.final_norm);
        out
    }

    /// Zeros of the same shapes (a gradient buffer).
    pub fn zeros_like(&self) -> Self {
        let mut z = self.clone();
        for b in z.buffers_mut() {
            b.fill(0.0);
        }
        z
    }

    /// The weights of a burn model.
    pub fn from_model(cfg: &Config, model: &flashlm_model::Bolt) -> Result<Self, String> {
        let named = model.named_params().into_iter().map(|p| (p.name, (p.shape, p.values))).collect();
        Self::from_named(cfg, &named)
    }
}

/// C[m, n] = A[m, k] · B[k, n] (+ C when `acc`), every matrix given by (buffer, row stride,
/// column stride).
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    (c_rs, c_cs): (usize, usize),
    acc: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(c.len() > last(m, n, c_rs, c_cs));
    if k > 0 {
        assert!(a.len() > last(m, k, a_rs, a_cs) && b.len() > last(k, n, b_rs, b_cs));
    }
    let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the asserts above keep every element gemm touches inside the three slices; c
    // does not overlap a or b (it is a distinct &mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            acc,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// y = x · Wᵀ for row-major x [n, i] and W [o, i]: y [n, o].
fn linear(y: &mut [f32], x: &[f32], w: &[f32], n: usize, i: usize, o: usize, threads: usize) {
    mm(n, o, i, y, (o, 1), false, x, (i, 1), w, (1, i), threads);
}

/// dx (+)= dy · W for dy [n, o], W [o, i]: dx [n, i]; dW += dyᵀ · x: [o, i].
#[allow(clippy::too_many_arguments)]
fn linear_back(
    dx: &mut [f32],
    acc_dx: bool,
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    (n, i, o): (usize, usize, usize),
    threads: usize,
) {
    mm(n, i, o, dx, (i, 1), acc_dx, dy, (o, 1), w, (i, 1), threads);
    mm(o, i, n, dw, (i, 1), true, dy, (1, o), x, (i, 1), threads);
}

use flashlm_core::vmath;

/// y = x · r · g per row, with r = 1 / sqrt(mean(x²) + eps) per row written to `r`.
fn rmsnorm(y: &mut [f32], r: &mut [f32], x: &[f32], g: &[f32], d: usize) {
    y.par_chunks_mut(ROWS_PER_TASK * d)
        .zip(r.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(ROWS_PER_TASK * d))
        .for_each(|((y, r), x)| ew::rms_fwd(y, r, x, g, d, NORM_EPS as f32));
}

/// Backward of [`rmsnorm`]: dx (+)= r·g·dy − x·r³·mean(x·g·dy); dg += Σ_rows dy·x·r.
fn rmsnorm_back(dx: &mut [f32], dg: &mut [f32], dy: &[f32], x: &[f32], r: &[f32], g: &[f32], d: usize) {
    let parts: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS_PER_TASK * d)
        .zip(dy.par_chunks(ROWS_PER_TASK * d))
        .zip(x.par_chunks(ROWS_PER_TASK * d))
        .zip(r.par_chunks(ROWS_PER_TASK))
        .map(|(((dx, dy), x), r)| {
            let mut part = vec![0.0f32; d];
            ew::rms_bwd(dx, &mut part, dy, x, r, g, d);
            part
        })
        .collect();
    for p in parts {
        vmath::add_assign(dg, &p);
    }
}

/// o += i, split across threads.
fn add_par(o: &mut [f32], i: &[f32]) {
    o.par_chunks_mut(1 << 14).zip(i.par_chunks(1 << 14)).for_each(|(o, i)| vmath::add_assign(o, i));
}

/// Element-wise kernels, each compiled for AVX-512, AVX2 and portable code
/// (`flashlm_core::multiversion!`); callers split rows across threads.
#[allow(clippy::too_many_arguments)]
mod ew {
    use flashlm_core::vmath::sigmoid;

    flashlm_core::multiversion! {
        /// dg = da · u · silu'(g), du = da · silu(g).
        fn silu_bwd(dg: &mut [f32], du: &mut [f32], da: &[f32], g: &[f32], u: &[f32]) {
            for ((((dg, du), &da), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(da).zip(g).zip(u) {
                let sg = sigmoid(g);
                *du = da * g * sg;
                *dg = da * u * sg * (1.0 + g * (1.0 - sg));
            }
        }
    }

    flashlm_core::multiversion! {
        /// One AdamW update; k = [decay, β₁, β₂, lr / bias₁, sqrt(bias₂), ε]. Clears the
        /// gradient as it reads it (saves the next step a separate pass).
        fn adamw(w: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32], k: [f32; 6]) {
            let [decay, b1, b2, step_size, bc2_sqrt, eps] = k;
            for (((w, g), m), v) in w.iter_mut().zip(g.iter_mut()).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = std::mem::take(g);
                *w *= decay;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *w -= step_size * *m / denom;
            }
        }
    }

    flashlm_core::multiversion! {
        /// RMSNorm of rows of width d: y = x · r · g, r[row] = 1 / sqrt(mean(x²) + eps).
        fn rms_fwd(y: &mut [f32], r: &mut [f32], x: &[f32], g: &[f32], d: usize, eps: f32) {
            for ((y, r), x) in y.chunks_exact_mut(d).zip(r.iter_mut()).zip(x.chunks_exact(d)) {
                let mut acc = [0.0f32; 16];
                let mut ch = x.chunks_exact(16);
                for c in &mut ch {
                    for j in 0..16 {
                        acc[j] += c[j] * c[j];
                    }
                }
                let mut ss = 0.0f32;
                for v in ch.remainder() {
                    ss += v * v;
                }
                for a in acc {
                    ss += a;
                }
                let rr = 1.0 / (ss / d as f32 + eps).sqrt();
                *r = rr;
                for ((o, &v), &s) in y.iter_mut().zip(x).zip(g) {
                    *o = v * rr * s;
                }
            }
        }
    }

    flashlm_core::multiversion! {
        /// Backward of `rms_fwd` for rows of width d: dx += r·g·dy − x·r³·mean(x·g·dy);
        /// dg += Σ_rows dy·x·r.
        fn rms_bwd(dx: &mut [f32], dg: &mut [f32], dy: &[f32], x: &[f32], r: &[f32], g: &[f32], d: usize) {
            for (((dx, dy), x), &r) in dx.chunks_exact_mut(d).zip(dy.chunks_exact(d)).zip(x.chunks_exact(d)).zip(r) {
                let mut acc = [0.0f32; 16];
                let (mut a16, mut b16, mut c16) = (dy.chunks_exact(16), x.chunks_exact(16), g.chunks_exact(16));
                for ((a, b), c) in (&mut a16).zip(&mut b16).zip(&mut c16) {
                    for j in 0..16 {
                        acc[j] += a[j] * b[j] * c[j];
                    }
                }
                let mut dot = 0.0f32;
                for ((a, b), c) in a16.remainder().iter().zip(b16.remainder()).zip(c16.remainder()) {
                    dot += a * b * c;
                }
                for a in acc {
                    dot += a;
                }
                let dot = dot / d as f32;
                let r3 = r * r * r;
                for ((((o, &dy), &x), &g), dg) in dx.iter_mut().zip(dy).zip(x).zip(g).zip(dg.iter_mut()) {
                    *o += r * g * dy - x * r3 * dot;
                    *dg += dy * x * r;
                }
            }
        }
    }

    flashlm_core::multiversion! {
        /// One sequence of T positions: c = causal depthwise conv of the value half of gv
        /// ([T, 2d], taps [k, d]), m = c · sigmoid(gate half).
        fn conv_fwd(c: &mut [f32], m: &mut [f32], gv: &[f32], taps: &[f32], d: usize, k: usize) {
            let t = c.len() / d;
            for ti in 0..t {
                let out = &mut c[ti * d..(ti + 1) * d];
                out.fill(0.0);
                for j in 0..k {
                    // tap j reads the value k-1-j steps back
                    let Some(src) = (ti + j).checked_sub(k - 1) else { continue };
                    let val = &gv[src * 2 * d + d..(src + 1) * 2 * d];
                    for ((o, &w), &x) in out.iter_mut().zip(&taps[j * d..(j + 1) * d]).zip(val) {
                        *o += w * x;
                    }
                }
                let gate = &gv[ti * 2 * d..ti * 2 * d + d];
                for ((mo, &co), &g) in m[ti * d..(ti + 1) * d].iter_mut().zip(&*out).zip(gate) {
                    *mo = co * sigmoid(g);
                }
            }
        }
    }

    flashlm_core::multiversion! {
        /// Backward of `conv_fwd` for one sequence: writes the gate half of dgv, adds into its
        /// value half, and adds the tap gradients into dtaps ([k, d]); dc is [d] scratch.
        fn conv_bwd(dgv: &mut [f32], dtaps: &mut [f32], dc: &mut [f32], dm: &[f32], c: &[f32], gv: &[f32], taps: &[f32], d: usize, k: usize) {
            let t = dm.len() / d;
            for ti in 0..t {
                let gate = &gv[ti * 2 * d..ti * 2 * d + d];
                let (dmr, cr) = (&dm[ti * d..(ti + 1) * d], &c[ti * d..(ti + 1) * d]);
                let dgate = &mut dgv[ti * 2 * d..ti * 2 * d + d];
                for ((((dg, dcv), &g), &dmv), &cv) in dgate.iter_mut().zip(dc.iter_mut()).zip(gate).zip(dmr).zip(cr) {
                    let sg = sigmoid(g);
                    *dg = dmv * cv * sg * (1.0 - sg);
                    *dcv = dmv * sg;
                }
                for j in 0..k {
                    let Some(src) = (ti + j).checked_sub(k - 1) else { continue };
                    let tap = &taps[j * d..(j + 1) * d];
                    let dval = &mut dgv[src * 2 * d + d..(src + 1) * 2 * d];
                    for ((o, &w), &g) in dval.iter_mut().zip(tap).zip(&*dc) {
                        *o += w * g;
                    }
                    let val = &gv[src * 2 * d + d..(src + 1) * 2 * d];
                    for ((o, &g), &x) in dtaps[j * d..(j + 1) * d].iter_mut().zip(&*dc).zip(val) {
                        *o += g * x;
                    }
                }
            }
        }
    }
}

/// Rows per parallel task for element-wise work.
const ROWS_PER_TASK: usize = 64;

/// Saved activations of one block.
#[derive(Debug, Default)]
struct BlockActs {
    r1: Vec<f32>,    // [N]
    n1: Vec<f32>,    // [N, d]
    gv: Vec<f32>,    // [N, 2d] gate | value
    c: Vec<f32>,     // [N, d] conv(value)
    m: Vec<f32>,     // [N, d] c * sigmoid(gate)
    x_mid: Vec<f32>, // [N, d] after the mixer's residual
    r2: Vec<f32>,    // [N]
    n2: Vec<f32>,    // [N, d]
    gu: Vec<f32>,    // [N, 2h] W_gate n2 | W_up n2 (one product with the stacked weights)
    a: Vec<f32>,     // [N, h] silu(gate) * up
    x_out: Vec<f32>, // [N, d] block output (the next block's input)
}

/// Every buffer one part of a step works in. Kept between steps (see [`Scratch`]), so a step
/// allocates, page-faults and clears nothing but the two buffers that accumulate.
#[derive(Debug, Default)]
pub struct Workspace {
    x0: Vec<f32>,         // [N, d] embedded inputs (block 0's input)
    acts: Vec<BlockActs>, // per block
    nf: Vec<f32>,         // [N, d] final norm output
    rf: Vec<f32>,         // [N]
    dnf: Vec<f32>,        // [N, d]
    logits: Vec<f32>,     // [CE_CHUNK, V] one chunk of logits, then of their gradient
    dx: Vec<f32>,         // [N, d] gradient of the residual stream
    da: Vec<f32>,         // [N, h]
    dgu: Vec<f32>,        // [N, 2h]
    dn2: Vec<f32>,        // [N, d]
    dm: Vec<f32>,         // [N, d]
    dgv: Vec<f32>,        // [N, 2d]
    dn1: Vec<f32>,        // [N, d]
}

/// What a training run keeps from one step to the next: a workspace per data-parallel group
/// and the gradient buffers of groups after the first (the first adds into the caller's).
#[derive(Debug, Default)]
pub struct Scratch {
    parts: Vec<(Workspace, Option<Params>)>,
}

/// `v` as a slice of `len` elements; keeps (does not clear) the contents when the length is
/// already right, so callers must overwrite every element or clear it themselves.
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() != len {
        v.clear();
        v.resize(len, 0.0);
    }
    v
}

/// Quantised weights of one block (used by forward and backward).
struct BlockQ {
    up: Vec<f32>,     // [2d, d]
    down: Vec<f32>,   // [d, d]
    w_gu: Vec<f32>,   // [2h, d]: quantised W_gate rows, then quantised W_up rows
    w_down: Vec<f32>, // [d, h]
}

/// Rows of the head processed at once in the cross-entropy.
const CE_CHUNK: usize = 256;

/// Forward and backward of one batch: `inputs` and `targets` are [B, T] token ids. Adds the
/// gradient of the mean cross-entropy to `grads` and returns that loss. Allocates its buffers
/// anew; a training loop uses [`forward_backward_with`] and keeps a [`Scratch`].
pub fn forward_backward(
    cfg: &Config,
    p: &Params,
    grads: &mut Params,
    inputs: &[u16],
    targets: &[u16],
    t: usize,
    threads: usize,
) -> f32 {
    forward_backward_with(&mut Scratch::default(), cfg, p, grads, inputs, targets, t, threads)
}

/// [`forward_backward`] working in `scratch`'s buffers (sized on first use, reused after).
///
/// With several threads the batch is split into one group of whole sequences per thread
/// (data parallel): each group runs the whole step on its thread with single-threaded matrix
/// products; the first group adds into `grads`, the others into their own buffers, which are
/// summed into `grads` at the end. Only the summation order differs from one thread.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward_with(
    scratch: &mut Scratch,
    cfg: &Config,
    p: &Params,
    grads: &mut Params,
    inputs: &[u16],
    targets: &[u16],
    t: usize,
    threads: usize,
) -> f32 {
    let n = inputs.len();
    assert!(t > 0 && n.is_multiple_of(t) && targets.len() == n, "inputs must be whole sequences of length t");
    let seqs = n / t;
    let groups = threads.clamp(1, seqs.max(1));
    // Every ternary weight quantised once per step, in parallel.
    let qs: Vec<BlockQ> = p
        .blocks
        .par_iter()
        .map(|b| BlockQ {
            up: ternary_values(&b.up),
            down: ternary_values(&b.down),
            // Each matrix keeps its own scale; stacked so the GLU's two products are one.
            w_gu: [ternary_values(&b.w_gate), ternary_values(&b.w_up)].concat(),
            w_down: ternary_values(&b.w_down),
        })
        .collect();
    if scratch.parts.len() < groups {
        scratch.parts.resize_with(groups, Default::default);
    }
    if groups == 1 {
        let ws = &mut scratch.parts[0].0;
        return forward_backward_part(cfg, p, &qs, grads, ws, inputs, targets, t, n, threads);
    }
    let per = seqs.div_ceil(groups) * t;
    let (first, rest) = scratch.parts[..groups].split_at_mut(1);
    let ((x0, y0), (xs, ys)) = ((&inputs[..per], &targets[..per]), (&inputs[per..], &targets[per..]));
    let (loss0, losses) = rayon::join(
        || forward_backward_part(cfg, p, &qs, grads, &mut first[0].0, x0, y0, t, n, 1),
        || {
            rest.par_iter_mut()
                .zip(xs.par_chunks(per).zip(ys.par_chunks(per)))
                .map(|((ws, g), (x, y))| {
                    let g = g.get_or_insert_with(|| p.zeros_like());
                    for b in g.buffers_mut() {
                        b.fill(0.0);
                    }
                    forward_backward_part(cfg, p, &qs, g, ws, x, y, t, n, 1)
                })
                .collect::<Vec<f32>>()
        },
    );
    let mut loss = loss0;
    for ((_, g), l) in rest.iter().zip(losses) {
        loss += l;
        let g = g.as_ref().expect("filled above");
        for (a, b) in grads.buffers_mut().into_iter().zip(g.buffers()) {
            add_par(a, b);
        }
    }
    loss
}

/// [`forward_backward`] on part of a batch: adds into `grads` the gradients of the summed
/// cross-entropy of these tokens divided by `denom` (the whole batch's token count), and
/// returns that loss.
#[allow(clippy::too_many_arguments)]
fn forward_backward_part(
    cfg: &Config,
    p: &Params,
    qs: &[BlockQ],
    grads: &mut Params,
    ws: &mut Workspace,
    inputs: &[u16],
    targets: &[u16],
    t: usize,
    denom: usize,
    threads: usize,
) -> f32 {
    let (v, d, h, k) = (cfg.vocab_size, cfg.dim, cfg.glu_hidden, cfg.kernel_size);
    let n = inputs.len();
    assert_eq!(targets.len(), n);
    assert!(t > 0 && n.is_multiple_of(t), "inputs must be whole sequences of length t");
    ws.acts.resize_with(p.blocks.len(), Default::default);

    // ---- forward ----
    let x0 = sized(&mut ws.x0, n * d);
    for (row, &id) in x0.chunks_exact_mut(d).zip(inputs) {
        let id = id as usize;
        assert!(id < v, "token id {id} outside the vocabulary");
        row.copy_from_slice(&p.embedding[id * d..(id + 1) * d]);
    }
    for (i, (b, q)) in p.blocks.iter().zip(qs).enumerate() {
        let (prev, cur) = ws.acts.split_at_mut(i);
        let x_in: &[f32] = if i == 0 { &ws.x0 } else { &prev[i - 1].x_out };
        let s = &mut cur[0];
        let n1 = sized(&mut s.n1, n * d);
        rmsnorm(n1, sized(&mut s.r1, n), x_in, &b.norm1, d);
        let gv = sized(&mut s.gv, n * 2 * d);
        linear(gv, &s.n1, &q.up, n, d, 2 * d, threads);
        // Causal depthwise conv over each sequence, then the sigmoid gate (taps as [k, d]).
        let taps = taps_time_major(&b.conv, d, k);
        sized(&mut s.c, n * d)
            .par_chunks_mut(t * d)
            .zip(sized(&mut s.m, n * d).par_chunks_mut(t * d))
            .zip(s.gv.par_chunks(t * 2 * d))
            .for_each(|((c, m), gv)| ew::conv_fwd(c, m, gv, &taps, d, k));
        let x_mid = sized(&mut s.x_mid, n * d);
        linear(x_mid, &s.m, &q.down, n, d, d, threads);
        add_par(x_mid, x_in);
        let n2 = sized(&mut s.n2, n * d);
        rmsnorm(n2, sized(&mut s.r2, n), &s.x_mid, &b.norm2, d);
        let gu = sized(&mut s.gu, n * 2 * h);
        linear(gu, &s.n2, &q.w_gu, n, d, 2 * h, threads);
        sized(&mut s.a, n * h)
            .par_chunks_mut(ROWS_PER_TASK * h)
            .zip(s.gu.par_chunks(ROWS_PER_TASK * 2 * h))
            .for_each(|(a, gu)| {
                for (a, gu) in a.chunks_exact_mut(h).zip(gu.chunks_exact(2 * h)) {
                    vmath::silu_mul(a, &gu[..h], &gu[h..]);
                }
            });
        let x_out = sized(&mut s.x_out, n * d);
        linear(x_out, &s.a, &q.w_down, n, h, d, threads);
        add_par(x_out, &s.x_mid);
    }
    let x_last: &[f32] = ws.acts.last().map_or(&ws.x0, |a| &a.x_out);
    let nf = sized(&mut ws.nf, n * d);
    rmsnorm(nf, sized(&mut ws.rf, n), x_last, &p.final_norm, d);

    // ---- head + cross-entropy, in chunks of rows (never the whole [N, V] logits) ----
    let dnf = sized(&mut ws.dnf, n * d);
    let mut loss = 0.0f64;
    let inv_n = 1.0 / denom as f32;
    let logits = sized(&mut ws.logits, CE_CHUNK.min(n) * v);
    for (ci, (rows, ys)) in ws.nf.chunks(CE_CHUNK * d).zip(targets.chunks(CE_CHUNK)).enumerate() {
        let c = ys.len();
        let l = &mut logits[..c * v];
        linear(l, rows, &p.embedding, c, d, v, threads);
        // softmax - onehot, scaled by 1/N; the loss in f64.
        let chunk_loss: f64 = l
            .par_chunks_mut(v)
            .zip(ys.par_iter())
            .map(|(row, &y)| {
                let max = vmath::max(row);
                let sum = vmath::exp_shift_sum(row, max);
                let y = y as usize;
                let nll = -(f64::from(row[y]).ln() - f64::from(sum).ln());
                vmath::scale(row, inv_n / sum);
                row[y] -= inv_n;
                nll
            })
            .sum();
        loss += chunk_loss;
        // d nf = dlogits · E ; dE += dlogitsᵀ · nf
        linear_back(
            &mut dnf[ci * CE_CHUNK * d..ci * CE_CHUNK * d + c * d],
            false,
            &mut grads.embedding,
            l,
            rows,
            &p.embedding,
            (c, d, v),
            threads,
        );
    }

    // ---- backward ----
    let dx = sized(&mut ws.dx, n * d);
    dx.fill(0.0);
    rmsnorm_back(dx, &mut grads.final_norm, &ws.dnf, x_last, &ws.rf, &p.final_norm, d);
    for (i, ((b, g), q)) in p.blocks.iter().zip(grads.blocks.iter_mut()).zip(qs).enumerate().rev() {
        let s = &ws.acts[i];
        let x_in: &[f32] = if i == 0 { &ws.x0 } else { &ws.acts[i - 1].x_out };
        // GLU: x_out = x_mid + W_down(silu(gate) * up)
        let da = sized(&mut ws.da, n * h);
        linear_back(da, false, &mut g.w_down, dx, &s.a, &q.w_down, (n, h, d), threads);
        let dgu = sized(&mut ws.dgu, n * 2 * h);
        dgu.par_chunks_mut(ROWS_PER_TASK * 2 * h)
            .zip(ws.da.par_chunks(ROWS_PER_TASK * h))
            .zip(s.gu.par_chunks(ROWS_PER_TASK * 2 * h))
            .for_each(|((dgu, da), gu)| {
                for ((dgu, da), gu) in
                    dgu.chunks_exact_mut(2 * h).zip(da.chunks_exact(h)).zip(gu.chunks_exact(2 * h))
                {
                    let (dg, du) = dgu.split_at_mut(h);
                    ew::silu_bwd(dg, du, da, &gu[..h], &gu[h..]);
                }
            });
        // dn2 = [dgate | dup] · [W_gate; W_up] in one product; the two weight gradients read
        // their half of dgu in place (row stride 2h).
        let dn2 = sized(&mut ws.dn2, n * d);
        mm(n, d, 2 * h, dn2, (d, 1), false, &ws.dgu, (2 * h, 1), &q.w_gu, (d, 1), threads);
        mm(h, d, n, &mut g.w_gate, (d, 1), true, &ws.dgu, (1, 2 * h), &s.n2, (d, 1), threads);
        mm(h, d, n, &mut g.w_up, (d, 1), true, &ws.dgu[h..], (1, 2 * h), &s.n2, (d, 1), threads);
        // dx_mid = dx (residual) + norm2 backward
        rmsnorm_back(dx, &mut g.norm2, &ws.dn2, &s.x_mid, &s.r2, &b.norm2, d);
        // Mixer: x_mid = x_in + down(conv(value) * sigmoid(gate))
        let dm = sized(&mut ws.dm, n * d);
        linear_back(dm, false, &mut g.down, dx, &s.m, &q.down, (n, d, d), threads);
        // conv_bwd adds into the value half of dgv.
        let dgv = sized(&mut ws.dgv, n * 2 * d);
        dgv.fill(0.0);
        // Per sequence: gate gradient, conv backward into the value gradient and the taps
        // (tap gradients accumulated as [k, d], transposed back below).
        let taps = taps_time_major(&b.conv, d, k);
        let dconv_parts: Vec<Vec<f32>> = dgv
            .par_chunks_mut(t * 2 * d)
            .zip(ws.dm.par_chunks(t * d))
            .zip(s.c.par_chunks(t * d))
            .zip(s.gv.par_chunks(t * 2 * d))
            .map(|(((dgv, dm), c), gv)| {
                let mut dtaps = vec![0.0f32; k * d];
                let mut dc = vec![0.0f32; d];
                ew::conv_bwd(dgv, &mut dtaps, &mut dc, dm, c, gv, &taps, d, k);
                // back to the [d, 1, k] layout of the parameter
                taps_param_layout(&dtaps, d, k)
            })
            .collect();
        for part in dconv_parts {
            for (a, b) in g.conv.iter_mut().zip(part) {
                *a += b;
            }
        }
        let dn1 = sized(&mut ws.dn1, n * d);
        linear_back(dn1, false, &mut g.up, &ws.dgv, &s.n1, &q.up, (n, d, 2 * d), threads);
        rmsnorm_back(dx, &mut g.norm1, &ws.dn1, x_in, &s.r1, &b.norm1, d);
    }
    // Embedding rows of the inputs.
    for (row, &id) in dx.chunks_exact(d).zip(inputs) {
        let id = id as usize;
        for (a, &b) in grads.embedding[id * d..(id + 1) * d].iter_mut().zip(row) {
            *a += b;
        }
    }
    (loss / denom as f64) as f32
}

/// grads *= f (averaging accumulated micro-batches).
pub fn scale_grads(grads: &mut Params, f: f32) {
    for g in grads.buffers_mut() {
        g.par_iter_mut().for_each(|x| *x *= f);
    }
}

/// Clip like `torch.nn.utils.clip_grad_norm_`: if the global L2 norm exceeds `max_norm`, scale
/// every gradient by `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
pub fn clip_global_norm(grads: &mut Params, max_norm: f64) -> f64 {
    let sum_sq: f64 = grads
        .buffers_mut()
        .into_iter()
        .map(|g| g.par_iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .sum();
    let norm = sum_sq.sqrt();
    if norm.is_finite() && norm > max_norm {
        scale_grads(grads, (max_norm / (norm + 1e-6)) as f32);
    }
    norm
}

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
