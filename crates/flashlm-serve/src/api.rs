//! The OpenAI request and response shapes: parsing with a checked, named error for every bad
//! field, the chat template, and the JSON the server writes.

use flashlm_infer::generate::{GenerateParams, MAX_TOP_LOGPROBS};
use flashlm_infer::sample::{Penalties, Sampler};
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
    /// Choices per request at most (prompts x `n`).
    pub max_n: usize,
}

/// One prompt: text, or token ids (what evaluation harnesses send).
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text to encode.
    Text(String),
    /// Token ids (checked against the vocabulary).
    Ids(Vec<u16>),
}

/// A parsed completion or chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The prompts (completions may send a batch; chat: the messages folded by
    /// [`chat_prompt`]).
    pub prompts: Vec<Prompt>,
    /// Generation parameters (`max_tokens` 0: score the prompt only, with `echo`).
    pub params: GenerateParams,
    /// Choices per prompt; choice `i` of a prompt samples with seed `params.seed + i`.
    pub n: usize,
    /// Return the prompt (and its tokens' logprobs) before the generated text.
    pub echo: bool,
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
const COMMON_FIELDS: [&str; 20] = [
    "model",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "repeat_last_n",
    "min_p",
    "logit_bias",
    "response_format",
    "top_logprobs",
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
    Some(match name {
        "best_of" => v.as_u64() == Some(1),
        "metadata" => v.as_object().is_some_and(Map::is_empty),
        "tools" | "functions" => v.as_array().is_some_and(Vec::is_empty),
        "tool_choice" | "function_call" => v.as_str() == Some("none"),
        "parallel_tool_calls" | "store" => v.is_boolean(),
        "suffix" => v.as_str() == Some(""),
        _ => return None,
    })
}

/// Every field of the body is one the endpoint reads, or an unimplemented one at its neutral
/// value; anything else is a 400 naming it (never silently ignored).
fn check_fields(o: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    let own: &[&str] = match endpoint {
        Endpoint::Completions => &["prompt", "echo", "logprobs"],
        Endpoint::Chat => &["messages", "max_completion_tokens", "logprobs"],
    };
    for (name, v) in o {
        if v.is_null() || COMMON_FIELDS.contains(&name.as_str()) || own.contains(&name.as_str()) {
            continue;
        }
        match neutral(name, v) {
            Some(true) => {}
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

/// What a request gets for the fields it leaves out: the command line's sampling
/// (temperature 0.8, top-k 50: visibly better stories than OpenAI's temperature 1 over every
/// token), no penalties, and `--default-max-tokens`.
pub fn defaults(limits: &Limits) -> GenerateParams {
    GenerateParams {
        max_tokens: limits.default_max_tokens.min(limits.max_tokens),
        ..GenerateParams::default()
    }
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
    check_fields(&o, endpoint)?;
    let prompts = match endpoint {
        Endpoint::Completions => prompts(&o, vocab)?,
        Endpoint::Chat => vec![Prompt::Text(chat_prompt(&messages(&o)?))],
    };
    let n = integer(&o, "n", 1, limits.max_n as u64)?.unwrap_or(1) as usize;
    if prompts.len() * n > limits.max_n {
        return Err(ApiError::invalid(
            if n > 1 { "n" } else { "prompt" },
            format!(
                "{} prompts x n = {n} is {} choices; this server gives at most {} per request (--max-n)",
                prompts.len(),
                prompts.len() * n,
                limits.max_n
            ),
        ));
    }
    let echo = endpoint == Endpoint::Completions && boolean(&o, "echo")?;
    let logprobs = logprobs(&o, endpoint)?;
    // max_tokens 0 scores the prompt without generating (with echo).
    let max_tokens = integer(&o, "max_tokens", u64::from(!echo), limits.max_tokens as u64).map_err(|e| {
        if echo { e } else { ApiError { message: format!("{} (0 only with echo)", e.message), ..e } }
    })?;
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
    let d = defaults(limits);
    let temperature = number(&o, "temperature", 0.0, 2.0, f64::from(d.sampler.temperature))? as f32;
    let top_p = number(&o, "top_p", 0.0, 1.0, f64::from(d.sampler.top_p))? as f32;
    if top_p == 0.0 {
        return Err(ApiError::invalid("top_p", "top_p must be greater than 0"));
    }
    let top_k = integer(&o, "top_k", 0, vocab as u64)?.map_or(d.sampler.top_k, |k| k as usize);
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
    if let Some(rf) = field(&o, "response_format")
        && !(rf.get("type").and_then(Value::as_str) == Some("text")
            && rf.as_object().is_some_and(|m| m.len() == 1))
    {
        return Err(ApiError::invalid(
            "response_format",
            "only response_format {\"type\": \"text\"} is supported: a story model has no JSON mode",
        ));
    }
    let penalties = Penalties {
        presence: number(&o, "presence_penalty", -2.0, 2.0, f64::from(d.penalties.presence))? as f32,
        frequency: number(&o, "frequency_penalty", -2.0, 2.0, f64::from(d.penalties.frequency))? as f32,
        repetition: number(&o, "repetition_penalty", 0.0, 10.0, f64::from(d.penalties.repetition))? as f32,
        last_n: integer(&o, "repeat_last_n", 0, 4096)?.map_or(d.penalties.last_n, |x| x as usize),
    };
    if penalties.repetition == 0.0 {
        return Err(ApiError::invalid("repetition_penalty", "repetition_penalty must be greater than 0"));
    }
    let params = GenerateParams {
        max_tokens,
        sampler: Sampler {
            temperature,
            top_k,
            top_p,
            min_p: number(&o, "min_p", 0.0, 1.0, f64::from(d.sampler.min_p))? as f32,
        },
        seed: seed.unwrap_or_else(random_seed),
        stop: stop_strings(&o)?,
        ignore_eos: boolean(&o, "ignore_eos")?,
        penalties,
        logit_bias: logit_bias(&o, vocab)?,
        logprobs,
    };
    Ok(Request { prompts, params, n, echo, stream, include_usage })
}

/// Completions' `prompt`: a string, token ids, or a batch of either.
fn prompts(o: &Map<String, Value>, vocab: usize) -> Result<Vec<Prompt>, ApiError> {
    let bad = |why: String| ApiError::invalid("prompt", why);
    let ids = |a: &[Value], at: &str| -> Result<Prompt, ApiError> {
        a.iter()
            .enumerate()
            .map(|(i, t)| match t.as_u64() {
                Some(x) if (x as usize) < vocab => Ok(x as u16),
                _ => Err(bad(format!("prompt{at}[{i}] must be a token id in 0..{vocab}, not {t}"))),
            })
            .collect::<Result<Vec<u16>, _>>()
            .map(Prompt::Ids)
    };
    let one = |v: &Value, at: &str| match v {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_number) => ids(a, at),
        Value::Array(a) if a.is_empty() => Err(bad(format!("prompt{at} is empty"))),
        v => Err(bad(format!("prompt{at} must be a string or an array of token ids, not {}", type_name(v)))),
    };
    match field(o, "prompt") {
        None => Err(bad("prompt is required".into())),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => Ok(vec![ids(a, "")?]),
        Some(Value::Array(a)) if a.is_empty() => Err(bad("prompt is empty".into())),
        Some(Value::Array(a)) => a.iter().enumerate().map(|(i, v)| one(v, &format!("[{i}]"))).collect(),
        Some(v) => Ok(vec![one(v, "")?]),
    }
}

/// `logprobs`: completions give the number of alternatives (0..=20); chat a boolean with
/// `top_logprobs` (0..=20) beside it.
fn logprobs(o: &Map<String, Value>, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    let max = MAX_TOP_LOGPROBS as u64;
    match endpoint {
        Endpoint::Completions => {
            if let Some(v) = field(o, "top_logprobs")
                && v.as_u64() != Some(0)
            {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    format!("completions take logprobs: N (0..={max}), not top_logprobs ({v})"),
                ));
            }
            match field(o, "logprobs") {
                Some(Value::Bool(false)) | None => Ok(None),
                Some(Value::Bool(true)) => Err(ApiError::invalid(
                    "logprobs",
                    format!("completions take logprobs: N, the number of alternatives (0..={max})"),
                )),
                Some(_) => Ok(integer(o, "logprobs", 0, max)?.map(|k| k as usize)),
            }
        }
        Endpoint::Chat => {
            let on = boolean(o, "logprobs")?;
            let top = integer(o, "top_logprobs", 0, max)?;
            if top.is_some_and(|k| k > 0) && !on {
                return Err(ApiError::invalid("top_logprobs", "top_logprobs needs logprobs: true"));
            }
            Ok(on.then(|| top.unwrap_or(0) as usize))
        }
    }
}

/// `logit_bias`: {"token id": bias in -100..=100}, ids in the vocabulary.
fn logit_bias(o: &Map<String, Value>, vocab: usize) -> Result<Vec<(u16, f32)>, ApiError> {
    let bad = |why: String| ApiError::invalid("logit_bias", why);
    let Some(v) = field(o, "logit_bias") else { return Ok(Vec::new()) };
    let Value::Object(m) = v else {
        return Err(bad(format!("logit_bias must be an object of token id -> bias, not {}", type_name(v))));
    };
    m.iter()
        .map(|(k, b)| {
            let id = k
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&t| t < vocab)
                .ok_or_else(|| bad(format!("logit_bias: {k:?} is not a token id in 0..{vocab}")))?;
            match b.as_f64() {
                Some(x) if (-100.0..=100.0).contains(&x) => Ok((id as u16, x as f32)),
                _ => Err(bad(format!("logit_bias[{k:?}] must be a number in -100..100, not {b}"))),
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_prompt_tokens: 100, max_tokens: 50, default_max_tokens: 16, max_n: 4 };

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes(), Endpoint::Completions, &L, 10_000).unwrap_err()
    }

    #[test]
    fn good_requests_parse_with_defaults() {
        let r = parse(br#"{"prompt": "Hi", "seed": 3}"#, Endpoint::Completions, &L, 10_000).unwrap();
        assert_eq!(r.prompts, [Prompt::Text("Hi".into())]);
        assert_eq!(r.params.max_tokens, 16);
        assert_eq!(r.params.seed, 3);
        // The command line's sampling defaults.
        assert_eq!(r.params.sampler, Sampler { temperature: 0.8, top_k: 50, top_p: 1.0, min_p: 0.0 });
        assert_eq!((r.n, r.echo, r.params.logprobs), (1, false, None));
        assert!(!r.stream);
        let body = br#"{"messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Once upon"}, {"type": "text", "text": " a time"}]}],
            "max_completion_tokens": 7, "stop": ["\n", "The end"], "stream": true,
            "stream_options": {"include_usage": true}, "top_k": 5, "temperature": 0}"#;
        let r = parse(body, Endpoint::Chat, &L, 10_000).unwrap();
        assert_eq!(r.prompts, [Prompt::Text("Be brief.\nOnce upon a time".into())]);
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
            (r#"{"prompt": "a", "n": 5}"#, "n"),
            (r#"{"prompt": "a", "n": 0}"#, "n"),
            (r#"{"prompt": ["a", "b", "c"], "n": 2}"#, "n"),
            (r#"{"prompt": ["a", "b", "c", "d", "e"]}"#, "prompt"),
            (r#"{"prompt": [5, 10000]}"#, "prompt"),
            (r#"{"prompt": [[5, 6], [-1]]}"#, "prompt"),
            (r#"{"prompt": []}"#, "prompt"),
            (r#"{"prompt": ["a", 5]}"#, "prompt"),
            (r#"{"prompt": "a", "max_tokens": 0}"#, "max_tokens"),
            (r#"{"prompt": "a", "logprobs": 21}"#, "logprobs"),
            (r#"{"prompt": "a", "logprobs": true}"#, "logprobs"),
            (r#"{"prompt": "a", "top_logprobs": 2}"#, "top_logprobs"),
            (r#"{"prompt": "a", "model": 7}"#, "model"),
            (r#"{"prompt": "a", "logit_bias": {"10000": 1}}"#, "logit_bias"),
            (r#"{"prompt": "a", "logit_bias": {"x": 1}}"#, "logit_bias"),
            (r#"{"prompt": "a", "logit_bias": {"5": 101}}"#, "logit_bias"),
            (r#"{"prompt": "a", "logit_bias": [1]}"#, "logit_bias"),
            (r#"{"prompt": "a", "frequency_penalty": 2.5}"#, "frequency_penalty"),
            (r#"{"prompt": "a", "presence_penalty": -3}"#, "presence_penalty"),
            (r#"{"prompt": "a", "repetition_penalty": 0}"#, "repetition_penalty"),
            (r#"{"prompt": "a", "min_p": 1.5}"#, "min_p"),
            (r#"{"prompt": "a", "echo": "yes"}"#, "echo"),
            (r#"{"prompt": "a", "response_format": {"type": "json_object"}}"#, "response_format"),
            (r#"{"prompt": "a", "suffix": "The end."}"#, "suffix"),
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
            (r#""top_logprobs": 3"#, "top_logprobs"),
            (r#""logprobs": 3"#, "logprobs"),
            (r#""echo": true"#, "echo"),
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
    fn the_new_fields_parse() {
        let r = parse(
            br#"{"prompt": [[5, 6, 7], "Hi"], "n": 2, "echo": true, "max_tokens": 0, "logprobs": 3,
                "presence_penalty": 0.5, "frequency_penalty": -1, "repetition_penalty": 1.1, "repeat_last_n": 8,
                "min_p": 0.05, "logit_bias": {"17": -100, "42": 2.5}, "response_format": {"type": "text"}}"#,
            Endpoint::Completions,
            &L,
            10_000,
        )
        .unwrap();
        assert_eq!(r.prompts, [Prompt::Ids(vec![5, 6, 7]), Prompt::Text("Hi".into())]);
        assert_eq!((r.n, r.echo, r.params.max_tokens, r.params.logprobs), (2, true, 0, Some(3)));
        assert_eq!(
            r.params.penalties,
            Penalties { presence: 0.5, frequency: -1.0, repetition: 1.1, last_n: 8 }
        );
        assert_eq!(r.params.sampler.min_p, 0.05);
        assert_eq!(r.params.logit_bias, [(17, -100.0), (42, 2.5)]);
        let one = parse(br#"{"prompt": [5, 6]}"#, Endpoint::Completions, &L, 10_000).unwrap();
        assert_eq!(one.prompts, [Prompt::Ids(vec![5, 6])]);
        let chat = parse(
            br#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 4}"#,
            Endpoint::Chat,
            &L,
            10_000,
        )
        .unwrap();
        assert_eq!(chat.params.logprobs, Some(4));
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
