//! Scoring given text: each token's log-probability given the tokens before it (OpenAI's
//! `echo` with `logprobs`, and what log-likelihood evaluation harnesses ask for).

use crate::model::Model;
use crate::sample::{TokenLogprob, log_prob, token_logprob};

/// Tokens fed per [`Model::forward_batch`] call (bounds the logits buffer: CHUNK x V).
const CHUNK: usize = 256;

/// Feed `inputs` from a fresh state and call `f(i, logits)` with the next-token logits after
/// each `inputs[i]`, in order. Returns whether the activations overflowed (then the logits
/// are not to be trusted, even when finite).
pub fn each_logits(model: &Model, inputs: &[u16], mut f: impl FnMut(usize, &[f32])) -> bool {
    let v = model.config.vocab_size;
    let mut state = model.new_state();
    let mut logits = vec![0.0f32; CHUNK.min(inputs.len()) * v];
    for (ci, xs) in inputs.chunks(CHUNK).enumerate() {
        let l = &mut logits[..xs.len() * v];
        model.forward_batch(&mut state, xs, Some(l));
        for (j, row) in l.chunks_exact(v).enumerate() {
            f(ci * CHUNK + j, row);
        }
    }
    state.overflowed()
}

/// Why a text cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoreError {
    /// An id past the vocabulary (its position and value).
    BadToken(usize, usize),
    /// The activations are not finite numbers.
    Overflow,
}

impl std::fmt::Display for ScoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScoreError::BadToken(i, t) => write!(f, "token {i} ({t}) is not in the model's vocabulary"),
            ScoreError::Overflow => {
                write!(f, "the activations are not finite numbers: the model's weights overflow f32")
            }
        }
    }
}

impl std::error::Error for ScoreError {}

fn check_ids(model: &Model, ids: &[u16]) -> Result<(), ScoreError> {
    let v = model.config.vocab_size;
    match ids.iter().position(|&t| t as usize >= v) {
        Some(i) => Err(ScoreError::BadToken(i, ids[i] as usize)),
        None => Ok(()),
    }
}

/// Each token of `ids` with its log-probability given the ones before it and the `top` most
/// likely tokens at its place; the first token has nothing before it (None).
pub fn prompt_logprobs(
    model: &Model,
    ids: &[u16],
    top: usize,
) -> Result<Vec<Option<TokenLogprob>>, ScoreError> {
    check_ids(model, ids)?;
    let mut out: Vec<Option<TokenLogprob>> = Vec::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    out.push(None);
    let inputs = &ids[..ids.len() - 1];
    if each_logits(model, inputs, |i, row| out.push(Some(token_logprob(row, ids[i + 1], top)))) {
        return Err(ScoreError::Overflow);
    }
    Ok(out)
}

/// The log-likelihood of `continuation` after `context` (summed nats) and whether every one
/// of its tokens is the most likely one at its place (ties to the lowest id): the two figures
/// of a multiple-choice evaluation. `context` must not be empty.
pub fn continuation_logprob(
    model: &Model,
    context: &[u16],
    continuation: &[u16],
) -> Result<(f64, bool), ScoreError> {
    let ids: Vec<u16> = context.iter().chain(continuation).copied().collect();
    check_ids(model, &ids)?;
    assert!(!context.is_empty(), "a continuation needs a context");
    let (mut sum, mut greedy) = (0.0, true);
    let start = context.len() - 1;
    let overflowed = each_logits(model, &ids[..ids.len() - 1], |i, row| {
        if i >= start {
            let t = ids[i + 1] as usize;
            sum += log_prob(row, t);
            greedy &= crate::sample::argmax(row) == t;
        }
    });
    if overflowed {
        return Err(ScoreError::Overflow);
    }
    Ok((sum, greedy))
}
