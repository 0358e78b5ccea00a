//! The tokenizer over HTTP and the server's properties: `POST /tokenize`, `POST /detokenize`
//! (llama-server's field names, and vLLM's, which evaluation harnesses' remote tokenizers
//! use), `GET /tokenizer_info`, `GET /props`.

use axum::extract::{Request as HttpRequest, State};
use axum::response::{IntoResponse, Response};
use flashlm_infer::tokenizer::EOS_ID;
use serde_json::{Map, Value, json};

use crate::api::ApiError;
use crate::{Shared, body_of};

/// A JSON object body whose fields are all among `known` (else a 400 naming the first other).
async fn object(s: &Shared, req: HttpRequest, known: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let body = body_of(s, req).await?;
    let bad_json = |m: String| ApiError::new(400, "invalid_request_error", Some("invalid_json"), m);
    let v: Value =
        crate::json::from_slice(&body).map_err(|e| bad_json(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else { return Err(bad_json("the body must be a JSON object".into())) };
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            k,
            format!("unknown field {k:?} (this endpoint reads {})", known.join(", ")),
        ));
    }
    Ok(o)
}

/// The first of `names` that is present (not null), with the name it came under.
fn either<'a>(o: &'a Map<String, Value>, names: &[&'static str]) -> Option<(&'static str, &'a Value)> {
    names.iter().find_map(|&n| o.get(n).filter(|v| !v.is_null()).map(|v| (n, v)))
}

fn flag(o: &Map<String, Value>, names: &[&'static str]) -> Result<bool, ApiError> {
    match either(o, names) {
        None => Ok(false),
        Some((_, Value::Bool(b))) => Ok(*b),
        Some((n, _)) => Err(ApiError::invalid(n, format!("{n} must be a boolean"))),
    }
}

fn piece(s: &Shared, id: u16) -> Value {
    let bytes = s.model.tokenizer.token_bytes(id);
    match std::str::from_utf8(bytes) {
        Ok(t) => t.into(),
        // Part of a character: the bytes, as llama-server gives them.
        Err(_) => bytes.into(),
    }
}

/// `{"content" | "prompt": text, "add_special" | "add_special_tokens": bool, "with_pieces": bool}`
/// -> `{"tokens": [ids] | [{"id", "piece"}], "count", "max_model_len"}`. `add_special`
/// puts the end-of-story token first (the token every story follows in training; the server
/// does not add it to prompts).
pub(crate) async fn tokenize(State(s): State<Shared>, req: HttpRequest) -> Response {
    let known = ["content", "prompt", "add_special", "add_special_tokens", "with_pieces", "model"];
    let run = async {
        let o = object(&s, req, &known).await?;
        let text = match either(&o, &["content", "prompt"]) {
            Some((_, Value::String(t))) => t.clone(),
            Some((n, _)) => return Err(ApiError::invalid(n, format!("{n} must be a string"))),
            None => return Err(ApiError::invalid("content", "content (the text to tokenize) is required")),
        };
        let mut ids = Vec::new();
        if flag(&o, &["add_special", "add_special_tokens"])? {
            ids.push(EOS_ID);
        }
        s.model.tokenizer.encode_into(&text, &mut ids);
        let tokens: Vec<Value> = if flag(&o, &["with_pieces"])? {
            ids.iter().map(|&t| json!({"id": t, "piece": piece(&s, t)})).collect()
        } else {
            ids.iter().map(|&t| json!(t)).collect()
        };
        Ok(json!({"tokens": tokens, "count": ids.len(), "max_model_len": s.config.limits.max_prompt_tokens}))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `{"tokens": [ids]}` -> `{"content": text, "prompt": text}` (ids checked against the
/// vocabulary; special tokens have no text).
pub(crate) async fn detokenize(State(s): State<Shared>, req: HttpRequest) -> Response {
    let run = async {
        let o = object(&s, req, &["tokens", "model"]).await?;
        let v = s.model.config.vocab_size;
        let Some(Value::Array(list)) = o.get("tokens") else {
            return Err(ApiError::invalid("tokens", "tokens must be an array of token ids"));
        };
        let ids = list
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_u64() {
                Some(x) if (x as usize) < v => Ok(x as u16),
                _ => Err(ApiError::invalid(
                    "tokens",
                    format!("tokens[{i}] must be a token id in 0..{v}, not {t}"),
                )),
            })
            .collect::<Result<Vec<u16>, _>>()?;
        let text = s.model.tokenizer.decode(&ids);
        Ok(json!({"content": text, "prompt": text}))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// What a remote tokenizer needs: the special tokens (none of them has text, so none is
/// given as a string) and the vocabulary size.
pub(crate) async fn tokenizer_info(State(s): State<Shared>) -> Response {
    axum::Json(json!({
        "tokenizer_class": "flashlm (GPT-2 BPE ids mapped to the model's vocabulary)",
        "vocab_size": s.model.config.vocab_size,
        "eos_token": null, "eos_token_id": EOS_ID, "bos_token": null, "pad_token": null,
        "chat_template": null,
        "max_model_len": s.config.limits.max_prompt_tokens,
    }))
    .into_response()
}

/// An f32 setting as the decimal it was written as (0.8, not 0.800000011920929).
fn short(x: f32) -> Value {
    format!("{x}").parse::<f64>().map_or(Value::Null, Value::from)
}

/// The model, the server's limits and the defaults a request gets.
pub(crate) async fn props(State(s): State<Shared>) -> Response {
    let c = &s.config;
    let d = crate::api::defaults(&c.limits);
    axum::Json(json!({
        "model": c.model_name,
        "model_config": s.model.config,
        "kernel": s.model.kernel.name(),
        "head": s.model.head.name(),
        // The model has no positions: the conv sees the last conv_taps tokens and the state
        // carries everything before; the server bounds the prompt and the output.
        "max_prompt_tokens": c.limits.max_prompt_tokens,
        "max_tokens_limit": c.limits.max_tokens,
        "max_n": c.limits.max_n,
        "total_slots": c.engine.max_streams,
        "max_queue": c.engine.max_queue,
        "default_generation_settings": {
            "max_tokens": c.limits.default_max_tokens.min(c.limits.max_tokens),
            "temperature": short(d.sampler.temperature), "top_k": d.sampler.top_k, "top_p": short(d.sampler.top_p),
            "min_p": short(d.sampler.min_p), "presence_penalty": short(d.penalties.presence),
            "frequency_penalty": short(d.penalties.frequency), "repetition_penalty": short(d.penalties.repetition),
            "repeat_last_n": d.penalties.last_n,
        },
    }))
    .into_response()
}
