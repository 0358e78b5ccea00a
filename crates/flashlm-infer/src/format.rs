//! The `.flm` file: a packed FlashLM model (spec in `docs/FORMAT.md`).
//!
//! ```text
//! ┌──────────────────────── header, 128 bytes ────────────────────────┐
//! │ magic "FLASHLM\0" │ version u32 │ header_len u32 │ vocab u32 │ dim u32 │
//! │ n_blocks u32 │ hidden u32 │ kernel u32 │ seq_len u32 │ norm_eps f32    │
//! │ flags u32 │ n_tensors u32 │ dir_offset u64 │ file_len u64 │ reserved │
//! ├──────────── tensor directory: n_tensors × 80-byte entries ─────────┤
//! │ name [36] │ scale f32 │ kind u32 │ ndim u32 │ shape [u32; 4]         │
//! │ offset u64 │ len u64                                                │
//! ├──────────────── data, every tensor 64-byte aligned ────────────────┤
//! │ ternary: 2-bit codes (w+1) row-major [out, in], 4 per byte, LSB first │
//! │ f32 / f16 / u32 little-endian; int8 rows: [rows·cols] i8 + [rows] f32 │
//! │ int4 groups (version 2): [rows·cols/2] nibbles q+8, low first, then  │
//! │ [rows·cols/32] f16 scales, one per 32 values of a row                 │
//! └────────────────────────────────────────────────────────────────────┘
//! ```
//! The reader trusts nothing: every offset, length, shape and count is checked against the
//! file size and the header's config before any allocation or access.

use std::collections::HashMap;

use flashlm_core::Config;
use flashlm_core::params::Role;

/// File magic.
pub const MAGIC: [u8; 8] = *b"FLASHLM\0";
/// Newest format version this build reads. Version 2 adds int4 groups ([`Kind::Int4Groups`],
/// embedding storage 3); a file that uses none of them is written as version 1, which older
/// builds read.
pub const VERSION: u32 = 2;
/// Oldest version this build reads.
pub const MIN_VERSION: u32 = 1;
/// Values per scale in [`Kind::Int4Groups`].
pub use flashlm_core::quant::INT4_GROUP;
/// Header size.
pub const HEADER_LEN: usize = 128;
/// Directory entry size.
pub const ENTRY_LEN: usize = 80;
/// Alignment of every tensor's data.
pub const ALIGN: usize = 64;
/// Longest tensor name.
pub const NAME_LEN: usize = 36;
/// The tokenizer's tensors, beside the model's: GPT-2 id of every FlashLM id [V] (u32)...
pub const TOKENIZER_IDS: &str = "tokenizer.id_to_base";
/// ... where each token's bytes start in [`TOKENIZER_BYTES`] [V + 1] (u32) ...
pub const TOKENIZER_OFFSETS: &str = "tokenizer.offsets";
/// ... and the bytes of every token, back to back (u8).
pub const TOKENIZER_BYTES: &str = "tokenizer.bytes";
/// Upper bound on tensors in a file (a model has 2 + 8·blocks + tokenizer tensors).
pub const MAX_TENSORS: usize = 4096;
const _: () = assert!(ENTRY_LEN == NAME_LEN + 4 + 4 + 4 + 16 + 8 + 8);
const _: () = assert!(HEADER_LEN >= 8 + 4 * 11 + 8 * 2);

/// Largest ternary scale α = mean|W| accepted (the largest f16). Trained models have α well
/// below 1; a larger one only overflows the forward pass.
pub const MAX_TERNARY_SCALE: f32 = 65504.0;

fn scale_ok(scale: f32) -> bool {
    scale.is_finite() && (0.0..=MAX_TERNARY_SCALE).contains(&scale)
}

/// How a tensor's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// f32 values.
    F32 = 0,
    /// IEEE half values.
    F16 = 1,
    /// 2-bit ternary codes (w + 1), 4 per byte; `scale` is α.
    Ternary = 2,
    /// Rows of i8 followed by one f32 scale per row.
    Int8Rows = 3,
    /// u32 values.
    U32 = 4,
    /// Raw bytes.
    U8 = 5,
    /// 2-D [rows, cols], cols a multiple of [`INT4_GROUP`]: int4 values q in -8..=7 stored
    /// as q + 8, two per byte (first in the low nibble), row-major; then one f16 scale per
    /// group of 32 values of a row, [rows, cols / 32] (value = q · scale). Version 2.
    Int4Groups = 6,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Kind::F32,
            1 => Kind::F16,
            2 => Kind::Ternary,
            3 => Kind::Int8Rows,
            4 => Kind::U32,
            5 => Kind::U8,
            6 => Kind::Int4Groups,
            _ => return None,
        })
    }

    /// First format version that has this kind.
    pub fn min_version(self) -> u32 {
        if self == Kind::Int4Groups { 2 } else { 1 }
    }

    /// Exact byte length of a tensor of this kind and shape (None on overflow).
    pub fn byte_len(self, shape: &[usize]) -> Option<usize> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        match self {
            Kind::F32 | Kind::U32 => n.checked_mul(4),
            Kind::F16 => n.checked_mul(2),
            Kind::Ternary => Some(n.div_ceil(4)),
            Kind::Int8Rows => {
                let rows = *shape.first()?;
                n.checked_add(rows.checked_mul(4)?)
            }
            Kind::U8 => Some(n),
            Kind::Int4Groups => match *shape {
                [rows, cols] if cols.is_multiple_of(INT4_GROUP) && cols > 0 => {
                    n.checked_div(2)?.checked_add(rows.checked_mul(cols / INT4_GROUP)?.checked_mul(2)?)
                }
                _ => None,
            },
        }
    }
}

/// How the tied embedding is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingDtype {
    /// Exact.
    F32,
    /// Half precision (2 bytes per value).
    F16,
    /// i8 with one f32 scale per row (max|row| / 127).
    Int8,
    /// int4 with one f16 scale per 32 values of a row ([`Kind::Int4Groups`], version 2).
    Int4,
}

impl EmbeddingDtype {
    /// The header's storage flag.
    fn flag(self) -> u32 {
        match self {
            EmbeddingDtype::F32 => 0,
            EmbeddingDtype::F16 => 1,
            EmbeddingDtype::Int8 => 2,
            EmbeddingDtype::Int4 => 3,
        }
    }

    fn from_flag(f: u32) -> Option<Self> {
        [EmbeddingDtype::F32, EmbeddingDtype::F16, EmbeddingDtype::Int8, EmbeddingDtype::Int4]
            .into_iter()
            .find(|e| e.flag() == f)
    }

    /// First format version that has this storage (the kind it is stored as).
    pub fn min_version(self) -> u32 {
        if self == EmbeddingDtype::Int4 { Kind::Int4Groups.min_version() } else { 1 }
    }
}

/// What the header holds: the model shape, the norm epsilon and the embedding storage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    /// Model shape (the header has no room for more than [`Config::validate`] allows).
    pub config: Config,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Embedding storage.
    pub embedding: EmbeddingDtype,
}

impl Header {
    /// Refuse what the reader would refuse (an impossible shape, a bad epsilon).
    fn check(&self) -> Result<(), FormatError> {
        self.config.validate().map_err(FormatError::Invalid)?;
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return invalid("norm_eps is not a finite non-negative number");
        }
        Ok(())
    }
}

/// Why a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not a `.flm` file.
    #[error("not a FlashLM model file (bad magic); expected a .flm written by flashlm-export")]
    Magic,
    /// Another version.
    #[error(
        "model format version {0} is not supported (this build reads versions {MIN_VERSION} to {VERSION}); re-export the model with this version's flashlm-export, or update flashlm-infer"
    )]
    Version(u32),
    /// Damaged or hostile.
    #[error("invalid model file: {0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError::Invalid(msg.into()))
}

/// A tensor to write.
#[derive(Debug, Clone)]
pub struct TensorOut {
    /// Name (<= 36 bytes ASCII).
    pub name: String,
    /// Storage kind.
    pub kind: Kind,
    /// Shape (1..=4 dims).
    pub shape: Vec<usize>,
    /// α for ternary tensors, else 0.
    pub scale: f32,
    /// Exactly `kind.byte_len(shape)` bytes.
    pub data: Vec<u8>,
}

/// A tensor in a read file (borrowing the file bytes).
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Kind.
    pub kind: Kind,
    /// Shape, unused dims 0.
    pub shape: [usize; 4],
    /// Number of dims.
    pub ndim: usize,
    /// α for ternary tensors.
    pub scale: f32,
    /// The bytes.
    pub data: &'a [u8],
}

impl TensorRef<'_> {
    /// The used dims.
    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.ndim]
    }
}

/// Pack ternary values (-1, 0, 1) row-major into 2-bit codes.
pub fn pack_ternary(w: &[i8]) -> Vec<u8> {
    let mut out = vec![0u8; w.len().div_ceil(4)];
    for (i, &v) in w.iter().enumerate() {
        let code = (v.clamp(-1, 1) + 1) as u8;
        out[i / 4] |= code << (2 * (i % 4));
    }
    out
}

/// Unpack `n` 2-bit codes into ternary values; code 3 is invalid and reported.
pub fn unpack_ternary(bytes: &[u8], n: usize) -> Result<Vec<i8>, FormatError> {
    if bytes.len() < n.div_ceil(4) {
        return invalid("ternary data shorter than its shape");
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let code = (bytes[i / 4] >> (2 * (i % 4))) & 3;
        if code == 3 {
            return invalid(format!("ternary code 3 at weight {i} (codes are w+1 in 0..=2)"));
        }
        out.push(code as i8 - 1);
    }
    Ok(out)
}

/// The shape a parameter of this role and (PyTorch) shape has in a `.flm` file: conv taps
/// [d, 1, k] are stored as [d, k]; everything else as it is.
pub fn stored_shape(role: Role, shape: &[usize]) -> Vec<usize> {
    match (role, shape) {
        (Role::ConvTaps, &[d, 1, k]) => vec![d, k],
        _ => shape.to_vec(),
    }
}

/// Serialize a model file.
pub fn write(header: &Header, tensors: &[TensorOut]) -> Result<Vec<u8>, FormatError> {
    if tensors.len() > MAX_TENSORS {
        return invalid("too many tensors");
    }
    // Refuse anything the reader would refuse, so a written file always reads back.
    header.check()?;
    let mut names = std::collections::HashSet::new();
    for t in tensors {
        if !names.insert(&t.name) {
            return invalid(format!("tensor {} appears twice", t.name));
        }
        if t.kind == Kind::Ternary && !scale_ok(t.scale) {
            return invalid(format!(
                "tensor {}: scale {} is not a number between 0 and {MAX_TERNARY_SCALE}",
                t.name, t.scale
            ));
        }
    }
    let dir_offset = HEADER_LEN;
    let mut pos = (dir_offset + tensors.len() * ENTRY_LEN).next_multiple_of(ALIGN);
    let mut entries = Vec::with_capacity(tensors.len() * ENTRY_LEN);
    for t in tensors {
        if t.name.len() > NAME_LEN || !t.name.is_ascii() || t.name.is_empty() {
            return invalid(format!("bad tensor name {:?}", t.name));
        }
        if t.shape.is_empty() || t.shape.len() > 4 || t.kind.byte_len(&t.shape) != Some(t.data.len()) {
            return invalid(format!(
                "tensor {}: {} bytes do not match shape {:?}",
                t.name,
                t.data.len(),
                t.shape
            ));
        }
        let mut e = [0u8; ENTRY_LEN];
        e[..t.name.len()].copy_from_slice(t.name.as_bytes());
        e[36..40].copy_from_slice(&t.scale.to_le_bytes());
        e[40..44].copy_from_slice(&(t.kind as u32).to_le_bytes());
        e[44..48].copy_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for (i, &d) in t.shape.iter().enumerate() {
            let d = u32::try_from(d)
                .map_err(|_| FormatError::Invalid(format!("tensor {}: dim too large", t.name)))?;
            e[48 + 4 * i..52 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        e[64..72].copy_from_slice(&(pos as u64).to_le_bytes());
        e[72..80].copy_from_slice(&(t.data.len() as u64).to_le_bytes());
        entries.extend_from_slice(&e);
        pos = (pos + t.data.len()).next_multiple_of(ALIGN);
    }
    let file_len = pos;
    let mut out = vec![0u8; file_len];
    let h = &mut out[..HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    // The oldest version that can hold these tensors, so older readers keep working.
    let version = tensors.iter().map(|t| t.kind.min_version()).fold(header.embedding.min_version(), u32::max);
    let c = &header.config;
    let words = [
        version,
        HEADER_LEN as u32,
        c.vocab_size as u32,
        c.dim as u32,
        c.n_blocks as u32,
        c.glu_hidden as u32,
        c.conv_taps as u32,
        c.seq_len as u32,
        header.norm_eps.to_bits(),
        header.embedding.flag(),
        tensors.len() as u32,
    ];
    for (i, w) in words.iter().enumerate() {
        h[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    h[52..60].copy_from_slice(&(dir_offset as u64).to_le_bytes());
    h[60..68].copy_from_slice(&(file_len as u64).to_le_bytes());
    out[dir_offset..dir_offset + entries.len()].copy_from_slice(&entries);
    for (i, t) in tensors.iter().enumerate() {
        let e = &entries[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
        let off = u64::from_le_bytes(e[64..72].try_into().expect("8 bytes")) as usize;
        out[off..off + t.data.len()].copy_from_slice(&t.data);
    }
    Ok(out)
}

/// A parsed model file.
#[derive(Debug)]
pub struct FlmFile<'a> {
    /// The header.
    pub header: Header,
    /// Tensors by name.
    pub tensors: HashMap<String, TensorRef<'a>>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Parse and validate a model file held in memory.
pub fn read(bytes: &[u8]) -> Result<FlmFile<'_>, FormatError> {
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(FormatError::Magic);
    }
    if bytes.len() < 12 {
        return invalid("truncated header");
    }
    let version = u32_at(bytes, 8);
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(FormatError::Version(version));
    }
    if bytes.len() < HEADER_LEN {
        return invalid(format!("truncated header: {} bytes", bytes.len()));
    }
    if u32_at(bytes, 12) as usize != HEADER_LEN {
        return invalid("unexpected header length");
    }
    let word = |o: usize| u32_at(bytes, o) as usize;
    let config = Config {
        vocab_size: word(16),
        dim: word(20),
        n_blocks: word(24),
        glu_hidden: word(28),
        conv_taps: word(32),
        seq_len: word(36),
    };
    let norm_eps = f32::from_bits(u32_at(bytes, 40));
    let flag = u32_at(bytes, 44);
    let Some(embedding) = EmbeddingDtype::from_flag(flag).filter(|e| e.min_version() <= version) else {
        return invalid(format!("unknown embedding storage flag {flag} for format version {version}"));
    };
    let header = Header { config, norm_eps, embedding };
    header.check()?;
    let n = u32_at(bytes, 48) as usize;
    if n > MAX_TENSORS {
        return invalid(format!("{n} tensors (at most {MAX_TENSORS})"));
    }
    let dir_offset = u64_at(bytes, 52);
    let file_len = u64_at(bytes, 60);
    if file_len != bytes.len() as u64 {
        return invalid(format!(
            "file is {} bytes but its header says {file_len} (truncated or padded?)",
            bytes.len()
        ));
    }
    let dir_end = (n as u64).checked_mul(ENTRY_LEN as u64).and_then(|l| l.checked_add(dir_offset));
    match dir_end {
        Some(end) if dir_offset >= HEADER_LEN as u64 && end <= file_len => {}
        _ => return invalid("tensor directory lies outside the file"),
    }
    let dir_offset = dir_offset as usize;
    let mut tensors = HashMap::with_capacity(n);
    for i in 0..n {
        let e = &bytes[dir_offset + i * ENTRY_LEN..dir_offset + (i + 1) * ENTRY_LEN];
        let name_bytes = &e[..NAME_LEN];
        let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let name = std::str::from_utf8(&name_bytes[..name_len])
            .ok()
            .filter(|s| !s.is_empty() && s.is_ascii())
            .ok_or_else(|| FormatError::Invalid(format!("tensor {i} has a bad name")))?
            .to_string();
        let scale = f32::from_le_bytes(e[36..40].try_into().expect("4 bytes"));
        let kind = Kind::from_u32(u32_at(e, 40)).filter(|k| k.min_version() <= version).ok_or_else(|| {
            FormatError::Invalid(format!(
                "tensor {name}: unknown kind {} for format version {version}",
                u32_at(e, 40)
            ))
        })?;
        let ndim = u32_at(e, 44) as usize;
        if !(1..=4).contains(&ndim) {
            return invalid(format!("tensor {name}: {ndim} dims"));
        }
        let mut shape = [0usize; 4];
        for (d, s) in shape.iter_mut().enumerate().take(ndim) {
            *s = u32_at(e, 48 + 4 * d) as usize;
        }
        let offset = u64_at(e, 64);
        let len = u64_at(e, 72);
        let expect = kind.byte_len(&shape[..ndim]);
        if expect.map(|x| x as u64) != Some(len) {
            return invalid(format!(
                "tensor {name}: {len} bytes do not match shape {:?} of kind {kind:?}",
                &shape[..ndim]
            ));
        }
        match offset.checked_add(len) {
            Some(end)
                if offset.is_multiple_of(ALIGN as u64)
                    && end <= file_len
                    && offset >= (dir_offset + n * ENTRY_LEN) as u64 => {}
            _ => return invalid(format!("tensor {name}: data lies outside the file or is misaligned")),
        }
        if kind == Kind::Ternary && !scale_ok(scale) {
            return invalid(format!(
                "tensor {name}: scale {scale} is not a number between 0 and {MAX_TERNARY_SCALE}"
            ));
        }
        let data = &bytes[offset as usize..(offset + len) as usize];
        if tensors.insert(name.clone(), TensorRef { kind, shape, ndim, scale, data }).is_some() {
            return invalid(format!("tensor {name} appears twice"));
        }
    }
    Ok(FlmFile { header, tensors })
}
