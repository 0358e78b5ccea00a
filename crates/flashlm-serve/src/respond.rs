//! The JSON the completion endpoints write: whole responses, streamed chunks, usage, and
//! logprobs in OpenAI's two shapes (the legacy completions shape and the chat shape).

use flashlm_infer::generate::FinishReason;
use flashlm_infer::sample::TokenLogprob;
use flashlm_infer::tokenizer::Tokenizer;
use serde_json::{Map, Value, json};

use crate::api::Endpoint;

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

/// A token of a choice's text: its id and, except for an echoed prompt's first token, its
/// log-probability and alternatives.
pub type Scored = (u16, Option<TokenLogprob>);

/// Logprobs of some tokens of one choice, in the endpoint's shape. `offset` is the choice's
/// text length (characters) before the first of them, and is advanced past them (so the
/// chunks of a stream continue one another's `text_offset`).
pub fn logprobs(tok: &Tokenizer, endpoint: Endpoint, tokens: &[Scored], offset: &mut usize) -> Value {
    let piece = |id: u16| String::from_utf8_lossy(tok.token_bytes(id)).into_owned();
    match endpoint {
        Endpoint::Completions => {
            let (mut texts, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
            for (id, lp) in tokens {
                let text = piece(*id);
                offsets.push(*offset);
                *offset += text.chars().count();
                texts.push(Value::from(text));
                lps.push(lp.as_ref().map_or(Value::Null, |l| json!(l.logprob)));
                tops.push(lp.as_ref().map_or(Value::Null, |l| {
                    Value::Object(l.top.iter().map(|&(t, p)| (piece(t), json!(p))).collect::<Map<_, _>>())
                }));
            }
            json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
        }
        Endpoint::Chat => {
            let entry =
                |id: u16, p: f64| json!({"token": piece(id), "logprob": p, "bytes": tok.token_bytes(id)});
            let content: Vec<Value> = tokens
                .iter()
                .filter_map(|(id, lp)| lp.as_ref().map(|l| (id, l)))
                .map(|(&id, l)| {
                    let mut e = entry(id, l.logprob);
                    e["top_logprobs"] = l.top.iter().map(|&(t, p)| entry(t, p)).collect();
                    e
                })
                .collect();
            *offset += tokens.iter().map(|(id, _)| piece(*id).chars().count()).sum::<usize>();
            json!({"content": content, "refusal": null})
        }
    }
}

/// One choice, as a whole response holds it or a chunk carries part of it.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// Its index among the request's choices.
    pub index: usize,
    /// Text (a chunk: the new text; None: no text field in a chat delta).
    pub text: Option<String>,
    /// Logprobs in the endpoint's shape (None: `null`).
    pub logprobs: Option<Value>,
    /// Set when the choice is complete.
    pub finish: Option<FinishReason>,
}

fn choice_json(m: &Meta, c: &Choice, whole: bool, first: bool) -> Value {
    let reason = c.finish.map(FinishReason::openai);
    let lp = c.logprobs.clone().unwrap_or(Value::Null);
    match (m.endpoint, whole) {
        (Endpoint::Completions, _) => json!({
            "index": c.index, "text": c.text.as_deref().unwrap_or(""), "logprobs": lp, "finish_reason": reason,
        }),
        (Endpoint::Chat, true) => json!({
            "index": c.index, "message": {"role": "assistant", "content": c.text.as_deref().unwrap_or("")},
            "logprobs": lp, "finish_reason": reason,
        }),
        (Endpoint::Chat, false) => {
            let mut delta = Map::new();
            if first {
                delta.insert("role".into(), "assistant".into());
            }
            if let Some(t) = &c.text {
                delta.insert("content".into(), t.as_str().into());
            }
            json!({"index": c.index, "delta": delta, "logprobs": lp, "finish_reason": reason})
        }
    }
}

/// One streamed chunk of one choice (`first`: the choice's first chunk, which names the chat
/// role), with the usage when it is the last.
pub fn chunk(m: &Meta, c: &Choice, first: bool, usage: Option<Value>) -> Value {
    let object = match m.endpoint {
        Endpoint::Completions => "text_completion",
        Endpoint::Chat => "chat.completion.chunk",
    };
    let mut v = json!({
        "id": m.id, "object": object, "created": m.created, "model": m.model,
        "choices": [choice_json(m, c, false, first)],
    });
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
pub fn response(m: &Meta, choices: &[Choice], usage: Value) -> Value {
    let object = match m.endpoint {
        Endpoint::Completions => "text_completion",
        Endpoint::Chat => "chat.completion",
    };
    let choices: Vec<Value> = choices.iter().map(|c| choice_json(m, c, true, false)).collect();
    json!({"id": m.id, "object": object, "created": m.created, "model": m.model, "choices": choices, "usage": usage})
}
