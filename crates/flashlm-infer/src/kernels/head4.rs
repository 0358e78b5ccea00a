//! The int4 output head: logits = E · h for a tied embedding stored as [`Kind::Int4Groups`]
//! (one f16 scale per 32 values of a row), with `h` rounded to int8 per group of 32.
//!
//! The arithmetic is defined once, by [`logits_scalar`], and every variant computes exactly
//! the same numbers (integer sums are exact; the float steps run in the same order without
//! fused multiply-adds), so a kernel is tested for bit equality against the reference:
//!
//! ```text
//! for each group g of 32 columns:   xs[g] = max|h_g| / 127,  xq = round(h / xs[g])  (i8)
//! isum[r, g] = Σ_c (q[r, c] + 8) · xq[c]  −  8 · Σ_c xq[c]          (= Σ q · xq, exact)
//! logit[r]   = Σ_g  f32(isum[r, g]) · (scale[r, g] · xs[g])          (g in order)
//! ```
//!
//! The AVX-512 VNNI kernel keeps the stored nibbles (q + 8, unsigned) as they are and feeds
//! them to `vpdpbusd` (unsigned × signed bytes, four products per 32-bit lane), 16 rows per
//! register: the weights it streams per token are half the int8 head's. The AVX2 variant
//! splits the nibbles and uses `vpmaddubsw` / `vpmaddwd`, 8 rows per register; without
//! either, the reference runs. [`Variant::best`] picks one once.
//!
//! [`Kind::Int4Groups`]: crate::format::Kind::Int4Groups

use crate::format::INT4_GROUP;

/// Rows per register in the blocked layout.
pub const ROWS: usize = 16;
/// Bytes of one blocked chunk: 16 rows × 8 columns of nibbles.
const CHUNK: usize = 64;
/// Chunks per group of 32 columns.
const CHUNKS_PER_GROUP: usize = INT4_GROUP / 8;
const _: () = assert!(ROWS * 8 / 2 == CHUNK && CHUNKS_PER_GROUP * 8 == INT4_GROUP);

/// An int4 embedding: the file's layout (for rows and the reference) and the kernel's.
#[derive(Debug, Clone)]
pub struct Int4Embedding {
    /// [V, d / 2] nibbles q + 8, two per byte, low nibble first (as in the file).
    pub nibbles: Vec<u8>,
    /// [V, d / 32] scales as f16 bits.
    pub scales: Vec<u16>,
    /// [V, d / 32] the same scales as f32 (exact), for the portable variant.
    pub scales_f32: Vec<f32>,
    /// [ceil(V / 16), d / 32, 4, 16, 4] bytes: for each block of 16 rows, group and chunk of
    /// 8 columns, row r's byte j (of 4) holds column j in its low nibble and column 4 + j in
    /// its high nibble (rows past V hold q = 0).
    pub blocked: Vec<u8>,
    /// [ceil(V / 16), d / 32, 16] scales as f16 bits, the same block order (0 past V).
    pub blocked_scales: Vec<u16>,
    /// Rows V.
    pub rows: usize,
    /// Columns d (a multiple of 32).
    pub cols: usize,
}

impl Int4Embedding {
    /// From the data of a [`Kind::Int4Groups`] tensor of shape [rows, cols] (its length
    /// already checked by the format reader). Refuses non-finite or negative scales.
    ///
    /// [`Kind::Int4Groups`]: crate::format::Kind::Int4Groups
    pub fn from_data(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        if !cols.is_multiple_of(INT4_GROUP) || data.len() != rows * cols / 2 + rows * cols / INT4_GROUP * 2 {
            return Err(format!("int4 data of {} bytes does not fit [{rows}, {cols}]", data.len()));
        }
        let (nib, sc) = data.split_at(rows * cols / 2);
        let scales: Vec<u16> = sc.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        if scales.iter().map(|&b| half::f16::from_bits(b)).any(|s| !s.is_finite() || s.is_sign_negative()) {
            return Err("int4 scales must be finite and non-negative".into());
        }
        let groups = cols / INT4_GROUP;
        let blocks = rows.div_ceil(ROWS);
        let mut blocked = vec![0x88u8; blocks * groups * CHUNKS_PER_GROUP * CHUNK];
        let mut blocked_scales = vec![0u16; blocks * groups * ROWS];
        let nibble = |r: usize, c: usize| (nib[(r * cols + c) / 2] >> (4 * (c % 2))) & 0x0F;
        for r in 0..rows {
            let (b, lane) = (r / ROWS, r % ROWS);
            for g in 0..groups {
                blocked_scales[(b * groups + g) * ROWS + lane] = scales[r * groups + g];
                for ch in 0..CHUNKS_PER_GROUP {
                    let base = ((b * groups + g) * CHUNKS_PER_GROUP + ch) * CHUNK + lane * 4;
                    let col = g * INT4_GROUP + ch * 8;
                    for j in 0..4 {
                        blocked[base + j] = nibble(r, col + j) | (nibble(r, col + 4 + j) << 4);
                    }
                }
            }
        }
        let scales_f32 = scales.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect();
        Ok(Self { nibbles: nib.to_vec(), scales, scales_f32, blocked, blocked_scales, rows, cols })
    }

    /// Row `id` dequantised into `out` (`[d]`).
    pub fn row(&self, id: usize, out: &mut [f32]) {
        let d = self.cols;
        let groups = d / INT4_GROUP;
        for (c, o) in out[..d].iter_mut().enumerate() {
            let q = i32::from((self.nibbles[(id * d + c) / 2] >> (4 * (c % 2))) & 0x0F) - 8;
            *o = q as f32 * half::f16::from_bits(self.scales[id * groups + c / INT4_GROUP]).to_f32();
        }
    }

    /// The checks every blocked kernel starts with: `x` quantised from `cols` values, one
    /// logit per row, and the blocked layout's lengths. Returns (groups of 32 columns, bytes
    /// per block of 16 rows).
    pub fn blocked_shape(&self, x: &QuantizedVector, logits: &[f32]) -> (usize, usize) {
        let groups = self.cols / INT4_GROUP;
        assert!(x.q.len() == self.cols && logits.len() == self.rows);
        let per_block = groups * CHUNKS_PER_GROUP * CHUNK;
        assert_eq!(self.blocked.len(), self.rows.div_ceil(ROWS) * per_block);
        assert_eq!(self.blocked_scales.len(), self.rows.div_ceil(ROWS) * groups * ROWS);
        (groups, per_block)
    }

    /// logits = E · h with the given variant (all give the same bits).
    ///
    /// # Panics
    /// If `v` does not run on this CPU ([`Variant::runs_here`]), or on wrong lengths.
    pub fn logits_with(&self, h: &[f32], logits: &mut [f32], v: Variant) {
        assert!(h.len() >= self.cols && logits.len() == self.rows);
        assert!(v.runs_here(), "{v:?} does not run on this CPU");
        let x = QuantizedVector::new(&h[..self.cols]);
        match v {
            Variant::Scalar => logits_scalar(self, &x, logits),
            Variant::Portable => logits_portable(self, &x, logits),
            // SAFETY: runs_here() checked the CPU features; the layouts come from `from_data`
            // for these rows and columns, and x has cols values.
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => unsafe { x86::logits_avx2(self, &x, logits) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512Vnni => unsafe { x86::logits_vnni(self, &x, logits) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is part of every aarch64 CPU (the target's baseline).
            Variant::Neon => unsafe { super::head_neon::int4_logits(self, &x, logits) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Variant::Simd128 => super::head_simd128::int4_logits(self, &x, logits),
        }
    }
}

/// The int4 head's implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// [`logits_scalar`], the reference.
    Scalar,
    /// [`logits_portable`]: plain Rust the compiler vectorises for any target.
    Portable,
    /// AVX2 + F16C: `vpmaddubsw` / `vpmaddwd`, 8 rows per register.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 BW + VNNI: `vpdpbusd`, 16 rows per register.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// aarch64 NEON: `smlal`, 4 rows per register ([`super::head_neon::int4_logits`]).
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// WebAssembly SIMD128: `i16x8.extmul`, 4 rows per register
    /// ([`super::head_simd128::int4_logits`]).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
}

impl Variant {
    /// Every variant this build has, slowest first.
    const ALL: &'static [Variant] = &[
        Variant::Scalar,
        Variant::Portable,
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2,
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512Vnni,
        #[cfg(target_arch = "aarch64")]
        Variant::Neon,
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Variant::Simd128,
    ];

    /// Whether this CPU runs it (feature detection is cached by std; nothing allocates).
    pub fn runs_here(self) -> bool {
        match self {
            Variant::Scalar | Variant::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => crate::cpu::avx2() && crate::cpu::f16c(),
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512Vnni => crate::cpu::avx512bw() && crate::cpu::avx512vnni(),
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => crate::cpu::neon(),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Variant::Simd128 => crate::cpu::simd128(),
        }
    }

    /// Those this CPU runs, slowest first.
    pub fn available() -> Vec<Variant> {
        Self::ALL.iter().copied().filter(|v| v.runs_here()).collect()
    }

    /// The fastest this CPU runs (detected once).
    pub fn best() -> Variant {
        static BEST: std::sync::OnceLock<Variant> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *Variant::available().last().expect("scalar is always there"))
    }
}

/// `h` rounded to int8 with one scale per group of 32.
#[derive(Debug, Clone)]
pub struct QuantizedVector {
    /// `[d]`: `round(h / xs[group])`.
    pub q: Vec<i8>,
    /// [d / 32] max|h_g| / 127 (1 for an all-zero group).
    pub scale: Vec<f32>,
    /// [d / 32] 8 · Σ q over the group: the offset of the stored nibbles.
    pub offset: Vec<i32>,
}

impl QuantizedVector {
    /// Quantise `h` (length a multiple of 32).
    pub fn new(h: &[f32]) -> Self {
        let mut q = Vec::with_capacity(h.len());
        let mut scale = Vec::with_capacity(h.len() / INT4_GROUP);
        let mut offset = Vec::with_capacity(h.len() / INT4_GROUP);
        for g in h.chunks_exact(INT4_GROUP) {
            let max = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            let inv = 1.0 / s;
            let start = q.len();
            q.extend(g.iter().map(|&v| (v * inv).round().clamp(-127.0, 127.0) as i8));
            offset.push(8 * q[start..].iter().map(|&v| i32::from(v)).sum::<i32>());
            scale.push(s);
        }
        Self { q, scale, offset }
    }
}

/// The reference: the arithmetic of the module docs, one row at a time.
pub fn logits_scalar(e: &Int4Embedding, x: &QuantizedVector, logits: &mut [f32]) {
    let d = e.cols;
    let groups = d / INT4_GROUP;
    for (r, out) in logits.iter_mut().enumerate().take(e.rows) {
        let mut acc = 0.0f32;
        for g in 0..groups {
            let mut isum = 0i32;
            for c in g * INT4_GROUP..(g + 1) * INT4_GROUP {
                let stored = i32::from((e.nibbles[(r * d + c) / 2] >> (4 * (c % 2))) & 0x0F);
                isum += stored * i32::from(x.q[c]);
            }
            isum -= x.offset[g];
            let s = half::f16::from_bits(e.scales[r * groups + g]).to_f32() * x.scale[g];
            acc += isum as f32 * s;
        }
        *out = acc;
    }
}

/// The reference's arithmetic in a form the compiler vectorises (no intrinsics): the even
/// and odd columns of `x` split apart so that each row's 16 bytes per group meet them with
/// plain widening multiply-adds; the same integer sums and the same float steps in the same
/// order, so it equals [`logits_scalar`] bit for bit.
pub fn logits_portable(e: &Int4Embedding, x: &QuantizedVector, logits: &mut [f32]) {
    let d = e.cols;
    let groups = d / INT4_GROUP;
    assert!(x.q.len() == d && logits.len() == e.rows);
    let even: Vec<i16> = x.q.iter().step_by(2).map(|&v| i16::from(v)).collect();
    let odd: Vec<i16> = x.q.iter().skip(1).step_by(2).map(|&v| i16::from(v)).collect();
    let half_group = INT4_GROUP / 2;
    let rows = e.nibbles.chunks_exact(d / 2).zip(e.scales_f32.chunks_exact(groups));
    for (out, (row, scales)) in logits.iter_mut().zip(rows) {
        let mut acc = 0.0f32;
        let parts =
            row.chunks_exact(half_group).zip(even.chunks_exact(half_group)).zip(odd.chunks_exact(half_group));
        for (g, ((b, xe), xo)) in parts.enumerate() {
            let mut isum = 0i32;
            for j in 0..half_group {
                isum += i32::from(i16::from(b[j] & 0x0F) * xe[j]) + i32::from(i16::from(b[j] >> 4) * xo[j]);
            }
            isum -= x.offset[g];
            acc += isum as f32 * (scales[g] * x.scale[g]);
        }
        *out = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CHUNK, CHUNKS_PER_GROUP, Int4Embedding, QuantizedVector, ROWS};

    /// 16 rows per register: per chunk of 8 columns one 64-byte load, two ANDs (low nibbles:
    /// columns 0..4; high nibbles kept in place, i.e. times 16: columns 4..8) and two
    /// `vpdpbusd`; per group the high sum is shifted back (exact: every term is a multiple
    /// of 16), the offset subtracted and the float step done as in the reference. Two
    /// blocks of rows per pass share the activation loads and interleave their chains.
    ///
    /// # Safety
    /// AVX-512 F, BW and VNNI; `e` built by `Int4Embedding::from_data`, `x` quantised from
    /// `e.cols` values, `logits.len() == e.rows`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn logits_vnni(e: &Int4Embedding, x: &QuantizedVector, logits: &mut [f32]) {
        let (groups, per_block) = e.blocked_shape(x, logits);
        // Per group: its 8 activation broadcasts (4 bytes each), offset and scale.
        let act: Vec<Group> = x
            .q
            .chunks_exact(super::INT4_GROUP)
            .zip(x.offset.iter().zip(&x.scale))
            .map(|(q, (&offset, &scale))| Group {
                hv: std::array::from_fn(|k| {
                    let c = &q[4 * k..4 * k + 4];
                    _mm512_set1_epi32(i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]))
                }),
                offset: _mm512_set1_epi32(offset),
                scale: _mm512_set1_ps(scale),
            })
            .collect();
        let blocks = e.blocked.chunks_exact(per_block).zip(e.blocked_scales.chunks_exact(groups * ROWS));
        let mut outs = logits.chunks_mut(ROWS);
        let mut pairs = blocks.clone().step_by(2).zip(blocks.skip(1).step_by(2));
        for ((w0, s0), (w1, s1)) in &mut pairs {
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for (g, a) in act.iter().enumerate() {
                // SAFETY: group g of a block: per_block / groups bytes and 16 scales.
                unsafe {
                    a0 = _mm512_add_ps(
                        a0,
                        group(w0.as_ptr().add(g * GROUP_BYTES), s0.as_ptr().add(g * ROWS), a),
                    );
                    a1 = _mm512_add_ps(
                        a1,
                        group(w1.as_ptr().add(g * GROUP_BYTES), s1.as_ptr().add(g * ROWS), a),
                    );
                }
            }
            for acc in [a0, a1] {
                let dst = outs.next().expect("a block per 16 rows");
                store(dst, acc);
            }
        }
        // An odd last block.
        if let Some(dst) = outs.next() {
            let (w, s) = (
                &e.blocked[e.blocked.len() - per_block..],
                &e.blocked_scales[e.blocked_scales.len() - groups * ROWS..],
            );
            let mut acc = _mm512_setzero_ps();
            for (g, a) in act.iter().enumerate() {
                // SAFETY: as above, for the last block.
                unsafe {
                    acc = _mm512_add_ps(
                        acc,
                        group(w.as_ptr().add(g * GROUP_BYTES), s.as_ptr().add(g * ROWS), a),
                    )
                };
            }
            store(dst, acc);
        }
    }

    /// The AVX2 variant: each 64-byte chunk is two registers of 8 rows. Nibbles are split
    /// with AND and a 16-bit shift, multiplied by `vpmaddubsw` into 16-bit pair sums (at
    /// most 2 · 15 · 127 = 3810 each, and at most 8 of them are added per group: 30480, so
    /// nothing saturates), widened per group by `vpmaddwd` with ones; then the reference's
    /// float step.
    ///
    /// # Safety
    /// AVX2 and F16C; `e` built by `Int4Embedding::from_data`, `x` quantised from `e.cols`
    /// values, `logits.len() == e.rows`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn logits_avx2(e: &Int4Embedding, x: &QuantizedVector, logits: &mut [f32]) {
        let (groups, per_block) = e.blocked_shape(x, logits);
        let hv: Vec<[__m256i; 2 * CHUNKS_PER_GROUP]> = x
            .q
            .chunks_exact(super::INT4_GROUP)
            .map(|q| {
                std::array::from_fn(|k| {
                    let c = &q[4 * k..4 * k + 4];
                    _mm256_set1_epi32(i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]))
                })
            })
            .collect();
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let blocks = e.blocked.chunks_exact(per_block).zip(e.blocked_scales.chunks_exact(groups * ROWS));
        for ((block, scales), dst) in blocks.zip(logits.chunks_mut(ROWS)) {
            let mut acc = [_mm256_setzero_ps(); 2];
            for (g, h) in hv.iter().enumerate() {
                let mut s16 = [_mm256_setzero_si256(); 2];
                for ch in 0..CHUNKS_PER_GROUP {
                    for (half, s) in s16.iter_mut().enumerate() {
                        // SAFETY: 32 of the chunk's 64 bytes, inside the block.
                        let v = unsafe {
                            _mm256_loadu_si256(
                                block.as_ptr().add((g * CHUNKS_PER_GROUP + ch) * CHUNK + 32 * half)
                                    as *const _,
                            )
                        };
                        let lo = _mm256_and_si256(v, low);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                        *s = _mm256_add_epi16(*s, _mm256_maddubs_epi16(lo, h[2 * ch]));
                        *s = _mm256_add_epi16(*s, _mm256_maddubs_epi16(hi, h[2 * ch + 1]));
                    }
                }
                for (half, a) in acc.iter_mut().enumerate() {
                    let isum =
                        _mm256_sub_epi32(_mm256_madd_epi16(s16[half], ones), _mm256_set1_epi32(x.offset[g]));
                    // SAFETY: 8 of the 16 f16 scales of this block and group.
                    let ws = _mm256_cvtph_ps(unsafe {
                        _mm_loadu_si128(scales.as_ptr().add(g * ROWS + 8 * half) as *const _)
                    });
                    let s = _mm256_mul_ps(ws, _mm256_set1_ps(x.scale[g]));
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_cvtepi32_ps(isum), s));
                }
            }
            let mut lanes = [0.0f32; ROWS];
            // SAFETY: lanes holds 16 f32.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
            }
            let n = dst.len();
            dst.copy_from_slice(&lanes[..n]);
        }
    }

    const GROUP_BYTES: usize = CHUNKS_PER_GROUP * CHUNK;

    /// One group's activations, broadcast.
    struct Group {
        hv: [__m512i; 2 * CHUNKS_PER_GROUP],
        offset: __m512i,
        scale: __m512,
    }

    /// The float contribution of one group of 32 columns to 16 rows.
    ///
    /// # Safety
    /// AVX-512 F, BW and VNNI; `w` points at GROUP_BYTES readable bytes, `s` at 16 f16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group(w: *const u8, s: *const u16, a: &Group) -> __m512 {
        let low = _mm512_set1_epi8(0x0F);
        let high = _mm512_set1_epi8(0xF0u8 as i8);
        let (mut lo_sum, mut hi_sum) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for ch in 0..CHUNKS_PER_GROUP {
            // SAFETY: the chunk lies inside the group (caller).
            let v = unsafe { _mm512_loadu_si512(w.add(ch * CHUNK) as *const _) };
            lo_sum = _mm512_dpbusd_epi32(lo_sum, _mm512_and_si512(v, low), a.hv[2 * ch]);
            hi_sum = _mm512_dpbusd_epi32(hi_sum, _mm512_and_si512(v, high), a.hv[2 * ch + 1]);
        }
        let isum = _mm512_sub_epi32(_mm512_add_epi32(lo_sum, _mm512_srai_epi32::<4>(hi_sum)), a.offset);
        // SAFETY: 16 f16 scales (caller).
        let ws = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(s as *const _) });
        _mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(ws, a.scale))
    }

    /// The first min(16, dst.len()) lanes of acc into dst.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store(dst: &mut [f32], acc: __m512) {
        let n = dst.len().min(ROWS);
        let mask: __mmask16 = if n == ROWS { 0xFFFF } else { (1u16 << n) - 1 };
        // SAFETY: the mask keeps the store inside dst[..n].
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, acc) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variants this CPU runs; prints those it had to skip.
    fn variants() -> Vec<Variant> {
        for v in Variant::ALL.iter().filter(|v| !v.runs_here()) {
            eprintln!("skipped int4 head variant {v:?}: not supported by this CPU");
        }
        Variant::available()
    }
    use flashlm_core::quant::int4_groups as quantize_int4_groups;

    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        flashlm_core::rng::uniform_values(rows * cols, seed)
    }

    #[test]
    fn rows_dequantise_close_to_the_floats() {
        let (rows, cols) = (37, 96);
        let w = matrix(rows, cols, 5);
        let e = Int4Embedding::from_data(&quantize_int4_groups(&w, rows, cols).unwrap(), rows, cols).unwrap();
        let mut out = vec![0.0; cols];
        for r in 0..rows {
            e.row(r, &mut out);
            for (c, (&a, &b)) in out.iter().zip(&w[r * cols..]).enumerate() {
                // Half a step of at most max|group| / 7 (plus the clip search, which only
                // picks a scale with a smaller total error).
                assert!((a - b).abs() <= 1.0 / 7.0 + 1e-3, "row {r} col {c}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn reference_is_close_to_the_float_product() {
        let (rows, cols) = (50, 64);
        let w = matrix(rows, cols, 9);
        let e = Int4Embedding::from_data(&quantize_int4_groups(&w, rows, cols).unwrap(), rows, cols).unwrap();
        let h = matrix(1, cols, 11);
        let mut got = vec![0.0; rows];
        e.logits_with(&h, &mut got, Variant::Scalar);
        let mut row = vec![0.0; cols];
        for (r, &g) in got.iter().enumerate() {
            e.row(r, &mut row);
            let exact: f32 = row.iter().zip(&h).map(|(a, b)| a * b).sum();
            // Only the activation rounding separates them: |error| <= Σ|w| · xs / 2.
            let bound: f32 = row.iter().map(|a| a.abs()).sum::<f32>() * (1.0 / 127.0) / 2.0 + 1e-4;
            assert!((g - exact).abs() <= bound, "row {r}: {g} vs {exact} (bound {bound})");
        }
    }

    #[test]
    fn every_kernel_equals_the_reference_bit_for_bit() {
        for (rows, cols) in [(1, 32), (15, 32), (16, 64), (17, 96), (33, 192), (100, 384), (1000, 192)] {
            let mut w = matrix(rows, cols, rows as u64 * 31 + cols as u64);
            // An all-zero group and a row of zeros.
            w[..32].iter_mut().for_each(|v| *v = 0.0);
            let e =
                Int4Embedding::from_data(&quantize_int4_groups(&w, rows, cols).unwrap(), rows, cols).unwrap();
            for seed in 0..3 {
                let mut h = matrix(1, cols, seed + 100);
                if seed == 2 {
                    h[..32].iter_mut().for_each(|v| *v = 0.0);
                }
                let mut a = vec![0.0; rows];
                logits_scalar(&e, &QuantizedVector::new(&h), &mut a);
                for v in variants() {
                    let mut b = vec![1.0; rows];
                    e.logits_with(&h, &mut b, v);
                    assert_eq!(
                        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{v:?} {rows}x{cols} seed {seed}"
                    );
                }
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate_any_variant() {
        // Every stored nibble 0 or 15 and every activation ±127: the largest sums there are.
        let (rows, cols) = (40, 96);
        for (sign_w, sign_h) in [(1.0f32, 1.0f32), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)] {
            let mut data = vec![if sign_w > 0.0 { 0xFF } else { 0x00 }; rows * cols / 2];
            data.extend(
                (0..rows * cols / INT4_GROUP).flat_map(|_| half::f16::from_f32(0.5).to_bits().to_le_bytes()),
            );
            let e = Int4Embedding::from_data(&data, rows, cols).unwrap();
            let h = vec![sign_h * 3.0; cols];
            let mut a = vec![0.0; rows];
            logits_scalar(&e, &QuantizedVector::new(&h), &mut a);
            let q = if sign_w > 0.0 { 7.0 } else { -8.0 };
            assert_eq!(a[0], q * 0.5 * sign_h * 3.0 * cols as f32);
            for v in variants() {
                let mut b = vec![0.0; rows];
                e.logits_with(&h, &mut b, v);
                assert_eq!(a, b, "{v:?}");
            }
        }
    }

    #[test]
    fn bad_data_is_refused() {
        assert!(Int4Embedding::from_data(&[0; 10], 1, 32).is_err());
        let mut data = quantize_int4_groups(&[0.5; 32], 1, 32).unwrap();
        let n = data.len();
        data[n - 2..].copy_from_slice(&half::f16::NAN.to_bits().to_le_bytes());
        assert!(Int4Embedding::from_data(&data, 1, 32).is_err());
        assert!(quantize_int4_groups(&[0.5; 33], 1, 33).is_err());
        assert!(quantize_int4_groups(&[f32::NAN; 32], 1, 32).is_err());
    }
}
