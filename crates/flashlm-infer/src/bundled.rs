//! The pretrained small model that ships inside the binary (`models/flashlm-small.flm`,
//! described in `models/README.md`), so `flashlm-infer --prompt "..."` works right after
//! cloning, with no download and no `--model`.

/// Where the bundled model lives in the repository, for messages and docs.
pub const PATH: &str = "models/flashlm-small.flm";

/// The bytes of `models/flashlm-small.flm` (int4 embedding, ~1.85 MB).
pub const BYTES: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/flashlm-small.flm"));

/// The bundled file must stay small enough to commit (the model card's promise).
const _: () = assert!(BYTES.len() < 3_000_000, "models/flashlm-small.flm must stay under 3 MB");
