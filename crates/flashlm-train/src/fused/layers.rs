//! The fused step's layers, each a forward/backward pair on flat row-major buffers of N token
//! rows (llm.c style). `tests/fused_layers.rs` checks every pair against the burn layer it
//! replaces (values and gradients).
//!
//! | layer | forward | backward |
//! |---|---|---|
//! | embedding | [`embed`] | [`embed_back`] |
//! | RMSNorm | [`rmsnorm`] | [`rmsnorm_back`] |
//! | linear (ternary weights, quantised by the caller) | [`linear`] | [`linear_back`] |
//! | gated causal depthwise conv | [`conv_gate`] | [`conv_gate_back`] |
//! | SiLU GLU gate | [`glu`] | [`glu_back`] |
//! | tied head + cross-entropy | [`head_ce`] (both directions, in chunks of rows) | |

use gemm::Parallelism;
use rayon::prelude::*;

use flashlm_core::params::{taps_param_layout, taps_time_major};
use flashlm_core::{NORM_EPS, vmath};

use super::ew;
pub use super::matmul::gemm_kernels;
use super::matmul::{GemmF32, capped_gemm};

/// C[m, n] = A[m, k] · B[k, n] (+ C when `acc`), every matrix given by (buffer, row stride,
/// column stride).
#[allow(clippy::too_many_arguments)]
pub fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_s: (usize, usize),
    acc: bool,
    a: &[f32],
    a_s: (usize, usize),
    b: &[f32],
    b_s: (usize, usize),
    threads: usize,
) {
    mm_with(capped_gemm(), (m, n, k), c, c_s, acc, a, a_s, b, b_s, threads);
}

/// [`mm`] with a given GEMM (the tests run each kernel through it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn mm_with(
    gemm_fn: GemmF32,
    (m, n, k): (usize, usize, usize),
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
    // does not overlap a or b (it is a distinct &mut). `capped_gemm` only returns kernels the
    // CPU has.
    unsafe {
        gemm_fn(
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
pub fn linear(y: &mut [f32], x: &[f32], w: &[f32], n: usize, i: usize, o: usize, threads: usize) {
    mm(n, o, i, y, (o, 1), false, x, (i, 1), w, (1, i), threads);
}

/// dx (+)= dy · W for dy [n, o], W [o, i]: dx [n, i]; dW += dyᵀ · x: [o, i].
#[allow(clippy::too_many_arguments)]
pub fn linear_back(
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
    weight_grad(dw, dy, o, x, (n, i, o), threads);
}

/// dW += dyᵀ · x for dy [n, o] (row stride dy_rs) and x [n, i]: dW [o, i].
pub fn weight_grad(
    dw: &mut [f32],
    dy: &[f32],
    dy_rs: usize,
    x: &[f32],
    (n, i, o): (usize, usize, usize),
    threads: usize,
) {
    mm(o, i, n, dw, (i, 1), true, dy, (1, dy_rs), x, (i, 1), threads);
}

/// y = x · r · g per row, with r = 1 / sqrt(mean(x²) + eps) per row written to `r`.
pub fn rmsnorm(y: &mut [f32], r: &mut [f32], x: &[f32], g: &[f32], d: usize) {
    y.par_chunks_mut(ROWS_PER_TASK * d)
        .zip(r.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(ROWS_PER_TASK * d))
        .for_each(|((y, r), x)| ew::rms_fwd(y, r, x, g, d, NORM_EPS as f32));
}

/// Backward of [`rmsnorm`]: dx (+)= r·g·dy − x·r³·mean(x·g·dy); dg += Σ_rows dy·x·r.
pub fn rmsnorm_back(dx: &mut [f32], dg: &mut [f32], dy: &[f32], x: &[f32], r: &[f32], g: &[f32], d: usize) {
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
pub fn add_par(o: &mut [f32], i: &[f32]) {
    o.par_chunks_mut(1 << 14).zip(i.par_chunks(1 << 14)).for_each(|(o, i)| vmath::add_assign(o, i));
}

/// Rows per parallel task for element-wise work.
pub const ROWS_PER_TASK: usize = 64;

/// Rows of `emb` ([V, d]) for the token ids: x [N, d].
pub fn embed(x: &mut [f32], ids: &[u16], emb: &[f32], d: usize) {
    let v = emb.len() / d;
    for (row, &id) in x.chunks_exact_mut(d).zip(ids) {
        let id = id as usize;
        assert!(id < v, "token id {id} outside the vocabulary");
        row.copy_from_slice(&emb[id * d..(id + 1) * d]);
    }
}

/// Backward of [`embed`]: demb[id] += dx[row] for every row.
pub fn embed_back(demb: &mut [f32], dx: &[f32], ids: &[u16], d: usize) {
    for (row, &id) in dx.chunks_exact(d).zip(ids) {
        let id = id as usize;
        for (a, &b) in demb[id * d..(id + 1) * d].iter_mut().zip(row) {
            *a += b;
        }
    }
}

/// The gated causal conv of sequences of `t` rows: gv [N, 2d] holds gate | value; c [N, d] =
/// causal depthwise conv of the value with `taps` ([d, 1, k], the parameter layout),
/// m [N, d] = c · sigmoid(gate).
#[allow(clippy::too_many_arguments)]
pub fn conv_gate(c: &mut [f32], m: &mut [f32], gv: &[f32], taps: &[f32], t: usize, d: usize, k: usize) {
    let taps = taps_time_major(taps, d, k);
    c.par_chunks_mut(t * d)
        .zip(m.par_chunks_mut(t * d))
        .zip(gv.par_chunks(t * 2 * d))
        .for_each(|((c, m), gv)| ew::conv_fwd(c, m, gv, &taps, d, k));
}

/// Backward of [`conv_gate`]: writes dgv [N, 2d] (gate and value halves) from dm [N, d] and
/// adds the tap gradients into dtaps ([d, 1, k]).
#[allow(clippy::too_many_arguments)]
pub fn conv_gate_back(
    dgv: &mut [f32],
    dtaps: &mut [f32],
    dm: &[f32],
    (c, gv): (&[f32], &[f32]),
    taps: &[f32],
    t: usize,
    d: usize,
    k: usize,
) {
    dgv.fill(0.0); // conv_bwd adds into the value half
    let taps = taps_time_major(taps, d, k);
    let parts: Vec<Vec<f32>> = dgv
        .par_chunks_mut(t * 2 * d)
        .zip(dm.par_chunks(t * d))
        .zip(c.par_chunks(t * d))
        .zip(gv.par_chunks(t * 2 * d))
        .map(|(((dgv, dm), c), gv)| {
            // tap gradients accumulated per sequence as [k, d], back to [d, 1, k]
            let mut dt = vec![0.0f32; k * d];
            let mut dc = vec![0.0f32; d];
            ew::conv_bwd(dgv, &mut dt, &mut dc, dm, c, gv, &taps, d, k);
            taps_param_layout(&dt, d, k)
        })
        .collect();
    for part in parts {
        vmath::add_assign(dtaps, &part);
    }
}

/// The GLU gate: gu [N, 2h] holds W_gate x | W_up x; a [N, h] = silu(gate) · up.
pub fn glu(a: &mut [f32], gu: &[f32], h: usize) {
    a.par_chunks_mut(ROWS_PER_TASK * h).zip(gu.par_chunks(ROWS_PER_TASK * 2 * h)).for_each(|(a, gu)| {
        for (a, gu) in a.chunks_exact_mut(h).zip(gu.chunks_exact(2 * h)) {
            vmath::silu_mul(a, &gu[..h], &gu[h..]);
        }
    });
}

/// Backward of [`glu`]: dgu [N, 2h] (gate and up halves) from da [N, h].
pub fn glu_back(dgu: &mut [f32], da: &[f32], gu: &[f32], h: usize) {
    dgu.par_chunks_mut(ROWS_PER_TASK * 2 * h)
        .zip(da.par_chunks(ROWS_PER_TASK * h))
        .zip(gu.par_chunks(ROWS_PER_TASK * 2 * h))
        .for_each(|((dgu, da), gu)| {
            for ((dgu, da), gu) in
                dgu.chunks_exact_mut(2 * h).zip(da.chunks_exact(h)).zip(gu.chunks_exact(2 * h))
            {
                let (dg, du) = dgu.split_at_mut(h);
                ew::silu_bwd(dg, du, da, &gu[..h], &gu[h..]);
            }
        });
}

/// Rows of the head processed at once in [`head_ce`].
pub const CE_CHUNK: usize = 256;

/// The tied head and the cross-entropy, forward and backward, [`CE_CHUNK`] rows at a time
/// (the [N, V] logits never exist whole): logits = nf · embᵀ, loss = Σ −log softmax[target].
/// Writes dnf [N, d], adds into demb [V, d] the gradient of (summed loss / `denom`), and
/// returns the summed loss (f64). `logits` is scratch of at least min(N, CE_CHUNK) · V.
#[allow(clippy::too_many_arguments)]
pub fn head_ce(
    dnf: &mut [f32],
    demb: &mut [f32],
    logits: &mut [f32],
    nf: &[f32],
    targets: &[u16],
    emb: &[f32],
    (d, denom): (usize, usize),
    threads: usize,
) -> f64 {
    let v = emb.len() / d;
    let inv_n = 1.0 / denom as f32;
    let mut loss = 0.0f64;
    for ((rows, ys), dnf) in
        nf.chunks(CE_CHUNK * d).zip(targets.chunks(CE_CHUNK)).zip(dnf.chunks_mut(CE_CHUNK * d))
    {
        let c = ys.len();
        let l = &mut logits[..c * v];
        linear(l, rows, emb, c, d, v, threads);
        // softmax - onehot, scaled by 1/N; the loss in f64.
        loss += l
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
            .sum::<f64>();
        // d nf = dlogits · E ; dE += dlogitsᵀ · nf
        linear_back(dnf, false, demb, l, rows, emb, (c, d, v), threads);
    }
    loss
}
