//! The model and its streaming forward pass: one token in, logits out, constant work per token.
//!
//! Read it top to bottom: [`Config`] (the shape, `flashlm-core`'s), [`Weights`] (what the file
//! holds, ternary matrices repacked into bit planes), [`RunState`] (the buffers and the conv
//! history), then [`Model`]: loading, and [`Model::forward`]. The kernels it calls (ternary
//! products, the output head) are in [`crate::kernels`].

use flashlm_tokenizer::Tokenizer;

use crate::format::{self, EmbeddingDtype, FlmFile, FormatError, Kind, TensorRef};
use crate::kernels::head::blocked_int8;
pub use crate::kernels::head::{Embedding, HeadPath};
use crate::kernels::head4::Int4Embedding;
use crate::kernels::{Kernel, TernaryPlanes};
use crate::vmath;

pub use flashlm_core::Config;
use flashlm_core::params::{self, BlockTensor};

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

    /// Free the buffers [`Model::forward_batch`] allocated (they come back on its next call).
    pub fn release_batch_buffers(&mut self) {
        self.batch = BatchBufs::default();
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

impl BatchBufs {
    /// Row widths of `xb`, `mix` and `hb` (padded like their one-token versions).
    fn widths(c: &Config) -> (usize, usize, usize) {
        let pad = |n: usize| n.div_ceil(64) * 64;
        (pad(c.dim.max(c.glu_hidden)), pad(c.dim), pad(c.glu_hidden))
    }

    /// Grow to at least `rows` rows (never shrinks).
    fn reserve(&mut self, c: &Config, rows: usize) {
        if self.x.len() >= rows * c.dim {
            return;
        }
        let (d, hd) = (c.dim, c.glu_hidden);
        let (wxb, wmix, whb) = Self::widths(c);
        *self = BatchBufs {
            x: vec![0.0; rows * d],
            xb: vec![0.0; rows * wxb],
            gv: vec![0.0; rows * 2 * d],
            mix: vec![0.0; rows * wmix],
            out: vec![0.0; rows * d],
            g: vec![0.0; rows * hd],
            u: vec![0.0; rows * hd],
            hb: vec![0.0; rows * whb],
        };
    }
}

/// Buffers of [`Model::forward_many`], kept by the caller between steps.
#[derive(Debug, Clone, Default)]
pub struct StepBuffers(BatchBufs);

/// The mixer's gated conv for one token: `mix = conv(value) * sigmoid(gate)` over the
/// history ring `hist` ([k-1, d], oldest row at `oldest`), then `value` replaces the oldest row.
fn conv_step(mix: &mut [f32], gate: &[f32], value: &[f32], taps: &[f32], hist: &mut [f32], oldest: usize) {
    vmath::conv_gate(mix, gate, value, taps, hist, oldest);
    let d = value.len();
    if !hist.is_empty() {
        hist[oldest * d..(oldest + 1) * d].copy_from_slice(value);
    }
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
        let (v, d, k) = (config.vocab_size, config.dim, config.conv_taps);
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
        let (id_to_base, n) = u32s(&f, format::TOKENIZER_IDS)?;
        if n > v.saturating_sub(flashlm_tokenizer::NUM_SPECIAL) {
            return Err(FormatError::Invalid(format!("tokenizer has {n} tokens for a vocabulary of {v}")));
        }
        let tokenizer =
            Tokenizer::from_id_to_base(v, id_to_base).map_err(|e| FormatError::Invalid(e.to_string()))?;
        let (offsets, n_off) = u32s(&f, format::TOKENIZER_OFFSETS)?;
        let bytes = tensor(&f, format::TOKENIZER_BYTES)?;
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

    /// Load a `.flm` file, or the bundled model when `path` is None (what the CLI, the server
    /// and the bindings open). Errors name the file and the reason.
    pub fn load(path: Option<&std::path::Path>, kernel: Kernel) -> anyhow::Result<Self> {
        use anyhow::Context;
        match path {
            Some(path) => {
                let bytes = flashlm_core::limits::read_regular(path)
                    .with_context(|| format!("cannot read model {}", path.display()))?;
                Model::from_bytes(&bytes, kernel).with_context(|| format!("{}", path.display()))
            }
            None => Model::from_bytes(crate::bundled::BYTES, kernel)
                .with_context(|| format!("the bundled model ({})", crate::bundled::PATH)),
        }
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
        let (d, path) = (self.config.dim, self.head);
        match &self.pool {
            Some(pool) if hs.len() > 4 => pool.install(|| {
                hs.par_chunks(4)
                    .zip(logits.par_chunks_mut(4))
                    .for_each(|(h, l)| self.weights.embedding.head_batch(h, d, l, path))
            }),
            _ => self.weights.embedding.head_batch(hs, d, logits, path),
        }
    }

    /// Fresh buffers (empty history) for one sequence.
    pub fn new_state(&self) -> RunState {
        let c = &self.config;
        let (wxb, wmix, whb) = BatchBufs::widths(c);
        RunState {
            x: vec![0.0; c.dim],
            xb: vec![0.0; wxb],
            gv: vec![0.0; 2 * c.dim],
            mix: vec![0.0; wmix],
            out: vec![0.0; c.dim],
            g: vec![0.0; c.glu_hidden],
            u: vec![0.0; c.glu_hidden],
            hb: vec![0.0; whb],
            history: vec![0.0; c.n_blocks * c.conv_taps.saturating_sub(1) * c.dim],
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
        let batch = if self.pool.is_some() { BATCH_THREADED } else { BATCH };
        let (d, hist_rows) = (c.dim, c.conv_taps.saturating_sub(1));
        let mut bufs = std::mem::take(&mut s.batch);
        bufs.reserve(c, batch);
        for (ci, chunk) in tokens.chunks(batch).enumerate() {
            let n = chunk.len();
            let ring_head = s.ring_head;
            let history = &mut s.history;
            // Token i of the chunk sees the history as the i tokens before it left it.
            self.blocks(&mut bufs, chunk, |bi, i, mix, gate, value| {
                let hist = &mut history[bi * hist_rows * d..(bi + 1) * hist_rows * d];
                conv_step(
                    mix,
                    gate,
                    value,
                    &self.weights.blocks[bi].conv,
                    hist,
                    (ring_head + i) % hist_rows.max(1),
                );
            });
            if hist_rows > 0 {
                s.ring_head = (s.ring_head + n) % hist_rows;
            }
            s.pos += n;
            s.overflowed |= !vmath::all_finite(&bufs.x[..n * d]);
            if let Some(all) = logits.as_deref_mut() {
                let out = &mut all[ci * batch * v..(ci * batch + n) * v];
                let mut outs: Vec<&mut [f32]> = out.chunks_exact_mut(v).collect();
                self.final_head(&mut bufs, &mut outs);
            }
        }
        s.batch = bufs;
        if let Some(all) = logits
            && !tokens.is_empty()
        {
            s.logits.copy_from_slice(&all[(tokens.len() - 1) * v..]);
        }
    }

    /// Advance many independent sequences by one token each: `tokens[i]` is fed to
    /// `states[i]`, whose logits are then those of [`Model::forward`] on it alone (bit for
    /// bit), but every weight is read once for all of them. `scratch` holds the batch's
    /// buffers between calls (start with `StepBuffers::default()`).
    pub fn forward_many(&self, scratch: &mut StepBuffers, states: &mut [&mut RunState], tokens: &[u16]) {
        assert_eq!(states.len(), tokens.len(), "one token per state");
        let c = &self.config;
        let (d, v, hist_rows) = (c.dim, c.vocab_size, c.conv_taps.saturating_sub(1));
        let batch = if self.pool.is_some() { BATCH_THREADED } else { BATCH };
        for (group, toks) in states.chunks_mut(batch).zip(tokens.chunks(batch)) {
            let bufs = &mut scratch.0;
            bufs.reserve(c, group.len());
            self.blocks(bufs, toks, |bi, i, mix, gate, value| {
                let s = &mut *group[i];
                let hist = &mut s.history[bi * hist_rows * d..(bi + 1) * hist_rows * d];
                conv_step(mix, gate, value, &self.weights.blocks[bi].conv, hist, s.ring_head);
            });
            for (i, s) in group.iter_mut().enumerate() {
                if hist_rows > 0 {
                    s.ring_head = (s.ring_head + 1) % hist_rows;
                }
                s.pos += 1;
                s.overflowed |= !vmath::all_finite(&bufs.x[i * d..(i + 1) * d]);
            }
            let mut outs: Vec<&mut [f32]> = group.iter_mut().map(|s| &mut s.logits[..v]).collect();
            self.final_head(bufs, &mut outs);
        }
    }

    /// The blocks over a batch of rows: row i starts as the embedding of `tokens[i]`; `conv`
    /// does the mixer's gated conv for (block, row) and pushes the value into that row's
    /// history. Leaves the residual streams in `b.x`.
    fn blocks(
        &self,
        b: &mut BatchBufs,
        tokens: &[u16],
        mut conv: impl FnMut(usize, usize, &mut [f32], &[f32], &[f32]),
    ) {
        let c = &self.config;
        let (d, hd, v, n) = (c.dim, c.glu_hidden, c.vocab_size, tokens.len());
        let (wxb, wmix, whb) = BatchBufs::widths(c);
        let w = &self.weights;
        for (&tok, x) in tokens.iter().zip(b.x.chunks_exact_mut(d)) {
            w.embedding.row((tok as usize).min(v - 1), d, x);
        }
        for (bi, bw) in w.blocks.iter().enumerate() {
            for (xb, x) in b.xb.chunks_exact_mut(wxb).zip(b.x.chunks_exact(d)).take(n) {
                vmath::rmsnorm(&mut xb[..d], x, &bw.norm1, self.norm_eps);
            }
            self.matmul(&bw.up, &rows(&b.xb, n, wxb), &mut rows_mut(&mut b.gv, n, 2 * d));
            for (i, (mix, gv)) in
                b.mix.chunks_exact_mut(wmix).zip(b.gv.chunks_exact(2 * d)).take(n).enumerate()
            {
                let (gate, value) = gv.split_at(d);
                conv(bi, i, &mut mix[..d], gate, value);
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
    }

    /// Final norm and head over the first `outs.len()` rows of `b.x`.
    fn final_head(&self, b: &mut BatchBufs, outs: &mut [&mut [f32]]) {
        let d = self.config.dim;
        let (wxb, _, _) = BatchBufs::widths(&self.config);
        for (xb, x) in b.xb.chunks_exact_mut(wxb).zip(b.x.chunks_exact(d)).take(outs.len()) {
            vmath::rmsnorm(&mut xb[..d], x, &self.weights.final_norm, self.norm_eps);
        }
        let hs: Vec<&[f32]> = b.xb.chunks_exact(wxb).take(outs.len()).map(|r| &r[..d]).collect();
        self.head_batch(&hs, outs);
    }

    fn step(&self, s: &mut RunState, token: u16, want_logits: bool) {
        let c = &self.config;
        let (d, hd, k) = (c.dim, c.glu_hidden, c.conv_taps);
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
            conv_step(&mut s.mix[..d], gate, value, &b.conv, hist, s.ring_head);
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
