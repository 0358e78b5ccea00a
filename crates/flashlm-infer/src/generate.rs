//! Text generation as a library: one [`Generation`] per stream (prompt, sampler, seed, stop
//! conditions) that yields text pieces, and [`step_many`], which advances many streams by one
//! token with every weight read once for all of them. The CLI, the server and the bindings
//! all generate through this module.
//!
//! A stream's life: [`Generation::new`] encodes the prompt; [`Generation::prefill`] feeds it
//! (all but its last token) in chunks of any size; then each decode step feeds one token (the
//! prompt's last, then each sampled one), samples the next from the logits and returns the
//! text that is now final ([`Piece`]). The tokens, and so the text, depend only on the model,
//! the prompt and the parameters: not on the chunk sizes, nor on which other streams share a
//! step (every path is bit for bit [`Model::forward`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use flashlm_tokenizer::{EOS_ID, UNK_ID, Utf8Stream};

use crate::model::{Model, RunState, StepBuffers};
use crate::sample::{Penalties, Rng, Sampler, TokenLogprob, apply_bias, token_logprob};

/// `logprobs` at most (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What a stream generates and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Tokens to generate at most (>= 1).
    pub max_tokens: usize,
    /// Temperature, top-k, top-p.
    pub sampler: Sampler,
    /// Sampling seed.
    pub seed: u64,
    /// Stop when the text contains one of these; the stop string itself is not returned.
    pub stop: Vec<String>,
    /// Keep going past the end-of-story token.
    pub ignore_eos: bool,
    /// Presence, frequency and repetition penalties.
    pub penalties: Penalties,
    /// Added to these tokens' logits before sampling (-100..=100 each).
    pub logit_bias: Vec<(u16, f32)>,
    /// Report each sampled token's log-probability and this many alternatives
    /// (0..=[`MAX_TOP_LOGPROBS`]) in [`Piece::logprob`]; None: off.
    pub logprobs: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            sampler: Sampler::default(),
            seed: 42,
            stop: Vec::new(),
            ignore_eos: false,
            penalties: Penalties::default(),
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced the end-of-story token.
    Eos,
    /// The text reached one of the stop strings.
    Stop,
    /// `max_tokens` tokens were generated (or the caller cut the stream).
    Length,
}

impl FinishReason {
    /// OpenAI's name: "stop" for the end token and the stop strings, "length" otherwise.
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Eos | FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Why a stream cannot start or go on.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerateError {
    /// A parameter out of range (its name and the reason).
    Param(&'static str, String),
    /// The prompt is empty or blank.
    EmptyPrompt,
    /// None of the prompt's tokens is in the model's vocabulary.
    UnknownPrompt,
    /// The activations stopped being finite numbers (weights that overflow f32 together).
    Overflow {
        /// The generated token (1-based) whose activations were not finite.
        token: usize,
    },
}

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenerateError::Param(name, why) => write!(f, "{name}: {why}"),
            GenerateError::EmptyPrompt => write!(f, "the prompt is empty"),
            GenerateError::UnknownPrompt => {
                write!(f, "none of the prompt's tokens is in the model's vocabulary; try plain English words")
            }
            GenerateError::Overflow { token } => write!(
                f,
                "the activations of generated token {token} are not finite numbers: the model's weights \
                 overflow f32 (is the file damaged? re-export it)"
            ),
        }
    }
}

impl std::error::Error for GenerateError {}

impl GenerateParams {
    /// Refuse values the sampler cannot use.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let s = &self.sampler;
        if self.max_tokens == 0 {
            return Err(GenerateError::Param("max_tokens", "must be at least 1".into()));
        }
        if !(s.temperature.is_finite() && s.temperature >= 0.0) {
            return Err(GenerateError::Param(
                "temperature",
                format!("must be a number >= 0, not {}", s.temperature),
            ));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(GenerateError::Param("top_p", format!("must be in (0, 1], not {}", s.top_p)));
        }
        if !(s.min_p >= 0.0 && s.min_p <= 1.0) {
            return Err(GenerateError::Param("min_p", format!("must be in [0, 1], not {}", s.min_p)));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(GenerateError::Param("stop", "a stop string is empty".into()));
        }
        let p = &self.penalties;
        for (name, v) in [("presence_penalty", p.presence), ("frequency_penalty", p.frequency)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(GenerateError::Param(name, format!("must be in [-2, 2], not {v}")));
            }
        }
        if !(p.repetition > 0.0 && p.repetition <= 10.0) {
            return Err(GenerateError::Param(
                "repetition_penalty",
                format!("must be in (0, 10], not {}", p.repetition),
            ));
        }
        if let Some(&(t, b)) = self.logit_bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(b)) {
            return Err(GenerateError::Param("logit_bias", format!("token {t}: {b} is not in [-100, 100]")));
        }
        if let Some(k) = self.logprobs
            && k > MAX_TOP_LOGPROBS
        {
            return Err(GenerateError::Param(
                "logprobs",
                format!("at most {MAX_TOP_LOGPROBS} alternatives, not {k}"),
            ));
        }
        Ok(())
    }
}

/// Text that became final in one decode step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Piece {
    /// Complete characters (possibly empty: a token can end inside a character, or text
    /// can be held back while it might be the start of a stop string).
    pub text: String,
    /// Set on the stream's last piece.
    pub finish: Option<FinishReason>,
    /// The token sampled in this step (the end-of-story token too) and its log-probability,
    /// when [`GenerateParams::logprobs`] is on.
    pub logprob: Option<TokenLogprob>,
}

/// One stream: its prompt, its state and its sampler.
#[derive(Debug, Clone)]
pub struct Generation {
    prompt: Vec<u16>,             // the prompt's ids (at least one)
    fed: usize,                   // prompt tokens already fed by prefill (<= prompt.len() - 1)
    state: RunState,              // the model's buffers and conv history for this stream
    rng: Rng,                     // seeded by params.seed
    params: GenerateParams,       // validated
    input: u16,                   // the token the next decode step feeds
    generated: usize,             // tokens sampled so far (the end token not counted)
    utf8: Utf8Stream,             // bytes of a character split across tokens
    held: String,                 // final characters held back: they may begin a stop string
    finish: Option<FinishReason>, // set once the stream has ended
    counts: BTreeMap<u16, u32>,   // how often each token was generated (penalties only)
    recent: VecDeque<u16>,        // the last penalties.last_n tokens, prompt included (penalties only)
    adjusted: Vec<f32>,           // [V] the logits after penalties and bias (when any)
}

impl Generation {
    /// Encode `prompt` and set a stream up (nothing is computed yet).
    pub fn new(model: &Model, prompt: &str, params: GenerateParams) -> Result<Self, GenerateError> {
        if prompt.trim().is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        Self::from_ids(model, model.tokenizer.encode(prompt), params)
    }

    /// A stream over prompt ids (ids past the vocabulary are read as its last id, as the
    /// engine does).
    pub fn from_ids(model: &Model, prompt: Vec<u16>, params: GenerateParams) -> Result<Self, GenerateError> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt.iter().all(|&t| t == UNK_ID) {
            return Err(GenerateError::UnknownPrompt);
        }
        let v = model.config.vocab_size;
        if let Some(&(t, _)) = params.logit_bias.iter().find(|(t, _)| *t as usize >= v) {
            return Err(GenerateError::Param(
                "logit_bias",
                format!("token {t} is not in the vocabulary (ids 0..{v})"),
            ));
        }
        let recent = if params.penalties.active() {
            let n = params.penalties.last_n;
            prompt[prompt.len().saturating_sub(n)..].iter().copied().collect()
        } else {
            VecDeque::new()
        };
        Ok(Self {
            input: prompt[prompt.len() - 1],
            prompt,
            fed: 0,
            state: model.new_state(),
            rng: Rng::new(params.seed),
            params,
            generated: 0,
            utf8: Utf8Stream::default(),
            held: String::new(),
            finish: None,
            counts: BTreeMap::new(),
            recent,
            adjusted: Vec::new(),
        })
    }

    /// The prompt's ids.
    pub fn prompt_tokens(&self) -> &[u16] {
        &self.prompt
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Why the stream ended, once it has.
    pub fn finished(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Prompt tokens still to prefill before the first decode step.
    pub fn prefill_left(&self) -> usize {
        self.prompt.len() - 1 - self.fed
    }

    /// Feed up to `max` more prompt tokens (batched, [`Model::forward_batch`]); returns how
    /// many were fed. The batch buffers are freed once the prompt is in.
    pub fn prefill(&mut self, model: &Model, max: usize) -> usize {
        let n = self.prefill_left().min(max);
        if n > 0 {
            model.forward_batch(&mut self.state, &self.prompt[self.fed..self.fed + n], None);
            self.fed += n;
        }
        if self.prefill_left() == 0 {
            self.state.release_batch_buffers();
        }
        n
    }

    /// The token the next decode step feeds, or None if the stream has ended or its prompt
    /// is not in yet.
    pub fn next_input(&self) -> Option<u16> {
        (self.finish.is_none() && self.prefill_left() == 0).then_some(self.input)
    }

    /// One decode step on this stream alone (prefilling what is left first).
    pub fn step(&mut self, model: &Model) -> Result<Piece, GenerateError> {
        if self.finish.is_some() {
            return Ok(Piece::default());
        }
        self.prefill(model, usize::MAX);
        model.forward(&mut self.state, self.input);
        self.after_forward(model)
    }

    /// End the stream now (a client went away, a deadline passed): returns the text held back.
    pub fn cut(&mut self) -> Piece {
        if self.finish.is_some() {
            return Piece::default();
        }
        self.finish = Some(FinishReason::Length);
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&self.utf8.finish());
        Piece { text, finish: self.finish, logprob: None }
    }

    /// Run to the end; returns the whole text and why it ended.
    pub fn run(&mut self, model: &Model) -> Result<(String, FinishReason), GenerateError> {
        let mut text = String::new();
        loop {
            let p = self.step(model)?;
            text.push_str(&p.text);
            if let Some(f) = p.finish {
                return Ok((text, f));
            }
        }
    }

    /// The logits of `input` are in the state: sample, decode, apply the stop conditions.
    fn after_forward(&mut self, model: &Model) -> Result<Piece, GenerateError> {
        let logits = &self.state.logits;
        if self.state.overflowed() || !crate::vmath::all_finite(logits) {
            self.finish = Some(FinishReason::Length);
            return Err(GenerateError::Overflow { token: self.generated + 1 });
        }
        let p = &self.params;
        let next = if p.penalties.active() || !p.logit_bias.is_empty() {
            self.adjusted.clear();
            self.adjusted.extend_from_slice(logits);
            let mut distinct: Vec<u16> = self.recent.iter().copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            let counts = self.counts.iter().map(|(&t, &c)| (t, c));
            p.penalties.apply(&mut self.adjusted, counts, &distinct);
            apply_bias(&mut self.adjusted, &p.logit_bias);
            p.sampler.sample(&self.adjusted, &mut self.rng) as u16
        } else {
            p.sampler.sample(logits, &mut self.rng) as u16
        };
        // The end token has its logprobs too (an evaluation harness that asks for one token
        // after a prompt drops the last entry, whatever it is).
        let logprob = self.params.logprobs.map(|k| token_logprob(&self.state.logits, next, k));
        if next == EOS_ID && !self.params.ignore_eos {
            return Ok(Piece { logprob, ..self.end(FinishReason::Eos) });
        }
        if self.params.penalties.active() {
            *self.counts.entry(next).or_default() += 1;
            self.recent.push_back(next);
            while self.recent.len() > self.params.penalties.last_n {
                self.recent.pop_front();
            }
        }
        self.generated += 1;
        self.input = next;
        let piece = self.utf8.push(model.tokenizer.token_bytes(next));
        self.held.push_str(&piece);
        if let Some(at) = self.params.stop.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.held.truncate(at);
            self.utf8 = Utf8Stream::default();
            return Ok(Piece { logprob, ..self.end(FinishReason::Stop) });
        }
        if self.generated >= self.params.max_tokens {
            return Ok(Piece { logprob, ..self.end(FinishReason::Length) });
        }
        let keep = self.held_back();
        let text = self.held.drain(..self.held.len() - keep).collect();
        Ok(Piece { text, finish: None, logprob })
    }

    /// Bytes at the end of `held` that could begin a stop string (on a character boundary).
    fn held_back(&self) -> usize {
        let h = &self.held;
        h.char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.params.stop.iter().any(|s| s.starts_with(&h[i..])))
            .map_or(0, |i| h.len() - i)
    }

    fn end(&mut self, why: FinishReason) -> Piece {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&self.utf8.finish());
        self.finish = Some(why);
        Piece { text, finish: Some(why), logprob: None }
    }
}

/// One decode step for every stream in `gens` that is ready ([`Generation::next_input`]),
/// batched: each weight is read once for all of them. Returns one result per stream, in
/// order (an empty piece for a stream that was not ready).
pub fn step_many(
    model: &Model,
    scratch: &mut StepBuffers,
    gens: &mut [&mut Generation],
) -> Vec<Result<Piece, GenerateError>> {
    let ready: Vec<bool> = gens.iter().map(|g| g.next_input().is_some()).collect();
    let tokens: Vec<u16> = gens.iter().filter_map(|g| g.next_input()).collect();
    let mut states: Vec<&mut RunState> =
        gens.iter_mut().zip(&ready).filter(|(_, r)| **r).map(|(g, _)| &mut g.state).collect();
    model.forward_many(scratch, &mut states, &tokens);
    gens.iter_mut()
        .zip(ready)
        .map(|(g, r)| if r { g.after_forward(model) } else { Ok(Piece::default()) })
        .collect()
}
