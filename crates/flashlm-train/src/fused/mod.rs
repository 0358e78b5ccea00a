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

use flashlm_core::Config;
use flashlm_core::params;
use flashlm_core::quant::{ternary_codes, ternary_values};
use rayon::prelude::*;
use ternary::TernaryMatrix;

mod adamw;
mod ew;
pub mod layers;
mod matmul;
pub mod ternary;

pub use adamw::AdamW;

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
    back: BackBufs,       // the backward pass's gradients of activations
}

/// Gradients of one block's activations (reused by every block of the backward pass).
#[derive(Debug, Default)]
struct BackBufs {
    dx: Vec<f32>,  // [N, d] gradient of the residual stream
    da: Vec<f32>,  // [N, h]
    dgu: Vec<f32>, // [N, 2h]
    dn2: Vec<f32>, // [N, d]
    dm: Vec<f32>,  // [N, d]
    dgv: Vec<f32>, // [N, 2d]
    dn1: Vec<f32>, // [N, d]
}

/// What a training run keeps from one step to the next: a workspace per data-parallel group
/// and the gradient buffers of groups after the first (the first adds into the caller's).
#[derive(Debug, Default)]
pub struct Scratch {
    parts: Vec<(Workspace, Option<Params>)>,
    /// How the ternary products are computed.
    pub products: Products,
}

impl Scratch {
    /// Empty buffers, products computed as `products` says.
    pub fn with_products(products: Products) -> Self {
        Scratch { products, ..Default::default() }
    }
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

/// How the step multiplies by the ternary weights (forward pass and input gradients; the
/// weight gradients and the tied head are float GEMMs either way). Both give PyTorch's loss
/// and gradients within 1e-4 (`tests/parity.rs`); they differ by rounding only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Products {
    /// Float GEMMs on the quantised values (the reference).
    Gemm,
    /// Additions on shared partial sums ([`ternary::ternary_mm`]).
    Tables,
}

impl Default for Products {
    /// [`Products::for_this_cpu`].
    fn default() -> Self {
        Products::for_this_cpu()
    }
}

impl Products {
    /// The faster of the two where it was measured (docs/TRAINING-SPEED.md): the tables at AVX2
    /// level (an AVX2-only CPU, or `FLASHLM_ISA=avx2`: 1.11x the large step with OpenBLAS, the
    /// same speed on the small one), the GEMMs with AVX-512 (the tables were 5% slower on the
    /// large step there) and without AVX2. `FLASHLM_PRODUCTS=gemm|tables` overrides. Read once.
    pub fn for_this_cpu() -> Products {
        static CHOICE: std::sync::OnceLock<Products> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| {
            use flashlm_core::cpu;
            let auto = if cpu::level() == cpu::Isa::Avx2 { Products::Tables } else { Products::Gemm };
            match std::env::var("FLASHLM_PRODUCTS").as_deref().map(str::to_ascii_lowercase).as_deref() {
                Err(_) | Ok("") | Ok("auto") => auto,
                Ok("gemm") => Products::Gemm,
                Ok("tables") => Products::Tables,
                Ok(other) => {
                    eprintln!("warning: FLASHLM_PRODUCTS={other:?} is not auto, gemm or tables; using auto");
                    auto
                }
            }
        })
    }

    /// In words, for logs: which products and which float GEMM kernels run.
    pub fn describe(self) -> String {
        let what = match self {
            Products::Gemm => "ternary products as float GEMMs",
            Products::Tables => "ternary products by additions (tables)",
        };
        format!("{what}; float GEMMs: {}", layers::gemm_kernels())
    }
}

/// One ternary linear map W [o, i] as the products need it: a stack of matrices along the
/// outputs, each quantised with its own α (the GLU's W_gate and W_up form one).
enum Lin {
    /// The quantised values (α · level) of the stack, [o, i].
    Gemm { w: Vec<f32>, o: usize, i: usize },
    /// Table codes of each matrix of the stack (forward) and of its transpose (input gradient).
    Tables(Vec<(TernaryMatrix, TernaryMatrix)>),
}

impl Lin {
    /// The stack of `parts` (each W_k [o_k, i] given as (weights, o_k)), quantised.
    fn new(parts: &[(&[f32], usize)], i: usize, products: Products) -> Lin {
        match products {
            Products::Gemm => Lin::Gemm {
                w: parts.iter().flat_map(|&(w, _)| ternary_values(w)).collect(),
                o: parts.iter().map(|&(_, o)| o).sum(),
                i,
            },
            Products::Tables => Lin::Tables(
                parts
                    .iter()
                    .map(|&(w, o)| {
                        let (t, alpha) = ternary_codes(w);
                        (
                            TernaryMatrix::from_codes(&t, alpha, o, i, false),
                            TernaryMatrix::from_codes(&t, alpha, o, i, true),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// y[r, ..o] = x[r, ..i] · Wᵀ for n rows (row strides y_rs, x_rs).
    fn forward(&self, y: &mut [f32], y_rs: usize, x: &[f32], x_rs: usize, n: usize, threads: usize) {
        match self {
            Lin::Gemm { w, o, i } => {
                layers::mm(n, *o, *i, y, (y_rs, 1), false, x, (x_rs, 1), w, (1, *i), threads)
            }
            Lin::Tables(parts) => {
                let mut col = 0;
                for (w, _) in parts {
                    ternary::ternary_mm(&mut y[col..], y_rs, false, x, x_rs, n, w, threads);
                    col += w.p;
                }
            }
        }
    }

    /// dx[r, ..i] (+= when `acc`) dy[r, ..o] · W for n rows.
    #[allow(clippy::too_many_arguments)]
    fn input_grad(
        &self,
        dx: &mut [f32],
        dx_rs: usize,
        acc: bool,
        dy: &[f32],
        dy_rs: usize,
        n: usize,
        threads: usize,
    ) {
        match self {
            Lin::Gemm { w, o, i } => {
                layers::mm(n, *i, *o, dx, (dx_rs, 1), acc, dy, (dy_rs, 1), w, (*i, 1), threads)
            }
            Lin::Tables(parts) => {
                let mut col = 0;
                for (k, (_, wt)) in parts.iter().enumerate() {
                    ternary::ternary_mm(dx, dx_rs, acc || k > 0, &dy[col..], dy_rs, n, wt, threads);
                    col += wt.q;
                }
            }
        }
    }
}

/// Quantised weights of one block (used by forward and backward).
struct BlockQ {
    up: Lin,     // [2d, d]
    down: Lin,   // [d, d]
    glu: Lin,    // [2h, d]: W_gate rows, then W_up rows (one product, each its own α)
    w_down: Lin, // [d, h]
}

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
    // Every ternary weight quantised once per step (and coded for the tables), in parallel.
    let (d, h, products) = (cfg.dim, cfg.glu_hidden, scratch.products);
    let qs: Vec<BlockQ> = p
        .blocks
        .par_iter()
        .map(|b| BlockQ {
            up: Lin::new(&[(&b.up, 2 * d)], d, products),
            down: Lin::new(&[(&b.down, d)], d, products),
            glu: Lin::new(&[(&b.w_gate, h), (&b.w_up, h)], d, products),
            w_down: Lin::new(&[(&b.w_down, d)], h, products),
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
            layers::add_par(a, b);
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
    let (v, d) = (cfg.vocab_size, cfg.dim);
    let n = inputs.len();
    assert_eq!(targets.len(), n);
    assert!(t > 0 && n.is_multiple_of(t), "inputs must be whole sequences of length t");
    ws.acts.resize_with(p.blocks.len(), Default::default);

    // ---- forward ----
    layers::embed(sized(&mut ws.x0, n * d), inputs, &p.embedding, d);
    for (i, (b, q)) in p.blocks.iter().zip(qs).enumerate() {
        let (prev, cur) = ws.acts.split_at_mut(i);
        let x_in: &[f32] = if i == 0 { &ws.x0 } else { &prev[i - 1].x_out };
        block_forward(&mut cur[0], x_in, b, q, cfg, t, threads);
    }
    let x_last: &[f32] = ws.acts.last().map_or(&ws.x0, |a| &a.x_out);
    layers::rmsnorm(sized(&mut ws.nf, n * d), sized(&mut ws.rf, n), x_last, &p.final_norm, d);

    // ---- head + cross-entropy, in chunks of rows (never the whole [N, V] logits) ----
    let logits = sized(&mut ws.logits, layers::CE_CHUNK.min(n) * v);
    let dnf = sized(&mut ws.dnf, n * d);
    let loss = layers::head_ce(
        dnf,
        &mut grads.embedding,
        logits,
        &ws.nf,
        targets,
        &p.embedding,
        (d, denom),
        threads,
    );

    // ---- backward ----
    let dx = sized(&mut ws.back.dx, n * d);
    dx.fill(0.0);
    layers::rmsnorm_back(dx, &mut grads.final_norm, &ws.dnf, x_last, &ws.rf, &p.final_norm, d);
    for (i, ((b, g), q)) in p.blocks.iter().zip(grads.blocks.iter_mut()).zip(qs).enumerate().rev() {
        let x_in: &[f32] = if i == 0 { &ws.x0 } else { &ws.acts[i - 1].x_out };
        block_backward(&mut ws.back, &ws.acts[i], x_in, (b, g, q), cfg, t, threads);
    }
    layers::embed_back(&mut grads.embedding, &ws.back.dx, inputs, d);
    (loss / denom as f64) as f32
}

/// One block forward: `x_mid = x_in + down(conv(value) · σ(gate))`, `x_out = x_mid + W_down(
/// silu(W_gate n2) · W_up n2)`, keeping in `s` what the backward pass reads.
fn block_forward(
    s: &mut BlockActs,
    x_in: &[f32],
    b: &BlockParams,
    q: &BlockQ,
    cfg: &Config,
    t: usize,
    threads: usize,
) {
    let (d, h, k) = (cfg.dim, cfg.glu_hidden, cfg.conv_taps);
    let n = x_in.len() / d;
    layers::rmsnorm(sized(&mut s.n1, n * d), sized(&mut s.r1, n), x_in, &b.norm1, d);
    q.up.forward(sized(&mut s.gv, n * 2 * d), 2 * d, &s.n1, d, n, threads);
    layers::conv_gate(sized(&mut s.c, n * d), sized(&mut s.m, n * d), &s.gv, &b.conv, t, d, k);
    let x_mid = sized(&mut s.x_mid, n * d);
    q.down.forward(x_mid, d, &s.m, d, n, threads);
    layers::add_par(x_mid, x_in);
    layers::rmsnorm(sized(&mut s.n2, n * d), sized(&mut s.r2, n), &s.x_mid, &b.norm2, d);
    // gu = [gate | up] per row, one product with the stacked weights.
    q.glu.forward(sized(&mut s.gu, n * 2 * h), 2 * h, &s.n2, d, n, threads);
    layers::glu(sized(&mut s.a, n * h), &s.gu, h);
    let x_out = sized(&mut s.x_out, n * d);
    q.w_down.forward(x_out, d, &s.a, h, n, threads);
    layers::add_par(x_out, &s.x_mid);
}

/// One block backward: `bb.dx` holds d x_out on entry and d x_in on return; the parameter
/// gradients are added into `g`.
fn block_backward(
    bb: &mut BackBufs,
    s: &BlockActs,
    x_in: &[f32],
    (b, g, q): (&BlockParams, &mut BlockParams, &BlockQ),
    cfg: &Config,
    t: usize,
    threads: usize,
) {
    let (d, h, k) = (cfg.dim, cfg.glu_hidden, cfg.conv_taps);
    let n = x_in.len() / d;
    // GLU: x_out = x_mid + W_down(silu(gate) * up)
    let da = sized(&mut bb.da, n * h);
    q.w_down.input_grad(da, h, false, &bb.dx, d, n, threads);
    layers::weight_grad(&mut g.w_down, &bb.dx, d, &s.a, (n, h, d), threads);
    layers::glu_back(sized(&mut bb.dgu, n * 2 * h), &bb.da, &s.gu, h);
    // dn2 = [dgate | dup] · [W_gate; W_up] in one product; the two weight gradients read
    // their half of dgu in place (row stride 2h).
    let dn2 = sized(&mut bb.dn2, n * d);
    q.glu.input_grad(dn2, d, false, &bb.dgu, 2 * h, n, threads);
    layers::weight_grad(&mut g.w_gate, &bb.dgu, 2 * h, &s.n2, (n, d, h), threads);
    layers::weight_grad(&mut g.w_up, &bb.dgu[h..], 2 * h, &s.n2, (n, d, h), threads);
    // dx_mid = dx (residual) + norm2 backward
    layers::rmsnorm_back(&mut bb.dx, &mut g.norm2, &bb.dn2, &s.x_mid, &s.r2, &b.norm2, d);
    // Mixer: x_mid = x_in + down(conv(value) * sigmoid(gate))
    let dm = sized(&mut bb.dm, n * d);
    q.down.input_grad(dm, d, false, &bb.dx, d, n, threads);
    layers::weight_grad(&mut g.down, &bb.dx, d, &s.m, (n, d, d), threads);
    let dgv = sized(&mut bb.dgv, n * 2 * d);
    layers::conv_gate_back(dgv, &mut g.conv, &bb.dm, (&s.c, &s.gv), &b.conv, t, d, k);
    let dn1 = sized(&mut bb.dn1, n * d);
    q.up.input_grad(dn1, d, false, &bb.dgv, 2 * d, n, threads);
    layers::weight_grad(&mut g.up, &bb.dgv, 2 * d, &s.n1, (n, d, 2 * d), threads);
    layers::rmsnorm_back(&mut bb.dx, &mut g.norm1, &bb.dn1, x_in, &s.r1, &b.norm1, d);
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
