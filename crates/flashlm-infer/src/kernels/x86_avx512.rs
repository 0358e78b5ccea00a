//! AVX-512 ternary kernels on f32 activations (exact): for every group of three inputs a
//! 27-entry table of all their ±/0 sums, built with masked adds and subtracts, selected per
//! row by a two-register permute (`vpermi2ps`), 16 rows per register.

use super::TernaryPlanes;
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
