//! WebAssembly SIMD128 ternary kernel ([`super::Kernel::Simd128I6`]), compiled when the
//! build enables `simd128` (`RUSTFLAGS="-C target-feature=+simd128"`; WebAssembly has no
//! run-time detection: a module with SIMD instructions does not load where SIMD is missing,
//! so the browser page ships a build without it next to this one).
//!
//! The 6-bit table kernel of [`super::lut8`], as on AVX2 and NEON: 32 rows per block,
//! `i8x16.swizzle` looks up the biased byte entries of the step's two pair tables under the
//! low and the high nibble of each row's code byte (it gives 0 for an index past 15, like
//! `vqtbl1q_u8`), the two entries are added as bytes (4..=252), and the 16 byte sums of a
//! register go to two 16-bit accumulators as in the AVX2 kernel: `w` takes the register as
//! eight u16 lanes (even row + 256 · odd row, wrapping) and `h` the odd rows alone (a shift
//! by 8). Every [`FLUSH6`] steps the even rows come back as `w − (h << 8)` and everything is
//! widened to 32 bits with the bias taken off. The integer sums are those of `avx2-i6`,
//! `neon-i6` and `portable-i6`, bit for bit. No multiply in the kernel or the table builder.

use std::arch::wasm32::*;

use super::lut_driver::{Bufs, Lut};
use super::lut8::{BIAS6, FLUSH6, LEVELS6, ROWS, StepTable6};

/// Byte indices into `[q0, −q0, q1, −q1, q2, −q2, q3, −q3]` of each entry's first and
/// second terms, for the step's two pairs (code c: w0 = c / 3 − 1, w1 = c % 3 − 1); 16
/// (past the vector) reads 0.
const fn terms(pair: u8, second: bool) -> [u8; 16] {
    let mut out = [16u8; 16];
    let mut c = 0;
    while c < 9 {
        let w = if second { c % 3 } else { c / 3 };
        let base = if second { 2 + 4 * pair } else { 4 * pair };
        out[c] = match w {
            0 => base + 1,
            2 => base,
            _ => 16,
        };
        c += 1;
    }
    out
}

const TERMS: [[u8; 16]; 4] = [terms(0, false), terms(0, true), terms(1, false), terms(1, true)];

/// A v128 from 16 bytes.
#[inline]
fn load16(b: &[u8]) -> v128 {
    assert!(b.len() >= 16);
    // SAFETY: b holds at least 16 bytes; v128_load has no alignment requirement.
    unsafe { v128_load(b.as_ptr() as *const v128) }
}

/// The 6-bit tables of `q` (values in −31..=31, at least `4 · steps` of them), equal byte
/// for byte to [`super::lut8::tables6_generic`].
#[inline(never)]
pub fn tables_simd128_i6(q: &[i8], steps: usize, t: &mut [StepTable6]) {
    assert!(q.len() >= 4 * steps && t.len() >= steps);
    let idx = TERMS.map(|i| load16(&i));
    let bias = u8x16_splat(BIAS6 as u8);
    for (q4, st) in q.chunks_exact(4).zip(t.iter_mut()).take(steps) {
        let v = u32x4_splat(u32::from_le_bytes([q4[0] as u8, q4[1] as u8, q4[2] as u8, q4[3] as u8]));
        let signed = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 0, 16, 1, 17, 2, 18, 3, 19>(v, i8x16_neg(v));
        let pair =
            |a: v128, b: v128| u8x16_add(u8x16_add(i8x16_swizzle(signed, a), i8x16_swizzle(signed, b)), bias);
        let (ta, tb) = (pair(idx[0], idx[1]), pair(idx[2], idx[3]));
        // SAFETY: a StepTable6 is 32 bytes: two 16-byte tables.
        unsafe {
            v128_store(st.0.as_mut_ptr() as *mut v128, ta);
            v128_store(st.0.as_mut_ptr().add(16) as *mut v128, tb);
        }
    }
}

/// Round `x` to −levels..=levels with one scale into `q` (returns the scale), equal to
/// [`super::lut8::quantize_to`] value for value (`f32x4.nearest` rounds ties to even).
pub fn quantize_to_simd128(x: &[f32], q: &mut [i8], levels: i8) -> f32 {
    assert!(q.len() >= x.len());
    let top = f32::from(levels);
    let (mut max, mut finite) = (f32x4_splat(0.0), u32x4_splat(u32::MAX));
    let inf = f32x4_splat(f32::INFINITY);
    let mut chunks = x.chunks_exact(4);
    for c in &mut chunks {
        let v = f32x4_abs(f32x4(c[0], c[1], c[2], c[3]));
        // |v| < inf is false for inf and NaN.
        finite = v128_and(finite, f32x4_lt(v, inf));
        max = f32x4_pmax(max, v);
    }
    let mut m = f32x4_extract_lane::<0>(max)
        .max(f32x4_extract_lane::<1>(max))
        .max(f32x4_extract_lane::<2>(max))
        .max(f32x4_extract_lane::<3>(max));
    let mut ok = u32x4_all_true(finite);
    for &v in chunks.remainder() {
        ok &= v.is_finite();
        m = m.max(v.abs());
    }
    if !ok || m == 0.0 {
        q[..x.len()].fill(0);
        return if ok { 0.0 } else { f32::NAN };
    }
    let inv = top / m;
    let vinv = f32x4_splat(inv);
    let mut chunks = x.chunks_exact(8);
    let mut outs = q.chunks_exact_mut(8);
    for (c, o) in (&mut chunks).zip(&mut outs) {
        let r =
            |s: &[f32]| i32x4_trunc_sat_f32x4(f32x4_nearest(f32x4_mul(f32x4(s[0], s[1], s[2], s[3]), vinv)));
        let h = i16x8_narrow_i32x4(r(&c[..4]), r(&c[4..]));
        let b = i8x16_narrow_i16x8(h, h);
        o.copy_from_slice(&i64x2_extract_lane::<0>(b).to_le_bytes().map(|v| v as i8));
    }
    let n = x.len() - chunks.remainder().len();
    for (o, &v) in q[n..].iter_mut().zip(chunks.remainder()) {
        *o = super::lut8::round_even(v * inv) as i8;
    }
    m / top
}

/// `blocks` consecutive slices of `len` items from the start of `s`, split off one by one
/// (no multiply, not even for an offset).
#[inline]
fn blocks_of<T>(mut s: &[T], len: usize, blocks: usize) -> impl Iterator<Item = &[T]> {
    (0..blocks).map(move |_| {
        let (b, rest) = s.split_at(len);
        s = rest;
        b
    })
}

/// Exact integer sums of `N` inputs' 6-bit tables against one matrix's codes (the layout of
/// [`super::lut8::lut_codes`], `steps` steps), as f32 into `ys[n][..rows]`; rows in order.
#[inline]
fn sums_lut6_simd128<const N: usize>(
    codes: &[u8],
    rows: usize,
    steps: usize,
    tables: [&[StepTable6]; N],
    mut ys: [&mut [f32]; N],
) {
    assert!(tables.iter().all(|t| t.len() >= steps));
    let Some((stride, blocks)) = super::lut8::block_shape(codes, rows, steps, &mut ys) else { return };
    // V8 (x86) rebuilds a splat constant from an immediate at every use in a loop, and lowers
    // `u8x16_shr` to a 16-bit shift plus such a mask: the mask made once (black_box keeps it
    // a value, not a constant) and the shift written as a 16-bit shift and an AND use two
    // instructions per nibble split instead of five.
    let nib = std::hint::black_box(u8x16_splat(0x0F));
    for (rb, block) in blocks_of(codes, stride, blocks).enumerate() {
        // 32-bit sums of rows 0..4, 4..8, ..., 28..32.
        let mut acc = [[u32x4_splat(0); 8]; N];
        let mut k0 = 0;
        for cb in block.chunks(FLUSH6 * ROWS) {
            // Per register of 16 rows: `w` (even + 256 · odd rows) and `h` (odd rows).
            let mut a16 = [[u16x8_splat(0); 4]; N];
            let mut k = k0;
            for b in cb.chunks_exact(ROWS) {
                let (b0, b1) = (load16(b), load16(&b[16..]));
                let (lo0, hi0) = (v128_and(b0, nib), v128_and(u16x8_shr(b0, 4), nib));
                let (lo1, hi1) = (v128_and(b1, nib), v128_and(u16x8_shr(b1, 4), nib));
                for (t, a) in tables.iter().zip(a16.iter_mut()) {
                    let t = &t[k].0;
                    let (ta, tb) = (load16(t), load16(&t[16..]));
                    let s0 = u8x16_add(i8x16_swizzle(ta, lo0), i8x16_swizzle(tb, hi0));
                    let s1 = u8x16_add(i8x16_swizzle(ta, lo1), i8x16_swizzle(tb, hi1));
                    a[0] = i16x8_add(a[0], s0);
                    a[1] = i16x8_add(a[1], u16x8_shr(s0, 8));
                    a[2] = i16x8_add(a[2], s1);
                    a[3] = i16x8_add(a[3], u16x8_shr(s1, 8));
                }
                k += 1;
            }
            // The bias of the chunk's steps: 2 · BIAS6 = 128 per step, a shift. The 32-bit
            // sums wrap as u32 and are read back as i32 (the true sums are small).
            let bias = u32x4_splat(((k - k0) << 7) as u32);
            for (acc, a) in acc.iter_mut().zip(&a16) {
                for half in 0..2 {
                    let (w, odd) = (a[2 * half], a[2 * half + 1]);
                    let even = i16x8_sub(w, i16x8_shl(odd, 8));
                    let r0 = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(even, odd);
                    let r1 = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(even, odd);
                    let parts = [
                        u32x4_extend_low_u16x8(r0),
                        u32x4_extend_high_u16x8(r0),
                        u32x4_extend_low_u16x8(r1),
                        u32x4_extend_high_u16x8(r1),
                    ];
                    for (j, p) in parts.into_iter().enumerate() {
                        acc[4 * half + j] = i32x4_sub(i32x4_add(acc[4 * half + j], p), bias);
                    }
                }
            }
            k0 = k;
        }
        for (acc, y) in acc.iter().zip(ys.iter_mut()) {
            let mut lanes = [0.0f32; ROWS];
            for (l, &a) in lanes.chunks_exact_mut(4).zip(acc) {
                let f = f32x4_convert_i32x4(a);
                l.copy_from_slice(&[
                    f32x4_extract_lane::<0>(f),
                    f32x4_extract_lane::<1>(f),
                    f32x4_extract_lane::<2>(f),
                    f32x4_extract_lane::<3>(f),
                ]);
            }
            let r0 = rb * ROWS;
            let n = ROWS.min(rows - r0);
            y[r0..r0 + n].copy_from_slice(&lanes[..n]);
        }
    }
}

/// The 6-bit table kernel for one input (a named symbol for the no-multiply check).
#[inline(never)]
pub fn sums_simd128_i6x1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable6], y: &mut [f32]) {
    sums_lut6_simd128::<1>(codes, rows, steps, [t], [y])
}

/// The 6-bit table kernel for four inputs: each code load serves the four.
#[inline(never)]
pub fn sums_simd128_i6x4(
    codes: &[u8],
    rows: usize,
    steps: usize,
    t: [&[StepTable6]; 4],
    ys: [&mut [f32]; 4],
) {
    sums_lut6_simd128::<4>(codes, rows, steps, t, ys)
}

/// The 6-bit table kernel as [`super::lut_driver`] runs it.
#[derive(Debug)]
pub struct Simd128I6;

thread_local! {
    static BUFS6: std::cell::RefCell<Bufs<StepTable6>> = std::cell::RefCell::new(Bufs::default());
}

impl Lut for Simd128I6 {
    type Table = StepTable6;
    const EMPTY: StepTable6 = StepTable6([0; 32]);
    fn bufs() -> &'static std::thread::LocalKey<std::cell::RefCell<Bufs<StepTable6>>> {
        &BUFS6
    }
    fn check() {
        // SIMD128 is on in this build (compile time); `FLASHLM_ISA=portable` caps it.
        assert!(crate::cpu::simd128(), "kernel {} does not run here", super::Kernel::Simd128I6.name());
    }
    unsafe fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
        quantize_to_simd128(x, q, LEVELS6)
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [StepTable6]) {
        tables_simd128_i6(q, steps, t)
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable6], y: &mut [f32]) {
        sums_simd128_i6x1(codes, rows, steps, t, y)
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[StepTable6]; 4], ys: [&mut [f32]; 4]) {
        sums_simd128_i6x4(codes, rows, steps, t, ys)
    }
}

#[cfg(test)]
mod tests {
    use super::super::six_bit_checks as check;
    use super::*;

    #[test]
    fn simd128_tables_equal_the_generic_ones() {
        check::tables_equal_the_generic_ones(tables_simd128_i6);
    }

    #[test]
    fn simd128_quantize_equals_the_portable_one() {
        check::quantize_equals_the_portable_one(quantize_to_simd128);
    }
}
