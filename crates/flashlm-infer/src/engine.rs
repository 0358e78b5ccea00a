//! The streaming engine: one token in, logits out, constant work per token.
//!
//! Read it top to bottom: [`Config`] (the shape), [`Weights`] (what the file holds, ternary
//! matrices repacked into bit planes), [`RunState`] (the buffers and the conv history), then
//! [`Model::forward`].

use flashlm_tokenizer::Tokenizer;

use crate::format::{self, EmbeddingDtype, FlmFile, FormatError, Kind, TensorRef};
use crate::kernels::{Kernel, TernaryPlanes};

/// Model shape: the file header (vocab, d, blocks, h, k, seq_len, norm eps, embedding storage).
pub type Config = format::Header;

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
    },
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
            Embedding::Int8 { q, scale } => {
                for (o, &v) in out.iter_mut().zip(&q[id * d..(id + 1) * d]) {
                    *o = f32::from(v) * scale[id];
                }
            }
        }
    }

    /// logits[v] = row(v) · h for every row (the head: a float layer, it may multiply).
    /// Uses AVX-512 FMA when `fast` and the CPU has it, else portable code.
    pub fn head(&self, h: &[f32], d: usize, logits: &mut [f32], fast: bool) {
        #[cfg(target_arch = "x86_64")]
        if fast && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was just detected; every row slice has exactly d values.
            unsafe {
                match self {
                    Embedding::F32(w) => head_x86::f32_rows(w, h, d, logits),
                    Embedding::F16(w) => head_x86::f16_rows(w, h, d, logits),
                    Embedding::Int8 { q, scale } => head_x86::i8_rows(q, scale, h, d, logits),
                }
            }
            return;
        }
        let _ = fast;
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
                        *o = half::f16::from_bits(b).to_f32();
                    }
                    *l = dot(&row, h);
                }
            }
            Embedding::Int8 { q, scale } => {
                for ((l, qr), &sc) in logits.iter_mut().zip(q.chunks_exact(d)).zip(scale) {
                    let mut s = 0.0f32;
                    for (&a, &b) in qr.iter().zip(h) {
                        s += f32::from(a) * b;
                    }
                    *l = s * sc;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod head_x86 {
    use std::arch::x86_64::*;

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
    /// [d, k] conv taps (tap j multiplies the input k-1-j steps back).
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
}

/// A loaded model.
#[derive(Debug)]
pub struct Model {
    /// Shape.
    pub config: Config,
    /// Weights.
    pub weights: Weights,
    /// The vocabulary that came with the file.
    pub tokenizer: Tokenizer,
    /// Ternary kernel in use.
    pub kernel: Kernel,
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
        let (v, d, hd, k) = (h.vocab_size, h.dim, h.hidden, h.kernel_size);
        let config = h;
        let emb = tensor(&f, "embedding.weight")?;
        let embedding = match (h.embedding, emb.kind) {
            (EmbeddingDtype::F32, Kind::F32) if emb.dims() == [v, d] => {
                Embedding::F32(f32s(&f, "embedding.weight", &[v, d])?)
            }
            (EmbeddingDtype::F16, Kind::F16) if emb.dims() == [v, d] => {
                Embedding::F16(emb.data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
            }
            (EmbeddingDtype::Int8, Kind::Int8Rows) if emb.dims() == [v, d] => {
                let q = emb.data[..v * d].iter().map(|&b| b as i8).collect();
                let scale: Vec<f32> = emb.data[v * d..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if scale.iter().any(|s| !s.is_finite()) {
                    return Err(FormatError::Invalid("embedding row scales are not finite".into()));
                }
                Embedding::Int8 { q, scale }
            }
            _ => {
                return Err(FormatError::Invalid(format!(
                    "embedding.weight: {:?} {:?} does not match the header ({:?}, [{v}, {d}])",
                    emb.kind,
                    emb.dims(),
                    h.embedding
                )));
            }
        };
        let mut blocks = Vec::with_capacity(h.n_blocks);
        for i in 0..h.n_blocks {
            let p = format!("blocks.{i}.");
            blocks.push(BlockWeights {
                norm1: f32s(&f, &format!("{p}norm1.scale"), &[d])?,
                up: ternary(&f, &format!("{p}mixer.up.weight"), 2 * d, d)?,
                conv: f32s(&f, &format!("{p}mixer.conv.weight"), &[d, k])?,
                down: ternary(&f, &format!("{p}mixer.down.weight"), d, d)?,
                norm2: f32s(&f, &format!("{p}norm2.scale"), &[d])?,
                w_gate: ternary(&f, &format!("{p}ffn.W_gate.weight"), hd, d)?,
                w_up: ternary(&f, &format!("{p}ffn.W_up.weight"), hd, d)?,
                w_down: ternary(&f, &format!("{p}ffn.W_down.weight"), d, hd)?,
            });
        }
        let final_norm = f32s(&f, "final_norm.scale", &[d])?;

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
        Ok(Model { config, weights: Weights { embedding, blocks, final_norm }, tokenizer, kernel })
    }

    /// Fresh buffers (empty history) for one sequence.
    pub fn new_state(&self) -> RunState {
        let c = &self.config;
        let pad = |n: usize| n.div_ceil(64) * 64;
        RunState {
            x: vec![0.0; c.dim],
            xb: vec![0.0; pad(c.dim.max(c.hidden))],
            gv: vec![0.0; 2 * c.dim],
            mix: vec![0.0; pad(c.dim)],
            out: vec![0.0; c.dim],
            g: vec![0.0; c.hidden],
            u: vec![0.0; c.hidden],
            hb: vec![0.0; pad(c.hidden)],
            history: vec![0.0; c.n_blocks * c.kernel_size.saturating_sub(1) * c.dim],
            ring_head: 0,
            logits: vec![0.0; c.vocab_size],
            pos: 0,
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

    fn step(&self, s: &mut RunState, token: u16, want_logits: bool) {
        let c = &self.config;
        let (d, hd, k) = (c.dim, c.hidden, c.kernel_size);
        let w = &self.weights;
        let token = (token as usize).min(c.vocab_size - 1);
        w.embedding.row(token, d, &mut s.x);
        let hist_rows = k.saturating_sub(1);
        for (bi, b) in w.blocks.iter().enumerate() {
            // Mixer: x += down(conv(value) * sigmoid(gate)), value/gate = up(norm1(x)).
            rmsnorm(&mut s.xb[..d], &s.x, &b.norm1, c.norm_eps);
            self.kernel.matvec(&b.up, &s.xb, &mut s.gv);
            let hist = &mut s.history[bi * hist_rows * d..(bi + 1) * hist_rows * d];
            for ch in 0..d {
                let taps = &b.conv[ch * k..(ch + 1) * k];
                let mut acc = taps[k - 1] * s.gv[d + ch];
                for (j, &tap) in taps[..hist_rows].iter().enumerate() {
                    let row = (s.ring_head + j) % hist_rows;
                    acc += tap * hist[row * d + ch];
                }
                let gate = 1.0 / (1.0 + (-s.gv[ch]).exp());
                s.mix[ch] = acc * gate;
            }
            if hist_rows > 0 {
                let oldest = s.ring_head;
                hist[oldest * d..(oldest + 1) * d].copy_from_slice(&s.gv[d..2 * d]);
            }
            self.kernel.matvec(&b.down, &s.mix, &mut s.out);
            for (x, o) in s.x.iter_mut().zip(&s.out) {
                *x += o;
            }
            // GLU: x += W_down(silu(W_gate h) * W_up h), h = norm2(x).
            rmsnorm(&mut s.xb[..d], &s.x, &b.norm2, c.norm_eps);
            self.kernel.matvec(&b.w_gate, &s.xb, &mut s.g);
            self.kernel.matvec(&b.w_up, &s.xb, &mut s.u);
            for i in 0..hd {
                let g = s.g[i];
                s.hb[i] = g / (1.0 + (-g).exp()) * s.u[i];
            }
            self.kernel.matvec(&b.w_down, &s.hb, &mut s.out);
            for (x, o) in s.x.iter_mut().zip(&s.out) {
                *x += o;
            }
        }
        if hist_rows > 0 {
            s.ring_head = (s.ring_head + 1) % hist_rows;
        }
        s.pos += 1;
        if want_logits {
            rmsnorm(&mut s.xb[..d], &s.x, &w.final_norm, c.norm_eps);
            w.embedding.head(&s.xb[..d], d, &mut s.logits, self.kernel != Kernel::Scalar);
        }
    }
}

/// out = x / sqrt(mean(x²) + eps) * gain.
fn rmsnorm(out: &mut [f32], x: &[f32], gain: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(gain) {
        *o = v * r * g;
    }
}
