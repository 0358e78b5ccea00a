//! AVX2 ternary kernels:
//! * [`sums_avx2`]: f32 activations (exact), 8 rows per register: for every group of three
//!   inputs the 8 subset sums, selected by the plus and the minus bits (`vpermps`).
//! * [`sums_avx2_lut1`] / [`sums_avx2_lut4`]: int8 activations, 32 rows per register,
//!   `vpshufb` look-up tables of pair sums ([`super::lut8`] describes the arithmetic), with
//!   the quantiser [`quantize_to_avx2`] and the table builder [`tables_avx2`].

use super::TernaryPlanes;
use super::lut8::{BIAS6, FLUSH, FLUSH6, ROWS, StepTable, StepTable6};
use std::arch::x86_64::*;

/// Eight f32 lanes, aligned to 32 bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Lanes8(pub [f32; 8]);

thread_local! {
    /// Per-thread tables for [`sums_avx2`]: one register (8 subset sums) per group.
    pub static TABLES8: std::cell::RefCell<Vec<Lanes8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// AVX2 table kernel (rows in lanes).
///
/// For every group of three inputs, the 8 subset sums are built with scalar adds. For
/// every block of 8 rows, the plus bits and the minus bits of a group each select a
/// subset sum per row (`vpermps`, which reads bits 0..=2 of each lane); the first is
/// added and the second subtracted.
///
/// # Safety
/// The CPU must support AVX2; `x.len() >= m.words * 64`, `y.len() >= m.rows`.
#[target_feature(enable = "avx2")]
#[inline(never)]
pub unsafe fn sums_avx2(m: &TernaryPlanes, x: &[f32], y: &mut [f32], tables: &mut Vec<Lanes8>) {
    if m.quads == 0 {
        y[..m.rows].fill(0.0);
        return;
    }
    tables.clear();
    tables.resize(m.quads * 4, Lanes8([0.0; 8]));
    let mut xs = &x[..m.cols];
    for t in tables.iter_mut() {
        let mut v = [0.0f32; 3];
        let n = xs.len().min(3);
        v[..n].copy_from_slice(&xs[..n]);
        xs = &xs[n..];
        let [a, b, c] = v;
        let ab = a + b;
        t.0 = [0.0, a, b, ab, c, a + c, b + c, ab + c];
    }
    let tables = &tables[..];
    let mut out = y[..m.rows].chunks_mut(8);
    for block in m.codes8.chunks_exact(m.quads * 8) {
        let mut pos = [_mm256_setzero_ps(); 4];
        let mut neg = [_mm256_setzero_ps(); 4];
        for (words, t) in block.chunks_exact(8).zip(tables.chunks_exact(4)) {
            // SAFETY: words holds 8 u32 (32 bytes); every Lanes8 is 32 bytes, aligned.
            unsafe {
                let idx = _mm256_loadu_si256(words.as_ptr() as *const __m256i);
                let tp = t.as_ptr() as *const f32;
                let t0 = _mm256_load_ps(tp);
                let t1 = _mm256_load_ps(tp.add(8));
                let t2 = _mm256_load_ps(tp.add(16));
                let t3 = _mm256_load_ps(tp.add(24));
                pos[0] = _mm256_add_ps(pos[0], _mm256_permutevar8x32_ps(t0, idx));
                neg[0] = _mm256_add_ps(neg[0], _mm256_permutevar8x32_ps(t0, _mm256_srli_epi32::<4>(idx)));
                pos[1] = _mm256_add_ps(pos[1], _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32::<8>(idx)));
                neg[1] = _mm256_add_ps(neg[1], _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32::<12>(idx)));
                pos[2] = _mm256_add_ps(pos[2], _mm256_permutevar8x32_ps(t2, _mm256_srli_epi32::<16>(idx)));
                neg[2] = _mm256_add_ps(neg[2], _mm256_permutevar8x32_ps(t2, _mm256_srli_epi32::<20>(idx)));
                pos[3] = _mm256_add_ps(pos[3], _mm256_permutevar8x32_ps(t3, _mm256_srli_epi32::<24>(idx)));
                neg[3] = _mm256_add_ps(neg[3], _mm256_permutevar8x32_ps(t3, _mm256_srli_epi32::<28>(idx)));
            }
        }
        let p = _mm256_add_ps(_mm256_add_ps(pos[0], pos[1]), _mm256_add_ps(pos[2], pos[3]));
        let n = _mm256_add_ps(_mm256_add_ps(neg[0], neg[1]), _mm256_add_ps(neg[2], neg[3]));
        let Some(dst) = out.next() else { break };
        let mut lanes = Lanes8([0.0; 8]);
        // SAFETY: lanes is 32 bytes, 32-byte aligned.
        unsafe { _mm256_store_ps(lanes.0.as_mut_ptr(), _mm256_sub_ps(p, n)) };
        dst.copy_from_slice(&lanes.0[..dst.len()]);
    }
}

/// [`super::lut8::quantize_to`] with AVX2, equal to it bit for bit; `q` gets `x.len()`
/// values.
///
/// # Safety
/// The CPU must support AVX2; `q.len() >= x.len()`.
#[target_feature(enable = "avx2")]
#[inline(never)]
pub unsafe fn quantize_to_avx2(x: &[f32], q: &mut [i8], levels: i8) -> f32 {
    let top = f32::from(levels);
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
    let inv = top / max;
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
        *o = super::lut8::round_even(v * inv) as i8;
    }
    max / top
}

/// A register's 32 bytes: `lo` in the low 128-bit lane, `hi` in the high one.
const fn lanes(lo: [i8; 16], hi: [i8; 16]) -> [i8; 32] {
    let mut v = [0i8; 32];
    let mut i = 0;
    while i < 16 {
        v[i] = lo[i];
        v[16 + i] = hi[i];
        i += 1;
    }
    v
}

/// Sign patterns of a pair's 16 entries, in both lanes: byte c holds w0 (of `W0`) and w1
/// (of `W1`) of code c ([`super::lut8::code_weights`]); 0 past code 8.
const W0_16: [i8; 16] = [-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const W1_16: [i8; 16] = [-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0];
const W0: [i8; 32] = lanes(W0_16, W0_16);
const W1: [i8; 32] = lanes(W1_16, W1_16);

/// Byte shuffles that spread a step's four inputs `[a_A, b_A, a_B, b_B]` (repeated in every
/// dword) into `a_A` / `b_A` across the low lane and `a_B` / `b_B` across the high one.
const SPREAD_A: [i8; 32] = lanes([0; 16], [2; 16]);
const SPREAD_B: [i8; 32] = lanes([1; 16], [3; 16]);

/// One step's pair entries in bytes: pair A's 16 in the low lane, pair B's in the high one.
/// Returns (entries mod 256, sign masks): `±a ± b` with wrapping byte adds gives the low
/// byte of the exact sum, and a saturating add keeps its sign (the high byte is 0 or −1).
#[target_feature(enable = "avx2")]
#[inline]
fn step_entries(q4: *const i8, w: [__m256i; 4]) -> (__m256i, __m256i) {
    let [w0, w1, sa, sb] = w;
    // SAFETY: the callers pass a pointer to four readable bytes.
    let v = _mm256_set1_epi32(unsafe { (q4 as *const i32).read_unaligned() });
    let a = _mm256_sign_epi8(_mm256_shuffle_epi8(v, sa), w0);
    let b = _mm256_sign_epi8(_mm256_shuffle_epi8(v, sb), w1);
    (_mm256_add_epi8(a, b), _mm256_cmpgt_epi8(_mm256_setzero_si256(), _mm256_adds_epi8(a, b)))
}

/// The constant registers of [`step_entries`].
#[target_feature(enable = "avx2")]
#[inline]
fn entry_patterns() -> [__m256i; 4] {
    // SAFETY: each constant is 32 bytes.
    unsafe { [W0, W1, SPREAD_A, SPREAD_B].map(|c| _mm256_loadu_si256(c.as_ptr() as *const __m256i)) }
}

/// The tables of `q`, equal byte for byte to [`super::lut8::tables_generic`], one step per
/// register pair: the four inputs broadcast, spread per lane (`vpshufb`), signed per entry
/// (`vpsignb`), added; no multiply.
///
/// # Safety
/// The CPU must support AVX2; `q.len() >= 4 * steps`, `t.len() >= steps`.
#[target_feature(enable = "avx2")]
#[inline(never)]
pub unsafe fn tables_avx2(q: &[i8], steps: usize, t: &mut [StepTable]) {
    assert!(q.len() >= 4 * steps && t.len() >= steps);
    let w = entry_patterns();
    for (q4, st) in q.chunks_exact(4).zip(t.iter_mut()).take(steps) {
        let (lo, hi) = step_entries(q4.as_ptr(), w);
        let p = st.0.as_mut_ptr() as *mut __m256i;
        // SAFETY: a StepTable is 64 bytes, 64-byte aligned.
        unsafe {
            _mm256_store_si256(p, lo);
            _mm256_store_si256(p.add(1), hi);
        }
    }
}

/// What distinguishes the two AVX2 table kernels in [`lut_blocks`]: steps between
/// widenings, the per-step lookup and add, and the widening.
struct Arith<S, W> {
    flush: usize,
    step: S,
    widen: W,
}

/// The loop both AVX2 table kernels share: for each block of 32 rows and each step, the
/// code byte of every row split into its two nibbles (`i0`: the step's first pair, `i1`:
/// its second), handed with each input's table of that step to `step`, which adds the
/// looked-up entries to that input's two 16-bit accumulators. Every `flush` steps `widen`
/// adds those to the block's int32 sums (given the number of steps in the chunk), and at
/// the end the sums are stored as f32 (exact: |sum| <= 127 · cols < 2^24). `step` must
/// keep its accumulators exact over `flush` steps.
///
/// # Safety
/// The CPU must support AVX2; `codes.len() >= ceil(rows / 32) * steps * 32`, every
/// `tables[n].len() >= steps`, every `ys[n].len() >= rows`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lut_blocks<T, const N: usize>(
    codes: &[u8],
    rows: usize,
    steps: usize,
    tables: [&[T]; N],
    mut ys: [&mut [f32]; N],
    arith: Arith<
        impl Fn(&T, __m256i, __m256i, &mut [__m256i; 2]),
        impl Fn(&mut [__m256i; 4], &[__m256i; 2], usize),
    >,
) {
    let Arith { flush, step, widen } = arith;
    assert!(tables.iter().all(|t| t.len() >= steps));
    let Some((stride, blocks)) = super::lut8::block_shape(codes, rows, steps, &mut ys) else { return };
    let nib = _mm256_set1_epi8(0x0F);
    for (rb, block) in codes.chunks_exact(stride).take(blocks).enumerate() {
        let mut acc = [[_mm256_setzero_si256(); 4]; N];
        let mut k0 = 0;
        while k0 < steps {
            let k1 = steps.min(k0 + flush);
            let mut a16 = [[_mm256_setzero_si256(); 2]; N];
            for k in k0..k1 {
                // SAFETY: k < steps: the 32 code bytes of step k lie inside the block.
                let b = unsafe { _mm256_loadu_si256(block.as_ptr().add(k * ROWS) as *const __m256i) };
                let i0 = _mm256_and_si256(b, nib);
                let i1 = _mm256_and_si256(_mm256_srli_epi16::<4>(b), nib);
                for (t, a) in tables.iter().zip(a16.iter_mut()) {
                    step(&t[k], i0, i1, a);
                }
            }
            for (acc, a) in acc.iter_mut().zip(&a16) {
                widen(acc, a, k1 - k0);
            }
            k0 = k1;
        }
        for (acc, y) in acc.iter().zip(ys.iter_mut()) {
            store_block(acc, &mut y[..rows], rb * ROWS);
        }
    }
}

/// Exact integer sums of `N` inputs' tables against one matrix's codes, as f32.
/// `codes` has the layout of [`super::lut8::lut_codes`] with `steps` steps; `ys[n][r]` gets
/// row r's sum for input n.
///
/// Per step each nibble selects one low and one high byte per row from its pair's table
/// (`vpshufb`, both 128-bit lanes holding the same table); the halves are interleaved into
/// int16 and added (at most 2 · 254 per step: [`FLUSH`] steps between widenings). The rows
/// land in the order 0..8, 16..24 (first register), 8..16, 24..32.
///
/// # Safety
/// As [`lut_blocks`].
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn sums_lut_avx2<const N: usize>(
    codes: &[u8],
    rows: usize,
    steps: usize,
    tables: [&[StepTable]; N],
    ys: [&mut [f32]; N],
) {
    let step = |t: &StepTable, i0: __m256i, i1: __m256i, a: &mut [__m256i; 2]| {
        // SAFETY: a StepTable is 64 bytes, 64-byte aligned: four 16-byte tables.
        let (l0, l1, h0, h1) = unsafe {
            let t = t.0.as_ptr() as *const __m128i;
            (
                _mm256_broadcastsi128_si256(_mm_load_si128(t)),
                _mm256_broadcastsi128_si256(_mm_load_si128(t.add(1))),
                _mm256_broadcastsi128_si256(_mm_load_si128(t.add(2))),
                _mm256_broadcastsi128_si256(_mm_load_si128(t.add(3))),
            )
        };
        let (la, ha) = (_mm256_shuffle_epi8(l0, i0), _mm256_shuffle_epi8(h0, i0));
        let (lb, hb) = (_mm256_shuffle_epi8(l1, i1), _mm256_shuffle_epi8(h1, i1));
        a[0] = _mm256_add_epi16(a[0], _mm256_unpacklo_epi8(la, ha));
        a[1] = _mm256_add_epi16(a[1], _mm256_unpackhi_epi8(la, ha));
        a[0] = _mm256_add_epi16(a[0], _mm256_unpacklo_epi8(lb, hb));
        a[1] = _mm256_add_epi16(a[1], _mm256_unpackhi_epi8(lb, hb));
    };
    // SAFETY: forwarded.
    unsafe {
        lut_blocks(
            codes,
            rows,
            steps,
            tables,
            ys,
            Arith { flush: FLUSH, step, widen: |acc: &mut [__m256i; 4], a: &[__m256i; 2], _| widen(acc, a) },
        )
    }
}

/// Add one block's int16 sums (`a`: the `vpunpcklbw` and `vpunpckhbw` halves of 32 rows) to
/// its int32 sums `acc`, in row order 0..8, 8..16, 16..24, 24..32.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn widen(acc: &mut [__m256i; 4], a: &[__m256i; 2]) {
    let w = |v: __m256i, hi: bool| {
        _mm256_cvtepi16_epi32(if hi { _mm256_extracti128_si256::<1>(v) } else { _mm256_castsi256_si128(v) })
    };
    acc[0] = _mm256_add_epi32(acc[0], w(a[0], false));
    acc[1] = _mm256_add_epi32(acc[1], w(a[1], false));
    acc[2] = _mm256_add_epi32(acc[2], w(a[0], true));
    acc[3] = _mm256_add_epi32(acc[3], w(a[1], true));
}

/// Store a block's 32 int32 sums (rows r0..r0 + 32 in order) as f32 into `y` (exact: the
/// sums are below 2^24); rows past `y.len()` are dropped.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn store_block(acc: &[__m256i; 4], y: &mut [f32], r0: usize) {
    if y.len() - r0 >= ROWS {
        let out = &mut y[r0..r0 + ROWS];
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: out holds 32 f32; j * 8 + 8 <= 32.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), _mm256_cvtepi32_ps(*a)) };
        }
        return;
    }
    let mut lanes = [0.0f32; ROWS];
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: lanes holds 32 f32; j * 8 + 8 <= 32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * j), _mm256_cvtepi32_ps(*a)) };
    }
    let n = ROWS.min(y.len() - r0);
    y[r0..r0 + n].copy_from_slice(&lanes[..n]);
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

/// The 6-bit tables of `q` (values in −31..=31), equal byte for byte to
/// [`super::lut8::tables6_generic`]: the byte entries of [`tables_avx2`] (no high bytes)
/// plus [`BIAS6`].
///
/// # Safety
/// The CPU must support AVX2; `q.len() >= 4 * steps`, `t.len() >= steps`.
#[target_feature(enable = "avx2")]
#[inline(never)]
pub unsafe fn tables_avx2_i6(q: &[i8], steps: usize, t: &mut [StepTable6]) {
    assert!(q.len() >= 4 * steps && t.len() >= steps);
    let w = entry_patterns();
    for (q4, st) in q.chunks_exact(4).zip(t.iter_mut()).take(steps) {
        // |entry| <= 62: the wrapping byte sum is the entry itself; stored with its bias.
        let (lo, _) = step_entries(q4.as_ptr(), w);
        let biased = _mm256_add_epi8(lo, _mm256_set1_epi8(BIAS6 as i8));
        // SAFETY: a StepTable6 is 32 bytes, 32-byte aligned.
        unsafe { _mm256_store_si256(st.0.as_mut_ptr() as *mut __m256i, biased) };
    }
}

/// The 6-bit table kernel: per step one byte lookup per pair (`vpshufb`), the two biased
/// entries added as unsigned bytes (each in 2..=126, the sum in 4..=252), and the 32 byte
/// sums added to two 16-bit accumulators: `w` takes the register as sixteen u16 lanes
/// (even row + 256 · odd row, wrapping) and `h` the odd rows alone (`vpsrlw` by 8). Every
/// [`FLUSH6`] steps the even rows come back as `w − (h << 8)` (both sums stay below 2^16),
/// are interleaved with the odd rows and widened, and the bias (128 per step) comes off.
/// Per 128 weights: two shuffles and four adds or shifts. Row order and outputs as in
/// [`sums_lut_avx2`].
///
/// # Safety
/// As [`lut_blocks`], with 6-bit tables.
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn sums_lut6_avx2<const N: usize>(
    codes: &[u8],
    rows: usize,
    steps: usize,
    tables: [&[StepTable6]; N],
    ys: [&mut [f32]; N],
) {
    let step = |t: &StepTable6, i0: __m256i, i1: __m256i, a: &mut [__m256i; 2]| {
        // SAFETY: a StepTable6 is 32 bytes, 32-byte aligned: two 16-byte tables.
        let (ta, tb) = unsafe {
            let t = t.0.as_ptr() as *const __m128i;
            (
                _mm256_broadcastsi128_si256(_mm_load_si128(t)),
                _mm256_broadcastsi128_si256(_mm_load_si128(t.add(1))),
            )
        };
        let s = _mm256_add_epi8(_mm256_shuffle_epi8(ta, i0), _mm256_shuffle_epi8(tb, i1));
        a[0] = _mm256_add_epi16(a[0], s);
        a[1] = _mm256_add_epi16(a[1], _mm256_srli_epi16::<8>(s));
    };
    let widen = |acc: &mut [__m256i; 4], a: &[__m256i; 2], chunk: usize| {
        let odd = a[1];
        let even = _mm256_sub_epi16(a[0], _mm256_slli_epi16::<8>(odd));
        // Rows 0..8 and 16..24; rows 8..16 and 24..32 (as in `widen`).
        let (r0, r1) = (_mm256_unpacklo_epi16(even, odd), _mm256_unpackhi_epi16(even, odd));
        let w = |v: __m256i, hi: bool| {
            _mm256_cvtepu16_epi32(if hi {
                _mm256_extracti128_si256::<1>(v)
            } else {
                _mm256_castsi256_si128(v)
            })
        };
        // The bias of `chunk` steps: 2 · BIAS6 = 128 per step, a shift.
        let bias = _mm256_set1_epi32((chunk << 7) as i32);
        for (acc, v) in acc.iter_mut().zip([w(r0, false), w(r1, false), w(r0, true), w(r1, true)]) {
            *acc = _mm256_add_epi32(*acc, _mm256_sub_epi32(v, bias));
        }
    };
    // SAFETY: forwarded.
    unsafe { lut_blocks(codes, rows, steps, tables, ys, Arith { flush: FLUSH6, step, widen }) }
}

/// [`sums_lut6_avx2`] for one input.
///
/// # Safety
/// As [`sums_lut6_avx2`].
#[target_feature(enable = "avx2")]
#[inline(never)]
pub unsafe fn sums_avx2_lut6x1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable6], y: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe { sums_lut6_avx2::<1>(codes, rows, steps, [t], [y]) }
}

/// [`sums_lut6_avx2`] for four inputs.
///
/// # Safety
/// As [`sums_lut6_avx2`].
#[target_feature(enable = "avx2")]
#[inline(never)]
pub unsafe fn sums_avx2_lut6x4(
    codes: &[u8],
    rows: usize,
    steps: usize,
    t: [&[StepTable6]; 4],
    ys: [&mut [f32]; 4],
) {
    // SAFETY: forwarded.
    unsafe { sums_lut6_avx2::<4>(codes, rows, steps, t, ys) }
}
