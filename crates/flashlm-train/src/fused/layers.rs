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

/// C[m, n] = A[m, k] · B[k, n] (+ C when `acc`), every matrix given by (buffer, row stride,
/// column stride).
#[allow(clippy::too_many_arguments)]
pub fn mm(
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
    let gemm_fn = capped_gemm();
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

/// The signature of the `gemm` crate's f32 entry points (column-major argument order).
type GemmF32 = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    bool,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    f32,
    f32,
    bool,
    bool,
    bool,
    Parallelism,
);

/// Which f32 GEMM the step runs: the `gemm` crate's own dispatch (AVX-512 wherever the CPU
/// has it), unless `FLASHLM_ISA` caps the dispatch below what the CPU has. Then it is the
/// crate's AVX2+FMA (or scalar) kernels through the same generic driver its dispatch calls,
/// so `FLASHLM_ISA=avx2` on an AVX-512 machine trains with exactly the products an AVX2-only
/// CPU runs. Chosen once.
pub fn capped_gemm() -> GemmF32 {
    gemm_choice().0
}

/// The kernels [`capped_gemm`] runs, in words, for benchmark output.
pub fn gemm_kernels() -> &'static str {
    gemm_choice().1
}

fn gemm_choice() -> (GemmF32, &'static str) {
    static CHOICE: std::sync::OnceLock<(GemmF32, &'static str)> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use flashlm_core::cpu;
            use std::arch::is_x86_feature_detected as has;
            let picked = if has!("avx512f") { 2 } else { u8::from(has!("fma") && has!("avx2")) };
            let allowed = if cpu::avx512f() { 2 } else { u8::from(cpu::fma() && cpu::avx2()) };
            pick_gemm(picked, allowed)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            (gemm::gemm::<f32>, "gemm crate")
        }
    })
}

/// Levels 2 = AVX-512F, 1 = AVX2 + FMA, 0 = scalar: `picked` is what the crate's dispatch
/// takes on this CPU, `allowed` the most the cap allows (never above `picked`).
#[cfg(target_arch = "x86_64")]
fn pick_gemm(picked: u8, allowed: u8) -> (GemmF32, &'static str) {
    match (picked == allowed, allowed) {
        (true, 2) => (gemm::gemm::<f32>, "gemm crate, avx512f kernels"),
        (true, 1) => (gemm::gemm::<f32>, "gemm crate, avx2+fma kernels"),
        (true, _) => (gemm::gemm::<f32>, "gemm crate, scalar kernels"),
        (false, 1) => (capped::gemm_fma, "gemm crate, avx2+fma kernels (FLASHLM_ISA cap)"),
        (false, _) => (capped::gemm_scalar, "gemm crate, scalar kernels (FLASHLM_ISA cap)"),
    }
}

/// The `gemm` crate's AVX2+FMA and scalar f32 GEMMs, which its entry point skips on an
/// AVX-512 CPU: the same driver (`gemm_basic_generic`), microkernels and parameters as its
/// own `fma` and `scalar` modules.
#[cfg(target_arch = "x86_64")]
mod capped {
    use gemm::Parallelism;
    use gemm_common::gemm::gemm_basic_generic;
    use gemm_common::simd::{Scalar, V3};

    macro_rules! capped_gemm {
        ($(#[$doc:meta])* $name:ident, $simd:ty, $simd_new:expr, $kernels:path, $lanes:expr) => {
            $(#[$doc])*
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name(
                m: usize,
                n: usize,
                k: usize,
                dst: *mut f32,
                dst_cs: isize,
                dst_rs: isize,
                read_dst: bool,
                lhs: *const f32,
                lhs_cs: isize,
                lhs_rs: isize,
                rhs: *const f32,
                rhs_cs: isize,
                rhs_rs: isize,
                alpha: f32,
                beta: f32,
                conj_dst: bool,
                conj_lhs: bool,
                conj_rhs: bool,
                parallelism: Parallelism,
            ) {
                use $kernels as ukr;
                let simd: $simd = $simd_new;
                // SAFETY: the caller's contract (gemm's): the pointers and strides describe
                // valid, non-overlapping matrices; `simd` proves the CPU has the features.
                unsafe {
                    gemm_basic_generic::<
                        _,
                        f32,
                        { $lanes },
                        { ukr::MR_DIV_N * $lanes },
                        { ukr::NR },
                        { ukr::MR_DIV_N },
                        { ukr::H_M },
                        { ukr::H_N },
                    >(
                        simd,
                        m,
                        n,
                        k,
                        dst,
                        dst_cs,
                        dst_rs,
                        read_dst,
                        lhs,
                        lhs_cs,
                        lhs_rs,
                        rhs,
                        rhs_cs,
                        rhs_rs,
                        alpha,
                        beta,
                        conj_dst,
                        conj_lhs,
                        conj_rhs,
                        |a, b, c| a * b + c,
                        &ukr::UKR,
                        &ukr::H_UKR,
                        false,
                        parallelism,
                    )
                }
            }
        };
    }

    capped_gemm!(
        /// AVX2 + FMA kernels (8 lanes), what an AVX2-only CPU runs.
        gemm_fma,
        V3,
        V3::try_new().expect("capped_gemm only picks this with AVX2 and FMA"),
        gemm_f32::microkernel::fma::f32,
        8
    );
    capped_gemm!(
        /// Scalar kernels.
        gemm_scalar,
        Scalar,
        Scalar,
        gemm_f32::microkernel::scalar::f32,
        1
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// C[m, n] (+)= A[m, k] · B[k, n] in f64, the obvious triple loop.
    #[allow(clippy::too_many_arguments)]
    fn mm_reference(
        (m, n, k): (usize, usize, usize),
        c: &mut [f32],
        acc: bool,
        a: &[f32],
        (a_rs, a_cs): (usize, usize),
        b: &[f32],
        (b_rs, b_cs): (usize, usize),
    ) {
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| f64::from(a[i * a_rs + p * a_cs]) * f64::from(b[p * b_rs + j * b_cs])).sum();
                let c0 = if acc { f64::from(c[i * n + j]) } else { 0.0 };
                c[i * n + j] = (c0 + dot) as f32;
            }
        }
    }

    /// Every f32 GEMM the step can run on this CPU (the crate's dispatch and the kernels the
    /// `FLASHLM_ISA` cap selects), against the reference on every m and n tail up to 2 full
    /// AVX-512 microkernel tiles (64 x 6) plus one, several depths, both layouts of A and B,
    /// with and without accumulation, one and two threads.
    #[test]
    fn every_gemm_kernel_matches_the_reference_on_every_tail() {
        let mut kernels: Vec<(&str, GemmF32)> = vec![("gemm crate dispatch", gemm::gemm::<f32>)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(("avx2+fma (capped)", capped::gemm_fma));
            } else {
                eprintln!("skipped: the capped avx2+fma GEMM (this CPU has no AVX2/FMA)");
            }
            kernels.push(("scalar (capped)", capped::gemm_scalar));
        }
        let mut r = flashlm_core::rng::XorShift64::new(11);
        let mut next = move || (r.next_u64() % 2001) as f32 / 1000.0 - 1.0;
        let ms: Vec<usize> = (1..=20).chain([31, 32, 33, 63, 64, 65, 127, 128, 129]).collect();
        let ns: Vec<usize> = (1..=13).chain([17, 24, 25]).collect();
        for (name, f) in kernels {
            for &m in &ms {
                for &n in &ns {
                    for (case, k) in [1usize, 7, 64, 300].into_iter().enumerate() {
                        let (ta, tb, acc) = (case % 2 == 1, case / 2 == 1, case % 3 == 0);
                        let a_s = if ta { (1, m) } else { (k, 1) };
                        let b_s = if tb { (1, k) } else { (n, 1) };
                        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                        let c0: Vec<f32> = (0..m * n).map(|_| next()).collect();
                        let mut want = c0.clone();
                        mm_reference((m, n, k), &mut want, acc, &a, a_s, &b, b_s);
                        for threads in [1, 2] {
                            let mut got = c0.clone();
                            let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
                            // SAFETY: a, b and got hold exactly the m x k, k x n and m x n
                            // matrices the strides describe; got is a distinct buffer.
                            unsafe {
                                f(
                                    m,
                                    n,
                                    k,
                                    got.as_mut_ptr(),
                                    1,
                                    n as isize,
                                    acc,
                                    a.as_ptr(),
                                    a_s.1 as isize,
                                    a_s.0 as isize,
                                    b.as_ptr(),
                                    b_s.1 as isize,
                                    b_s.0 as isize,
                                    1.0,
                                    1.0,
                                    false,
                                    false,
                                    false,
                                    par,
                                )
                            };
                            for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    (g - w).abs() <= 1e-5 * (k as f32).sqrt() * (1.0 + w.abs()),
                                    "{name}: m {m} n {n} k {k} (A transposed {ta}, B transposed {tb}, acc {acc}, {threads} threads): element {idx}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mm_uses_the_kernels_it_names() {
        let name = gemm_kernels();
        assert!(name.starts_with("gemm crate"), "{name}");
        // scripts/test.sh runs this test again with FLASHLM_ISA=avx2: on an AVX-512 CPU the
        // step must then run the capped AVX2 kernels, not the crate's own AVX-512 choice.
        #[cfg(target_arch = "x86_64")]
        if flashlm_core::cpu::cap() == flashlm_core::cpu::Isa::Avx2 && std::arch::is_x86_feature_detected!("avx512f") {
            assert_eq!(name, "gemm crate, avx2+fma kernels (FLASHLM_ISA cap)");
            assert!(capped_gemm() as usize == capped::gemm_fma as usize);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_cap_picks_the_crate_dispatch_only_when_it_would_choose_the_same() {
        let crate_fn = gemm::gemm::<f32> as GemmF32 as usize;
        for (picked, allowed, want_fn, want_name) in [
            (2, 2, crate_fn, "gemm crate, avx512f kernels"),
            (1, 1, crate_fn, "gemm crate, avx2+fma kernels"),
            (0, 0, crate_fn, "gemm crate, scalar kernels"),
            (2, 1, capped::gemm_fma as GemmF32 as usize, "gemm crate, avx2+fma kernels (FLASHLM_ISA cap)"),
            (2, 0, capped::gemm_scalar as GemmF32 as usize, "gemm crate, scalar kernels (FLASHLM_ISA cap)"),
            (1, 0, capped::gemm_scalar as GemmF32 as usize, "gemm crate, scalar kernels (FLASHLM_ISA cap)"),
        ] {
            let (f, name) = pick_gemm(picked, allowed);
            assert_eq!((f as usize, name), (want_fn, want_name), "picked {picked}, allowed {allowed}");
        }
    }
}
