//! The output head: logits = embedding · h over the whole vocabulary (the tied embedding in
//! one of four storages), the one float layer of the forward pass. [`Embedding::head`] picks
//! the implementation ([`HeadPath`]: portable, AVX2, AVX-512) and calls the kernels of
//! [`super::head_x86`] and [`super::head4`]; the plain versions here are their references.

#[cfg(target_arch = "aarch64")]
use super::head_neon;
#[cfg(target_arch = "x86_64")]
use super::head_x86;
use super::head4::{Int4Embedding, Variant};

/// The tied embedding / output head.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// [V * d] f32.
    F32(Vec<f32>),
    /// [V * d] f16 bits.
    F16(Vec<u16>),
    /// [V * d] i8 and [V] row scales.
    Int8 {
        /// Quantised rows.
        q: Vec<i8>,
        /// One scale per row.
        scale: Vec<f32>,
        /// The same values regrouped for the VNNI head ([`blocked_int8`]).
        blocked: Vec<i8>,
    },
    /// int4 with one scale per 32 values of a row (see [`crate::kernels::head4`]).
    Int4(Int4Embedding),
}

impl Embedding {
    /// Row `id` as f32 into `out` ([d]).
    pub fn row(&self, id: usize, d: usize, out: &mut [f32]) {
        match self {
            Embedding::F32(w) => out[..d].copy_from_slice(&w[id * d..(id + 1) * d]),
            Embedding::F16(w) => {
                for (o, &h) in out.iter_mut().zip(&w[id * d..(id + 1) * d]) {
                    *o = half::f16::from_bits(h).to_f32();
                }
            }
            Embedding::Int8 { q, scale, .. } => {
                for (o, &v) in out.iter_mut().zip(&q[id * d..(id + 1) * d]) {
                    *o = f32::from(v) * scale[id];
                }
            }
            Embedding::Int4(e) => e.row(id, out),
        }
    }

    /// logits[v] = row(v) · h for every row (the head: a float layer, it may multiply),
    /// with the given implementation ([`HeadPath`]):
    /// * `portable`: f32 arithmetic (int8 rows dequantised on the fly), the int4 reference.
    /// * `avx2` (AVX2 + FMA + F16C): f32 / f16 rows with FMA; int8 rows with `h` rounded to
    ///   int16 (one scale, relative error ~1.5e-5 of its largest value) and `vpmaddwd`; the
    ///   int4 head's `vpmaddubsw` variant.
    /// * `avx512` (AVX-512F): f32 / f16 / int8 rows with FMA; with AVX-512 BW + VNNI the
    ///   int8 head uses `vpdpwssd` on the same int16 `h` (equal to `avx2` bit for bit), and the
    ///   int4 head `vpdpbusd`.
    ///
    /// An int4 embedding computes the same integer arithmetic on every path
    /// ([`Int4Embedding::logits`]).
    ///
    /// # Panics
    /// If the path does not run on this CPU.
    pub fn head(&self, h: &[f32], d: usize, logits: &mut [f32], path: HeadPath) {
        assert!(path.runs_here(), "head path {} does not run on this CPU", path.name());
        if let Embedding::Int4(e) = self {
            let v = match path {
                HeadPath::Portable => Variant::Portable,
                #[cfg(target_arch = "x86_64")]
                HeadPath::Avx2 => Variant::Avx2,
                #[cfg(target_arch = "x86_64")]
                HeadPath::Avx512 if Variant::Avx512Vnni.runs_here() => Variant::Avx512Vnni,
                #[cfg(target_arch = "aarch64")]
                HeadPath::Neon => Variant::Neon,
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                HeadPath::Simd128 => Variant::Simd128,
                _ => Variant::best(),
            };
            e.logits_with(&h[..d], logits, v);
            return;
        }
        #[cfg(target_arch = "aarch64")]
        if let (Embedding::F32(w), HeadPath::Neon) = (self, path) {
            // SAFETY: NEON is part of every aarch64 CPU (the target's baseline).
            unsafe { head_neon::f32_rows(w, h, d, logits) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        match (self, path) {
            (Embedding::Int8 { scale, blocked, .. }, HeadPath::Avx512) if vnni() => {
                let (hq, hscale) = quantize_i16_pairs(&h[..d]);
                // SAFETY: AVX-512 BW and VNNI were detected; `blocked` has the layout of
                // `blocked_int8(q, V, d)` for V = logits.len(), and hq has ceil(d / 2) pairs.
                unsafe { head_x86::i8_vnni(blocked, scale, &hq, hscale, logits) };
                return;
            }
            (Embedding::Int8 { scale, blocked, .. }, HeadPath::Avx2) => {
                let (hq, hscale) = quantize_i16_pairs(&h[..d]);
                // SAFETY: runs_here() checked AVX2; the layouts are as for `i8_vnni`.
                unsafe { head_x86::i8_avx2(blocked, scale, &hq, hscale, logits) };
                return;
            }
            (_, HeadPath::Avx512) => {
                // SAFETY: runs_here() checked AVX-512F; every row slice has exactly d values.
                unsafe {
                    match self {
                        Embedding::F32(w) => head_x86::f32_rows(w, h, d, logits),
                        Embedding::F16(w) => head_x86::f16_rows(w, h, d, logits),
                        Embedding::Int8 { q, scale, .. } => head_x86::i8_rows(q, scale, h, d, logits),
                        Embedding::Int4(_) => unreachable!("handled above"),
                    }
                }
                return;
            }
            (Embedding::F32(w), HeadPath::Avx2) => {
                // SAFETY: runs_here() checked AVX2, FMA and F16C; every row has d values.
                unsafe { head_x86::f32_rows_avx2(w, h, d, logits) };
                return;
            }
            (Embedding::F16(w), HeadPath::Avx2) => {
                // SAFETY: as above.
                unsafe { head_x86::f16_rows_avx2(w, h, d, logits) };
                return;
            }
            _ => {}
        }
        match self {
            Embedding::F32(w) => {
                for (l, row) in logits.iter_mut().zip(w.chunks_exact(d)) {
                    *l = dot(row, h);
                }
            }
            Embedding::F16(w) => {
                let mut row = vec![0.0f32; d];
                for (l, wr) in logits.iter_mut().zip(w.chunks_exact(d)) {
                    for (o, &b) in row.iter_mut().zip(wr) {
                        *o = f16_to_f32(b);
                    }
                    *l = dot(&row, h);
                }
            }
            Embedding::Int8 { q, scale, .. } => {
                let mut row = vec![0.0f32; d];
                for ((l, qr), &sc) in logits.iter_mut().zip(q.chunks_exact(d)).zip(scale) {
                    for (o, &a) in row.iter_mut().zip(qr) {
                        *o = f32::from(a);
                    }
                    *l = dot(&row, h) * sc;
                }
            }
            Embedding::Int4(_) => unreachable!("handled above"),
        }
    }
}

/// Whether the CPU has AVX-512 BW and VNNI (the int8 head's `vpdpwssd`).
#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    crate::cpu::avx512bw() && crate::cpu::avx512vnni()
}

/// The output head's implementations ([`Embedding::head`]); chosen once per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPath {
    /// Portable code (f32 arithmetic; the int4 reference).
    Portable,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512F (BW + VNNI for the int8 and int4 heads when present).
    Avx512,
    /// aarch64 NEON: the int4 head with `smlal` ([`super::head_neon`]), f32 rows with
    /// `fmla`; f16 and int8 rows take the portable code.
    Neon,
    /// WebAssembly SIMD128 (a `+simd128` build): the int4 head with `i16x8.extmul`
    /// ([`super::head_simd128`]); f32, f16 and int8 rows take the portable code.
    Simd128,
}

impl HeadPath {
    const ALL: [HeadPath; 5] =
        [HeadPath::Portable, HeadPath::Avx2, HeadPath::Avx512, HeadPath::Neon, HeadPath::Simd128];

    /// Whether this CPU runs the path.
    pub fn runs_here(self) -> bool {
        match self {
            HeadPath::Portable => true,
            HeadPath::Neon => crate::cpu::neon(),
            HeadPath::Simd128 => crate::cpu::simd128(),
            #[cfg(target_arch = "x86_64")]
            HeadPath::Avx2 => crate::cpu::avx2() && crate::cpu::fma() && crate::cpu::f16c(),
            #[cfg(target_arch = "x86_64")]
            HeadPath::Avx512 => crate::cpu::avx512f(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The paths this CPU runs.
    pub fn available() -> Vec<HeadPath> {
        HeadPath::ALL.into_iter().filter(|p| p.runs_here()).collect()
    }

    /// The fastest path this CPU runs (detected once).
    pub fn best() -> HeadPath {
        static BEST: std::sync::OnceLock<HeadPath> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *HeadPath::available().last().expect("portable always runs"))
    }

    /// Name as accepted by [`HeadPath::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            HeadPath::Portable => "portable",
            HeadPath::Avx2 => "avx2",
            HeadPath::Avx512 => "avx512",
            HeadPath::Neon => "neon",
            HeadPath::Simd128 => "simd128",
        }
    }

    /// Path by name (`portable`, `avx2`, `avx512`, `auto`); errors if unknown or not
    /// supported here.
    pub fn from_name(name: &str) -> Result<HeadPath, String> {
        let n = name.to_ascii_lowercase();
        if n == "auto" {
            return Ok(HeadPath::best());
        }
        let p = HeadPath::ALL
            .into_iter()
            .find(|p| p.name() == n)
            .ok_or_else(|| format!("unknown head {name:?} (portable, avx2, avx512, neon, simd128, auto)"))?;
        if !p.runs_here() {
            let names: Vec<&str> = HeadPath::available().iter().map(|p| p.name()).collect();
            return Err(format!("head {name} does not run on this CPU (available: {})", names.join(", ")));
        }
        Ok(p)
    }
}

impl Embedding {
    /// [`Embedding::head`] for several vectors; the VNNI path reads each weight once for
    /// four vectors. Results equal `head` on each vector exactly.
    pub fn head_batch(&self, hs: &[&[f32]], d: usize, logits: &mut [&mut [f32]], path: HeadPath) {
        assert_eq!(hs.len(), logits.len(), "one logits buffer per vector");
        #[cfg(target_arch = "x86_64")]
        if let Embedding::Int8 { scale, blocked, .. } = self
            && path == HeadPath::Avx512
            && vnni()
        {
            let mut h4 = hs.chunks_exact(4);
            let mut l4 = logits.chunks_exact_mut(4);
            for (h4, l4) in (&mut h4).zip(&mut l4) {
                let q: Vec<(Vec<i32>, f32)> = h4.iter().map(|h| quantize_i16_pairs(&h[..d])).collect();
                let [a, b, c, e] = l4 else { unreachable!("chunks of four") };
                // SAFETY: AVX-512 BW and VNNI were just detected; `blocked` has the layout of
                // `blocked_int8(q, V, d)`; every hq has ceil(d / 2) pairs.
                unsafe {
                    head_x86::i8_vnni4(
                        blocked,
                        scale,
                        [&q[0].0, &q[1].0, &q[2].0, &q[3].0],
                        [q[0].1, q[1].1, q[2].1, q[3].1],
                        [a, b, c, e],
                    )
                };
            }
            for (h, l) in h4.remainder().iter().zip(l4.into_remainder()) {
                self.head(h, d, l, path);
            }
            return;
        }
        for (h, l) in hs.iter().zip(logits.iter_mut()) {
            self.head(h, d, l, path);
        }
    }
}

/// Int8 rows regrouped for the VNNI head: [ceil(V / 16), ceil(d / 2), 16, 2]: for each block
/// of 16 rows and each pair of columns, row r's two values at bytes 2r, 2r+1 (zeros past
/// the matrix).
pub fn blocked_int8(q: &[i8], v: usize, d: usize) -> Vec<i8> {
    let (blocks, pairs) = (v.div_ceil(16), d.div_ceil(2));
    let mut out = vec![0i8; blocks * pairs * 32];
    for row in 0..v {
        for col in 0..d {
            let (b, lane, p, half) = (row / 16, row % 16, col / 2, col % 2);
            out[(b * pairs + p) * 32 + lane * 2 + half] = q[row * d + col];
        }
    }
    out
}

/// h rounded to int16 with one scale (max |h| / 32767), packed two per i32 (low half
/// first) as `vpdpwssd` reads them; returns (pairs, scale).
pub fn quantize_i16_pairs(h: &[f32]) -> (Vec<i32>, f32) {
    let max = h.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 32767.0 } else { 1.0 };
    let inv = 1.0 / scale;
    let q = |i: usize| h.get(i).map_or(0, |&v| (v * inv).round() as i16);
    let pairs = (0..h.len().div_ceil(2)).map(|p| (q(2 * p) as u16 as i32) | ((q(2 * p + 1) as i32) << 16));
    (pairs.collect(), scale)
}

/// The int8 head's integer arithmetic, plainly: `h` rounded to int16 pairs as
/// [`quantize_i16_pairs`] does, exact integer row sums, then `sum · row scale · h scale`.
/// The VNNI and AVX2 int8 heads equal it bit for bit.
pub fn i8_head_reference(q: &[i8], scale: &[f32], h: &[f32], d: usize, logits: &mut [f32]) {
    let (hq, hscale) = quantize_i16_pairs(&h[..d]);
    let h16: Vec<i32> = hq.iter().flat_map(|&p| [i32::from(p as i16), p >> 16]).collect();
    for ((l, row), &s) in logits.iter_mut().zip(q.chunks_exact(d)).zip(scale) {
        let sum: i32 = row.iter().zip(&h16).map(|(&w, &x)| i32::from(w) * x).sum();
        *l = sum as f32 * s * hscale;
    }
}

/// f16 bits to f32, exactly, with integer and float operations the compiler vectorises (the
/// `half` crate's software path converts one value at a time): the exponent is rebiased by
/// one exact multiply by 2^112 (which also turns f16 subnormals into f32 normals), and
/// ±inf / NaN keep an all-ones exponent.
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let h = u32::from(bits);
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7FFF;
    let finite = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000); // 2^112
    let v = if em >= 0x7C00 { f32::from_bits((em << 13) | 0x7F80_0000) } else { finite };
    f32::from_bits(v.to_bits() | sign)
}

/// f32 dot product with 8 independent accumulators (vectorises well).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for j in 0..8 {
            acc[j] += ca[j] * cb[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n / 8 * 8..n {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use flashlm_core::rng::uniform_values as data;

    /// Every int8 head path but the portable one equals the integer reference bit for bit;
    /// the float paths agree with the portable one up to reassociation. Shapes with ragged
    /// row blocks and columns; every path this CPU runs, the others named as skipped.
    #[test]
    fn heads_match_their_references() {
        for p in [HeadPath::Avx2, HeadPath::Avx512, HeadPath::Neon, HeadPath::Simd128] {
            if !p.runs_here() {
                eprintln!("skipped head path {}: not supported by this CPU", p.name());
            }
        }
        for (v, d) in [(1, 2), (17, 30), (100, 192), (33, 64), (10, 7)] {
            let w = data(v * d, (v * d) as u64);
            let h = data(d, 7);
            let q: Vec<i8> = w.iter().map(|&x| (x * 127.0).round() as i8).collect();
            let scale: Vec<f32> = (0..v).map(|r| 0.01 + r as f32 * 1e-3).collect();
            let mut want = vec![0.0f32; v];
            i8_head_reference(&q, &scale, &h, d, &mut want);
            let int8 =
                Embedding::Int8 { q: q.clone(), scale: scale.clone(), blocked: blocked_int8(&q, v, d) };
            let f32e = Embedding::F32(w.clone());
            let f16e = Embedding::F16(w.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect());
            let mut slow = [vec![0.0f32; v], vec![0.0f32; v], vec![0.0f32; v]];
            for (e, out) in [&int8, &f32e, &f16e].into_iter().zip(&mut slow) {
                e.head(&h, d, out, HeadPath::Portable);
            }
            for path in HeadPath::available() {
                let mut got = vec![0.0f32; v];
                int8.head(&h, d, &mut got, path);
                #[cfg(target_arch = "x86_64")]
                let quantised = path == HeadPath::Avx2 || (path == HeadPath::Avx512 && vnni());
                #[cfg(not(target_arch = "x86_64"))]
                let quantised = false;
                if quantised {
                    assert_eq!(got, want, "int8 head, {} path, {v}x{d}", path.name());
                } else {
                    for (a, b) in got.iter().zip(&slow[0]) {
                        assert!((a - b).abs() <= 1e-5 * (1.0 + d as f32), "{v}x{d}: {a} vs {b}");
                    }
                }
                // The quantised int8 head stays close to the float one.
                for (a, b) in want.iter().zip(&slow[0]) {
                    assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "int8 rounding {v}x{d}: {a} vs {b}");
                }
                for (e, slow) in [&f32e, &f16e].into_iter().zip(&slow[1..]) {
                    e.head(&h, d, &mut got, path);
                    for (a, b) in got.iter().zip(slow) {
                        assert!((a - b).abs() <= 1e-5 * (1.0 + d as f32), "{}: {a} vs {b}", path.name());
                    }
                }
            }
        }
    }

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for b in 0..=u16::MAX {
            let (a, want) = (f16_to_f32(b), half::f16::from_bits(b).to_f32());
            if want.is_nan() {
                assert!(a.is_nan(), "{b:#06x}");
            } else {
                assert_eq!(a.to_bits(), want.to_bits(), "{b:#06x}: {a} vs {want}");
            }
        }
    }

    #[test]
    fn head_names() {
        assert_eq!(HeadPath::from_name("portable"), Ok(HeadPath::Portable));
        assert_eq!(HeadPath::from_name("auto"), Ok(HeadPath::best()));
        assert!(HeadPath::from_name("neon9").is_err());
        assert_eq!(HeadPath::from_name("neon").is_ok(), crate::cpu::neon());
        for p in HeadPath::available() {
            assert_eq!(HeadPath::from_name(p.name()), Ok(p));
        }
    }
}
