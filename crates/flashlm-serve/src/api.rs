//! The OpenAI request and response shapes: parsing with a checked, named error for every bad
//! field, the chat template, and the JSON the server writes.

use flashlm_infer::generate::{FinishReason, GenerateParams};
use flashlm_infer::sample::Sampler;
use serde_json::{Map, Value, json};

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The message.
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// The offending field, if one.
    pub param: Option<String>,
    /// A short machine-readable code, if one.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 for a field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// Any status, no field.
    pub fn new(
        status: u16,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self { status, message: message.into(), kind, param: None, code }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// Limits a request must respect.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Prompt tokens at most.
    pub max_prompt_tokens: usize,
    /// `max_tokens` at most.
    pub max_tokens: usize,
    /// `max_tokens` when the request gives none.
    pub default_max_tokens: usize,
}

/// A parsed completion or chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The prompt (for chat: the messages folded by [`chat_prompt`]).
    pub prompt: String,
    /// Generation parameters.
    pub params: GenerateParams,
    /// Server-sent events instead of one JSON response.
    pub stream: bool,
    /// `stream_options.include_usage`: one more chunk with only the usage.
    pub include_usage: bool,
}

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/completions`.
    Completions,
    /// `/v1/chat/completions`.
    Chat,
}

impl Endpoint {
    /// The field that holds the prompt (errors about the prompt name it).
    pub fn prompt_param(self) -> &'static str {
        match self {
            Endpoint::Completions => "prompt",
            Endpoint::Chat => "messages",
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field that may be absent or null.
fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.get(name).filter(|v| !v.is_null())
}

fn number(o: &Map<String, Value>, name: &str, lo: f64, hi: f64, default: f64) -> Result<f64, ApiError> {
    match field(o, name) {
        None => Ok(default),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if (lo..=hi).contains(&x) {
                Ok(x)
            } else {
                Err(ApiError::invalid(name, format!("{name} must be between {lo} and {hi}, not {x}")))
            }
        }
        Some(v) => Err(ApiError::invalid(name, format!("{name} must be a number, not {}", type_name(v)))),
    }
}

fn integer(o: &Map<String, Value>, name: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::invalid(
                name,
                format!("{name} must be an integer between {lo} and {hi}, not {n}"),
            )),
        },
        Some(v) => Err(ApiError::invalid(name, format!("{name} must be an integer, not {}", type_name(v)))),
    }
}

fn boolean(o: &Map<String, Value>, name: &str) -> Result<bool, ApiError> {
    match field(o, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ApiError::invalid(name, format!("{name} must be a boolean, not {}", type_name(v)))),
    }
}

fn stop_strings(o: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let bad = |why: &str| ApiError::invalid("stop", why.to_string());
    let list = match field(o, "stop") {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("stop must be a string or an array of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop must be a string or an array of strings")),
    };
    if list.len() > 4 {
        return Err(bad("stop holds at most 4 strings"));
    }
    if list.iter().any(String::is_empty) {
        return Err(bad("stop strings must not be empty"));
    }
    Ok(list)
}

/// The documented chat template: the messages' contents, in order, one per line (the roles
/// are dropped: the bundled model is a story model and knows no roles). A conversation that
/// starts with "Once upon a time" continues that story.
pub fn chat_prompt(messages: &[(String, String)]) -> String {
    messages.iter().map(|(_, content)| content.as_str()).collect::<Vec<_>>().join("\n")
}

fn messages(o: &Map<String, Value>) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |why: String| ApiError::invalid("messages", why);
    let Some(Value::Array(list)) = field(o, "messages") else {
        return Err(bad("messages must be a non-empty array of {role, content} objects".into()));
    };
    if list.is_empty() {
        return Err(bad("messages is empty".into()));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if !["system", "developer", "user", "assistant"].contains(&role) {
            return Err(bad(format!("messages[{i}].role must be system, developer, user or assistant")));
        }
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            // The array form: text parts only.
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => Ok(t),
                        _ => Err(bad(format!("messages[{i}].content: only text parts are supported"))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            _ => return Err(bad(format!("messages[{i}].content must be a string"))),
        };
        out.push((role.to_string(), content));
    }
    Ok(out)
}

/// Fields read by both endpoints.
const COMMON_FIELDS: [&str; 12] = [
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "ignore_eos",
    "n",
    // Accepted and not used: they do not change what is generated.
    "user",
];

/// Fields accepted only at the value that changes nothing (what clients send by default);
/// any other value is refused, naming the field (this server does not implement them yet).
fn neutral(name: &str, v: &Value) -> Option<bool> {
    let zero = || v.as_f64() == Some(0.0);
    Some(match name {
        "logprobs" | "echo" => v == &Value::Bool(false) || (name == "logprobs" && zero()),
        "top_logprobs" | "frequency_penalty" | "presence_penalty" => zero(),
        "best_of" => v.as_u64() == Some(1),
        "logit_bias" | "metadata" => v.as_object().is_some_and(Map::is_empty),
        "tools" | "functions" => v.as_array().is_some_and(Vec::is_empty),
        "tool_choice" | "function_call" => v.as_str() == Some("none"),
        "parallel_tool_calls" | "store" => v.is_boolean(),
        "suffix" => v.as_str() == Some(""),
        "response_format" => {
            v.get("type").and_then(Value::as_str) == Some("text")
                && v.as_object().is_some_and(|o| o.len() == 1)
        }
        _ => return None,
    })
}

/// Every field of the body is one the endpoint reads, or an unimplemented one at its neutral
/// value; anything else is a 400 naming it (never silently ignored).
fn check_fields(o: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    let own: &[&str] = match endpoint {
        Endpoint::Completions => &["prompt"],
        Endpoint::Chat => &["messages", "max_completion_tokens"],
    };
    for (name, v) in o {
        if v.is_null() || COMMON_FIELDS.contains(&name.as_str()) || own.contains(&name.as_str()) {
            continue;
        }
        match neutral(name, v) {
            Some(true) => {}
            Some(false) if name == "response_format" => {
                return Err(ApiError::invalid(
                    name,
                    "only response_format {\"type\": \"text\"} is supported: a story model has no JSON mode",
                ));
            }
            Some(false) => {
                return Err(ApiError::invalid(name, format!("{name} is not supported by this server")));
            }
            None => {
                return Err(ApiError::invalid(
                    name,
                    format!("unknown field {name:?} (the fields this server reads are in its README)"),
                ));
            }
        }
    }
    Ok(())
}

/// Parse and check a request body.
pub fn parse(body: &[u8], endpoint: Endpoint, limits: &Limits, vocab: usize) -> Result<Request, ApiError> {
    let v: Value = crate::json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_request_error",
            Some("invalid_json"),
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(o) = v else {
        return Err(ApiError::new(
            400,
            "invalid_request_error",
            Some("invalid_json"),
            "the body must be a JSON object",
        ));
    };
    if let Some(m) = field(&o, "model")
        && !m.is_string()
    {
        return Err(ApiError::invalid("model", "model must be a string"));
    }
    if integer(&o, "n", 1, 1).is_err() {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    check_fields(&o, endpoint)?;
    let prompt = match endpoint {
        Endpoint::Completions => match field(&o, "prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    "prompt",
                    "prompt must be one string (batches of prompts are not supported)",
                ));
            }
            Some(v) => {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("prompt must be a string, not {}", type_name(v)),
                ));
            }
            None => return Err(ApiError::invalid("prompt", "prompt is required")),
        },
        Endpoint::Chat => chat_prompt(&messages(&o)?),
    };
    let max_tokens = integer(&o, "max_tokens", 1, limits.max_tokens as u64)?;
    let max_tokens = match endpoint {
        Endpoint::Chat => {
            let newer = integer(&o, "max_completion_tokens", 1, limits.max_tokens as u64)?;
            if let (Some(a), Some(b)) = (max_tokens, newer)
                && a != b
            {
                return Err(ApiError::invalid(
                    "max_tokens",
                    format!("max_tokens ({a}) and max_completion_tokens ({b}) disagree; send one"),
                ));
            }
            newer.or(max_tokens)
        }
        Endpoint::Completions => max_tokens,
    }
    .map_or(limits.default_max_tokens.min(limits.max_tokens), |x| x as usize);
    let temperature = number(&o, "temperature", 0.0, 2.0, 1.0)? as f32;
    let top_p = number(&o, "top_p", 0.0, 1.0, 1.0)? as f32;
    if top_p == 0.0 {
        return Err(ApiError::invalid("top_p", "top_p must be greater than 0"));
    }
    let top_k = integer(&o, "top_k", 0, vocab as u64)?.unwrap_or(0) as usize;
    let seed = match field(&o, "seed") {
        None => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(u),
            (None, Some(i)) => Some(i as u64),
            _ => return Err(ApiError::invalid("seed", "seed must be an integer")),
        },
        Some(v) => {
            return Err(ApiError::invalid("seed", format!("seed must be an integer, not {}", type_name(v))));
        }
    };
    let stream = boolean(&o, "stream")?;
    let include_usage = match field(&o, "stream_options") {
        None => false,
        Some(Value::Object(so)) => boolean(so, "include_usage")?,
        Some(_) => return Err(ApiError::invalid("stream_options", "stream_options must be an object")),
    };
    let params = GenerateParams {
        max_tokens,
        sampler: Sampler { temperature, top_k, top_p, min_p: 0.0 },
        seed: seed.unwrap_or_else(random_seed),
        stop: stop_strings(&o)?,
        ignore_eos: boolean(&o, "ignore_eos")?,
        ..GenerateParams::default()
    };
    Ok(Request { prompt, params, stream, include_usage })
}

/// A seed for requests that give none.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// What every response names.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `cmpl-N` or `chatcmpl-N`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// Which endpoint.
    pub endpoint: Endpoint,
}

/// Token counts.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// One streamed chunk: new text, or the finish reason (with the usage, as the last chunk).
pub fn chunk(
    m: &Meta,
    text: Option<&str>,
    first: bool,
    finish: Option<FinishReason>,
    usage: Option<Value>,
) -> Value {
    let reason = finish.map(FinishReason::openai);
    let mut v = match m.endpoint {
        Endpoint::Completions => json!({
            "id": m.id, "object": "text_completion", "created": m.created, "model": m.model,
            "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": reason}],
        }),
        Endpoint::Chat => {
            let mut delta = Map::new();
            if first {
                delta.insert("role".into(), "assistant".into());
            }
            if let Some(t) = text {
                delta.insert("content".into(), t.into());
            }
            json!({
                "id": m.id, "object": "chat.completion.chunk", "created": m.created, "model": m.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason}],
            })
        }
    };
    if let Some(u) = usage {
        v["usage"] = u;
    }
    v
}

/// The usage-only chunk of `stream_options.include_usage`.
pub fn usage_chunk(m: &Meta, usage: Value) -> Value {
    let object = match m.endpoint {
        Endpoint::Completions => "text_completion",
        Endpoint::Chat => "chat.completion.chunk",
    };
    json!({"id": m.id, "object": object, "created": m.created, "model": m.model, "choices": [], "usage": usage})
}

/// The whole response of a request without `stream`.
pub fn response(m: &Meta, text: &str, finish: FinishReason, usage: Value) -> Value {
    match m.endpoint {
        Endpoint::Completions => json!({
            "id": m.id, "object": "text_completion", "created": m.created, "model": m.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish.openai()}],
            "usage": usage,
        }),
        Endpoint::Chat => json!({
            "id": m.id, "object": "chat.completion", "created": m.created, "model": m.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null,
                         "finish_reason": finish.openai()}],
            "usage": usage,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_prompt_tokens: 100, max_tokens: 50, default_max_tokens: 16 };

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes(), Endpoint::Completions, &L, 10_000).unwrap_err()
    }

    #[test]
    fn good_requests_parse_with_defaults() {
        let r = parse(br#"{"prompt": "Hi", "seed": 3}"#, Endpoint::Completions, &L, 10_000).unwrap();
        assert_eq!(r.prompt, "Hi");
        assert_eq!(r.params.max_tokens, 16);
        assert_eq!(r.params.seed, 3);
        assert_eq!(r.params.sampler, Sampler { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 });
        assert!(!r.stream);
        let body = br#"{"messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Once upon"}, {"type": "text", "text": " a time"}]}],
            "max_completion_tokens": 7, "stop": ["\n", "The end"], "stream": true,
            "stream_options": {"include_usage": true}, "top_k": 5, "temperature": 0}"#;
        let r = parse(body, Endpoint::Chat, &L, 10_000).unwrap();
        assert_eq!(r.prompt, "Be brief.\nOnce upon a time");
        assert_eq!(
            (r.params.max_tokens, r.params.sampler.top_k, r.stream, r.include_usage),
            (7, 5, true, true)
        );
        assert_eq!(r.params.stop, ["\n", "The end"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(err("{").code, Some("invalid_json"));
        assert_eq!(err("[1]").code, Some("invalid_json"));
        for (body, param) in [
            (r#"{}"#, "prompt"),
            (r#"{"prompt": 5}"#, "prompt"),
            (r#"{"prompt": ["a", "b"]}"#, "prompt"),
            (r#"{"prompt": "a", "max_tokens": 0}"#, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": 51}"#, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": "5"}"#, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": 2.5}"#, "max_tokens"),
            (r#"{"prompt": "a", "temperature": -0.1}"#, "temperature"),
            (r#"{"prompt": "a", "temperature": "hot"}"#, "temperature"),
            (r#"{"prompt": "a", "top_p": 0}"#, "top_p"),
            (r#"{"prompt": "a", "top_p": 1.5}"#, "top_p"),
            (r#"{"prompt": "a", "top_k": -1}"#, "top_k"),
            (r#"{"prompt": "a", "seed": "x"}"#, "seed"),
            (r#"{"prompt": "a", "stop": 3}"#, "stop"),
            (r#"{"prompt": "a", "stop": ["", "x"]}"#, "stop"),
            (r#"{"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}"#, "stop"),
            (r#"{"prompt": "a", "stream": "yes"}"#, "stream"),
            (r#"{"prompt": "a", "n": 2}"#, "n"),
            (r#"{"prompt": "a", "logprobs": 3}"#, "logprobs"),
            (r#"{"prompt": "a", "model": 7}"#, "model"),
            (r#"{"prompt": "a", "logit_bias": {"5": 100}}"#, "logit_bias"),
            (r#"{"prompt": "a", "frequency_penalty": 0.5}"#, "frequency_penalty"),
            (r#"{"prompt": "a", "presence_penalty": -1}"#, "presence_penalty"),
            (r#"{"prompt": "a", "response_format": {"type": "json_object"}}"#, "response_format"),
            (r#"{"prompt": "a", "suffix": "The end."}"#, "suffix"),
            (r#"{"prompt": "a", "echo": true}"#, "echo"),
            (r#"{"prompt": "a", "best_of": 3}"#, "best_of"),
            (r#"{"prompt": "a", "tempreature": 0.5}"#, "tempreature"),
            (r#"{"prompt": "a", "messages": []}"#, "messages"),
        ] {
            let e = err(body);
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}: {e:?}");
        }
        let chat = |b: &str| parse(b.as_bytes(), Endpoint::Chat, &L, 10_000).unwrap_err();
        for body in [
            r#"{}"#,
            r#"{"messages": []}"#,
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
            r#"{"messages": [{"role": "user", "content": 5}]}"#,
            r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
        ] {
            assert_eq!(chat(body).param.as_deref(), Some("messages"), "{body}");
        }
        let m = r#""messages": [{"role": "user", "content": "x"}]"#;
        for (rest, param) in [
            (r#""max_tokens": 5, "max_completion_tokens": 6"#, "max_tokens"),
            (r#""max_tokens": 51, "max_completion_tokens": 6"#, "max_tokens"),
            (r#""max_completion_tokens": 0"#, "max_completion_tokens"),
            (r#""prompt": "x""#, "prompt"),
        ] {
            let body = format!("{{{m}, {rest}}}");
            assert_eq!(chat(&body).param.as_deref(), Some(param), "{body}");
        }
        assert_eq!(err(r#"{"prompt": "a", "max_tokens": 1, "max_tokens": 2}"#).code, Some("invalid_json"));
    }

    #[test]
    fn neutral_values_of_unimplemented_fields_are_accepted() {
        let body = br#"{"prompt": "a", "logprobs": null, "echo": false, "frequency_penalty": 0, "presence_penalty": 0.0,
            "logit_bias": {}, "response_format": {"type": "text"}, "suffix": "", "best_of": 1, "user": "u", "n": 1}"#;
        assert!(parse(body, Endpoint::Completions, &L, 10_000).is_ok());
        let chat = br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 7, "max_completion_tokens": 7,
            "tools": [], "tool_choice": "none", "parallel_tool_calls": false, "store": false, "metadata": {}, "top_logprobs": 0}"#;
        assert_eq!(parse(chat, Endpoint::Chat, &L, 10_000).unwrap().params.max_tokens, 7);
    }
}
