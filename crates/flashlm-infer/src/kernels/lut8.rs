//! Ternary products on int8 activations with look-up tables of pair sums (T-MAC style).
//!
//! The input vector is rounded to int8 with one scale ([`quantize`]: absmax / 127, as
//! BitNet and the published ternary kernels do). Then every pair of inputs `(a, b)` gets a
//! 16-entry table of the nine sums `w0·a + w1·b`, `w0, w1 ∈ {−1, 0, +1}`, built with adds
//! and subtracts only; a weight pair's 4-bit code `3(w0+1) + (w1+1)` selects its entry. The
//! sums need 9 bits, so each table is kept as a low-byte and a high-byte half, and the
//! AVX2 kernel looks up 32 rows at once in each half with `vpshufb`, interleaves the halves
//! into int16 (`vpunpck[lh]bw`) and adds: four shuffles, four unpacks and four adds per 128
//! weights, no multiply. The int16 sums are widened to int32 every [`FLUSH`] steps, so they
//! never overflow and the kernel is exact: it equals [`matvec_i8_reference`] bit for bit.
//!
//! Layout ([`lut_codes`], built at load time from the file's one layout): blocks of 32 rows,
//! and for every step of four inputs one byte per row: the code of inputs 4k, 4k+1 in the
//! low nibble, of inputs 4k+2, 4k+3 in the high nibble (2 bits per weight, as in the file).

/// Rows per block of the code layout (one `vpshufb` lane per row).
pub const ROWS: usize = 32;

/// Steps of four inputs between two widenings of the int16 sums: every step adds at most
/// 2 · 254 to a row's int16 sum, and 64 · 508 = 32,512 < 32,767.
pub const FLUSH: usize = 64;

/// The table of one step (four inputs): bytes 0..16 the low bytes of the 16 entries of
/// pair 2k (inputs 4k, 4k+1), 16..32 those of pair 2k+1, 32..48 and 48..64 their high bytes.
/// Entries past 8 are never selected.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct StepTable(pub [u8; 64]);

/// The weights `(w0, w1)` of code `c` = 3(w0+1) + (w1+1), for c < 9.
pub const fn code_weights(c: usize) -> (i32, i32) {
    ((c / 3) as i32 - 1, (c % 3) as i32 - 1)
}

/// Round `x` to int8 with one scale: returns `s` with `x ≈ s · q`, `s = max|x| / 127`.
/// `q` gets `x.len()` values (and keeps whatever follows). A vector of zeros has scale 0; a
/// vector holding NaN or ±inf has scale NaN, so the products come out NaN, as they would
/// in f32, instead of silently finite.
pub fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut finite = true;
    for &v in x {
        finite &= v.is_finite();
        max = max.max(v.abs());
    }
    if !finite {
        q[..x.len()].fill(0);
        return f32::NAN;
    }
    if max == 0.0 {
        q[..x.len()].fill(0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = round_even(v * inv) as i8;
    }
    max / 127.0
}

/// Round to the nearest integer, ties to even (what `vcvtps2dq` does), for |v| <= 2^22:
/// adding and subtracting 1.5 · 2^23 leaves no fraction bits. Plain adds, so it vectorises
/// on any target (`f32::round` is a library call without SSE4.1).
#[inline]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// The slow, obvious reference: exact integer sums `Σ w[r, i] · q[i]` (one add or subtract
/// per non-zero weight).
pub fn matvec_i8_reference(w: &[i8], rows: usize, cols: usize, q: &[i8]) -> Vec<i32> {
    (0..rows)
        .map(|r| {
            let mut s = 0i32;
            for c in 0..cols {
                match w[r * cols + c] {
                    1 => s += i32::from(q[c]),
                    -1 => s -= i32::from(q[c]),
                    _ => {}
                }
            }
            s
        })
        .collect()
}

/// Steps of four inputs per row: ceil(cols / 4).
pub fn steps(cols: usize) -> usize {
    cols.div_ceil(4)
}

/// Codes of a ternary matrix (row-major [rows, cols], values in {−1, 0, 1}) for the table
/// kernels: [ceil(rows / 32), steps(cols), 32] bytes as the module documentation says.
/// Weights past the matrix count as 0 (code 4, whose entry is 0 for any input).
pub fn lut_codes(w: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let steps = steps(cols);
    let blocks = rows.div_ceil(ROWS);
    let weight = |r: usize, c: usize| if r < rows && c < cols { w[r * cols + c] } else { 0 };
    let code = |r: usize, c: usize| (3 * (weight(r, c) + 1) + (weight(r, c + 1) + 1)) as u8;
    let mut out = vec![0u8; blocks * steps * ROWS];
    for rb in 0..blocks {
        for k in 0..steps {
            for p in 0..ROWS {
                let r = rb * ROWS + p;
                out[(rb * steps + k) * ROWS + p] = code(r, 4 * k) | code(r, 4 * k + 2) << 4;
            }
        }
    }
    out
}

/// The tables of `q` (at least `4 · steps` values, zeros past the input), portable code.
pub fn tables_generic(q: &[i8], steps: usize, t: &mut [StepTable]) {
    for (k, st) in t.iter_mut().enumerate().take(steps) {
        for pair in 0..2 {
            let (a, b) = (i32::from(q[4 * k + 2 * pair]), i32::from(q[4 * k + 2 * pair + 1]));
            for c in 0..16 {
                // Entries past 8 are never selected; they are written as 0.
                let v = if c < 9 {
                    let (w0, w1) = code_weights(c);
                    let pa = if w0 > 0 {
                        a
                    } else if w0 < 0 {
                        -a
                    } else {
                        0
                    };
                    let pb = if w1 > 0 {
                        b
                    } else if w1 < 0 {
                        -b
                    } else {
                        0
                    };
                    pa + pb
                } else {
                    0
                };
                st.0[16 * pair + c] = v as u8;
                st.0[32 + 16 * pair + c] = (v >> 8) as u8;
            }
        }
    }
}

/// The table kernel in portable code (one row and one lookup at a time): what the AVX2
/// kernel computes, written plainly. `y[r]` = exact integer sum of row r.
pub fn sums_lut_generic(codes: &[u8], rows: usize, steps: usize, t: &[StepTable], y: &mut [i32]) {
    for (rb, block) in codes.chunks_exact(steps * ROWS).enumerate() {
        for p in 0..ROWS {
            let r = rb * ROWS + p;
            if r >= rows {
                break;
            }
            let mut s = 0i32;
            for (k, st) in t.iter().enumerate().take(steps) {
                let b = block[k * ROWS + p];
                for (pair, c) in [(0, b & 15), (1, b >> 4)] {
                    let c = usize::from(c);
                    let lo = st.0[16 * pair + c];
                    let hi = st.0[32 + 16 * pair + c] as i8;
                    s += i32::from(u16::from_le_bytes([lo, hi as u8]) as i16);
                }
            }
            y[r] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    //! The AVX2 table kernel and table builder.
    use super::{FLUSH, ROWS, StepTable};
    use std::arch::x86_64::*;

    /// [`super::quantize`] with AVX2, equal to it bit for bit; `q` gets `x.len()` values.
    ///
    /// # Safety
    /// The CPU must support AVX2; `q.len() >= x.len()`.
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    pub unsafe fn quantize_avx2(x: &[f32], q: &mut [i8]) -> f32 {
        assert!(q.len() >= x.len());
        let n8 = x.len() / 8 * 8;
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let (mut mx, mut bad) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in x[..n8].chunks_exact(8) {
            // SAFETY: c holds 8 f32.
            let v = _mm256_and_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, abs);
            mx = _mm256_max_ps(mx, v);
            // Not (|v| < inf): NaN or ±inf.
            bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_NLT_UQ>(v, _mm256_set1_ps(f32::INFINITY)));
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: lanes holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mx) };
        let mut max = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
        let mut finite = _mm256_movemask_ps(bad) == 0;
        for &v in &x[n8..] {
            finite &= v.is_finite();
            max = max.max(v.abs());
        }
        if !finite || max == 0.0 {
            q[..x.len()].fill(0);
            return if finite { 0.0 } else { f32::NAN };
        }
        let inv = 127.0 / max;
        let vinv = _mm256_set1_ps(inv);
        let mut i = 0;
        while i + 32 <= x.len() {
            // SAFETY: i + 32 <= x.len() <= q.len().
            unsafe {
                let p = x.as_ptr().add(i);
                // vcvtps2dq rounds to nearest, ties to even (the default rounding mode).
                let r = |j: usize| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(8 * j)), vinv));
                let w01 = _mm256_packs_epi32(r(0), r(1));
                let w23 = _mm256_packs_epi32(r(2), r(3));
                // packs work per 128-bit lane: restore the order of the 32 values.
                let b = _mm256_permutevar8x32_epi32(
                    _mm256_packs_epi16(w01, w23),
                    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
                );
                _mm256_storeu_si256(q.as_mut_ptr().add(i) as *mut __m256i, b);
            }
            i += 32;
        }
        for (o, &v) in q[i..].iter_mut().zip(&x[i..]) {
            *o = super::round_even(v * inv) as i8;
        }
        max / 127.0
    }

    /// Sign patterns of the 16 entries: lane c holds w0 (first register) and w1 (second)
    /// of code c; 0 past code 8.
    const W0: [i16; 16] = [-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const W1: [i16; 16] = [-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0];

    /// The tables of `q`, equal byte for byte to [`super::tables_generic`]: each pair's 16
    /// entries as int16 with `vpsignw` (±a, ±b, 0) and one add, then split into low and
    /// high bytes with packs.
    ///
    /// # Safety
    /// The CPU must support AVX2; `q.len() >= 4 * steps`, `t.len() >= steps`.
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    pub unsafe fn tables_avx2(q: &[i8], steps: usize, t: &mut [StepTable]) {
        assert!(q.len() >= 4 * steps && t.len() >= steps);
        // SAFETY: W0 / W1 are 16 i16 = 32 bytes.
        let (w0, w1) = unsafe {
            (
                _mm256_loadu_si256(W0.as_ptr() as *const __m256i),
                _mm256_loadu_si256(W1.as_ptr() as *const __m256i),
            )
        };
        let low = _mm256_set1_epi16(0xFF);
        for (k, st) in t.iter_mut().enumerate().take(steps) {
            let v = |i: usize| _mm256_set1_epi16(i16::from(q[4 * k + i]));
            let ta = _mm256_add_epi16(_mm256_sign_epi16(v(0), w0), _mm256_sign_epi16(v(1), w1));
            let tb = _mm256_add_epi16(_mm256_sign_epi16(v(2), w0), _mm256_sign_epi16(v(3), w1));
            // packus: [a0..8 | b0..8 | a8..16 | b8..16] as quadwords; vpermq puts a, then b.
            let lo = _mm256_packus_epi16(_mm256_and_si256(ta, low), _mm256_and_si256(tb, low));
            let hi = _mm256_packs_epi16(_mm256_srai_epi16::<8>(ta), _mm256_srai_epi16::<8>(tb));
            let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(lo);
            let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(hi);
            let p = st.0.as_mut_ptr() as *mut __m256i;
            // SAFETY: a StepTable is 64 bytes, 64-byte aligned.
            unsafe {
                _mm256_store_si256(p, lo);
                _mm256_store_si256(p.add(1), hi);
            }
        }
    }

    /// Exact integer sums of `N` inputs' tables against one matrix's codes, as f32 (exact:
    /// |sum| <= 127 · cols < 2^24). `codes` has the layout of [`super::lut_codes`] with
    /// `steps` steps; `ys[n][r]` gets row r's sum for input n.
    ///
    /// For each block of 32 rows and each step, the code byte of every row is split into
    /// its two nibbles; each nibble selects one low and one high byte per row from its
    /// pair's table (`vpshufb`, both 128-bit lanes holding the same table); the halves are
    /// interleaved into int16 and added. int16 sums are widened to int32 every [`FLUSH`]
    /// steps. The rows land in the order 0..8, 16..24 (first register), 8..16, 24..32.
    ///
    /// # Safety
    /// The CPU must support AVX2; `codes.len() >= ceil(rows / 32) * steps * 32`, every
    /// `tables[n].len() >= steps`, every `ys[n].len() >= rows`.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn sums_lut_avx2<const N: usize>(
        codes: &[u8],
        rows: usize,
        steps: usize,
        tables: [&[StepTable]; N],
        mut ys: [&mut [f32]; N],
    ) {
        assert!(tables.iter().all(|t| t.len() >= steps) && ys.iter().all(|y| y.len() >= rows));
        if steps == 0 {
            for y in ys.iter_mut() {
                y[..rows].fill(0.0);
            }
            return;
        }
        // Checked by division (the kernel holds no multiply, not even for a length).
        let (stride, blocks) = (steps * ROWS, rows.div_ceil(ROWS));
        assert!(codes.len() / stride >= blocks, "codes shorter than the rows");
        let nib = _mm256_set1_epi8(0x0F);
        for (rb, block) in codes.chunks_exact(stride).take(blocks).enumerate() {
            let mut acc = [[_mm256_setzero_si256(); 4]; N];
            let mut k0 = 0;
            while k0 < steps {
                let k1 = steps.min(k0 + FLUSH);
                let mut a16 = [[_mm256_setzero_si256(); 2]; N];
                for k in k0..k1 {
                    // SAFETY: k < steps: the 32 code bytes of step k lie inside the block.
                    let b = unsafe { _mm256_loadu_si256(block.as_ptr().add(k * ROWS) as *const __m256i) };
                    let i0 = _mm256_and_si256(b, nib);
                    let i1 = _mm256_and_si256(_mm256_srli_epi16::<4>(b), nib);
                    for n in 0..N {
                        // SAFETY: k < steps <= tables[n].len(); a StepTable is 64 bytes.
                        let (l0, l1, h0, h1) = unsafe {
                            let t = tables[n].as_ptr().add(k) as *const __m128i;
                            (
                                _mm256_broadcastsi128_si256(_mm_load_si128(t)),
                                _mm256_broadcastsi128_si256(_mm_load_si128(t.add(1))),
                                _mm256_broadcastsi128_si256(_mm_load_si128(t.add(2))),
                                _mm256_broadcastsi128_si256(_mm_load_si128(t.add(3))),
                            )
                        };
                        let la = _mm256_shuffle_epi8(l0, i0);
                        let ha = _mm256_shuffle_epi8(h0, i0);
                        let lb = _mm256_shuffle_epi8(l1, i1);
                        let hb = _mm256_shuffle_epi8(h1, i1);
                        let a = &mut a16[n];
                        a[0] = _mm256_add_epi16(a[0], _mm256_unpacklo_epi8(la, ha));
                        a[1] = _mm256_add_epi16(a[1], _mm256_unpackhi_epi8(la, ha));
                        a[0] = _mm256_add_epi16(a[0], _mm256_unpacklo_epi8(lb, hb));
                        a[1] = _mm256_add_epi16(a[1], _mm256_unpackhi_epi8(lb, hb));
                    }
                }
                for (acc, a) in acc.iter_mut().zip(&a16) {
                    let w = |v: __m256i, hi: bool| {
                        _mm256_cvtepi16_epi32(if hi {
                            _mm256_extracti128_si256::<1>(v)
                        } else {
                            _mm256_castsi256_si128(v)
                        })
                    };
                    // Rows 0..8, 8..16, 16..24, 24..32.
                    acc[0] = _mm256_add_epi32(acc[0], w(a[0], false));
                    acc[1] = _mm256_add_epi32(acc[1], w(a[1], false));
                    acc[2] = _mm256_add_epi32(acc[2], w(a[0], true));
                    acc[3] = _mm256_add_epi32(acc[3], w(a[1], true));
                }
                k0 = k1;
            }
            let r0 = rb * ROWS;
            let n_rows = ROWS.min(rows - r0);
            for (acc, y) in acc.iter().zip(ys.iter_mut()) {
                let mut lanes = [0.0f32; ROWS];
                for (j, a) in acc.iter().enumerate() {
                    // SAFETY: lanes holds 32 f32; j * 8 + 8 <= 32.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * j), _mm256_cvtepi32_ps(*a)) };
                }
                y[r0..r0 + n_rows].copy_from_slice(&lanes[..n_rows]);
            }
        }
    }

    /// [`sums_lut_avx2`] for one input (a named symbol for `scripts/check-no-multiply.sh`).
    ///
    /// # Safety
    /// As [`sums_lut_avx2`].
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    pub unsafe fn sums_avx2_lut1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable], y: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe { sums_lut_avx2::<1>(codes, rows, steps, [t], [y]) }
    }

    /// [`sums_lut_avx2`] for four inputs: each code byte is loaded and split once for all four.
    ///
    /// # Safety
    /// As [`sums_lut_avx2`].
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    pub unsafe fn sums_avx2_lut4(
        codes: &[u8],
        rows: usize,
        steps: usize,
        t: [&[StepTable]; 4],
        ys: [&mut [f32]; 4],
    ) {
        // SAFETY: forwarded.
        unsafe { sums_lut_avx2::<4>(codes, rows, steps, t, ys) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    fn case(rows: usize, cols: usize, seed: u64, extreme: bool) -> (Vec<i8>, Vec<i8>) {
        let mut next = rng(seed);
        let w = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        // Extreme: every input ±127, the largest sums the int16 stage must carry.
        let q = (0..cols)
            .map(|_| {
                if extreme { if next().is_multiple_of(2) { 127 } else { -127 } } else { (next() % 255) as i8 }
            })
            .map(|v: i8| v.max(-127))
            .collect();
        (w, q)
    }

    fn padded(q: &[i8], steps: usize) -> Vec<i8> {
        let mut v = q.to_vec();
        v.resize(4 * steps, 0);
        v
    }

    #[test]
    fn quantize_rounds_to_the_nearest_level() {
        let x = [0.5f32, -1.0, 0.25, 0.0, 1.0 / 127.0];
        let mut q = [0i8; 5];
        let s = quantize(&x, &mut q);
        assert_eq!(s, 1.0 / 127.0);
        // 63.5 rounds to even: 64; 31.75 to 32.
        assert_eq!(q, [64, -127, 32, 0, 1]);
        assert_eq!(quantize(&[0.0; 3], &mut q), 0.0);
        assert_eq!(&q[..3], &[0, 0, 0]);
        assert!(quantize(&[1.0, f32::NAN], &mut q).is_nan());
        assert!(quantize(&[f32::INFINITY], &mut q).is_nan());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_quantize_equals_the_portable_one() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2, quantize_avx2 was not tested");
            return;
        }
        let mut next = rng(3);
        for n in (0..=300).chain([1024, 4099]) {
            for kind in 0..4 {
                let mut x: Vec<f32> =
                    (0..n).map(|_| (next() % 2_000_001) as f32 / 1_000_000.0 - 1.0).collect();
                match kind {
                    // Exact ties after scaling: multiples of max / 254.
                    1 => x.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 255) as f32 - 127.0),
                    2 if n > 0 => x[n / 2] = f32::NAN,
                    3 if n > 0 => x[n - 1] = f32::NEG_INFINITY,
                    _ => {}
                }
                let (mut a, mut b) = (vec![5i8; n], vec![-5i8; n]);
                let sa = quantize(&x, &mut a);
                // SAFETY: AVX2 was detected; b holds n values.
                let sb = unsafe { avx2::quantize_avx2(&x, &mut b) };
                assert!(sa == sb || (sa.is_nan() && sb.is_nan()), "n {n} kind {kind}: {sa} vs {sb}");
                assert_eq!(a, b, "n {n} kind {kind}");
            }
        }
    }

    #[test]
    fn generic_table_kernel_matches_the_reference() {
        for cols in 1..=300 {
            let rows = 1 + cols % 37;
            let (w, q) = case(rows, cols, cols as u64, cols % 5 == 0);
            let s = steps(cols);
            let codes = lut_codes(&w, rows, cols);
            let mut t = vec![StepTable([0; 64]); s];
            tables_generic(&padded(&q, s), s, &mut t);
            let mut y = vec![0i32; rows];
            sums_lut_generic(&codes, rows, s, &t, &mut y);
            assert_eq!(y, matvec_i8_reference(&w, rows, cols, &q), "cols {cols}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_tables_and_kernel_match_the_reference() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2, the AVX2 table kernel was not tested");
            return;
        }
        let shapes = (1..=300).map(|c| (1 + (c * 7) % 70, c)).chain([
            (384, 192),
            (192, 192),
            (512, 192),
            (192, 512),
            (768, 384),
            (384, 1024),
            (33, 4096),
        ]);
        for (rows, cols) in shapes {
            for extreme in [false, true] {
                let (w, q) = case(rows, cols, (rows * 1000 + cols) as u64, extreme);
                let s = steps(cols);
                let codes = lut_codes(&w, rows, cols);
                let (mut tg, mut ta) = (vec![StepTable([0; 64]); s], vec![StepTable([1; 64]); s]);
                let qp = padded(&q, s);
                tables_generic(&qp, s, &mut tg);
                // SAFETY: AVX2 was detected; qp has 4 * s values, ta has s tables.
                unsafe { avx2::tables_avx2(&qp, s, &mut ta) };
                assert!(tg.iter().zip(&ta).all(|(a, b)| a.0 == b.0), "tables differ, cols {cols}");
                let want: Vec<f32> =
                    matvec_i8_reference(&w, rows, cols, &q).iter().map(|&v| v as f32).collect();
                let mut y = vec![f32::NAN; rows];
                // SAFETY: AVX2 was detected; codes / tables / y have the sizes the kernel needs.
                unsafe { avx2::sums_avx2_lut1(&codes, rows, s, &ta, &mut y) };
                assert_eq!(y, want, "{rows}x{cols} extreme={extreme}");
                // Four inputs at once: each equals its own one-input result.
                let qs: Vec<Vec<i8>> = (0..4).map(|i| padded(&case(1, cols, 77 + i, extreme).1, s)).collect();
                let ts: Vec<Vec<StepTable>> = qs
                    .iter()
                    .map(|q| {
                        let mut t = vec![StepTable([0; 64]); s];
                        tables_generic(q, s, &mut t);
                        t
                    })
                    .collect();
                let mut ys = vec![vec![0.0f32; rows]; 4];
                let [y0, y1, y2, y3] = &mut ys[..] else { unreachable!() };
                // SAFETY: as above.
                unsafe {
                    avx2::sums_avx2_lut4(&codes, rows, s, [&ts[0], &ts[1], &ts[2], &ts[3]], [y0, y1, y2, y3])
                };
                for (q, y) in qs.iter().zip(&ys) {
                    let want: Vec<f32> =
                        matvec_i8_reference(&w, rows, cols, &q[..cols]).iter().map(|&v| v as f32).collect();
                    assert_eq!(y, &want, "4 inputs, {rows}x{cols}");
                }
            }
        }
    }
}
