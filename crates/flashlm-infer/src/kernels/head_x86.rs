//! The output head's x86 kernels (a float layer: these may multiply). Dispatch and the
//! portable paths are in [`super::head::Embedding::head`]; the int4 head is [`super::head4`].
//! * int8 rows: [`i8_vnni`] / [`i8_vnni4`] (AVX-512 VNNI, `vpdpwssd`) and [`i8_avx2`]
//!   (`vpmaddwd`), bit-identical to [`super::head::i8_head_reference`];
//! * f32 / f16 rows with FMA: [`f32_rows`] / [`f16_rows`] / [`i8_rows`] (AVX-512F) and
//!   [`f32_rows_avx2`] / [`f16_rows_avx2`] (AVX2 + FMA + F16C).

use std::arch::x86_64::*;

/// [`i8_vnni`] for four vectors: each weight register is loaded and widened once.
/// Integer sums are exact, so the logits equal `i8_vnni`'s.
///
/// # Safety
/// AVX-512 BW and VNNI; `blocked.len() == ceil(V / 16) * pairs * 32` for
/// V = logits[i].len() (all equal), every `hq[i].len() == pairs`, `scale.len() >= V`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn i8_vnni4(
    blocked: &[i8],
    scale: &[f32],
    hq: [&[i32]; 4],
    hscale: [f32; 4],
    logits: [&mut [f32]; 4],
) {
    let pairs = hq[0].len();
    let v = logits[0].len();
    assert!(hq.iter().all(|h| h.len() == pairs) && logits.iter().all(|l| l.len() == v));
    assert_eq!(blocked.len(), v.div_ceil(16) * pairs * 32);
    let mut outs = logits.map(|l| l.chunks_mut(16));
    for (block, sc) in blocked.chunks_exact(pairs * 32).zip(scale.chunks(16)) {
        let mut acc = [[_mm512_setzero_si512(); 2]; 4];
        for (p, w) in block.chunks_exact(32).enumerate() {
            // SAFETY: w is 32 bytes.
            let w = unsafe { _mm512_cvtepi8_epi16(_mm256_loadu_si256(w.as_ptr() as *const __m256i)) };
            for (a, h) in acc.iter_mut().zip(&hq) {
                a[p & 1] = _mm512_dpwssd_epi32(a[p & 1], w, _mm512_set1_epi32(h[p]));
            }
        }
        for ((a, out), &hs) in acc.iter().zip(outs.iter_mut()).zip(&hscale) {
            let Some(dst) = out.next() else { return };
            let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(a[0], a[1]));
            let mut lanes = [0.0f32; 16];
            // SAFETY: lanes holds 16 f32.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
            for ((o, &l), &s) in dst.iter_mut().zip(&lanes).zip(sc) {
                *o = l * s * hs;
            }
        }
    }
}

/// logits = (blocked int8 rows · hq) * row scale * hscale, 16 rows at a time.
///
/// # Safety
/// AVX-512 BW and VNNI; `blocked.len() == ceil(V / 16) * hq.len() * 32` for
/// V = logits.len(), `scale.len() >= V`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn i8_vnni(blocked: &[i8], scale: &[f32], hq: &[i32], hscale: f32, logits: &mut [f32]) {
    let pairs = hq.len();
    assert_eq!(blocked.len(), logits.len().div_ceil(16) * pairs * 32);
    // Every pair broadcast to a whole register once, so the loop below only loads.
    let hv: Vec<__m512i> = hq.iter().map(|&p| _mm512_set1_epi32(p)).collect();
    let mut out = logits.chunks_mut(16).zip(scale.chunks(16));
    for block in blocked.chunks_exact(pairs * 32) {
        // Four accumulators: vpdpwssd has a latency of several cycles.
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut ws = block.chunks_exact(128);
        let mut hs = hv.chunks_exact(4);
        for (w4, h4) in (&mut ws).zip(&mut hs) {
            // Fetch ahead: the head is larger than the L2 cache and streams from L3.
            _mm_prefetch::<_MM_HINT_T0>(w4.as_ptr().wrapping_add(1024));
            _mm_prefetch::<_MM_HINT_T0>(w4.as_ptr().wrapping_add(1088));
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: w4 is 128 bytes: four 32-byte pieces.
                let w = unsafe {
                    _mm512_cvtepi8_epi16(_mm256_loadu_si256(w4.as_ptr().add(32 * j) as *const __m256i))
                };
                *a = _mm512_dpwssd_epi32(*a, w, h4[j]);
            }
        }
        for (w, h) in ws.remainder().chunks_exact(32).zip(hs.remainder()) {
            // SAFETY: w is 32 bytes.
            let w = unsafe { _mm512_cvtepi8_epi16(_mm256_loadu_si256(w.as_ptr() as *const __m256i)) };
            acc[0] = _mm512_dpwssd_epi32(acc[0], w, *h);
        }
        let acc = [_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3])];
        let Some((dst, sc)) = out.next() else { break };
        let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(acc[0], acc[1]));
        let mut lanes = [0.0f32; 16];
        // SAFETY: lanes holds 16 f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
        for ((o, &l), &s) in dst.iter_mut().zip(&lanes).zip(sc) {
            *o = l * s * hscale;
        }
    }
}

/// [`i8_vnni`] with AVX2: the same blocked weights widened to int16, `vpmaddwd` against
/// each broadcast pair of `hq`, 8 rows per register. The integer sums are exact, so the
/// logits equal `i8_vnni`'s and [`super::head::i8_head_reference`]'s bit for bit.
///
/// # Safety
/// AVX2; `blocked.len() == ceil(V / 16) * hq.len() * 32` for V = logits.len(),
/// `scale.len() >= V`.
#[target_feature(enable = "avx2")]
pub unsafe fn i8_avx2(blocked: &[i8], scale: &[f32], hq: &[i32], hscale: f32, logits: &mut [f32]) {
    let pairs = hq.len();
    assert_eq!(blocked.len(), logits.len().div_ceil(16) * pairs * 32);
    assert!(scale.len() >= logits.len());
    let hv: Vec<__m256i> = hq.iter().map(|&p| _mm256_set1_epi32(p)).collect();
    let mut out = logits.chunks_mut(16).zip(scale.chunks(16));
    for block in blocked.chunks_exact(pairs * 32) {
        // [rows 0..8, rows 8..16] for even and odd pairs: four independent add chains,
        // kept in registers (two pairs per iteration, no indexing by parity).
        let mut acc = [[_mm256_setzero_si256(); 2]; 2];
        // SAFETY: w is 32 bytes: rows 0..8 in the first 16, rows 8..16 in the rest.
        let widen = |w: &[i8], half: usize| unsafe {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(w.as_ptr().add(16 * half) as *const __m128i))
        };
        let mut w2 = block.chunks_exact(64);
        let mut h2 = hv.chunks_exact(2);
        for (i, (w, h)) in (&mut w2).zip(&mut h2).enumerate() {
            if i % 4 == 0 {
                // The head streams from L3: fetch a few pairs ahead.
                _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add(512));
            }
            let (a, b) = w.split_at(32);
            for (acc, (w, h)) in acc.iter_mut().zip([(a, h[0]), (b, h[1])]) {
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(widen(w, 0), h));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(widen(w, 1), h));
            }
        }
        if let (Some(h), w) = (h2.remainder().first(), w2.remainder()) {
            acc[0][0] = _mm256_add_epi32(acc[0][0], _mm256_madd_epi16(widen(w, 0), *h));
            acc[0][1] = _mm256_add_epi32(acc[0][1], _mm256_madd_epi16(widen(w, 1), *h));
        }
        let Some((dst, sc)) = out.next() else { break };
        let mut lanes = [0.0f32; 16];
        // SAFETY: lanes holds 16 f32.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_cvtepi32_ps(_mm256_add_epi32(acc[0][0], acc[1][0])));
            _mm256_storeu_ps(
                lanes.as_mut_ptr().add(8),
                _mm256_cvtepi32_ps(_mm256_add_epi32(acc[0][1], acc[1][1])),
            );
        }
        for ((o, &l), &s) in dst.iter_mut().zip(&lanes).zip(sc) {
            *o = l * s * hscale;
        }
    }
}

/// `logits[r] = row r · h` for rows of `T` with AVX2 + FMA, two accumulators of 8: `load`
/// reads 8 values of a row as f32, `scalar` converts one (the tail past a multiple of 16).
///
/// # Safety
/// AVX2 and FMA, and what `load` needs; `w.len() == logits.len() * d`, `h.len() >= d`;
/// `load(p)` reads 8 values at `p`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows_avx2<T: Copy>(
    w: &[T],
    h: &[f32],
    d: usize,
    logits: &mut [f32],
    load: impl Fn(*const T) -> __m256,
    scalar: impl Fn(T) -> f32,
) {
    assert!(h.len() >= d && w.len() == logits.len() * d);
    let full = d / 16;
    for (l, row) in logits.iter_mut().zip(w.chunks_exact(d)) {
        let mut acc = [_mm256_setzero_ps(); 2];
        for c in 0..full {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: c * 16 + 8 * j + 8 <= d <= row.len(), h.len().
                let (x, y) = unsafe {
                    (load(row.as_ptr().add(c * 16 + 8 * j)), _mm256_loadu_ps(h.as_ptr().add(c * 16 + 8 * j)))
                };
                *a = _mm256_fmadd_ps(x, y, *a);
            }
        }
        let mut s = hsum8(_mm256_add_ps(acc[0], acc[1]));
        for i in full * 16..d {
            s += scalar(row[i]) * h[i];
        }
        *l = s;
    }
}

/// f32 rows with AVX2 + FMA.
///
/// # Safety
/// AVX2 and FMA; `w.len() == logits.len() * d`, `h.len() >= d`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn f32_rows_avx2(w: &[f32], h: &[f32], d: usize, logits: &mut [f32]) {
    // SAFETY: forwarded; the loads read 8 f32 inside a row.
    unsafe { rows_avx2(w, h, d, logits, |p| _mm256_loadu_ps(p), |v| v) }
}

/// f16 rows with F16C (`vcvtph2ps`) and FMA.
///
/// # Safety
/// AVX2, FMA and F16C; `w.len() == logits.len() * d`, `h.len() >= d`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_rows_avx2(w: &[u16], h: &[f32], d: usize, logits: &mut [f32]) {
    let load = |p: *const u16| {
        // SAFETY: rows_avx2 passes a pointer to 8 u16 (16 bytes) inside a row.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
    };
    // SAFETY: forwarded.
    unsafe { rows_avx2(w, h, d, logits, load, |b| half::f16::from_bits(b).to_f32()) }
}

/// The sum of the 8 lanes.
#[target_feature(enable = "avx2")]
fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

/// # Safety
/// AVX-512F; `w.len() == logits.len() * d`, `h.len() >= d`.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_rows(w: &[f32], h: &[f32], d: usize, logits: &mut [f32]) {
    let full = d / 16;
    for (l, row) in logits.iter_mut().zip(w.chunks_exact(d)) {
        let mut acc = _mm512_setzero_ps();
        for c in 0..full {
            // SAFETY: c * 16 + 16 <= d <= row.len(), h.len().
            let (a, b) = unsafe {
                (_mm512_loadu_ps(row.as_ptr().add(c * 16)), _mm512_loadu_ps(h.as_ptr().add(c * 16)))
            };
            acc = _mm512_fmadd_ps(a, b, acc);
        }
        let mut s = _mm512_reduce_add_ps(acc);
        for i in full * 16..d {
            s += row[i] * h[i];
        }
        *l = s;
    }
}

/// # Safety
/// AVX-512F; `w.len() == logits.len() * d`, `h.len() >= d`.
#[target_feature(enable = "avx512f")]
pub unsafe fn f16_rows(w: &[u16], h: &[f32], d: usize, logits: &mut [f32]) {
    let full = d / 16;
    for (l, row) in logits.iter_mut().zip(w.chunks_exact(d)) {
        let mut acc = _mm512_setzero_ps();
        for c in 0..full {
            // SAFETY: c * 16 + 16 <= d: 16 u16 = 32 bytes inside the row; h likewise.
            let (a, b) = unsafe {
                (
                    _mm512_cvtph_ps(_mm256_loadu_si256(row.as_ptr().add(c * 16) as *const __m256i)),
                    _mm512_loadu_ps(h.as_ptr().add(c * 16)),
                )
            };
            acc = _mm512_fmadd_ps(a, b, acc);
        }
        let mut s = _mm512_reduce_add_ps(acc);
        for i in full * 16..d {
            s += half::f16::from_bits(row[i]).to_f32() * h[i];
        }
        *l = s;
    }
}

/// # Safety
/// AVX-512F; `q.len() == logits.len() * d`, `scale.len() >= logits.len()`, `h.len() >= d`.
#[target_feature(enable = "avx512f")]
pub unsafe fn i8_rows(q: &[i8], scale: &[f32], h: &[f32], d: usize, logits: &mut [f32]) {
    let full = d / 16;
    for ((l, row), &sc) in logits.iter_mut().zip(q.chunks_exact(d)).zip(scale) {
        let mut acc = _mm512_setzero_ps();
        for c in 0..full {
            // SAFETY: c * 16 + 16 <= d: 16 i8 inside the row; 16 f32 inside h.
            let (a, b) = unsafe {
                (
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                        row.as_ptr().add(c * 16) as *const __m128i
                    ))),
                    _mm512_loadu_ps(h.as_ptr().add(c * 16)),
                )
            };
            acc = _mm512_fmadd_ps(a, b, acc);
        }
        let mut s = _mm512_reduce_add_ps(acc);
        for i in full * 16..d {
            s += f32::from(row[i]) * h[i];
        }
        *l = s * sc;
    }
}
