//! AVX-512 ternary kernels on f32 activations (exact): for every group of three inputs a
//! 27-entry table of all their ±/0 sums, built with masked adds and subtracts, selected per
//! row by a two-register permute (`vpermi2ps`), 16 rows per register.

use super::TernaryPlanes;
use super::lut8::{FLUSH, ROWS, StepTable};
use std::arch::x86_64::*;

/// Sixteen f32 lanes, aligned to a cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct Lanes(pub [f32; 16]);

thread_local! {
    /// Per-thread tables for [`sums_avx512`]: two registers (32 slots) per 3-input group.
    pub static TABLES: std::cell::RefCell<Vec<Lanes>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Slots (bit c for code c, 0..27) whose digit `pos` (0 = most significant, weight of
/// the group's first input) equals `val`.
const fn digit_mask(pos: u32, val: u32) -> u32 {
    let mut m = 0u32;
    let mut c = 0;
    while c < 27 {
        let digit = match pos {
            0 => c / 9,
            1 => (c / 3) % 3,
            _ => c % 3,
        };
        if digit == val {
            m |= 1 << c;
        }
        c += 1;
    }
    m
}
const PLUS: [u32; 3] = [digit_mask(0, 2), digit_mask(1, 2), digit_mask(2, 2)];
const MINUS: [u32; 3] = [digit_mask(0, 0), digit_mask(1, 0), digit_mask(2, 0)];

/// Slot i of the second table register holds code 16+i = −(code 10−i) (flipping every
/// digit negates the sum), so it is the first register reversed and negated.
const REVERSE: [i32; 16] = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0];

/// One group's two table registers from its three inputs.
#[inline(always)]
fn group_table(x0: f32, x1: f32, x2: f32, pair: &mut [Lanes]) {
    // SAFETY (whole function): only called from AVX-512F functions; pair has two Lanes,
    // each 64 bytes and 64-byte aligned.
    unsafe {
        let zero = _mm512_setzero_ps();
        // Codes 0..=15: the first digit is 0 (w0 = −1) for codes 0..=8, 1 (w0 = 0) after.
        let mut lo = _mm512_mask_sub_ps(zero, MINUS[0] as u16, zero, _mm512_set1_ps(x0));
        let x1b = _mm512_set1_ps(x1);
        lo = _mm512_mask_add_ps(lo, PLUS[1] as u16, lo, x1b);
        lo = _mm512_mask_sub_ps(lo, MINUS[1] as u16, lo, x1b);
        let x2b = _mm512_set1_ps(x2);
        lo = _mm512_mask_add_ps(lo, PLUS[2] as u16, lo, x2b);
        lo = _mm512_mask_sub_ps(lo, MINUS[2] as u16, lo, x2b);
        let rev = _mm512_loadu_si512(REVERSE.as_ptr() as *const _);
        let hi = _mm512_sub_ps(zero, _mm512_permutexvar_ps(rev, lo));
        _mm512_store_ps(pair[0].0.as_mut_ptr(), lo);
        _mm512_store_ps(pair[1].0.as_mut_ptr(), hi);
    }
}

/// Tables for the AVX-512 table kernel: two registers per group of three inputs of
/// `x[..cols]`, `quads * 4` groups (zeros past the end).
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline(never)]
pub unsafe fn sums_avx512_tables(x: &[f32], cols: usize, quads: usize, tables: &mut Vec<Lanes>) {
    if tables.len() < quads * 8 {
        tables.resize(quads * 8, Lanes([0.0; 16]));
    }
    let mut pairs = tables[..quads * 8].chunks_exact_mut(2);
    // Peel three inputs at a time (`chunks_exact(3)` would divide by 3 with a multiply).
    let mut rest = &x[..cols];
    while rest.len() >= 3 {
        let Some(pair) = pairs.next() else { break };
        group_table(rest[0], rest[1], rest[2], pair);
        rest = &rest[3..];
    }
    if !rest.is_empty() && rest.len() < 3 {
        let mut v = [0.0f32; 3];
        v[..rest.len()].copy_from_slice(rest);
        if let Some(pair) = pairs.next() {
            group_table(v[0], v[1], v[2], pair);
        }
    }
    for pair in pairs {
        group_table(0.0, 0.0, 0.0, pair);
    }
}

/// AVX-512 table kernel (T-MAC style, rows in lanes), given the tables of its input.
///
/// For every group of three inputs, [`sums_avx512_tables`] holds a 27-entry table of
/// all their ±/0 sums (two registers, built with masked adds and subtracts). For every
/// block of 16 rows, each code word selects one table entry per row with a two-register
/// permute (`vpermi2ps`) and the entries are added: one permute and one add per 48
/// weights, no horizontal sums.
///
/// # Safety
/// The CPU must support AVX-512F; `tables` built for `m.cols` and `m.quads`;
/// `y.len() >= m.rows`.
#[target_feature(enable = "avx512f")]
#[inline(never)]
pub unsafe fn sums_avx512_apply(m: &TernaryPlanes, tables: &[Lanes], y: &mut [f32]) {
    if m.quads == 0 {
        y[..m.rows].fill(0.0);
        return;
    }
    assert!(tables.len() >= m.quads * 8);
    let mut out = y[..m.rows].chunks_mut(16);
    for block in m.codes.chunks_exact(m.quads * 16) {
        let mut acc = [_mm512_setzero_ps(); 4];
        for (words, t) in block.chunks_exact(16).zip(tables.chunks_exact(8)) {
            // SAFETY: words holds 16 u32 (64 bytes); every Lanes is 64 bytes, aligned.
            unsafe {
                let idx = _mm512_loadu_si512(words.as_ptr() as *const _);
                let tp = t.as_ptr() as *const f32;
                // vpermi2ps reads bits 0..=3 (slot) and bit 4 (which register) of each
                // lane, so byte b of the code word is reached by a right shift.
                let i0 = idx;
                let i1 = _mm512_srli_epi32::<8>(idx);
                let i2 = _mm512_srli_epi32::<16>(idx);
                let i3 = _mm512_srli_epi32::<24>(idx);
                let r0 = _mm512_permutex2var_ps(_mm512_load_ps(tp), i0, _mm512_load_ps(tp.add(16)));
                let r1 = _mm512_permutex2var_ps(_mm512_load_ps(tp.add(32)), i1, _mm512_load_ps(tp.add(48)));
                let r2 = _mm512_permutex2var_ps(_mm512_load_ps(tp.add(64)), i2, _mm512_load_ps(tp.add(80)));
                let r3 = _mm512_permutex2var_ps(_mm512_load_ps(tp.add(96)), i3, _mm512_load_ps(tp.add(112)));
                acc[0] = _mm512_add_ps(acc[0], r0);
                acc[1] = _mm512_add_ps(acc[1], r1);
                acc[2] = _mm512_add_ps(acc[2], r2);
                acc[3] = _mm512_add_ps(acc[3], r3);
            }
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let Some(dst) = out.next() else { break };
        let mut lanes = Lanes([0.0; 16]);
        // SAFETY: lanes is 64 bytes, 64-byte aligned.
        unsafe { _mm512_store_ps(lanes.0.as_mut_ptr(), sum) };
        dst.copy_from_slice(&lanes.0[..dst.len()]);
    }
}

thread_local! {
    /// Per-thread tables of four inputs for [`sums_avx512_apply4`].
    pub static TABLES4: std::cell::RefCell<[Vec<Lanes>; 4]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()])
    };
}

/// [`sums_avx512_apply`] for four inputs at once: each code word is loaded and shifted
/// once and used with the four inputs' tables. Every input gets the same four
/// accumulators in the same order as in `sums_avx512_apply`, so results are identical.
///
/// # Safety
/// The CPU must support AVX-512F; every table built for `m.cols` and `m.quads`; every
/// `ys[i].len() >= m.rows`.
#[target_feature(enable = "avx512f")]
#[inline(never)]
pub unsafe fn sums_avx512_apply4(m: &TernaryPlanes, tables: [&[Lanes]; 4], ys: [&mut [f32]; 4]) {
    if m.quads == 0 {
        for y in ys {
            y[..m.rows].fill(0.0);
        }
        return;
    }
    assert!(tables.iter().all(|t| t.len() >= m.quads * 8));
    let mut outs = ys.map(|y| y[..m.rows].chunks_mut(16));
    for block in m.codes.chunks_exact(m.quads * 16) {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let mut tq = tables.map(|t| t.chunks_exact(8));
        for words in block.chunks_exact(16) {
            // SAFETY: words holds 16 u32 (64 bytes).
            let idx = unsafe { _mm512_loadu_si512(words.as_ptr() as *const _) };
            let i = [
                idx,
                _mm512_srli_epi32::<8>(idx),
                _mm512_srli_epi32::<16>(idx),
                _mm512_srli_epi32::<24>(idx),
            ];
            for (a, tq) in acc.iter_mut().zip(tq.iter_mut()) {
                let Some(t) = tq.next() else { return };
                let tp = t.as_ptr() as *const f32;
                for (b, a) in a.iter_mut().enumerate() {
                    // SAFETY: t holds 8 Lanes (64 bytes each, aligned): b * 32 + 32 <= 128.
                    let r = unsafe {
                        _mm512_permutex2var_ps(
                            _mm512_load_ps(tp.add(b * 32)),
                            i[b],
                            _mm512_load_ps(tp.add(b * 32 + 16)),
                        )
                    };
                    *a = _mm512_add_ps(*a, r);
                }
            }
        }
        for (a, out) in acc.iter().zip(outs.iter_mut()) {
            let sum = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
            let Some(dst) = out.next() else { return };
            let mut lanes = Lanes([0.0; 16]);
            // SAFETY: lanes is 64 bytes, 64-byte aligned.
            unsafe { _mm512_store_ps(lanes.0.as_mut_ptr(), sum) };
            dst.copy_from_slice(&lanes.0[..dst.len()]);
        }
    }
}

/// The int8 table kernel's tables of two steps laid out for 512-bit registers: for steps
/// 2j and 2j+1, four registers (low bytes of pair A, of pair B, high bytes of A, of B), each
/// holding step 2j's 16-byte table in its two low lanes and step 2j+1's in the two high ones
/// (the byte shuffle looks up within each 128-bit lane). Scratch built per input, not a
/// model layout: the codes are [`super::lut8::lut_codes`]' as for every CPU.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct PairTable(pub [u8; 256]);

/// Re-lay [`super::x86_avx2::tables_avx2`]'s tables (one [`StepTable`] per step) for
/// [`sums_avx512_lut`]: `ceil(steps / 2)` pair tables, the step past an odd count all zeros.
///
/// # Safety
/// The CPU must support AVX-512F; `t.len() >= steps`, `out.len() >= steps.div_ceil(2)`.
#[target_feature(enable = "avx512f")]
#[inline(never)]
pub unsafe fn tables_avx512_pairs(t: &[StepTable], steps: usize, out: &mut [PairTable]) {
    assert!(t.len() >= steps && out.len() >= steps.div_ceil(2));
    for (j, o) in out.iter_mut().enumerate().take(steps.div_ceil(2)) {
        // SAFETY: a StepTable is 64 bytes, 64-byte aligned; 2j < steps.
        let x = unsafe { _mm512_load_si512(t[2 * j].0.as_ptr() as *const _) };
        let y = if 2 * j + 1 < steps {
            // SAFETY: as above, 2j + 1 < steps.
            unsafe { _mm512_load_si512(t[2 * j + 1].0.as_ptr() as *const _) }
        } else {
            _mm512_setzero_si512()
        };
        // x = [loA, loB, hiA, hiB] of step 2j, y of step 2j+1; register i = [x_i, x_i, y_i,
        // y_i] (vshufi64x2 takes lanes 0 and 1 of the result from x, 2 and 3 from y).
        let p = o.0.as_mut_ptr() as *mut __m512i;
        // SAFETY: a PairTable is 256 bytes, 64-byte aligned: four registers.
        unsafe {
            _mm512_store_si512(p as *mut _, _mm512_shuffle_i64x2::<0b00_00_00_00>(x, y));
            _mm512_store_si512(p.add(1) as *mut _, _mm512_shuffle_i64x2::<0b01_01_01_01>(x, y));
            _mm512_store_si512(p.add(2) as *mut _, _mm512_shuffle_i64x2::<0b10_10_10_10>(x, y));
            _mm512_store_si512(p.add(3) as *mut _, _mm512_shuffle_i64x2::<0b11_11_11_11>(x, y));
        }
    }
}

/// [`super::x86_avx2::sums_lut_avx2`] with 512-bit registers: each register holds the code
/// bytes of two consecutive steps of one block of 32 rows (one 64-byte load), looked up in
/// [`PairTable`]s; the two halves hold the same rows and are added at the end. Exact, equal
/// to [`super::lut8::matvec_i8_reference`] bit for bit; the rows land as in the AVX2 kernel.
///
/// # Safety
/// The CPU must support AVX-512F and BW; `codes.len() >= ceil(rows / 32) * steps * 32`,
/// every `tables[n].len() >= ceil(steps / 2)` built by [`tables_avx512_pairs`], every
/// `ys[n].len() >= rows`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub unsafe fn sums_avx512_lut<const N: usize>(
    codes: &[u8],
    rows: usize,
    steps: usize,
    tables: [&[PairTable]; N],
    mut ys: [&mut [f32]; N],
) {
    let pairs = steps.div_ceil(2);
    assert!(tables.iter().all(|t| t.len() >= pairs));
    let Some((stride, blocks)) = super::lut8::block_shape(codes, rows, steps, &mut ys) else { return };
    let nib = _mm512_set1_epi8(0x0F);
    // Each lane sees one step per pair: FLUSH pairs between widenings, as in the AVX2 kernel.
    let flush = FLUSH;
    for (rb, block) in codes.chunks_exact(stride).take(blocks).enumerate() {
        let mut acc = [[_mm256_setzero_si256(); 4]; N];
        let mut j0 = 0;
        while j0 < pairs {
            let j1 = pairs.min(j0 + flush);
            let mut a16 = [[_mm512_setzero_si512(); 2]; N];
            for j in j0..j1 {
                let p = block.as_ptr().wrapping_add(2 * j * ROWS);
                // SAFETY: step 2j lies inside the block; step 2j + 1 too unless 2j + 1 ==
                // steps, when only the low 32 bytes are read (the high ones read as 0 and
                // select entry 0 of the all-zero table of the missing step).
                let b = unsafe {
                    if 2 * j + 1 < steps {
                        _mm512_loadu_si512(p as *const _)
                    } else {
                        _mm512_maskz_loadu_epi8(0xFFFF_FFFF, p as *const i8)
                    }
                };
                let i0 = _mm512_and_si512(b, nib);
                let i1 = _mm512_and_si512(_mm512_srli_epi16::<4>(b), nib);
                for n in 0..N {
                    // SAFETY: j < pairs <= tables[n].len(); a PairTable is four registers.
                    let (l0, l1, h0, h1) = unsafe {
                        let t = tables[n].as_ptr().add(j) as *const __m512i;
                        (
                            _mm512_load_si512(t as *const _),
                            _mm512_load_si512(t.add(1) as *const _),
                            _mm512_load_si512(t.add(2) as *const _),
                            _mm512_load_si512(t.add(3) as *const _),
                        )
                    };
                    let la = _mm512_shuffle_epi8(l0, i0);
                    let ha = _mm512_shuffle_epi8(h0, i0);
                    let lb = _mm512_shuffle_epi8(l1, i1);
                    let hb = _mm512_shuffle_epi8(h1, i1);
                    let a = &mut a16[n];
                    a[0] = _mm512_add_epi16(a[0], _mm512_unpacklo_epi8(la, ha));
                    a[1] = _mm512_add_epi16(a[1], _mm512_unpackhi_epi8(la, ha));
                    a[0] = _mm512_add_epi16(a[0], _mm512_unpacklo_epi8(lb, hb));
                    a[1] = _mm512_add_epi16(a[1], _mm512_unpackhi_epi8(lb, hb));
                }
            }
            for (acc, a) in acc.iter_mut().zip(&a16) {
                // The two step halves hold the same rows: widen each to int32 and add.
                let half = |v: __m512i, hi: bool| {
                    let h = if hi { _mm512_extracti64x4_epi64::<1>(v) } else { _mm512_castsi512_si256(v) };
                    (
                        _mm256_cvtepi16_epi32(_mm256_castsi256_si128(h)),
                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(h)),
                    )
                };
                for (k, v) in a.iter().enumerate() {
                    let (lo0, lo1) = half(*v, false);
                    let (hi0, hi1) = half(*v, true);
                    // v = a[0]: rows 0..8 (lanes 0 and 2), 16..24 (lanes 1 and 3); a[1]: 8..16, 24..32.
                    acc[k] = _mm256_add_epi32(acc[k], _mm256_add_epi32(lo0, hi0));
                    acc[k + 2] = _mm256_add_epi32(acc[k + 2], _mm256_add_epi32(lo1, hi1));
                }
            }
            j0 = j1;
        }
        for (acc, y) in acc.iter().zip(ys.iter_mut()) {
            super::x86_avx2::store_block(acc, &mut y[..rows], rb * ROWS);
        }
    }
}

/// [`sums_avx512_lut`] for one input.
///
/// # Safety
/// As [`sums_avx512_lut`].
#[target_feature(enable = "avx512f,avx512bw")]
#[inline(never)]
pub unsafe fn sums_avx512_lut1(codes: &[u8], rows: usize, steps: usize, t: &[PairTable], y: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe { sums_avx512_lut::<1>(codes, rows, steps, [t], [y]) }
}

/// [`sums_avx512_lut`] for four inputs.
///
/// # Safety
/// As [`sums_avx512_lut`].
#[target_feature(enable = "avx512f,avx512bw")]
#[inline(never)]
pub unsafe fn sums_avx512_lut4(
    codes: &[u8],
    rows: usize,
    steps: usize,
    t: [&[PairTable]; 4],
    ys: [&mut [f32]; 4],
) {
    // SAFETY: forwarded.
    unsafe { sums_avx512_lut::<4>(codes, rows, steps, t, ys) }
}
