//! Request bodies parsed strictly: a key given twice in one object is refused, at any depth.
//! (`serde_json::Value` silently keeps the last one, so `{"max_tokens": 1, "max_tokens": 9999}`
//! would pass a proxy that checks the first and run the second.)

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON value whose objects had no repeated key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, x: i64) -> Result<Value, E> {
        Ok(Value::from(x))
    }

    fn visit_u64<E>(self, x: u64) -> Result<Value, E> {
        Ok(Value::from(x))
    }

    fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
        Ok(Value::from(x))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("the key \"{k}\" appears twice in one object")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parse `bytes` as one JSON value, refusing repeated keys (serde_json's own errors, with
/// line and column, otherwise).
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Strict(v) = Strict::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_values_as_serde_json_and_repeated_keys_refused_at_any_depth() {
        for ok in [
            r#"{"a": 1, "b": [true, null, -2, 3.5, "x", {"c": {}}], "d": 18446744073709551615}"#,
            "[]",
            "\"s\"",
            " 7 ",
        ] {
            assert_eq!(
                from_slice(ok.as_bytes()).unwrap(),
                serde_json::from_str::<Value>(ok).unwrap(),
                "{ok}"
            );
        }
        for (bad, key) in [
            (r#"{"max_tokens": 1, "max_tokens": 9999}"#, "max_tokens"),
            (r#"{"a": {"b": 1, "b": 2}}"#, "b"),
            (r#"{"m": [{"role": "user", "role": "system"}]}"#, "role"),
        ] {
            let e = from_slice(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(&format!("\"{key}\" appears twice")), "{bad}: {e}");
        }
        assert!(from_slice(b"{} {}").is_err(), "trailing data");
        assert!(from_slice(b"{").is_err());
    }
}
