//! The streaming engine: one token in, logits out, constant work per token.
//!
//! Read it top to bottom: [`Config`] (the shape), [`Weights`] (what the file holds, ternary
//! matrices repacked into bit planes), [`RunState`] (the buffers and the conv history), then
//! [`Model::forward`].

use flashlm_tokenizer::Tokenizer;

use crate::format::{self, EmbeddingDtype, FlmFile, FormatError, Kind, TensorRef};
#[cfg(target_arch = "x86_64")]
use crate::kernels::head_x86;
use crate::kernels::head4::{Int4Embedding, Variant};
use crate::kernels::{Kernel, TernaryPlanes};
use crate::vmath;

pub use flashlm_core::Config;
use flashlm_core::params::{self, BlockTensor};

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
                HeadPath::Avx2 => Variant::Avx2,
                HeadPath::Avx512 if Variant::Avx512Vnni.runs_here() => Variant::Avx512Vnni,
                HeadPath::Avx512 => Variant::best(),
            };
            e.logits_with(&h[..d], logits, v);
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
}

impl HeadPath {
    const ALL: [HeadPath; 3] = [HeadPath::Portable, HeadPath::Avx2, HeadPath::Avx512];

    /// Whether this CPU runs the path.
    pub fn runs_here(self) -> bool {
        match self {
            HeadPath::Portable => true,
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
            .ok_or_else(|| format!("unknown head {name:?} (portable, avx2, avx512, auto)"))?;
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

/// One block's weights.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// [d] RMSNorm gains before the mixer.
    pub norm1: Vec<f32>,
    /// [2d, d] ternary: rows 0..d gate, d..2d value.
    pub up: TernaryPlanes,
    /// [k, d] conv taps, transposed from the file's [d, k] at load time: row j multiplies
    /// the input k-1-j steps back (row k-1 the current one).
    pub conv: Vec<f32>,
    /// [d, d] ternary.
    pub down: TernaryPlanes,
    /// [d] RMSNorm gains before the GLU.
    pub norm2: Vec<f32>,
    /// [h, d] ternary.
    pub w_gate: TernaryPlanes,
    /// [h, d] ternary.
    pub w_up: TernaryPlanes,
    /// [d, h] ternary.
    pub w_down: TernaryPlanes,
}

/// All weights.
#[derive(Debug, Clone)]
pub struct Weights {
    /// [V, d] tied embedding / head.
    pub embedding: Embedding,
    /// The blocks.
    pub blocks: Vec<BlockWeights>,
    /// [d] final RMSNorm gains.
    pub final_norm: Vec<f32>,
}

/// Buffers for one sequence.
#[derive(Debug, Clone)]
pub struct RunState {
    x: Vec<f32>,       // [d] residual stream
    xb: Vec<f32>,      // [pad64(max(d, h))] normed input to a ternary layer, zero padded
    gv: Vec<f32>,      // [2d] up projection: gate | value
    mix: Vec<f32>,     // [pad64(d)] conv(value) * sigmoid(gate), zero padded
    out: Vec<f32>,     // [d] block output before the residual add
    g: Vec<f32>,       // [h] W_gate x
    u: Vec<f32>,       // [h] W_up x
    hb: Vec<f32>,      // [pad64(h)] silu(g) * u, zero padded
    history: Vec<f32>, // [blocks, k-1, d] last k-1 conv inputs per block (ring)
    ring_head: usize,  // index of the oldest history row
    /// [V] logits of the last token.
    pub logits: Vec<f32>,
    /// Tokens processed.
    pub pos: usize,
    batch: BatchBufs, // buffers of Model::forward_batch, allocated on first use
    overflowed: bool, // a residual stream held a NaN or an infinity (sticky)
}

impl RunState {
    /// Whether the residual stream of some token so far held a NaN or an infinity: weights
    /// that are each finite but overflow f32 together. The logits that follow can look like
    /// numbers and still be garbage; callers stop instead (checked per token, `d` values).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// Tokens per chunk in [`Model::forward_batch`] on one thread.
pub const BATCH: usize = 32;

/// Tokens per chunk with several threads: every matmul is one parallel region, and waking
/// the pool costs tens of microseconds, so each region gets a lot of work.
pub const BATCH_THREADED: usize = 256;

/// Buffers of [`Model::forward_batch`]: the one-token buffers of [`RunState`], one row per
/// token of a chunk ([B, width] for B = BATCH or BATCH_THREADED, rows padded like their
/// one-token versions).
#[derive(Debug, Clone, Default)]
struct BatchBufs {
    x: Vec<f32>,   // [B, d]
    xb: Vec<f32>,  // [B, pad64(max(d, h))]
    gv: Vec<f32>,  // [B, 2d]
    mix: Vec<f32>, // [B, pad64(d)]
    out: Vec<f32>, // [B, d]
    g: Vec<f32>,   // [B, h]
    u: Vec<f32>,   // [B, h]
    hb: Vec<f32>,  // [B, pad64(h)]
}

/// The first `n` rows of width `w` of `buf`.
fn rows(buf: &[f32], n: usize, w: usize) -> Vec<&[f32]> {
    buf.chunks_exact(w).take(n).collect()
}

/// The first `n` rows of width `w` of `buf`, mutable.
fn rows_mut(buf: &mut [f32], n: usize, w: usize) -> Vec<&mut [f32]> {
    buf.chunks_exact_mut(w).take(n).collect()
}

/// A loaded model.
#[derive(Debug)]
pub struct Model {
    /// Shape.
    pub config: Config,
    /// RMSNorm epsilon (from the file).
    pub norm_eps: f32,
    /// Weights.
    pub weights: Weights,
    /// The vocabulary that came with the file.
    pub tokenizer: Tokenizer,
    /// Ternary kernel in use.
    pub kernel: Kernel,
    /// Output head implementation in use ([`HeadPath::best`], or `portable` with the
    /// scalar kernel; [`Model::set_head`] changes it).
    pub head: HeadPath,
    /// Threads for [`Model::forward_batch`] (None: the calling thread only).
    pool: Option<rayon::ThreadPool>,
}

fn tensor<'a>(f: &FlmFile<'a>, name: &str) -> Result<TensorRef<'a>, FormatError> {
    f.tensors.get(name).copied().ok_or_else(|| FormatError::Invalid(format!("missing tensor {name}")))
}

fn f32s(f: &FlmFile<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>, FormatError> {
    let t = tensor(f, name)?;
    if t.kind != Kind::F32 || t.dims() != shape {
        return Err(FormatError::Invalid(format!(
            "{name}: expected f32 {shape:?}, found {:?} {:?}",
            t.kind,
            t.dims()
        )));
    }
    let v: Vec<f32> = t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(FormatError::Invalid(format!("{name}: non-finite values")));
    }
    Ok(v)
}

fn u32s(f: &FlmFile<'_>, name: &str) -> Result<(Vec<u32>, usize), FormatError> {
    let t = tensor(f, name)?;
    if t.kind != Kind::U32 || t.ndim != 1 {
        return Err(FormatError::Invalid(format!("{name}: expected a u32 vector")));
    }
    Ok((t.data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), t.dims()[0]))
}

fn ternary(f: &FlmFile<'_>, name: &str, rows: usize, cols: usize) -> Result<TernaryPlanes, FormatError> {
    let t = tensor(f, name)?;
    if t.kind != Kind::Ternary || t.dims() != [rows, cols] {
        return Err(FormatError::Invalid(format!(
            "{name}: expected ternary [{rows}, {cols}], found {:?} {:?}",
            t.kind,
            t.dims()
        )));
    }
    let w = format::unpack_ternary(t.data, rows * cols)
        .map_err(|e| FormatError::Invalid(format!("{name}: {e}")))?;
    Ok(TernaryPlanes::from_ternary(&w, rows, cols, t.scale))
}

impl Model {
    /// Load from the bytes of a `.flm` file, with the given kernel.
    pub fn from_bytes(bytes: &[u8], kernel: Kernel) -> Result<Self, FormatError> {
        let f = format::read(bytes)?;
        let h = f.header;
        let config = h.config;
        let (v, d, k) = (config.vocab_size, config.dim, config.kernel_size);
        let emb = tensor(&f, params::EMBEDDING)?;
        let embedding = match (h.embedding, emb.kind) {
            (EmbeddingDtype::F32, Kind::F32) if emb.dims() == [v, d] => {
                Embedding::F32(f32s(&f, params::EMBEDDING, &[v, d])?)
            }
            (EmbeddingDtype::F16, Kind::F16) if emb.dims() == [v, d] => {
                let bits: Vec<u16> =
                    emb.data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                // An all-ones exponent is an infinity or a NaN.
                if let Some(i) = bits.iter().position(|&b| b & 0x7C00 == 0x7C00) {
                    return Err(FormatError::Invalid(format!(
                        "{}: non-finite f16 value at row {}, column {}",
                        params::EMBEDDING,
                        i / d,
                        i % d
                    )));
                }
                Embedding::F16(bits)
            }
            (EmbeddingDtype::Int8, Kind::Int8Rows) if emb.dims() == [v, d] => {
                let q: Vec<i8> = emb.data[..v * d].iter().map(|&b| b as i8).collect();
                let scale: Vec<f32> = emb.data[v * d..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if scale.iter().any(|s| !s.is_finite()) {
                    return Err(FormatError::Invalid("embedding row scales are not finite".into()));
                }
                let blocked = blocked_int8(&q, v, d);
                Embedding::Int8 { q, scale, blocked }
            }
            (EmbeddingDtype::Int4, Kind::Int4Groups) if emb.dims() == [v, d] => Embedding::Int4(
                Int4Embedding::from_data(emb.data, v, d)
                    .map_err(|e| FormatError::Invalid(format!("{}: {e}", params::EMBEDDING)))?,
            ),
            _ => {
                return Err(FormatError::Invalid(format!(
                    "{}: {:?} {:?} does not match the header ({:?}, [{v}, {d}])",
                    params::EMBEDDING,
                    emb.kind,
                    emb.dims(),
                    h.embedding
                )));
            }
        };
        let mut blocks = Vec::with_capacity(config.n_blocks);
        for i in 0..config.n_blocks {
            let floats =
                |t: BlockTensor| f32s(&f, &t.name(i), &format::stored_shape(t.role(), &t.shape(&config)));
            let tern = |t: BlockTensor| {
                let shape = t.shape(&config);
                ternary(&f, &t.name(i), shape[0], shape[1])
            };
            blocks.push(BlockWeights {
                norm1: floats(BlockTensor::Norm1)?,
                up: tern(BlockTensor::Up)?,
                conv: params::taps_time_major(&floats(BlockTensor::Conv)?, d, k),
                down: tern(BlockTensor::Down)?,
                norm2: floats(BlockTensor::Norm2)?,
                w_gate: tern(BlockTensor::WGate)?,
                w_up: tern(BlockTensor::WUp)?,
                w_down: tern(BlockTensor::WDown)?,
            });
        }
        let final_norm = f32s(&f, params::FINAL_NORM, &[d])?;

        // The tokenizer: id -> GPT-2 id, and the bytes of every token (checked against GPT-2).
        let (id_to_base, n) = u32s(&f, "tokenizer.id_to_base")?;
        if n > v.saturating_sub(flashlm_tokenizer::NUM_SPECIAL) {
            return Err(FormatError::Invalid(format!("tokenizer has {n} tokens for a vocabulary of {v}")));
        }
        let tokenizer =
            Tokenizer::from_id_to_base(v, id_to_base).map_err(|e| FormatError::Invalid(e.to_string()))?;
        let (offsets, n_off) = u32s(&f, "tokenizer.offsets")?;
        let bytes = tensor(&f, "tokenizer.bytes")?;
        if n_off != v + 1 || bytes.kind != Kind::U8 {
            return Err(FormatError::Invalid(
                "tokenizer.offsets / tokenizer.bytes have the wrong shape".into(),
            ));
        }
        for id in 0..v {
            let (a, b) = (offsets[id] as usize, offsets[id + 1] as usize);
            if a > b || b > bytes.data.len() || &bytes.data[a..b] != tokenizer.token_bytes(id as u16) {
                return Err(FormatError::Invalid(format!(
                    "tokenizer bytes of id {id} disagree with GPT-2 r50k_base"
                )));
            }
        }
        Ok(Model {
            config,
            norm_eps: h.norm_eps,
            weights: Weights { embedding, blocks, final_norm },
            tokenizer,
            kernel,
            head: if kernel == Kernel::Scalar { HeadPath::Portable } else { HeadPath::best() },
            pool: None,
        })
    }

    /// Use `threads` threads in [`Model::forward_batch`] (prompt processing, evaluation of a
    /// long text): the tokens of a chunk are split between them, four at a time. One-token
    /// generation stays on the calling thread. Results do not depend on the thread count.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), String> {
        self.pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| format!("cannot start {threads} threads: {e}"))?,
            )
        } else {
            None
        };
        Ok(())
    }

    /// Use another output head implementation (errors if it does not run here).
    pub fn set_head(&mut self, head: HeadPath) -> Result<(), String> {
        if !head.runs_here() {
            return Err(format!("head {} does not run on this CPU", head.name()));
        }
        self.head = head;
        Ok(())
    }

    /// `kernel.matmul` over the tokens, split four at a time across the pool if there is one.
    fn matmul(&self, m: &TernaryPlanes, xs: &[&[f32]], ys: &mut [&mut [f32]]) {
        use rayon::prelude::*;
        match &self.pool {
            Some(pool) if xs.len() > 4 => pool.install(|| {
                xs.par_chunks(4).zip(ys.par_chunks_mut(4)).for_each(|(x, y)| self.kernel.matmul(m, x, y))
            }),
            _ => self.kernel.matmul(m, xs, ys),
        }
    }

    /// `embedding.head_batch` over the vectors, split like [`Model::matmul`].
    fn head_batch(&self, hs: &[&[f32]], logits: &mut [&mut [f32]]) {
        use rayon::prelude::*;
        let (d, fast) = (self.config.dim, self.head);
        match &self.pool {
            Some(pool) if hs.len() > 4 => pool.install(|| {
                hs.par_chunks(4)
                    .zip(logits.par_chunks_mut(4))
                    .for_each(|(h, l)| self.weights.embedding.head_batch(h, d, l, fast))
            }),
            _ => self.weights.embedding.head_batch(hs, d, logits, fast),
        }
    }

    /// Fresh buffers (empty history) for one sequence.
    pub fn new_state(&self) -> RunState {
        let c = &self.config;
        let pad = |n: usize| n.div_ceil(64) * 64;
        RunState {
            x: vec![0.0; c.dim],
            xb: vec![0.0; pad(c.dim.max(c.glu_hidden))],
            gv: vec![0.0; 2 * c.dim],
            mix: vec![0.0; pad(c.dim)],
            out: vec![0.0; c.dim],
            g: vec![0.0; c.glu_hidden],
            u: vec![0.0; c.glu_hidden],
            hb: vec![0.0; pad(c.glu_hidden)],
            history: vec![0.0; c.n_blocks * c.kernel_size.saturating_sub(1) * c.dim],
            ring_head: 0,
            logits: vec![0.0; c.vocab_size],
            pos: 0,
            batch: BatchBufs::default(),
            overflowed: false,
        }
    }

    /// Feed one token; returns the logits for the next one.
    pub fn forward<'s>(&self, s: &'s mut RunState, token: u16) -> &'s [f32] {
        self.step(s, token, true);
        &s.logits
    }

    /// Feed one token without computing logits (prompt tokens whose prediction is unused).
    pub fn feed(&self, s: &mut RunState, token: u16) {
        self.step(s, token, false);
    }

    /// Feed `tokens` in order, exactly as [`Model::feed`] / [`Model::forward`] one at a time
    /// would (same results, bit for bit), but [`BATCH`] tokens at a time so every weight is
    /// read once per chunk. With `logits` ([tokens.len() * V]), writes each token's
    /// next-token logits there; `s.logits` always ends with the last token's logits when
    /// `logits` is given.
    pub fn forward_batch(&self, s: &mut RunState, tokens: &[u16], mut logits: Option<&mut [f32]>) {
        let c = &self.config;
        let v = c.vocab_size;
        if let Some(l) = &logits {
            assert_eq!(l.len(), tokens.len() * v, "logits must hold one row per token");
        }
        let pad = |n: usize| n.div_ceil(64) * 64;
        let (d, hd, k) = (c.dim, c.glu_hidden, c.kernel_size);
        let (wxb, wmix, whb) = (pad(d.max(hd)), pad(d), pad(hd));
        let batch = if self.pool.is_some() { BATCH_THREADED } else { BATCH };
        if s.batch.x.len() < batch * d {
            s.batch = BatchBufs {
                x: vec![0.0; batch * d],
                xb: vec![0.0; batch * wxb],
                gv: vec![0.0; batch * 2 * d],
                mix: vec![0.0; batch * wmix],
                out: vec![0.0; batch * d],
                g: vec![0.0; batch * hd],
                u: vec![0.0; batch * hd],
                hb: vec![0.0; batch * whb],
            };
        }
        let hist_rows = k.saturating_sub(1);
        let w = &self.weights;
        for (ci, chunk) in tokens.chunks(batch).enumerate() {
            let n = chunk.len();
            let b = &mut s.batch;
            for (&tok, x) in chunk.iter().zip(b.x.chunks_exact_mut(d)) {
                w.embedding.row((tok as usize).min(v - 1), d, x);
            }
            for (bi, bw) in w.blocks.iter().enumerate() {
                for (xb, x) in b.xb.chunks_exact_mut(wxb).zip(b.x.chunks_exact(d)).take(n) {
                    vmath::rmsnorm(&mut xb[..d], x, &bw.norm1, self.norm_eps);
                }
                self.matmul(&bw.up, &rows(&b.xb, n, wxb), &mut rows_mut(&mut b.gv, n, 2 * d));
                let hist = &mut s.history[bi * hist_rows * d..(bi + 1) * hist_rows * d];
                let mut head = s.ring_head;
                for (mix, gv) in b.mix.chunks_exact_mut(wmix).zip(b.gv.chunks_exact(2 * d)).take(n) {
                    let (gate, value) = gv.split_at(d);
                    vmath::conv_gate(&mut mix[..d], gate, value, &bw.conv, hist, head);
                    if hist_rows > 0 {
                        hist[head * d..(head + 1) * d].copy_from_slice(value);
                        head = (head + 1) % hist_rows;
                    }
                }
                self.matmul(&bw.down, &rows(&b.mix, n, wmix), &mut rows_mut(&mut b.out, n, d));
                for (x, o) in b.x.chunks_exact_mut(d).zip(b.out.chunks_exact(d)).take(n) {
                    vmath::add_assign(x, o);
                }
                for (xb, x) in b.xb.chunks_exact_mut(wxb).zip(b.x.chunks_exact(d)).take(n) {
                    vmath::rmsnorm(&mut xb[..d], x, &bw.norm2, self.norm_eps);
                }
                let xbs = rows(&b.xb, n, wxb);
                self.matmul(&bw.w_gate, &xbs, &mut rows_mut(&mut b.g, n, hd));
                self.matmul(&bw.w_up, &xbs, &mut rows_mut(&mut b.u, n, hd));
                for ((hb, g), u) in
                    b.hb.chunks_exact_mut(whb).zip(b.g.chunks_exact(hd)).zip(b.u.chunks_exact(hd)).take(n)
                {
                    vmath::silu_mul(&mut hb[..hd], g, u);
                }
                self.matmul(&bw.w_down, &rows(&b.hb, n, whb), &mut rows_mut(&mut b.out, n, d));
                for (x, o) in b.x.chunks_exact_mut(d).zip(b.out.chunks_exact(d)).take(n) {
                    vmath::add_assign(x, o);
                }
            }
            if hist_rows > 0 {
                s.ring_head = (s.ring_head + n) % hist_rows;
            }
            s.pos += n;
            s.overflowed |= !vmath::all_finite(&b.x[..n * d]);
            if let Some(all) = logits.as_deref_mut() {
                for (xb, x) in b.xb.chunks_exact_mut(wxb).zip(b.x.chunks_exact(d)).take(n) {
                    vmath::rmsnorm(&mut xb[..d], x, &w.final_norm, self.norm_eps);
                }
                let out = &mut all[ci * batch * v..(ci * batch + n) * v];
                let mut outs: Vec<&mut [f32]> = out.chunks_exact_mut(v).collect();
                let hs: Vec<&[f32]> = b.xb.chunks_exact(wxb).take(n).map(|r| &r[..d]).collect();
                self.head_batch(&hs, &mut outs);
            }
        }
        if let Some(all) = logits
            && !tokens.is_empty()
        {
            s.logits.copy_from_slice(&all[(tokens.len() - 1) * v..]);
        }
    }

    fn step(&self, s: &mut RunState, token: u16, want_logits: bool) {
        let c = &self.config;
        let (d, hd, k) = (c.dim, c.glu_hidden, c.kernel_size);
        let w = &self.weights;
        let token = (token as usize).min(c.vocab_size - 1);
        w.embedding.row(token, d, &mut s.x);
        let hist_rows = k.saturating_sub(1);
        for (bi, b) in w.blocks.iter().enumerate() {
            // Mixer: x += down(conv(value) * sigmoid(gate)), value/gate = up(norm1(x)).
            vmath::rmsnorm(&mut s.xb[..d], &s.x, &b.norm1, self.norm_eps);
            self.kernel.matvec(&b.up, &s.xb, &mut s.gv);
            let hist = &mut s.history[bi * hist_rows * d..(bi + 1) * hist_rows * d];
            let (gate, value) = s.gv.split_at(d);
            vmath::conv_gate(&mut s.mix[..d], gate, value, &b.conv, hist, s.ring_head);
            if hist_rows > 0 {
                let oldest = s.ring_head;
                hist[oldest * d..(oldest + 1) * d].copy_from_slice(&s.gv[d..2 * d]);
            }
            self.kernel.matvec(&b.down, &s.mix, &mut s.out);
            vmath::add_assign(&mut s.x, &s.out);
            // GLU: x += W_down(silu(W_gate h) * W_up h), h = norm2(x).
            vmath::rmsnorm(&mut s.xb[..d], &s.x, &b.norm2, self.norm_eps);
            self.kernel.matvec2(&b.w_gate, &b.w_up, &s.xb, &mut s.g, &mut s.u);
            vmath::silu_mul(&mut s.hb[..hd], &s.g, &s.u);
            self.kernel.matvec(&b.w_down, &s.hb, &mut s.out);
            vmath::add_assign(&mut s.x, &s.out);
        }
        if hist_rows > 0 {
            s.ring_head = (s.ring_head + 1) % hist_rows;
        }
        s.pos += 1;
        s.overflowed |= !vmath::all_finite(&s.x);
        if want_logits {
            vmath::rmsnorm(&mut s.xb[..d], &s.x, &w.final_norm, self.norm_eps);
            w.embedding.head(&s.xb[..d], d, &mut s.logits, self.head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// Every int8 head path but the portable one equals the integer reference bit for bit;
    /// the float paths agree with the portable one up to reassociation. Shapes with ragged
    /// row blocks and columns; every path this CPU runs, the others named as skipped.
    #[test]
    fn heads_match_their_references() {
        for p in [HeadPath::Avx2, HeadPath::Avx512] {
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
        assert!(HeadPath::from_name("neon").is_err());
        for p in HeadPath::available() {
            assert_eq!(HeadPath::from_name(p.name()), Ok(p));
        }
    }
}
