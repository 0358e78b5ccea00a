//! Shared helpers for the kernel benchmarks: `benches/kernels.rs` (criterion) and
//! `examples/bench_kernels.rs` (`scripts/bench-infer.sh`) include this file with `#[path]`.

use flashlm_infer::kernels::TernaryPlanes;
use flashlm_infer::kernels::head::dot;

/// Ternary matrix shapes (rows, cols) of the small and large configs.
pub const SHAPES: [(&str, usize, usize); 8] = [
    ("small up 384x192", 384, 192),
    ("small down 192x192", 192, 192),
    ("small glu 512x192", 512, 192),
    ("small glu-down 192x512", 192, 512),
    ("large up 768x384", 768, 384),
    ("large down 384x384", 384, 384),
    ("large glu 1024x384", 1024, 384),
    ("large glu-down 384x1024", 384, 1024),
];

/// The shape bitnet.cpp publishes its kernel speed for (not a FlashLM layer).
pub const BITNET_SHAPE: (&str, usize, usize) = ("bitnet 2048x2048", 2048, 2048);

/// A deterministic ternary matrix (about a third zeros) and an input vector.
pub fn random_case(rows: usize, cols: usize, seed: u64) -> (Vec<i8>, TernaryPlanes, Vec<f32>, Vec<f32>) {
    let mut r = flashlm_core::rng::XorShift64::new(seed);
    let mut next = || r.next_u64();
    let w: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
    let dense: Vec<f32> = w.iter().map(|&v| f32::from(v) * 0.05).collect();
    let planes = TernaryPlanes::from_ternary(&w, rows, cols, 0.05);
    let mut x: Vec<f32> = (0..cols).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();
    x.resize(planes.padded_cols(), 0.0);
    (w, planes, dense, x)
}

/// The float baseline: y = W x with a dense f32 W (row-major [rows, cols]).
pub fn matvec_f32(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    for (r, out) in y.iter_mut().enumerate().take(rows) {
        *out = dot(&w[r * cols..(r + 1) * cols], &x[..cols]);
    }
}

/// The best float baseline this crate has: y = W x with AVX-512 FMA (four rows at a time,
/// masked tails) when the CPU has it, else with AVX2 FMA (four rows at a time), else
/// [`matvec_f32`].
pub fn matvec_f32_fma(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= rows * cols && x.len() >= cols && y.len() >= rows);
    #[cfg(target_arch = "x86_64")]
    if flashlm_infer::cpu::avx512f() {
        // SAFETY: AVX-512F was just detected; the lengths were checked above.
        unsafe { fma_x86::matvec(w, rows, cols, x, y) };
        return;
    }
    matvec_f32_avx2(w, rows, cols, x, y)
}

/// Which float baseline [`matvec_f32_fma`] runs on this CPU.
pub fn fma_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if flashlm_infer::cpu::avx512f() {
            return "avx512-fma";
        }
        if flashlm_infer::cpu::avx2() && flashlm_infer::cpu::fma() {
            return "avx2-fma";
        }
    }
    "plain"
}

/// The AVX2 FMA baseline alone (also on machines that have AVX-512). Falls back to
/// [`matvec_f32`] without AVX2 + FMA (or when `FLASHLM_ISA` caps them).
pub fn matvec_f32_avx2(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= rows * cols && x.len() >= cols && y.len() >= rows);
    #[cfg(target_arch = "x86_64")]
    if flashlm_infer::cpu::avx2() && flashlm_infer::cpu::fma() {
        // SAFETY: AVX2 and FMA were just detected; the lengths were checked above.
        unsafe { fma_x86::matvec_avx2(w, rows, cols, x, y) };
        return;
    }
    matvec_f32(w, rows, cols, x, y)
}

#[cfg(target_arch = "x86_64")]
mod fma_x86 {
    use std::arch::x86_64::*;

    /// Four rows at a time, two accumulators per row, scalar tails.
    ///
    /// # Safety
    /// AVX2 and FMA; `w.len() >= rows * cols`, `x.len() >= cols`, `y.len() >= rows`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matvec_avx2(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
        let full = cols / 16 * 16;
        let mut r = 0;
        while r < rows {
            let n = (rows - r).min(4);
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            let mut c = 0;
            while c < full {
                // SAFETY: c + 16 <= cols: inside x and inside each row r + i < rows.
                unsafe {
                    let x0 = _mm256_loadu_ps(x.as_ptr().add(c));
                    let x1 = _mm256_loadu_ps(x.as_ptr().add(c + 8));
                    for (i, a) in acc.iter_mut().enumerate().take(n) {
                        let p = w.as_ptr().add((r + i) * cols + c);
                        a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(p), x0, a[0]);
                        a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), x1, a[1]);
                    }
                }
                c += 16;
            }
            for (i, a) in acc.iter().enumerate().take(n) {
                let mut lanes = [0.0f32; 8];
                // SAFETY: lanes holds 8 f32.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a[0], a[1])) };
                let row = &w[(r + i) * cols..(r + i + 1) * cols];
                let tail: f32 = row[full..].iter().zip(&x[full..cols]).map(|(a, b)| a * b).sum();
                y[r + i] = lanes.iter().sum::<f32>() + tail;
            }
            r += n;
        }
    }

    /// # Safety
    /// AVX-512F; `w.len() >= rows * cols`, `x.len() >= cols`, `y.len() >= rows`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn matvec(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
        let full = cols / 16;
        let tail: u16 = ((1u32 << (cols % 16)) - 1) as u16;
        let mut r = 0;
        while r < rows {
            let n = (rows - r).min(4);
            let mut acc = [_mm512_setzero_ps(); 4];
            for c in 0..=full {
                let mask = if c < full { 0xFFFF } else { tail };
                if mask == 0 {
                    break;
                }
                // SAFETY: the mask keeps every lane inside x and inside row r + i.
                unsafe {
                    let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(c * 16));
                    for (i, a) in acc.iter_mut().enumerate().take(n) {
                        let wv = _mm512_maskz_loadu_ps(mask, w.as_ptr().add((r + i) * cols + c * 16));
                        *a = _mm512_fmadd_ps(wv, xv, *a);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(n) {
                y[r + i] = _mm512_reduce_add_ps(*a);
            }
            r += n;
        }
    }
}
