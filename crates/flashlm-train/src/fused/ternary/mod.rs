//! Products with a ternary matrix by additions on shared partial sums (the training-side
//! counterpart of the inference kernels' tables): y = α · x · Tᵀ for float x [n, q] and
//! T [p, q] in {-1, 0, +1}. No multiply touches a weight.
//!
//! For each block of [`LANES`] rows of x and each group of three inputs, a table holds the 27
//! sums t₀x₀ + t₁x₁ + t₂x₂ (one vector of LANES rows per entry, built with 36 vector adds).
//! Each output then adds one table vector per group: LANES · 3 multiply-adds of a GEMM become
//! one vector add. The tables are shared by every output, so building them costs 36 adds per
//! group against p adds to use them.
//!
//! The sums are exact float sums in a different order than a GEMM's, so results differ from
//! `layers::mm` by rounding only; [`ternary_mm_reference`] is the plain loop the tests hold it
//! to. Written as plain Rust over fixed-size arrays and compiled for AVX-512, AVX2 and
//! portable code (`flashlm_core::multiversion!`), except the lane transposes of a full block,
//! which have hand-written AVX2 versions (`avx2.rs`) beside the portable ones.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Rows of x per table vector.
pub const LANES: usize = 16;
/// Inputs per table (3^3 = 27 entries).
const GROUP: usize = 3;
const ENTRIES: usize = 27;
/// Outputs accumulated in registers at a time (`apply_tables` writes out eight adds).
const OUT_BLOCK: usize = 8;
/// Groups whose tables are applied together (8 · 27 · 64 bytes = 14 KB).
const GROUP_CHUNK: usize = 8;

type Lane = [f32; LANES];
const LANE_BYTES: usize = std::mem::size_of::<Lane>();

/// A ternary matrix T [p, q] with its scale, as table offsets in the order the kernel reads
/// them: for each chunk of [`GROUP_CHUNK`] input groups, each block of [`OUT_BLOCK`] outputs,
/// each group g of the chunk, each output o of the block, the byte offset in the chunk's
/// tables of entry (g mod GROUP_CHUNK) · 27 + Σⱼ (t[o, 3g + j] + 1) · 3ʲ.
#[derive(Debug, Clone)]
pub struct TernaryMatrix {
    /// Outputs.
    pub p: usize,
    /// Inputs.
    pub q: usize,
    /// The scale α.
    pub alpha: f32,
    p_pad: usize,
    groups: usize,
    codes: Vec<u16>,
}

impl TernaryMatrix {
    /// From the levels `t` [p, q] in {-1, 0, +1} and the scale α (as
    /// `flashlm_core::quant::ternary_codes` returns them); with `transpose`, the matrix is
    /// tᵀ [q, p].
    pub fn from_codes(t: &[i8], alpha: f32, p: usize, q: usize, transpose: bool) -> Self {
        assert_eq!(t.len(), p * q);
        if transpose {
            Self::build(q, p, alpha, |o, i| t[i * q + o])
        } else {
            Self::build(p, q, alpha, |o, i| t[o * q + i])
        }
    }

    fn build(p: usize, q: usize, alpha: f32, at: impl Fn(usize, usize) -> i8) -> Self {
        let p_pad = p.div_ceil(OUT_BLOCK) * OUT_BLOCK;
        let groups = q.div_ceil(GROUP);
        let mut codes = vec![0u16; groups * p_pad];
        for g in 0..groups {
            for o in 0..p_pad {
                let mut c = 0usize;
                for j in (0..GROUP).rev() {
                    let i = g * GROUP + j;
                    let t = if i < q && o < p { at(o, i) } else { 0 };
                    c = c * 3 + (t + 1) as usize;
                }
                codes[code_index(g, o, groups, p_pad)] =
                    (((g % GROUP_CHUNK) * ENTRIES + c) * LANE_BYTES) as u16;
            }
        }
        TernaryMatrix { p, q, alpha, p_pad, groups, codes }
    }

    /// The level t[o, i] (for the reference).
    pub fn level(&self, o: usize, i: usize) -> f32 {
        let g = i / GROUP;
        let entry = usize::from(self.codes[code_index(g, o, self.groups, self.p_pad)]) / LANE_BYTES;
        let mut c = entry - (g % GROUP_CHUNK) * ENTRIES;
        for _ in 0..i % GROUP {
            c /= 3;
        }
        (c % 3) as f32 - 1.0
    }
}

/// Where the offset of (group g, output o) sits in `TernaryMatrix::codes`.
fn code_index(g: usize, o: usize, groups: usize, p_pad: usize) -> usize {
    let chunk = g / GROUP_CHUNK;
    let in_chunk = GROUP_CHUNK.min(groups - chunk * GROUP_CHUNK);
    chunk * GROUP_CHUNK * p_pad + ((o / OUT_BLOCK) * in_chunk + g % GROUP_CHUNK) * OUT_BLOCK + o % OUT_BLOCK
}

/// y[r · y_rs + o] (+)= α · Σᵢ x[r · x_rs + i] · t[o, i] for r < n, o < p, i < q: plain loops.
pub fn ternary_mm_reference(
    y: &mut [f32],
    y_rs: usize,
    acc: bool,
    x: &[f32],
    x_rs: usize,
    n: usize,
    m: &TernaryMatrix,
) {
    for r in 0..n {
        for o in 0..m.p {
            let s: f32 = (0..m.q).map(|i| x[r * x_rs + i] * m.level(o, i)).sum();
            let y = &mut y[r * y_rs + o];
            *y = if acc { *y + m.alpha * s } else { m.alpha * s };
        }
    }
}

/// y[r · y_rs + o] (+)= α · Σᵢ x[r · x_rs + i] · t[o, i] for r < n, o < p (outputs and
/// inputs may sit inside wider rows: `y_rs` >= p, `x_rs` >= q). Row blocks run in parallel
/// on `threads` > 1.
#[allow(clippy::too_many_arguments)]
pub fn ternary_mm(
    y: &mut [f32],
    y_rs: usize,
    acc: bool,
    x: &[f32],
    x_rs: usize,
    n: usize,
    m: &TernaryMatrix,
    threads: usize,
) {
    if n == 0 || m.p == 0 {
        return;
    }
    assert!(y_rs >= m.p && x_rs >= m.q);
    assert!(y.len() >= (n - 1) * y_rs + m.p && x.len() >= (n - 1) * x_rs + m.q);
    let simd = flashlm_core::cpu::avx2();
    // Per task: the block's inputs by lane, its tables and its outputs by lane.
    let scratch = || {
        (
            vec![[0.0f32; LANES]; m.groups * GROUP],
            vec![[0.0f32; LANES]; m.groups * ENTRIES],
            vec![[0.0f32; LANES]; m.p_pad],
        )
    };
    let block = |(xt, tables, out): &mut (Vec<Lane>, Vec<Lane>, Vec<Lane>), (b, y): (usize, &mut [f32])| {
        let r0 = b * LANES;
        let rows = LANES.min(n - r0);
        let x = &x[r0 * x_rs..];
        gather(simd, xt, x, x_rs, m.q, rows);
        build_tables(tables, xt);
        apply_tables(out, tables, &m.codes, m.p_pad);
        scatter(simd, y, y_rs, out, m.p, rows, m.alpha, acc);
    };
    // Each task owns LANES whole rows of y (the last block's slice ends at the last row).
    let chunk = LANES * y_rs;
    let y = &mut y[..(n - 1) * y_rs + m.p];
    if threads > 1 {
        y.par_chunks_mut(chunk).enumerate().for_each_init(scratch, block);
    } else {
        let mut s = scratch();
        y.chunks_mut(chunk).enumerate().for_each(|b| block(&mut s, b));
    }
}

/// [`gather_lanes`] through the AVX2 transposes for a full block when `simd`
/// (`flashlm_core::cpu::avx2()`).
fn gather(simd: bool, xt: &mut [Lane], x: &[f32], x_rs: usize, q: usize, rows: usize) {
    #[cfg(target_arch = "x86_64")]
    if simd && rows == LANES {
        // SAFETY: `simd` comes from `cpu::avx2()`, true only where the CPU has AVX2.
        return unsafe { avx2::gather_lanes(xt, x, x_rs, q) };
    }
    let _ = simd;
    gather_lanes(xt, x, x_rs, q, rows)
}

/// [`scatter_lanes`] through the AVX2 transposes for a full block when `simd`.
#[allow(clippy::too_many_arguments)]
fn scatter(
    simd: bool,
    y: &mut [f32],
    y_rs: usize,
    out: &[Lane],
    p: usize,
    rows: usize,
    alpha: f32,
    acc: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd && rows == LANES {
        // SAFETY: `simd` comes from `cpu::avx2()`, true only where the CPU has AVX2.
        return unsafe { avx2::scatter_lanes(y, y_rs, out, p, alpha, acc) };
    }
    let _ = simd;
    scatter_lanes(y, y_rs, out, p, rows, alpha, acc)
}

/// a transposed (a LANES x LANES tile).
#[inline(always)]
fn transpose(a: &[Lane; LANES]) -> [Lane; LANES] {
    std::array::from_fn(|i| std::array::from_fn(|j| a[j][i]))
}

flashlm_core::multiversion! {
    /// xt[i][l] = x[l · x_rs + i] for i < q, l < rows (zero elsewhere), LANES x LANES tiles
    /// at a time.
    fn gather_lanes(xt: &mut [Lane], x: &[f32], x_rs: usize, q: usize, rows: usize) {
        if rows < LANES {
            xt.fill([0.0; LANES]);
            for l in 0..rows {
                for (xt, &v) in xt.iter_mut().zip(&x[l * x_rs..l * x_rs + q]) {
                    xt[l] = v;
                }
            }
            return;
        }
        let tiles = q / LANES;
        for (t, xt) in xt[..tiles * LANES].chunks_exact_mut(LANES).enumerate() {
            let tile: [Lane; LANES] =
                std::array::from_fn(|l| x[l * x_rs + t * LANES..][..LANES].try_into().expect("LANES values"));
            xt.copy_from_slice(&transpose(&tile));
        }
        for i in tiles * LANES..q {
            xt[i] = std::array::from_fn(|l| x[l * x_rs + i]);
        }
    }
}

flashlm_core::multiversion! {
    /// y[l · y_rs + o] (+)= alpha · out[o][l] for o < p, l < rows, LANES x LANES tiles at a time.
    fn scatter_lanes(y: &mut [f32], y_rs: usize, out: &[Lane], p: usize, rows: usize, alpha: f32, acc: bool) {
        let put = |y: &mut f32, v: f32| *y = if acc { *y + alpha * v } else { alpha * v };
        let tiles = if rows == LANES { p / LANES } else { 0 };
        for (t, o) in out[..tiles * LANES].chunks_exact(LANES).enumerate() {
            let tt = transpose(o.try_into().expect("LANES outputs"));
            for (l, row) in tt.iter().enumerate() {
                for (y, &v) in y[l * y_rs + t * LANES..][..LANES].iter_mut().zip(row) {
                    put(y, v);
                }
            }
        }
        for l in 0..rows {
            for (y, o) in y[l * y_rs + tiles * LANES..l * y_rs + p].iter_mut().zip(&out[tiles * LANES..]) {
                put(y, o[l]);
            }
        }
    }
}

flashlm_core::multiversion! {
    /// The 27 sums of each group of three input vectors: entry c0 + 3c1 + 9c2 = Σⱼ (cⱼ − 1) xⱼ.
    fn build_tables(tables: &mut [Lane], xt: &[Lane]) {
        for (t, x) in tables.chunks_exact_mut(ENTRIES).zip(xt.chunks_exact(GROUP)) {
            let zero = [0.0f32; LANES];
            let neg = |v: &Lane| v.map(|a| -a);
            let add = |a: &Lane, b: &Lane| -> Lane { std::array::from_fn(|l| a[l] + b[l]) };
            let terms = |v: &Lane| [neg(v), zero, *v];
            let (t0, t1, t2) = (terms(&x[0]), terms(&x[1]), terms(&x[2]));
            for c2 in 0..3 {
                for c1 in 0..3 {
                    let b = add(&t2[c2], &t1[c1]);
                    for c0 in 0..3 {
                        t[c0 + 3 * c1 + 9 * c2] = add(&b, &t0[c0]);
                    }
                }
            }
        }
    }
}

flashlm_core::multiversion! {
    /// out[o] = Σ_g tables[g][code(o, g)]: [`GROUP_CHUNK`] groups' tables (14 KB, in L1) at a
    /// time against every output, OUT_BLOCK outputs in registers; `out` is read and written
    /// once per chunk, in order.
    fn apply_tables(out: &mut [Lane], tables: &[Lane], codes: &[u16], p_pad: usize) {
        out.fill([0.0; LANES]);
        for (ci, tc) in tables.chunks(ENTRIES * GROUP_CHUNK).enumerate() {
            let in_chunk = tc.len() / ENTRIES;
            let cc = &codes[ci * GROUP_CHUNK * p_pad..][..in_chunk * p_pad];
            let base = tc.as_ptr().cast::<u8>();
            for (out, c) in out.chunks_exact_mut(OUT_BLOCK).zip(cc.chunks_exact(in_chunk * OUT_BLOCK)) {
                let mut acc: [Lane; OUT_BLOCK] = std::array::from_fn(|j| out[j]);
                for cg in c.chunks_exact(OUT_BLOCK) {
                    // Written out once per output (no loop over them), so the compiler
                    // vectorises each add over the lanes instead of gathering across outputs.
                    macro_rules! add_entry {
                        ($($j:literal)*) => {$({
                            let off = usize::from(cg[$j]);
                            debug_assert!(off + LANE_BYTES <= tc.len() * LANE_BYTES);
                            // SAFETY: `TernaryMatrix::build` writes only offsets of
                            // entries of groups in this chunk (< in_chunk · 27 · LANE_BYTES,
                            // the size of `tc`), multiples of LANE_BYTES, so the read is
                            // inside `tc` and aligned for f32.
                            let e = unsafe { &*base.add(off).cast::<Lane>() };
                            for l in 0..LANES {
                                acc[$j][l] += e[l];
                            }
                        })*};
                    }
                    add_entry!(0 1 2 3 4 5 6 7);
                }
                out.copy_from_slice(&acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(p: usize, q: usize, seed: u64) -> Vec<i8> {
        let mut r = flashlm_core::rng::XorShift64::new(seed);
        (0..p * q).map(|_| (r.next_u64() % 3) as i8 - 1).collect()
    }

    fn floats(n: usize, seed: u64) -> Vec<f32> {
        let mut r = flashlm_core::rng::XorShift64::new(seed);
        (0..n).map(|_| (r.next_u64() % 20001) as f32 / 10000.0 - 1.0).collect()
    }

    /// Every case: kernel vs the plain loops, within float rounding of the sums.
    fn check(n: usize, p: usize, q: usize, transpose: bool, acc: bool, threads: usize) {
        let (vp, vq) = if transpose { (q, p) } else { (p, q) };
        let t = levels(vp, vq, (n * 1000 + p * 31 + q) as u64);
        let m = TernaryMatrix::from_codes(&t, 0.37, vp, vq, transpose);
        assert_eq!((m.p, m.q), (p, q));
        // Strided rows: outputs and inputs inside wider rows.
        let (y_rs, x_rs) = (p + 3, q + 2);
        let x = floats((n - 1) * x_rs + q, n as u64 + 7);
        let y0 = floats((n - 1) * y_rs + p, n as u64 + 11);
        let (mut want, mut got) = (y0.clone(), y0.clone());
        ternary_mm_reference(&mut want, y_rs, acc, &x, x_rs, n, &m);
        ternary_mm(&mut got, y_rs, acc, &x, x_rs, n, &m, threads);
        for r in 0..n {
            let scale: f32 = (0..q).map(|i| x[r * x_rs + i].abs()).sum::<f32>() * m.alpha + 1.0;
            for o in 0..y_rs.min(got.len() - r * y_rs) {
                let (w, g) = (want[r * y_rs + o], got[r * y_rs + o]);
                if o >= p {
                    assert_eq!(g.to_bits(), y0[r * y_rs + o].to_bits(), "wrote outside the outputs");
                } else {
                    assert!((w - g).abs() <= 1e-5 * scale, "n {n} p {p} q {q} row {r} out {o}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn levels_round_trip() {
        let t = levels(5, 7, 3);
        let m = TernaryMatrix::from_codes(&t, 0.37, 5, 7, false);
        let mt = TernaryMatrix::from_codes(&t, 0.37, 5, 7, true);
        for o in 0..5 {
            for i in 0..7 {
                let want = f32::from(t[o * 7 + i]);
                assert_eq!(m.level(o, i), want);
                assert_eq!(mt.level(i, o), want);
            }
        }
        assert_eq!((m.alpha, mt.alpha), (0.37, 0.37));
    }

    #[test]
    fn every_tail_of_rows_outputs_and_inputs_matches_the_loops() {
        for n in 1..=2 * LANES + 1 {
            check(n, 9, 7, false, false, 1);
        }
        for p in 1..=2 * LANES + 1 {
            check(LANES + 1, p, 5, false, true, 1);
        }
        for q in 1..=2 * LANES + 4 {
            check(LANES, 6, q, false, false, 1);
        }
    }

    #[test]
    fn model_shapes_transposes_accumulation_and_threads_match_the_loops() {
        for (p, q) in [(384, 192), (192, 192), (512, 192), (192, 512)] {
            for transpose in [false, true] {
                check(37, p, q, transpose, transpose, 2);
            }
        }
        check(70, 33, 41, false, true, 3);
    }

    /// The AVX2 transposes against the portable ones, bit for bit, on every tail of columns.
    #[test]
    fn avx2_transposes_match_the_portable_ones_on_every_tail() {
        if !flashlm_core::cpu::avx2() {
            eprintln!("skipped: this CPU (or FLASHLM_ISA) has no AVX2");
            return;
        }
        #[cfg(target_arch = "x86_64")]
        for q in 1..=53 {
            let x_rs = q + 3;
            let x = floats((LANES - 1) * x_rs + q, q as u64);
            let (mut want, mut got) = (vec![[0.0f32; LANES]; q], vec![[0.0f32; LANES]; q]);
            gather_lanes(&mut want, &x, x_rs, q, LANES);
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { avx2::gather_lanes(&mut got, &x, x_rs, q) };
            assert_eq!(want, got, "gather, q {q}");
            let p = q;
            let out: Vec<Lane> = (0..p).map(|o| floats(LANES, 100 + o as u64).try_into().unwrap()).collect();
            let y_rs = p + 2;
            for acc in [false, true] {
                let y0 = floats((LANES - 1) * y_rs + p, 7 + p as u64);
                let (mut want, mut got) = (y0.clone(), y0.clone());
                scatter_lanes(&mut want, y_rs, &out, p, LANES, 0.37, acc);
                // SAFETY: as above.
                unsafe { avx2::scatter_lanes(&mut got, y_rs, &out, p, 0.37, acc) };
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&want), bits(&got), "scatter, p {p}, acc {acc}");
            }
        }
    }

    #[test]
    fn an_all_zero_matrix_gives_zeros() {
        let m = TernaryMatrix::from_codes(&[0; 12], 0.5, 3, 4, false);
        let mut y = vec![1.0; 6];
        ternary_mm(&mut y, 3, false, &[1.0; 8], 4, 2, &m, 1);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
