//! AVX2 versions of the lane gather and scatter for a full block of [`LANES`] rows: 8 x 8
//! tiles transposed in registers (unpack, shuffle, permute), where the portable versions'
//! element-wise copies compile to scalar moves. The results are the portable ones bit for
//! bit: the gather only copies, and the scatter does one multiply by α and then (with `acc`)
//! one add per output, as the portable scatter does.

use super::{LANES, Lane};
use std::arch::x86_64::*;

/// Values per AVX2 vector and side of a tile.
const W: usize = 8;

/// The 8 x 8 transpose of eight rows: out[j][k] = r[k][j].
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256; W]) -> [__m256; W] {
    // Pairs of rows interleaved: columns (0, 1, 4, 5) and (2, 3, 6, 7).
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // Four rows of one column per 128-bit half: column c | column c + 4.
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    // Rows 0-3 and 4-7 of each column joined.
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// xt[i][l] = x[l · x_rs + i] for i < q, l < LANES (a full block of rows).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn gather_lanes(xt: &mut [Lane], x: &[f32], x_rs: usize, q: usize) {
    assert!(xt.len() >= q && x_rs >= q && x.len() >= (LANES - 1) * x_rs + q);
    let tiles = q / W;
    for t in 0..tiles {
        let i0 = t * W;
        for l0 in (0..LANES).step_by(W) {
            let rows: [__m256; W] = std::array::from_fn(|k| {
                // SAFETY: row l0 + k < LANES and columns i0..i0 + 8 <= q, so the eight values
                // end at or before (LANES - 1) · x_rs + q <= x.len() (asserted above).
                unsafe { _mm256_loadu_ps(x.as_ptr().add((l0 + k) * x_rs + i0)) }
            });
            for (j, c) in transpose8(rows).into_iter().enumerate() {
                let dst = &mut xt[i0 + j][l0..l0 + W];
                // SAFETY: `dst` is eight f32 (the slice above is bounds-checked).
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), c) };
            }
        }
    }
    for i in tiles * W..q {
        for l in 0..LANES {
            xt[i][l] = x[l * x_rs + i];
        }
    }
}

/// y[l · y_rs + o] (+)= alpha · out[o][l] for o < p, l < LANES (a full block of rows).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn scatter_lanes(y: &mut [f32], y_rs: usize, out: &[Lane], p: usize, alpha: f32, acc: bool) {
    assert!(out.len() >= p && y_rs >= p && y.len() >= (LANES - 1) * y_rs + p);
    let a = _mm256_set1_ps(alpha);
    let tiles = p / W;
    for t in 0..tiles {
        let o0 = t * W;
        for l0 in (0..LANES).step_by(W) {
            let cols: [__m256; W] = std::array::from_fn(|j| {
                let src = &out[o0 + j][l0..l0 + W];
                // SAFETY: `src` is eight f32 (bounds-checked slice).
                unsafe { _mm256_loadu_ps(src.as_ptr()) }
            });
            for (k, v) in transpose8(cols).into_iter().enumerate() {
                let dst = &mut y[(l0 + k) * y_rs + o0..][..W];
                let v = _mm256_mul_ps(a, v);
                // SAFETY: `dst` is eight f32 (bounds-checked slice).
                unsafe {
                    let v = if acc { _mm256_add_ps(_mm256_loadu_ps(dst.as_ptr()), v) } else { v };
                    _mm256_storeu_ps(dst.as_mut_ptr(), v);
                }
            }
        }
    }
    for l in 0..LANES {
        for o in tiles * W..p {
            let v = alpha * out[o][l];
            let y = &mut y[l * y_rs + o];
            *y = if acc { *y + v } else { v };
        }
    }
}
