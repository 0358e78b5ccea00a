//! FlashLM in the browser (and in any JavaScript runtime with WebAssembly): a thin
//! wasm-bindgen layer over `flashlm-infer`'s library API, as `bindings/python` is over PyO3.
//!
//! * [`Model`]: load a `.flm` from its bytes (`new Model(uint8array)`), generate with a
//!   callback per piece of text ([`Model::generate`]) or step by step ([`Model::stream`], so a
//!   page can yield to the browser between tokens and show text as it comes), tokenize.
//! * One thread: WebAssembly here has no threads, and the engine needs none. The kernel is
//!   `simd128-i6` in a build with `+simd128` and `portable-i6` without (the same integer sums:
//!   the same text for a seed as on every CPU); the page picks the build the browser runs.
//!
//! Errors (a file that is not a model, bad parameters) are JavaScript `Error`s with the
//! engine's message, never a trap.

use std::rc::Rc;

use flashlm_infer::generate::{GenerateParams, Generation};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::sample::Sampler;
use wasm_bindgen::prelude::*;

/// A loaded model (`.flm` bytes).
#[wasm_bindgen]
pub struct Model {
    engine: Rc<flashlm_infer::model::Model>,
}

/// What one generation did.
#[wasm_bindgen(getter_with_clone)]
pub struct Generated {
    /// The generated text (without the prompt).
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub tokens: u32,
    /// "stop" (end of story or a stop string) or "length".
    pub finish_reason: String,
}

/// Parameters, checked by the engine (the same ranges as the CLI and the server).
fn params(max_tokens: u32, temperature: f32, top_k: u32, top_p: f32, seed: u32) -> GenerateParams {
    GenerateParams {
        max_tokens: max_tokens as usize,
        sampler: Sampler { temperature, top_k: top_k as usize, top_p, min_p: 0.0 },
        seed: u64::from(seed),
        ..GenerateParams::default()
    }
}

#[wasm_bindgen]
impl Model {
    /// Load a model from the bytes of a `.flm` file; throws an `Error` naming what is wrong
    /// if they are not one.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> Result<Model, JsError> {
        let engine = flashlm_infer::model::Model::from_bytes(bytes, Kernel::detect())
            .map_err(|e| JsError::new(&format!("not a FlashLM model (.flm): {e}")))?;
        Ok(Model { engine: Rc::new(engine) })
    }

    /// The ternary kernel in use (`simd128-i6` or `portable-i6`).
    #[wasm_bindgen(getter)]
    pub fn kernel(&self) -> String {
        self.engine.kernel.name().to_string()
    }

    /// The output head in use (`simd128` or `portable`).
    #[wasm_bindgen(getter)]
    pub fn head(&self) -> String {
        self.engine.head.name().to_string()
    }

    /// The model's shape as JSON (`vocab_size`, `dim`, `n_blocks`, `glu_hidden`,
    /// `kernel_size`, `seq_len`).
    #[wasm_bindgen(getter)]
    pub fn config(&self) -> String {
        let c = &self.engine.config;
        format!(
            r#"{{"vocab_size":{},"dim":{},"n_blocks":{},"glu_hidden":{},"kernel_size":{},"seq_len":{}}}"#,
            c.vocab_size, c.dim, c.n_blocks, c.glu_hidden, c.conv_taps, c.seq_len
        )
    }

    /// Generate a continuation of `prompt`, calling `on_piece(text)` (if given) with each
    /// piece of text as it becomes final; returns the whole text and the counts. Runs to the
    /// end before returning (use [`Model::stream`] on a page's main thread).
    pub fn generate(
        &self,
        prompt: &str,
        max_tokens: u32,
        temperature: f32,
        top_k: u32,
        top_p: f32,
        seed: u32,
        on_piece: Option<js_sys::Function>,
    ) -> Result<Generated, JsError> {
        let mut s = self.stream(prompt, max_tokens, temperature, top_k, top_p, seed)?;
        let mut text = String::new();
        while let Some(piece) = s.next()? {
            if let Some(f) = &on_piece {
                f.call1(&JsValue::NULL, &JsValue::from_str(&piece))
                    .map_err(|e| JsError::new(&format!("the on_piece callback threw: {e:?}")))?;
            }
            text.push_str(&piece);
        }
        Ok(s.result(text))
    }

    /// Start a generation that the caller advances one token at a time ([`Stream::next`]).
    pub fn stream(
        &self,
        prompt: &str,
        max_tokens: u32,
        temperature: f32,
        top_k: u32,
        top_p: f32,
        seed: u32,
    ) -> Result<Stream, JsError> {
        let g = Generation::new(&self.engine, prompt, params(max_tokens, temperature, top_k, top_p, seed))
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Stream { engine: Rc::clone(&self.engine), g })
    }

    /// Token ids of `text` (FlashLM's 10K vocabulary; unknown pieces are UNK = 1).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.engine.tokenizer.encode(text).into_iter().map(u32::from).collect()
    }

    /// Text of token ids; throws on an id past the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String, JsError> {
        let v = self.engine.tokenizer.vocab_size();
        let ids =
            ids.iter()
                .map(|&id| {
                    u16::try_from(id).ok().filter(|&i| usize::from(i) < v).ok_or_else(|| {
                        JsError::new(&format!("token id {id} is past the vocabulary ({v} ids)"))
                    })
                })
                .collect::<Result<Vec<u16>, JsError>>()?;
        Ok(self.engine.tokenizer.decode(&ids))
    }

    /// The text of one token id (possibly part of a character, decoded lossily).
    pub fn token_text(&self, id: u32) -> Result<String, JsError> {
        self.decode(&[id])
    }
}

/// A generation in progress ([`Model::stream`]).
#[wasm_bindgen]
pub struct Stream {
    engine: Rc<flashlm_infer::model::Model>,
    g: Generation,
}

#[wasm_bindgen]
impl Stream {
    /// One decode step: the text that became final (possibly ""), or `undefined` once the
    /// generation has ended.
    #[allow(clippy::should_implement_trait, reason = "a JavaScript method, not an iterator")]
    pub fn next(&mut self) -> Result<Option<String>, JsError> {
        if self.g.finished().is_some() {
            return Ok(None);
        }
        let p = self.g.step(&self.engine).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Some(p.text))
    }

    /// Tokens generated so far.
    #[wasm_bindgen(getter)]
    pub fn tokens(&self) -> u32 {
        self.g.generated() as u32
    }

    /// Tokens in the prompt.
    #[wasm_bindgen(getter)]
    pub fn prompt_tokens(&self) -> u32 {
        self.g.prompt_tokens().len() as u32
    }

    /// "stop", "length", or `undefined` while it runs.
    #[wasm_bindgen(getter)]
    pub fn finish_reason(&self) -> Option<String> {
        self.g.finished().map(|f| f.openai().to_string())
    }

    /// Stop now (the page's Stop button).
    pub fn cut(&mut self) -> String {
        self.g.cut().text
    }
}

impl Stream {
    fn result(&self, text: String) -> Generated {
        Generated {
            text,
            prompt_tokens: self.prompt_tokens(),
            tokens: self.tokens(),
            finish_reason: self.finish_reason().unwrap_or_default(),
        }
    }
}
