//! NEON (aarch64) ternary kernels. NEON is part of every aarch64 CPU, so nothing here needs
//! run-time detection and the kernels run wherever the target does.
//!
//! * [`sums_neon_i6x1`] / [`sums_neon_i6x4`] ([`super::Kernel::NeonI6`], the default on
//!   aarch64): the 6-bit table kernel of [`super::lut8`], 32 rows per block. `vqtbl1q_u8`
//!   plays the part of `vpshufb`: the low and the high nibble of each row's code byte select
//!   the biased byte entries of the step's two pair tables, the two entries are added as
//!   bytes (4..=252) and widened into 16-bit sums by `uaddw` / `uaddw2`, which NEON has
//!   as one instruction each, so the AVX2 kernel's `w − (h << 8)` split is not needed. Every
//!   [`FLUSH6`] steps the 16-bit sums are widened again into 32-bit ones and the bias comes
//!   off. The integer sums are those of `avx2-i6` and `portable-i6`, bit for bit.
//!   Per 128 weights (one step of 32 rows): two code loads, two ANDs, two shifts, two table
//!   loads, four lookups, two byte adds and four widening adds; no multiply.
//! * [`tables_neon_i6`]: the step tables, byte for byte those of
//!   [`super::lut8::tables6_generic`], built with lookups and adds.
//! * [`quantize_to_neon`]: the input rounded to −levels..=levels, equal to
//!   [`super::lut8::quantize_to`] (`fcvtns` rounds to nearest, ties to even, as
//!   [`super::lut8::round_even`] does).
//! * [`sums_neon_exact`] ([`super::Kernel::Neon`]): f32 activations, exact: for every group
//!   of three inputs the eight subset sums (an 8-float table, two registers), 4 rows per
//!   register; each row's plus and minus bits select a subset sum per lane with
//!   `vqtbl2q_u8` on the table's bytes, added and subtracted. The same codes as `avx2`.

use std::arch::aarch64::*;

use super::TernaryPlanes;
use super::lut_driver::{Bufs, Lut};
use super::lut8::{BIAS6, FLUSH6, LEVELS6, ROWS, StepTable6};

/// Byte indices into `[q0, −q0, q1, −q1, q2, −q2, q3, −q3, 0, ...]` of the first weight's
/// term of every entry of a pair's table (code c: w0 = c / 3 − 1; index 8 reads 0), for the
/// step's first pair; the second pair's indices are these + 4.
const fn first_terms(pair: u8) -> [u8; 16] {
    let mut out = [8u8; 16];
    let mut c = 0;
    while c < 9 {
        out[c] = match c / 3 {
            0 => 1 + 4 * pair,
            2 => 4 * pair,
            _ => 8,
        };
        c += 1;
    }
    out
}

/// As [`first_terms`] for the second weight of the pair (w1 = c % 3 − 1).
const fn second_terms(pair: u8) -> [u8; 16] {
    let mut out = [8u8; 16];
    let mut c = 0;
    while c < 9 {
        out[c] = match c % 3 {
            0 => 3 + 4 * pair,
            2 => 2 + 4 * pair,
            _ => 8,
        };
        c += 1;
    }
    out
}

const TERMS: [[u8; 16]; 4] = [first_terms(0), second_terms(0), first_terms(1), second_terms(1)];

/// The 6-bit tables of `q` (values in −31..=31, at least `4 · steps` of them), equal byte
/// for byte to [`super::lut8::tables6_generic`]: per step the eight signed inputs
/// `[q0, −q0, ..., q3, −q3]` and a zero, two lookups and an add per pair table, plus
/// [`BIAS6`] (entries past 8 are 0 + bias, as in the generic builder).
#[inline(never)]
#[target_feature(enable = "neon")]
pub fn tables_neon_i6(q: &[i8], steps: usize, t: &mut [StepTable6]) {
    assert!(q.len() >= 4 * steps && t.len() >= steps);
    // SAFETY: TERMS holds four 16-byte arrays.
    let idx = unsafe { TERMS.map(|i| vld1q_u8(i.as_ptr())) };
    let bias = vdupq_n_u8(BIAS6 as u8);
    for (q4, st) in q.chunks_exact(4).zip(t.iter_mut()).take(steps) {
        let word = u32::from_le_bytes([q4[0] as u8, q4[1] as u8, q4[2] as u8, q4[3] as u8]);
        let v = vcreate_s8(u64::from(word));
        let signed = vreinterpretq_u8_s8(vcombine_s8(vzip1_s8(v, vneg_s8(v)), vdup_n_s8(0)));
        let pair = |a: uint8x16_t, b: uint8x16_t| {
            vaddq_u8(vaddq_u8(vqtbl1q_u8(signed, a), vqtbl1q_u8(signed, b)), bias)
        };
        let (ta, tb) = (pair(idx[0], idx[1]), pair(idx[2], idx[3]));
        // SAFETY: a StepTable6 is 32 bytes: two 16-byte tables.
        unsafe {
            vst1q_u8(st.0.as_mut_ptr(), ta);
            vst1q_u8(st.0.as_mut_ptr().add(16), tb);
        }
    }
}

/// Round `x` to −levels..=levels with one scale into `q` (returns the scale), equal to
/// [`super::lut8::quantize_to`] value for value (NaN / inf: scale NaN, q zeros; all zeros:
/// scale 0).
#[target_feature(enable = "neon")]
pub fn quantize_to_neon(x: &[f32], q: &mut [i8], levels: i8) -> f32 {
    assert!(q.len() >= x.len());
    let top = f32::from(levels);
    let (mut max, mut finite) = (vdupq_n_f32(0.0), vdupq_n_u32(u32::MAX));
    let inf = vdupq_n_f32(f32::INFINITY);
    let mut chunks = x.chunks_exact(4);
    for c in &mut chunks {
        // SAFETY: c holds four f32.
        let v = vabsq_f32(unsafe { vld1q_f32(c.as_ptr()) });
        // |v| < inf is false for inf and NaN.
        finite = vandq_u32(finite, vcltq_f32(v, inf));
        max = vmaxq_f32(max, v);
    }
    let mut m = vmaxvq_f32(max);
    let mut ok = vminvq_u32(finite) != 0;
    for &v in chunks.remainder() {
        ok &= v.is_finite();
        m = m.max(v.abs());
    }
    if !ok || m == 0.0 {
        q[..x.len()].fill(0);
        return if ok { 0.0 } else { f32::NAN };
    }
    let inv = top / m;
    let vinv = vdupq_n_f32(inv);
    let mut chunks = x.chunks_exact(8);
    let mut outs = q.chunks_exact_mut(8);
    for (c, o) in (&mut chunks).zip(&mut outs) {
        // SAFETY: c holds eight f32, o eight bytes.
        unsafe {
            let a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(c.as_ptr()), vinv));
            let b = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(c.as_ptr().add(4)), vinv));
            let h = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
            vst1_s8(o.as_mut_ptr(), vmovn_s16(h));
        }
    }
    let n = x.len() - chunks.remainder().len();
    for (o, &v) in q[n..].iter_mut().zip(chunks.remainder()) {
        *o = super::lut8::round_even(v * inv) as i8;
    }
    m / top
}

/// Exact integer sums of `N` inputs' 6-bit tables against one matrix's codes (the layout of
/// [`super::lut8::lut_codes`], `steps` steps), as f32 into `ys[n][..rows]`; rows in order.
#[inline]
#[target_feature(enable = "neon")]
fn sums_lut6_neon<const N: usize>(
    codes: &[u8],
    rows: usize,
    steps: usize,
    tables: [&[StepTable6]; N],
    mut ys: [&mut [f32]; N],
) {
    assert!(tables.iter().all(|t| t.len() >= steps));
    let Some((stride, blocks)) = super::lut8::block_shape(codes, rows, steps, &mut ys) else { return };
    let nib = vdupq_n_u8(0x0F);
    for (rb, block) in blocks_of(codes, stride, blocks).enumerate() {
        // 32-bit sums of rows 0..4, 4..8, ..., 28..32.
        let mut acc = [[vdupq_n_u32(0); 8]; N];
        for (cb, tk) in block.chunks(FLUSH6 * ROWS).zip(step_chunks(tables, steps)) {
            // 16-bit sums of rows 0..8, 8..16, 16..24, 24..32.
            let mut a16 = [[vdupq_n_u16(0); 4]; N];
            let n_steps = cb.len() / ROWS;
            for (k, b) in cb.chunks_exact(ROWS).enumerate() {
                // SAFETY: b holds 32 code bytes.
                let (b0, b1) = unsafe { (vld1q_u8(b.as_ptr()), vld1q_u8(b.as_ptr().add(16))) };
                let (lo0, hi0) = (vandq_u8(b0, nib), vshrq_n_u8::<4>(b0));
                let (lo1, hi1) = (vandq_u8(b1, nib), vshrq_n_u8::<4>(b1));
                for (t, a) in tk.iter().zip(a16.iter_mut()) {
                    // SAFETY: a StepTable6 is 32 bytes: two 16-byte tables.
                    let (ta, tb) = unsafe {
                        let p = t[k].0.as_ptr();
                        (vld1q_u8(p), vld1q_u8(p.add(16)))
                    };
                    let s0 = vaddq_u8(vqtbl1q_u8(ta, lo0), vqtbl1q_u8(tb, hi0));
                    let s1 = vaddq_u8(vqtbl1q_u8(ta, lo1), vqtbl1q_u8(tb, hi1));
                    a[0] = vaddw_u8(a[0], vget_low_u8(s0));
                    a[1] = vaddw_high_u8(a[1], s0);
                    a[2] = vaddw_u8(a[2], vget_low_u8(s1));
                    a[3] = vaddw_high_u8(a[3], s1);
                }
            }
            // The bias of the chunk's steps: 2 · BIAS6 = 128 per step, a shift. The 32-bit
            // sums wrap as u32 and are read back as i32 (the true sums are small).
            let bias = vdupq_n_u32((n_steps << 7) as u32);
            for (acc, a) in acc.iter_mut().zip(&a16) {
                for (j, &v) in a.iter().enumerate() {
                    acc[2 * j] = vsubq_u32(vaddw_u16(acc[2 * j], vget_low_u16(v)), bias);
                    acc[2 * j + 1] = vsubq_u32(vaddw_high_u16(acc[2 * j + 1], v), bias);
                }
            }
        }
        for (acc, y) in acc.iter().zip(ys.iter_mut()) {
            store_block(acc, &mut y[..rows], rb * ROWS);
        }
    }
}

/// `blocks` consecutive slices of `len` items from the start of `s`, split off one by one
/// (no multiply, not even for an offset: `scripts/check-no-multiply.sh` reads the kernels).
#[inline]
fn blocks_of<T>(mut s: &[T], len: usize, blocks: usize) -> impl Iterator<Item = &[T]> {
    (0..blocks).map(move |_| {
        let (b, rest) = s.split_at(len);
        s = rest;
        b
    })
}

/// The tables of each chunk of [`FLUSH6`] steps, for every input.
fn step_chunks<'a, const N: usize>(
    tables: [&'a [StepTable6]; N],
    steps: usize,
) -> impl Iterator<Item = [&'a [StepTable6]; N]> {
    (0..steps).step_by(FLUSH6).map(move |k0| tables.map(|t| &t[k0..steps.min(k0 + FLUSH6)]))
}

/// Store a block's 32 sums (rows r0..r0 + 32, as i32 in u32 lanes) as f32 into `y` (exact:
/// below 2^24); rows past `y.len()` are dropped.
#[inline]
#[target_feature(enable = "neon")]
fn store_block(acc: &[uint32x4_t; 8], y: &mut [f32], r0: usize) {
    let mut lanes = [0.0f32; ROWS];
    for (j, &a) in acc.iter().enumerate() {
        // SAFETY: lanes holds 32 f32; 4j + 4 <= 32.
        unsafe { vst1q_f32(lanes.as_mut_ptr().add(4 * j), vcvtq_f32_s32(vreinterpretq_s32_u32(a))) };
    }
    let n = ROWS.min(y.len() - r0);
    y[r0..r0 + n].copy_from_slice(&lanes[..n]);
}

/// The 6-bit table kernel for one input (a named symbol for `scripts/check-no-multiply.sh`).
#[inline(never)]
#[target_feature(enable = "neon")]
pub fn sums_neon_i6x1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable6], y: &mut [f32]) {
    sums_lut6_neon::<1>(codes, rows, steps, [t], [y])
}

/// The 6-bit table kernel for four inputs: each code load serves the four.
#[inline(never)]
#[target_feature(enable = "neon")]
pub fn sums_neon_i6x4(codes: &[u8], rows: usize, steps: usize, t: [&[StepTable6]; 4], ys: [&mut [f32]; 4]) {
    sums_lut6_neon::<4>(codes, rows, steps, t, ys)
}

/// Byte offsets of one f32 lane: added to `4 · subset` to address a table entry's bytes.
const LANE_BYTES: [u8; 16] = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3];

/// Code byte of each of four rows, repeated over its lane's four bytes, for row quarter
/// `h` (rows 4h..4h + 4 of a block of 8 codes words): byte `b` of word `r` is at `4r + b`.
const fn spread(h: usize, b: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = ((4 * h + i / 4) * 4 + b) as u8;
        i += 1;
    }
    out
}

/// The exact kernel: `y[r]` = Σ over groups of three inputs of (subset sum of the plus bits
/// − subset sum of the minus bits), f32, with [`TernaryPlanes::codes8`] (8 rows per block,
/// byte b of a word = group 4q + b's plus bits in bits 0..3, minus bits in 4..7). For each
/// group the eight subset sums `[0, a, b, a+b, c, a+c, b+c, a+b+c]` are built with adds
/// into `tables`; per 4 rows the code bytes are spread over their lanes' bytes (`tbl`),
/// masked, shifted to byte offsets and looked up in the 32-byte table (`vqtbl2q_u8`).
/// `x.len() >= m.cols`, `y.len() >= m.rows`.
#[inline(never)]
#[target_feature(enable = "neon")]
pub fn sums_neon_exact(m: &TernaryPlanes, x: &[f32], y: &mut [f32], tables: &mut Vec<[f32; 8]>) {
    assert!(x.len() >= m.cols && y.len() >= m.rows);
    if m.quads == 0 {
        y[..m.rows].fill(0.0);
        return;
    }
    tables.clear();
    tables.resize(m.quads * 4, [0.0; 8]);
    // Groups split off one by one (no division by 3, no multiply).
    let mut xs = &x[..m.cols];
    for t in tables.iter_mut() {
        let (g, rest) = xs.split_at(xs.len().min(3));
        xs = rest;
        let mut v = [0.0f32; 3];
        v[..g.len()].copy_from_slice(g);
        let [a, b, c] = v;
        let ab = a + b;
        *t = [0.0, a, b, ab, c, a + c, b + c, ab + c];
    }
    // SAFETY: the constants are 16-byte arrays.
    let (lane, low3) = unsafe { (vld1q_u8(LANE_BYTES.as_ptr()), vdupq_n_u8(7)) };
    // SAFETY: as above.
    let spreads: [[uint8x16_t; 4]; 2] =
        std::array::from_fn(|h| std::array::from_fn(|b| unsafe { vld1q_u8(spread(h, b).as_ptr()) }));
    assert!(m.codes8.len() / (m.quads * 8) >= m.rows.div_ceil(8), "codes shorter than the rows");
    for (block, dst) in blocks_of(&m.codes8, m.quads * 8, m.rows.div_ceil(8)).zip(y[..m.rows].chunks_mut(8)) {
        let mut pos = [vdupq_n_f32(0.0); 2];
        let mut neg = [vdupq_n_f32(0.0); 2];
        for (words, t4) in block.chunks_exact(8).zip(tables.chunks_exact(4)) {
            // SAFETY: words holds 8 u32 (32 bytes).
            let codes = unsafe {
                uint8x16x2_t(
                    vld1q_u8(words.as_ptr() as *const u8),
                    vld1q_u8((words.as_ptr() as *const u8).add(16)),
                )
            };
            for (b, t) in t4.iter().enumerate() {
                // SAFETY: t holds eight f32 (32 bytes).
                let tab = unsafe {
                    uint8x16x2_t(
                        vld1q_u8(t.as_ptr() as *const u8),
                        vld1q_u8((t.as_ptr() as *const u8).add(16)),
                    )
                };
                for h in 0..2 {
                    let c = vqtbl2q_u8(codes, spreads[h][b]);
                    let p = vorrq_u8(vshlq_n_u8::<2>(vandq_u8(c, low3)), lane);
                    let n = vorrq_u8(vshlq_n_u8::<2>(vandq_u8(vshrq_n_u8::<4>(c), low3)), lane);
                    pos[h] = vaddq_f32(pos[h], vreinterpretq_f32_u8(vqtbl2q_u8(tab, p)));
                    neg[h] = vaddq_f32(neg[h], vreinterpretq_f32_u8(vqtbl2q_u8(tab, n)));
                }
            }
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: lanes holds eight f32.
        unsafe {
            vst1q_f32(lanes.as_mut_ptr(), vsubq_f32(pos[0], neg[0]));
            vst1q_f32(lanes.as_mut_ptr().add(4), vsubq_f32(pos[1], neg[1]));
        }
        dst.copy_from_slice(&lanes[..dst.len()]);
    }
}

thread_local! {
    /// Per-thread subset-sum tables of [`sums_neon_exact`].
    pub static TABLES8: std::cell::RefCell<Vec<[f32; 8]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The 6-bit table kernel as [`super::lut_driver`] runs it.
#[derive(Debug)]
pub struct NeonI6;

thread_local! {
    static BUFS6: std::cell::RefCell<Bufs<StepTable6>> = std::cell::RefCell::new(Bufs::default());
}

impl Lut for NeonI6 {
    type Table = StepTable6;
    const EMPTY: StepTable6 = StepTable6([0; 32]);
    fn bufs() -> &'static std::thread::LocalKey<std::cell::RefCell<Bufs<StepTable6>>> {
        &BUFS6
    }
    fn check() {
        // NEON is part of every aarch64 CPU; `FLASHLM_ISA=portable` caps it.
        assert!(crate::cpu::neon(), "kernel {} does not run here", super::Kernel::NeonI6.name());
    }
    unsafe fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
        // SAFETY: forwarded (NEON, the target's baseline).
        unsafe { quantize_to_neon(x, q, LEVELS6) }
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [StepTable6]) {
        // SAFETY: forwarded (NEON, the target's baseline).
        unsafe { tables_neon_i6(q, steps, t) }
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable6], y: &mut [f32]) {
        // SAFETY: forwarded (NEON, the target's baseline).
        unsafe { sums_neon_i6x1(codes, rows, steps, t, y) }
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[StepTable6]; 4], ys: [&mut [f32]; 4]) {
        // SAFETY: forwarded (NEON, the target's baseline).
        unsafe { sums_neon_i6x4(codes, rows, steps, t, ys) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::six_bit_checks as check;
    use super::*;

    #[test]
    fn neon_tables_equal_the_generic_ones() {
        // SAFETY: NEON is part of every aarch64 CPU.
        check::tables_equal_the_generic_ones(|q, steps, t| unsafe { tables_neon_i6(q, steps, t) });
    }

    #[test]
    fn neon_quantize_equals_the_portable_one() {
        // SAFETY: NEON is part of every aarch64 CPU.
        check::quantize_equals_the_portable_one(|x, q, levels| unsafe { quantize_to_neon(x, q, levels) });
    }
}
