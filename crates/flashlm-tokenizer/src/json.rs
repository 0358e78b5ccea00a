//! The tokenizer's JSON file.
//!
//! ```json
//! {
//!   "format": "flashlm-tokenizer", "version": 1, "base_encoding": "r50k_base",
//!   "vocab_size": 10000,
//!   "specials": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
//!   "id_to_base": {"4": 13, "5": 290, ...},   // our id -> GPT-2 id
//!   "base_to_id": {"13": 4, "290": 5, ...},   // GPT-2 id -> our id
//!   "stats": {"texts": ..., "coverage": ...}  // optional
//! }
//! ```
//! `vocab_size`, `id_to_base` and `base_to_id` are exactly the keys of the original FlashLM
//! v4 `tokenizer.json`, so the original's loader reads our files, and ours reads its files
//! (a file without `format` is taken to be an original one).

use serde_json::{Map, Value, json};

use crate::{NUM_SPECIAL, Tokenizer, TokenizerError, VocabStats};

/// Version of the JSON layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "flashlm-tokenizer";

pub(crate) fn to_json(tok: &Tokenizer, stats: Option<&VocabStats>) -> String {
    let mut id_to_base = Map::new();
    let mut base_to_id = Map::new();
    for (i, &b) in tok.id_to_base().iter().enumerate() {
        let id = NUM_SPECIAL + i;
        id_to_base.insert(id.to_string(), json!(b));
        base_to_id.insert(b.to_string(), json!(id));
    }
    let mut v = json!({
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "base_encoding": "r50k_base",
        "vocab_size": tok.vocab_size(),
        "specials": {"pad": crate::PAD_ID, "unk": crate::UNK_ID, "bos": crate::BOS_ID, "eos": crate::EOS_ID},
        "id_to_base": id_to_base,
        "base_to_id": base_to_id,
    });
    if let Some(s) = stats {
        v["stats"] = serde_json::to_value(s).unwrap_or(Value::Null);
    }
    v.to_string()
}

pub(crate) fn from_json(bytes: &[u8], name: &str) -> Result<Tokenizer, TokenizerError> {
    Ok(from_json_with_stats(bytes, name)?.0)
}

pub(crate) fn from_json_with_stats(
    bytes: &[u8],
    name: &str,
) -> Result<(Tokenizer, Option<VocabStats>), TokenizerError> {
    let bad = |reason: String| TokenizerError::Format { path: name.to_string(), reason };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("top level is not an object".into()))?;
    if let Some(fmt) = obj.get("format") {
        if fmt.as_str() != Some(FORMAT_NAME) {
            return Err(bad(format!("format is {fmt}, expected \"{FORMAT_NAME}\"")));
        }
        let version =
            obj.get("version").and_then(Value::as_u64).ok_or_else(|| bad("missing version".into()))?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(TokenizerError::UnsupportedVersion {
                path: name.to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if let Some(enc) = obj.get("base_encoding")
            && enc.as_str() != Some("r50k_base")
        {
            return Err(bad(format!("base encoding {enc} is not supported (only r50k_base)")));
        }
    }
    let vocab_size = obj
        .get("vocab_size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("missing or non-integer \"vocab_size\"".into()))? as usize;
    let map = obj
        .get("id_to_base")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing \"id_to_base\" object".into()))?;
    let mut pairs = Vec::with_capacity(map.len());
    for (k, val) in map {
        let id: usize = k.parse().map_err(|_| bad(format!("id_to_base key {k:?} is not an integer")))?;
        let base = val
            .as_u64()
            .filter(|&b| b <= u64::from(u32::MAX))
            .ok_or_else(|| bad(format!("id_to_base[{k}] = {val} is not a GPT-2 id")))?;
        pairs.push((id, base as u32));
    }
    pairs.sort_unstable();
    for (i, &(id, _)) in pairs.iter().enumerate() {
        if id != NUM_SPECIAL + i {
            return Err(bad(format!(
                "id_to_base must cover ids {NUM_SPECIAL}.. without gaps; expected id {}, found {id}",
                NUM_SPECIAL + i
            )));
        }
    }
    let tok = Tokenizer::from_id_to_base(vocab_size, pairs.into_iter().map(|(_, b)| b).collect())?;
    if let Some(b2i) = obj.get("base_to_id") {
        let b2i = b2i.as_object().ok_or_else(|| bad("\"base_to_id\" is not an object".into()))?;
        if b2i.len() != tok.id_to_base().len() {
            return Err(bad(format!(
                "base_to_id has {} entries but id_to_base has {}",
                b2i.len(),
                tok.id_to_base().len()
            )));
        }
        for (k, val) in b2i {
            let base: u32 = k.parse().map_err(|_| bad(format!("base_to_id key {k:?} is not an integer")))?;
            if val.as_u64() != Some(u64::from(tok.base_to_id(base))) {
                return Err(bad(format!("base_to_id[{k}] = {val} disagrees with id_to_base")));
            }
        }
    }
    let stats = obj.get("stats").and_then(|s| serde_json::from_value(s.clone()).ok());
    Ok((tok, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tokenizer {
        Tokenizer::from_id_to_base(12, vec![464, 13, 11, 290]).unwrap()
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let back = from_json(to_json(&t, None).as_bytes(), "t").unwrap();
        assert_eq!(back.id_to_base(), t.id_to_base());
        assert_eq!(back.vocab_size(), 12);
        assert_eq!(back.fingerprint(), t.fingerprint());
    }

    #[test]
    fn reads_original_format() {
        let orig =
            r#"{"vocab_size": 12, "id_to_base": {"5": 13, "4": 464}, "base_to_id": {"464": 4, "13": 5}}"#;
        let t = from_json(orig.as_bytes(), "orig").unwrap();
        assert_eq!(t.id_to_base(), &[464, 13]);
        assert_eq!(t.base_to_id(13), 5);
    }

    #[test]
    fn refuses_newer_version_with_hint() {
        let s = to_json(&sample(), None).replace("\"version\":1", "\"version\":7");
        let e = from_json(s.as_bytes(), "t.json").unwrap_err();
        assert!(matches!(e, TokenizerError::UnsupportedVersion { found: 7, .. }), "{e}");
        assert!(e.to_string().contains("flashlm-data prepare"));
    }

    #[test]
    fn refuses_inconsistent_files() {
        for bad in [
            "not json",
            "[]",
            r#"{"vocab_size": 12}"#,
            r#"{"vocab_size": 12, "id_to_base": {"4": 13, "6": 14}}"#,
            r#"{"vocab_size": 12, "id_to_base": {"4": 13}, "base_to_id": {"13": 5}}"#,
            r#"{"vocab_size": 12, "id_to_base": {"4": -1}}"#,
            r#"{"vocab_size": 5, "id_to_base": {"4": 13, "5": 14}}"#,
            r#"{"format": "other", "version": 1, "vocab_size": 12, "id_to_base": {}}"#,
        ] {
            assert!(from_json(bad.as_bytes(), "x").is_err(), "accepted {bad}");
        }
    }
}
