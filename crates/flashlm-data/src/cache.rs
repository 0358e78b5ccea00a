//! The token cache: one tokenized split on disk (spec in `docs/FORMAT.md`).
//!
//! ```text
//! offset size field
//!      0    8 magic          b"FLMTOKS\0"
//!      8    4 version        u32 = 1
//!     12    4 flags          u32, bit 0: payload is zstd-compressed
//!     16    8 vocab_hash     u64, Tokenizer::fingerprint() of the vocabulary used
//!     24    8 source_hash    u64, xxh3 of the source files' bytes (Stories::source_hash)
//!     32    8 token_count    u64, number of u16 tokens
//!     40    8 payload_hash   u64, xxh3 of the token bytes (u16 little-endian, uncompressed)
//!     48    8 payload_len    u64, bytes of payload stored after the header
//!     56    8 reserved       0
//!     64    … payload        token_count u16 LE, raw or one zstd frame
//! ```
//! All integers little-endian. A cache whose vocab or source hash differs from the caller's
//! is reported as [`CacheStatus::Stale`] and rebuilt, never used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

/// File magic.
pub const MAGIC: [u8; 8] = *b"FLMTOKS\0";
/// Version this build writes and reads.
pub const VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 64;
/// Flag: the payload is one zstd frame.
pub const FLAG_ZSTD: u32 = 1;
const _: () = assert!(HEADER_LEN == 8 + 4 + 4 + 8 * 6);

/// Errors reading or writing a token cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// I/O failure.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        err: std::io::Error,
    },
    /// The file is not a (valid) token cache.
    #[error("{path}: not a usable token cache: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A cache written by a newer FlashLM.
    #[error(
        "{path}: token cache version {found} is not supported (this build reads {VERSION}); delete it to rebuild"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
}

/// The identity of a cache's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    /// Fingerprint of the vocabulary.
    pub vocab_hash: u64,
    /// Hash of the source text files.
    pub source_hash: u64,
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHeader {
    /// Version.
    pub version: u32,
    /// Flags.
    pub flags: u32,
    /// What the tokens were built from.
    pub key: CacheKey,
    /// Number of tokens.
    pub token_count: u64,
    /// xxh3 of the uncompressed token bytes.
    pub payload_hash: u64,
    /// Stored payload bytes.
    pub payload_len: u64,
}

impl CacheHeader {
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.key.vocab_hash.to_le_bytes());
        b[24..32].copy_from_slice(&self.key.source_hash.to_le_bytes());
        b[32..40].copy_from_slice(&self.token_count.to_le_bytes());
        b[40..48].copy_from_slice(&self.payload_hash.to_le_bytes());
        b[48..56].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    fn parse(b: &[u8], path: &Path) -> Result<Self, CacheError> {
        let corrupt = |reason: &str| CacheError::Corrupt { path: path.to_path_buf(), reason: reason.into() };
        if b.len() < HEADER_LEN {
            return Err(corrupt("shorter than its 64-byte header"));
        }
        if b[0..8] != MAGIC {
            return Err(corrupt("bad magic (not a FlashLM token cache)"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(CacheError::Version { path: path.to_path_buf(), found: version });
        }
        let flags = u32_at(12);
        if flags & !FLAG_ZSTD != 0 {
            return Err(corrupt("unknown flags"));
        }
        Ok(Self {
            version,
            flags,
            key: CacheKey { vocab_hash: u64_at(16), source_hash: u64_at(24) },
            token_count: u64_at(32),
            payload_hash: u64_at(40),
            payload_len: u64_at(48),
        })
    }
}

fn tokens_to_bytes(tokens: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tokens.len() * 2);
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out
}

/// Write a cache atomically (temp file, fsync, rename).
pub fn write_cache(path: &Path, key: CacheKey, tokens: &[u16], compress: bool) -> Result<(), CacheError> {
    let raw = tokens_to_bytes(tokens);
    let payload_hash = xxh3_64(&raw);
    let io = |err| CacheError::Io { path: path.to_path_buf(), err };
    let payload = if compress { zstd::bulk::compress(&raw, 3).map_err(io)? } else { raw };
    let header = CacheHeader {
        version: VERSION,
        flags: if compress { FLAG_ZSTD } else { 0 },
        key,
        token_count: tokens.len() as u64,
        payload_hash,
        payload_len: payload.len() as u64,
    };
    flashlm_core::write::write_atomic_with(path, |w| {
        w.write_all(&header.to_bytes())?;
        w.write_all(&payload)
    })
    .map_err(io)
}

/// Read just the header.
pub fn read_header(path: &Path) -> Result<CacheHeader, CacheError> {
    let io = |err| CacheError::Io { path: path.to_path_buf(), err };
    let mut f = flashlm_core::limits::open_regular(path).map_err(io)?;
    let mut b = Vec::with_capacity(HEADER_LEN);
    Read::by_ref(&mut f).take(HEADER_LEN as u64).read_to_end(&mut b).map_err(io)?;
    CacheHeader::parse(&b, path)
}

/// Read and fully verify a cache.
pub fn read_cache(path: &Path) -> Result<(CacheHeader, Vec<u16>), CacheError> {
    let io = |err| CacheError::Io { path: path.to_path_buf(), err };
    let bytes = flashlm_core::limits::read_regular(path).map_err(io)?;
    from_bytes(&bytes, path)
}

/// Parse and fully verify the bytes of a cache file (`path` names it in errors).
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<(CacheHeader, Vec<u16>), CacheError> {
    let corrupt = |reason: String| CacheError::Corrupt { path: path.to_path_buf(), reason };
    let h = CacheHeader::parse(bytes, path)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != h.payload_len {
        return Err(corrupt(format!(
            "payload is {} bytes, header says {} (truncated?)",
            payload.len(),
            h.payload_len
        )));
    }
    let want = h.token_count.checked_mul(2).ok_or_else(|| corrupt("absurd token count".into()))?;
    let raw = if h.flags & FLAG_ZSTD != 0 {
        // Never allocate more than the header promises, and only a sane multiple of the file.
        if want > payload.len() as u64 * 64 + 1024 {
            return Err(corrupt(format!(
                "token count {} does not fit a {}-byte payload",
                h.token_count,
                payload.len()
            )));
        }
        zstd::bulk::decompress(payload, want as usize).map_err(|e| corrupt(format!("zstd: {e}")))?
    } else {
        payload.to_vec()
    };
    if raw.len() as u64 != want {
        return Err(corrupt(format!("{} token bytes, header says {want}", raw.len())));
    }
    if xxh3_64(&raw) != h.payload_hash {
        return Err(corrupt("checksum mismatch".into()));
    }
    let tokens = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    Ok((h, tokens))
}

/// Whether a cache file can be used for a given key.
#[derive(Debug)]
pub enum CacheStatus {
    /// No cache file.
    Missing,
    /// Built from another vocabulary or source.
    Stale(String),
    /// Unreadable or corrupt.
    Broken(CacheError),
    /// Valid and matching.
    Fresh(Vec<u16>),
}

/// Check a cache against the key the caller needs, and load it if it matches. Every token id
/// must be below `vocab_size`: a file with valid checksums can still hold ids the model has
/// no row for (crafted, or written by a bug), and those are refused here, not at a lookup.
pub fn check_cache(path: &Path, key: CacheKey, vocab_size: usize) -> CacheStatus {
    if !path.exists() {
        return CacheStatus::Missing;
    }
    match read_header(path) {
        Err(e) => return CacheStatus::Broken(e),
        Ok(h) if h.key.vocab_hash != key.vocab_hash => {
            return CacheStatus::Stale("built with another vocabulary".into());
        }
        Ok(h) if h.key.source_hash != key.source_hash => {
            return CacheStatus::Stale("built from other source files".into());
        }
        Ok(_) => {}
    }
    match read_cache(path) {
        Ok((_, tokens)) => match tokens.iter().position(|&t| usize::from(t) >= vocab_size) {
            None => CacheStatus::Fresh(tokens),
            Some(i) => CacheStatus::Broken(CacheError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("token {i} is id {}, outside the vocabulary of {vocab_size} ids", tokens[i]),
            }),
        },
        Err(e) => CacheStatus::Broken(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: CacheKey = CacheKey { vocab_hash: 7, source_hash: 9 };

    proptest! {
        #[test]
        fn round_trip(tokens in proptest::collection::vec(any::<u16>(), 0..2000), compress in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("t.tokens");
            write_cache(&p, KEY, &tokens, compress).unwrap();
            let (h, back) = read_cache(&p).unwrap();
            prop_assert_eq!(back, tokens);
            prop_assert_eq!(h.key, KEY);
        }
    }

    #[test]
    fn detects_stale_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tokens");
        let tokens: Vec<u16> = (0..5000).map(|i| (i * 7 % 9999) as u16).collect();
        write_cache(&p, KEY, &tokens, true).unwrap();
        assert!(matches!(check_cache(&p, KEY, 10_000), CacheStatus::Fresh(t) if t == tokens));
        assert!(
            matches!(check_cache(&p, CacheKey { vocab_hash: 8, ..KEY }, 10_000), CacheStatus::Stale(r) if r.contains("vocabulary"))
        );
        assert!(
            matches!(check_cache(&p, CacheKey { source_hash: 1, ..KEY }, 10_000), CacheStatus::Stale(r) if r.contains("source"))
        );
        assert!(matches!(check_cache(&dir.path().join("none"), KEY, 10_000), CacheStatus::Missing));

        let bytes = std::fs::read(&p).unwrap();
        // Truncated.
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(check_cache(&p, KEY, 10_000), CacheStatus::Broken(CacheError::Corrupt { .. })));
        // A flipped payload byte (raw payload so the checksum, not zstd, catches it).
        write_cache(&p, KEY, &tokens, false).unwrap();
        let mut b = std::fs::read(&p).unwrap();
        b[HEADER_LEN + 100] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let e = read_cache(&p).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // Future version.
        let mut b = std::fs::read(&p).unwrap();
        b[8] = 2;
        std::fs::write(&p, &b).unwrap();
        assert!(read_cache(&p).unwrap_err().to_string().contains("version 2"));
        // Valid checksums, an id past the vocabulary.
        write_cache(&p, KEY, &[1, 2, 65535, 3], false).unwrap();
        assert!(read_cache(&p).is_ok(), "the file itself is well formed");
        match check_cache(&p, KEY, 10_000) {
            CacheStatus::Broken(e) => {
                assert!(e.to_string().contains("token 2 is id 65535, outside the vocabulary of 10000"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_cache(&p, KEY, 65536), CacheStatus::Fresh(_)));
        // Not a cache at all.
        std::fs::write(&p, b"hello").unwrap();
        assert!(read_cache(&p).unwrap_err().to_string().contains("header"));
    }
}
