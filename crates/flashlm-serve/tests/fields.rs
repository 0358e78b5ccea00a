//! The fields real clients use, each against the library for the same parameters: logprobs
//! (both shapes), echo (scoring a prompt), n, token-id and batched prompts, the penalties,
//! min_p, logit_bias; streamed and whole responses agree; /tokenize, /detokenize,
//! /tokenizer_info, /props and the playground page.

mod common;

use common::{config, start, streamed_text};
use flashlm_infer::eval::{Protocol, score_story};
use flashlm_infer::generate::{GenerateParams, Generation};
use flashlm_infer::model::Model;
use flashlm_infer::sample::{Penalties, Sampler, TokenLogprob};
use serde_json::Value;

/// The library's text and per-token logprobs for a prompt.
fn library(m: &Model, prompt: &str, p: GenerateParams) -> (String, Vec<TokenLogprob>) {
    let mut g = Generation::new(m, prompt, p).unwrap();
    let (mut text, mut lps) = (String::new(), Vec::new());
    loop {
        let piece = g.step(m).unwrap();
        text.push_str(&piece.text);
        lps.extend(piece.logprob);
        if piece.finish.is_some() {
            return (text, lps);
        }
    }
}

fn params(seed: u64, max_tokens: usize, logprobs: Option<usize>) -> GenerateParams {
    GenerateParams { max_tokens, seed, logprobs, ..GenerateParams::default() }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

/// The legacy logprobs of a choice equal the library's tokens (pieces, logprobs, top 5).
fn check_legacy(m: &Model, lp: &Value, want: &[TokenLogprob]) {
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), want.len());
    for (i, w) in want.iter().enumerate() {
        let piece = String::from_utf8_lossy(m.tokenizer.token_bytes(w.id)).into_owned();
        assert_eq!(tokens[i], piece.as_str());
        assert!(close(lp["token_logprobs"][i].as_f64().unwrap(), w.logprob), "token {i}");
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert_eq!(top.len(), w.top.len());
        for &(t, l) in &w.top {
            let key = String::from_utf8_lossy(m.tokenizer.token_bytes(t)).into_owned();
            assert!(close(top[&key].as_f64().unwrap(), l), "token {i} alternative {key:?}");
        }
    }
    let offsets: Vec<u64> =
        lp["text_offset"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
}

#[test]
fn completion_logprobs_equal_the_librarys_streamed_or_not() {
    let s = start(config());
    let m = common::model();
    let body =
        r#"{"prompt": "The little dog", "max_tokens": 30, "seed": 4, "logprobs": 5, "ignore_eos": true}"#;
    let (st, v) = s.post("/v1/completions", body);
    assert_eq!(st, 200, "{v}");
    let (text, want) =
        library(&m, "The little dog", GenerateParams { ignore_eos: true, ..params(4, 30, Some(5)) });
    assert_eq!(v["choices"][0]["text"], text.as_str());
    let lp = &v["choices"][0]["logprobs"];
    check_legacy(&m, lp, &want);
    // No stop string and no broken character: the tokens spell the text.
    let joined: String = lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, text);
    // Streamed: the chunks' logprobs concatenate to the same arrays, offsets included.
    let events =
        s.stream("/v1/completions", &body.replace("\"ignore_eos\"", "\"stream\": true, \"ignore_eos\""));
    assert_eq!(streamed_text(&events), text);
    let mut merged: serde_json::Map<String, Value> = serde_json::Map::new();
    for e in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let c: Value = serde_json::from_str(e).unwrap();
        let Some(l) = c["choices"][0]["logprobs"].as_object() else { continue };
        for (k, arr) in l {
            let slot = merged.entry(k.clone()).or_insert_with(|| Value::Array(vec![]));
            slot.as_array_mut().unwrap().extend(arr.as_array().unwrap().iter().cloned());
        }
    }
    assert_eq!(Value::Object(merged), *lp);
}

#[test]
fn chat_logprobs_have_the_chat_shape_and_the_same_values() {
    let s = start(config());
    let m = common::model();
    let body = r#"{"messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 20, "seed": 2,
        "logprobs": true, "top_logprobs": 3}"#;
    let (st, v) = s.post("/v1/chat/completions", body);
    assert_eq!(st, 200, "{v}");
    let (text, want) = library(&m, "Once upon a time", params(2, 20, Some(3)));
    assert_eq!(v["choices"][0]["message"]["content"], text.as_str());
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), want.len());
    for (c, w) in content.iter().zip(&want) {
        let bytes: Vec<u8> =
            c["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
        assert_eq!(bytes, m.tokenizer.token_bytes(w.id));
        assert!(close(c["logprob"].as_f64().unwrap(), w.logprob));
        let top = c["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        for (t, &(id, l)) in top.iter().zip(&w.top) {
            assert_eq!(t["token"], String::from_utf8_lossy(m.tokenizer.token_bytes(id)).as_ref());
            assert!(close(t["logprob"].as_f64().unwrap(), l));
        }
    }
    // Streamed chat chunks carry the same entries.
    let events =
        s.stream("/v1/chat/completions", &body.replace("\"seed\": 2", "\"seed\": 2, \"stream\": true"));
    let streamed: Vec<Value> = events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .flat_map(|e| {
            let c: Value = serde_json::from_str(e).unwrap();
            c["choices"][0]["logprobs"]["content"].as_array().cloned().unwrap_or_default()
        })
        .collect();
    assert_eq!(&streamed, content);
}

#[test]
fn echo_with_max_tokens_0_scores_a_validation_story_as_eval_does() {
    let dir = std::env::var_os("FLASHLM_DATA_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        Into::into,
    );
    let path = dir.join("tinystories-valid.txt.zst");
    assert!(path.exists(), "real TinyStories text not found in {} (set FLASHLM_DATA_DIR)", dir.display());
    let stories = flashlm_infer::tokenizer::stories::read_story_file(&path).unwrap().texts;
    let m = common::model();
    // The first validation story the original protocol scores whole (<= 257 tokens).
    let story = stories.iter().find(|t| m.tokenizer.encode(t).len() <= 257 && t.len() > 200).unwrap();
    let want = score_story(&m, story, Protocol::Original);
    let s = start(config());
    let body = serde_json::json!({"prompt": story, "max_tokens": 0, "echo": true, "logprobs": 1}).to_string();
    let (st, v) = s.post("/v1/completions", &body);
    assert_eq!(st, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["text"], story.as_str());
    let lps = c["logprobs"]["token_logprobs"].as_array().unwrap();
    assert_eq!(lps.len() as u64, want.tokens + 1);
    assert!(lps[0].is_null() && c["logprobs"]["top_logprobs"][0].is_null());
    let sum: f64 = lps[1..].iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((sum + want.nll).abs() <= 1e-5 * want.nll, "echo {sum} vs eval {}", -want.nll);
    assert_eq!(v["usage"]["completion_tokens"], 0);
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(want.tokens + 1));
    // Echo before generated text: the prompt, then the library's continuation.
    let (st, v) = s.post(
        "/v1/completions",
        r#"{"prompt": "Tom had a cat.", "max_tokens": 10, "seed": 1, "echo": true}"#,
    );
    assert_eq!(st, 200);
    let (text, _) = library(&m, "Tom had a cat.", params(1, 10, None));
    assert_eq!(v["choices"][0]["text"], format!("Tom had a cat.{text}").as_str());
}

#[test]
fn n_choices_token_prompts_and_batches() {
    let s = start(config());
    let m = common::model();
    let (st, v) =
        s.post("/v1/completions", r#"{"prompt": "Once upon a time", "max_tokens": 25, "seed": 10, "n": 3}"#);
    assert_eq!(st, 200, "{v}");
    let mut completion_tokens = 0;
    for i in 0..3 {
        let (text, _) = library(&m, "Once upon a time", params(10 + i as u64, 25, Some(0)));
        assert_eq!(v["choices"][i]["index"], i);
        assert_eq!(v["choices"][i]["text"], text.as_str(), "choice {i}");
        completion_tokens += Generation::new(&m, "Once upon a time", params(10 + i as u64, 25, None))
            .map(|mut g| {
                g.run(&m).unwrap();
                g.generated()
            })
            .unwrap();
    }
    assert_eq!(v["usage"]["completion_tokens"], completion_tokens);
    assert_eq!(v["usage"]["prompt_tokens"], m.tokenizer.encode("Once upon a time").len());
    // Streamed: each choice's chunks carry its index and add up to its text.
    let events = s.stream(
        "/v1/completions",
        r#"{"prompt": "Once upon a time", "max_tokens": 25, "seed": 10, "n": 3, "stream": true}"#,
    );
    let mut texts = vec![String::new(); 3];
    for e in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let c: Value = serde_json::from_str(e).unwrap();
        let ch = &c["choices"][0];
        texts[ch["index"].as_u64().unwrap() as usize].push_str(ch["text"].as_str().unwrap());
    }
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(t, v["choices"][i]["text"].as_str().unwrap(), "streamed choice {i}");
    }
    // Token ids and text give the same result; a batch of two prompts x n = 2 is four choices in order.
    let ids = m.tokenizer.encode("The little dog");
    let body = serde_json::json!({"prompt": [ids, "Once upon a time"], "max_tokens": 12, "seed": 3, "n": 2})
        .to_string();
    let (st, v) = s.post("/v1/completions", &body);
    assert_eq!(st, 200, "{v}");
    for (k, (prompt, i)) in
        [("The little dog", 0), ("The little dog", 1), ("Once upon a time", 0), ("Once upon a time", 1)]
            .into_iter()
            .enumerate()
    {
        let (text, _) = library(&m, prompt, params(3 + i, 12, None));
        assert_eq!(v["choices"][k]["text"], text.as_str(), "choice {k}");
    }
    // Past --max-n: a 400 naming n.
    let (st, v) = s.post("/v1/completions", r#"{"prompt": "x", "n": 9}"#);
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("n")));
}

#[test]
fn penalties_min_p_and_logit_bias_give_the_librarys_text() {
    let s = start(config());
    let m = common::model();
    let dog = m.tokenizer.encode(" dog")[0];
    let body = format!(
        r#"{{"prompt": "Once upon a time", "max_tokens": 40, "seed": 8, "presence_penalty": 0.6, "frequency_penalty": 0.4,
            "repetition_penalty": 1.15, "repeat_last_n": 32, "min_p": 0.05, "logit_bias": {{"{dog}": 5}}, "temperature": 0.9}}"#
    );
    let (st, v) = s.post("/v1/completions", &body);
    assert_eq!(st, 200, "{v}");
    let p = GenerateParams {
        sampler: Sampler { temperature: 0.9, min_p: 0.05, ..Sampler::default() },
        penalties: Penalties { presence: 0.6, frequency: 0.4, repetition: 1.15, last_n: 32 },
        logit_bias: vec![(dog, 5.0)],
        ..params(8, 40, None)
    };
    let (text, _) = library(&m, "Once upon a time", p);
    assert_eq!(v["choices"][0]["text"], text.as_str());
    let (_, plain) = s.post(
        "/v1/completions",
        r#"{"prompt": "Once upon a time", "max_tokens": 40, "seed": 8, "temperature": 0.9}"#,
    );
    assert_ne!(plain["choices"][0]["text"], text.as_str(), "the fields changed nothing");
    let (st, v) = s.post("/v1/completions", r#"{"prompt": "x", "response_format": {"type": "json_object"}}"#);
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("response_format")));
    assert!(v["error"]["message"].as_str().unwrap().contains("no JSON mode"));
}

#[test]
fn tokenize_detokenize_tokenizer_info_props_and_the_page() {
    let s = start(config());
    let m = common::model();
    let text = "Once upon a time, Lily saw a dog.";
    let (st, v) = s.post("/tokenize", &serde_json::json!({"content": text}).to_string());
    assert_eq!(st, 200, "{v}");
    let ids: Vec<u16> = v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u16).collect();
    assert_eq!(ids, m.tokenizer.encode(text));
    assert_eq!(v["count"], ids.len());
    // vLLM's names (what lm-eval's remote tokenizer sends), pieces, the special token first.
    let (_, v) = s.post(
        "/tokenize",
        &serde_json::json!({"prompt": text, "add_special_tokens": true, "with_pieces": true}).to_string(),
    );
    let toks = v["tokens"].as_array().unwrap();
    assert_eq!(toks[0]["id"], flashlm_infer::tokenizer::EOS_ID);
    assert_eq!(toks[1]["piece"], "Once");
    let (st, v) = s.post("/detokenize", &serde_json::json!({"tokens": ids}).to_string());
    assert_eq!(st, 200);
    assert_eq!((v["content"].as_str(), v["prompt"].as_str()), (Some(text), Some(text)));
    for (path, body, param) in [
        ("/detokenize", r#"{"tokens": [5, 10000]}"#, "tokens"),
        ("/detokenize", r#"{"tokens": "abc"}"#, "tokens"),
        ("/tokenize", r#"{"text": "x"}"#, "text"),
        ("/tokenize", r#"{"content": 5}"#, "content"),
        ("/tokenize", r#"{}"#, "content"),
    ] {
        let (st, v) = s.post(path, body);
        assert_eq!((st, v["error"]["param"].as_str()), (400, Some(param)), "{path} {body}");
    }
    let (st, info) = s.get("/tokenizer_info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!((st, info["vocab_size"].as_u64()), (200, Some(m.config.vocab_size as u64)));
    assert!(info.as_object().unwrap().contains_key("eos_token"));
    let (st, props) = s.get("/props");
    let props: Value = serde_json::from_str(&props).unwrap();
    assert_eq!(st, 200);
    assert_eq!(props["model_config"]["dim"], m.config.dim);
    assert_eq!(props["default_generation_settings"]["top_k"], 50);
    assert_eq!(props["default_generation_settings"]["temperature"], 0.8);
    assert_eq!(props["max_n"], 8);
    let (st, page) = s.get("/");
    assert_eq!(st, 200);
    assert!(page.contains("FlashLM playground") && page.contains("/v1/completions"));
}
