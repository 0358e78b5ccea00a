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
    quantize_to(x, q, 127)
}

/// [`quantize`] to the levels −`levels`..=`levels` (`levels` <= 127): scale max|x| / levels.
pub fn quantize_to(x: &[f32], q: &mut [i8], levels: i8) -> f32 {
    let top = f32::from(levels);
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
    let inv = top / max;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = round_even(v * inv) as i8;
    }
    max / top
}

/// Round to the nearest integer, ties to even (what `vcvtps2dq` does), for |v| <= 2^22:
/// adding and subtracting 1.5 · 2^23 leaves no fraction bits. Plain adds, so it vectorises
/// on any target (`f32::round` is a library call without SSE4.1).
#[inline]
pub(crate) fn round_even(v: f32) -> f32 {
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

/// The checks every table kernel starts with: each output holds `rows` values, and the codes
/// hold `ceil(rows / 32)` blocks of `steps` steps. Returns (bytes per block, blocks), or
/// None after zeroing the outputs when there are no steps. Checked by division (the kernels
/// hold no multiply, not even for a length; `steps * 32` is a shift).
#[inline(always)]
pub fn block_shape<const N: usize>(
    codes: &[u8],
    rows: usize,
    steps: usize,
    ys: &mut [&mut [f32]; N],
) -> Option<(usize, usize)> {
    assert!(ys.iter().all(|y| y.len() >= rows));
    if steps == 0 {
        for y in ys.iter_mut() {
            y[..rows].fill(0.0);
        }
        return None;
    }
    let (stride, blocks) = (steps * ROWS, rows.div_ceil(ROWS));
    assert!(codes.len() / stride >= blocks, "codes shorter than the rows");
    Some((stride, blocks))
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

/// Table entry `c` of the pair `(a, b)`: `w0·a + w1·b` with adds and subtracts for the
/// weights of code `c`; entries past 8 are never selected and are 0.
fn entry(c: usize, a: i32, b: i32) -> i32 {
    if c >= 9 {
        return 0;
    }
    let signed = |w: i32, v: i32| match w {
        1 => v,
        -1 => -v,
        _ => 0,
    };
    let (w0, w1) = code_weights(c);
    signed(w0, a) + signed(w1, b)
}

/// Every entry of every step's two pair tables: `put(k, pair, c, entry)`.
fn each_entry(q: &[i8], steps: usize, mut put: impl FnMut(usize, usize, usize, i32)) {
    for k in 0..steps {
        for pair in 0..2 {
            let (a, b) = (i32::from(q[4 * k + 2 * pair]), i32::from(q[4 * k + 2 * pair + 1]));
            for c in 0..16 {
                put(k, pair, c, entry(c, a, b));
            }
        }
    }
}

/// Exact integer row sums in portable code (one row and one lookup at a time):
/// `lookup(k, pair, c)` is the entry code `c` selects in step k's table of that pair.
fn sums_generic(
    codes: &[u8],
    rows: usize,
    steps: usize,
    y: &mut [i32],
    lookup: impl Fn(usize, usize, usize) -> i32,
) {
    for (rb, block) in codes.chunks_exact(steps * ROWS).enumerate() {
        for p in 0..ROWS {
            let r = rb * ROWS + p;
            if r >= rows {
                break;
            }
            let mut s = 0i32;
            for k in 0..steps {
                let b = block[k * ROWS + p];
                s += lookup(k, 0, usize::from(b & 15)) + lookup(k, 1, usize::from(b >> 4));
            }
            y[r] = s;
        }
    }
}

/// The tables of `q` (at least `4 · steps` values, zeros past the input), portable code.
pub fn tables_generic(q: &[i8], steps: usize, t: &mut [StepTable]) {
    each_entry(q, steps, |k, pair, c, v| {
        t[k].0[16 * pair + c] = v as u8;
        t[k].0[32 + 16 * pair + c] = (v >> 8) as u8;
    });
}

/// The table kernel in portable code: what the AVX2 kernel computes, written plainly (each
/// entry put back together from its low and high byte). `y[r]` = exact integer sum of row r.
pub fn sums_lut_generic(codes: &[u8], rows: usize, steps: usize, t: &[StepTable], y: &mut [i32]) {
    sums_generic(codes, rows, steps, y, |k, pair, c| {
        let (lo, hi) = (t[k].0[16 * pair + c], t[k].0[32 + 16 * pair + c]);
        i32::from(i16::from_le_bytes([lo, hi]))
    });
}

/// Levels of the 6-bit variant: inputs rounded to −31..=31, so a pair sum (|·| <= 62) fits
/// a signed byte and two of them still do (|·| <= 124): one byte table per pair, and the
/// two pairs of a step are added before widening (half the shuffles of the 8-bit kernel).
/// On the bundled model it costs 0.0013 BPC (original protocol) and 0.0014 (exact).
pub const LEVELS6: i8 = 31;

/// The bias every 6-bit table entry is stored with, so that entries are unsigned bytes
/// (2..=126) and a step's two entries add without overflow (4..=252).
pub const BIAS6: i32 = 64;

/// Steps between two widenings in the 6-bit kernel: its 16-bit sums of biased byte sums
/// stay exact for 256 · 252 = 64,512 < 65,536.
pub const FLUSH6: usize = 256;

/// The 6-bit variant's table of one step: bytes 0..16 the 16 entries of pair 2k (inputs 4k,
/// 4k+1), 16..32 those of pair 2k+1, each entry + [`BIAS6`] (entries past 8 are never
/// selected).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct StepTable6(pub [u8; 32]);

/// The 6-bit tables of `q` (values in −31..=31, at least `4 · steps` of them, zeros past the
/// input), portable code.
pub fn tables6_generic(q: &[i8], steps: usize, t: &mut [StepTable6]) {
    each_entry(q, steps, |k, pair, c, v| t[k].0[16 * pair + c] = (v + BIAS6) as u8);
}

/// The 6-bit table kernel in portable code, one row and one lookup at a time.
pub fn sums_lut6_generic(codes: &[u8], rows: usize, steps: usize, t: &[StepTable6], y: &mut [i32]) {
    sums_generic(codes, rows, steps, y, |k, pair, c| i32::from(t[k].0[16 * pair + c]) - BIAS6);
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use crate::kernels::x86_avx2;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut r = flashlm_core::rng::XorShift64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        move || r.next_u64()
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
            eprintln!("skipped: this CPU has no AVX2, quantize_to_avx2 was not tested");
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
                for levels in [127, LEVELS6] {
                    let (mut a, mut b) = (vec![5i8; n], vec![-5i8; n]);
                    let sa = quantize_to(&x, &mut a, levels);
                    // SAFETY: AVX2 was detected; b holds n values.
                    let sb = unsafe { x86_avx2::quantize_to_avx2(&x, &mut b, levels) };
                    assert!(sa == sb || (sa.is_nan() && sb.is_nan()), "n {n} kind {kind}: {sa} vs {sb}");
                    assert_eq!(a, b, "n {n} kind {kind} levels {levels}");
                    assert!(a.iter().all(|&v| v.abs() <= levels));
                }
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

    #[test]
    fn generic_6bit_table_kernel_matches_the_reference() {
        for cols in 1..=300 {
            let rows = 1 + cols % 37;
            let (w, q) = case(rows, cols, cols as u64 + 7, cols % 5 == 0);
            let q: Vec<i8> = q.iter().map(|&v| (v / 4).clamp(-LEVELS6, LEVELS6)).collect();
            let s = steps(cols);
            let mut t = vec![StepTable6([0; 32]); s];
            tables6_generic(&padded(&q, s), s, &mut t);
            let mut y = vec![0i32; rows];
            sums_lut6_generic(&lut_codes(&w, rows, cols), rows, s, &t, &mut y);
            assert_eq!(y, matvec_i8_reference(&w, rows, cols, &q), "cols {cols}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_6bit_tables_and_kernel_match_the_reference() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2, the AVX2 6-bit table kernel was not tested");
            return;
        }
        let shapes = (1..=300).map(|c| (1 + (c * 7) % 70, c)).chain([
            (384, 192),
            (192, 512),
            (1024, 384),
            (384, 1024),
            (33, 4096),
        ]);
        for (rows, cols) in shapes {
            for extreme in [false, true] {
                let (w, q) = case(rows, cols, (rows * 1000 + cols) as u64, extreme);
                // Extreme: every input ±31, the largest sums the int8 and int16 stages carry.
                let q: Vec<i8> =
                    q.iter().map(|&v| if extreme { v.signum() * LEVELS6 } else { v / 5 }).collect();
                let s = steps(cols);
                let codes = lut_codes(&w, rows, cols);
                let qp = padded(&q, s);
                let (mut tg, mut ta) = (vec![StepTable6([0; 32]); s], vec![StepTable6([1; 32]); s]);
                tables6_generic(&qp, s, &mut tg);
                // SAFETY: AVX2 was detected; qp has 4 * s values, ta has s tables.
                unsafe { x86_avx2::tables_avx2_i6(&qp, s, &mut ta) };
                assert!(tg.iter().zip(&ta).all(|(a, b)| a.0 == b.0), "6-bit tables differ, cols {cols}");
                let want: Vec<f32> =
                    matvec_i8_reference(&w, rows, cols, &q).iter().map(|&v| v as f32).collect();
                let mut y = vec![f32::NAN; rows];
                // SAFETY: AVX2 was detected; codes / tables / y have the sizes the kernel needs.
                unsafe { x86_avx2::sums_avx2_lut6x1(&codes, rows, s, &ta, &mut y) };
                assert_eq!(y, want, "{rows}x{cols} extreme={extreme}");
                let mut ys = vec![vec![0.0f32; rows]; 4];
                let [y0, y1, y2, y3] = &mut ys[..] else { unreachable!() };
                // SAFETY: as above.
                unsafe {
                    x86_avx2::sums_avx2_lut6x4(&codes, rows, s, [&ta, &ta, &ta, &ta], [y0, y1, y2, y3])
                };
                assert!(ys.iter().all(|y| y == &want), "4 inputs, {rows}x{cols}");
            }
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
                unsafe { x86_avx2::tables_avx2(&qp, s, &mut ta) };
                assert!(tg.iter().zip(&ta).all(|(a, b)| a.0 == b.0), "tables differ, cols {cols}");
                let want: Vec<f32> =
                    matvec_i8_reference(&w, rows, cols, &q).iter().map(|&v| v as f32).collect();
                let mut y = vec![f32::NAN; rows];
                // SAFETY: AVX2 was detected; codes / tables / y have the sizes the kernel needs.
                unsafe { x86_avx2::sums_avx2_lut1(&codes, rows, s, &ta, &mut y) };
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
                    x86_avx2::sums_avx2_lut4(
                        &codes,
                        rows,
                        s,
                        [&ts[0], &ts[1], &ts[2], &ts[3]],
                        [y0, y1, y2, y3],
                    )
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
