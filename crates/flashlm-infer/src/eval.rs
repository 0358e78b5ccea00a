//! Validation bits per character, two protocols.
//!
//! * `original`: FlashLM v4's `eval_bpc.py`: the first `stories` stories longer than 50
//!   characters; each story's tokens cut to 257; tokens 1.. predicted from the ones before
//!   (the first token is not scored, no EOS); BPC = summed NLL (nats) / (characters of the
//!   whole stories · ln 2).
//! * `exact`: every token of every story scored by the streaming engine, nothing cut: the
//!   state starts fresh with an EOS (the end of a previous story, as in training), then every
//!   story token and the closing EOS are scored; BPC = summed NLL / (characters · ln 2).

use flashlm_tokenizer::EOS_ID;

use crate::model::Model;
use crate::sample::log_prob;

/// Tokens kept per story by the original protocol (a 256-token window plus its target).
pub const ORIGINAL_MAX_TOKENS: usize = 257;

/// Which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The original's (cut at 257 tokens, first token unscored).
    Original,
    /// Every token.
    Exact,
}

/// Result of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Stories scored.
    pub stories: usize,
    /// Tokens scored.
    pub tokens: u64,
    /// Characters counted.
    pub chars: u64,
    /// Summed negative log-likelihood, nats.
    pub nll: f64,
    /// Stories the original protocol cut at [`ORIGINAL_MAX_TOKENS`] tokens (their later
    /// tokens unscored, their characters all counted, so the BPC reads lower than the model's);
    /// 0 under the exact protocol.
    pub cut: usize,
}

impl EvalResult {
    /// Bits per character.
    pub fn bpc(&self) -> f64 {
        self.nll / (self.chars as f64 * std::f64::consts::LN_2)
    }

    /// Mean loss per token (nats).
    pub fn loss(&self) -> f64 {
        self.nll / self.tokens.max(1) as f64
    }

    /// exp(loss).
    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }
}

/// The stories a protocol uses: the original keeps the first `max` with more than 50 chars
/// (among the first `max`); exact takes the first `max`.
pub fn select(stories: &[String], max: usize, protocol: Protocol) -> Vec<&str> {
    let first = stories.iter().take(max);
    match protocol {
        Protocol::Original => first.filter(|s| s.chars().count() > 50).map(String::as_str).collect(),
        Protocol::Exact => first.map(String::as_str).collect(),
    }
}

/// One story's score: summed NLL (nats), tokens scored, characters, and whether the original
/// protocol cut it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoryScore {
    /// Summed negative log-likelihood, nats.
    pub nll: f64,
    /// Tokens scored.
    pub tokens: u64,
    /// Characters of the story.
    pub chars: u64,
    /// Cut at [`ORIGINAL_MAX_TOKENS`] tokens.
    pub cut: bool,
}

/// Score one story. Tokens go through [`Model::forward_batch`] (the same logits as one at a
/// time, bit for bit).
pub fn score_story(model: &Model, text: &str, protocol: Protocol) -> StoryScore {
    let mut ids = model.tokenizer.encode(text);
    let chars = text.chars().count() as u64;
    let mut cut = false;
    // inputs[i] predicts targets[i].
    let (inputs, targets): (Vec<u16>, Vec<u16>) = match protocol {
        Protocol::Original => {
            if ids.len() < 2 {
                return StoryScore::default();
            }
            cut = ids.len() > ORIGINAL_MAX_TOKENS;
            ids.truncate(ORIGINAL_MAX_TOKENS);
            (ids[..ids.len() - 1].to_vec(), ids[1..].to_vec())
        }
        Protocol::Exact => {
            let inputs = std::iter::once(EOS_ID).chain(ids.iter().copied()).collect();
            ids.push(EOS_ID);
            (inputs, ids)
        }
    };
    let mut nll = 0.0;
    let overflowed =
        crate::score::each_logits(model, &inputs, |i, row| nll -= log_prob(row, targets[i] as usize));
    // An overflowing model can give finite logits from a non-finite residual stream.
    if overflowed {
        nll = f64::NAN;
    }
    StoryScore { nll, tokens: targets.len() as u64, chars, cut }
}

/// Score stories (in parallel over `threads` threads), in story order.
pub fn score_stories(model: &Model, stories: &[&str], protocol: Protocol, threads: usize) -> Vec<StoryScore> {
    let threads = threads.max(1).min(stories.len().max(1));
    let mut per = vec![StoryScore::default(); stories.len()];
    if threads == 1 {
        // On the calling thread: no spawn (WebAssembly and WASI have no threads).
        for (o, text) in per.iter_mut().zip(stories) {
            *o = score_story(model, text, protocol);
        }
    } else {
        let chunk = stories.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (chunk_out, chunk_in) in per.chunks_mut(chunk).zip(stories.chunks(chunk)) {
                s.spawn(move || {
                    for (o, text) in chunk_out.iter_mut().zip(chunk_in) {
                        *o = score_story(model, text, protocol);
                    }
                });
            }
        });
    }
    per
}

/// The sum of story scores, in their order (so it does not depend on how they were split
/// across threads or calls).
pub fn sum_scores(per: &[StoryScore]) -> EvalResult {
    let mut r = EvalResult { stories: 0, tokens: 0, chars: 0, nll: 0.0, cut: 0 };
    for s in per.iter().filter(|s| s.tokens > 0) {
        r.stories += 1;
        r.tokens += s.tokens;
        r.chars += s.chars;
        r.nll += s.nll;
        r.cut += usize::from(s.cut);
    }
    r
}

/// Evaluate a set of stories (in parallel over `threads` threads; results are summed in
/// story order, so they do not depend on the thread count).
pub fn evaluate(model: &Model, stories: &[&str], protocol: Protocol, threads: usize) -> EvalResult {
    sum_scores(&score_stories(model, stories, protocol, threads))
}

/// Refuse a loss that is not a finite number (an overflowing model).
pub fn check_finite(r: EvalResult) -> anyhow::Result<EvalResult> {
    anyhow::ensure!(
        r.nll.is_finite(),
        "the loss is not a finite number ({}): the model's weights overflow f32 (is the file damaged? re-export it)",
        r.nll
    );
    Ok(r)
}

/// The warning a cut evaluation deserves, if any: how many stories the original protocol cut.
pub fn cut_warning(r: &EvalResult) -> Option<String> {
    (r.cut > 0).then(|| {
        format!(
            "warning: the original protocol scored only the first {ORIGINAL_MAX_TOKENS} tokens of {} of {} stories \
             but counted all their characters, so its BPC is lower than the model's; the exact protocol scores every token",
            r.cut, r.stories
        )
    })
}

/// Read a story file and evaluate its first `stories` stories under `protocol` (what the
/// bindings and the C API run). Errors name the file.
pub fn evaluate_file(
    model: &Model,
    path: &std::path::Path,
    stories: usize,
    protocol: Protocol,
    threads: usize,
) -> anyhow::Result<EvalResult> {
    let all = flashlm_tokenizer::stories::read_story_file(path)?;
    anyhow::ensure!(!all.texts.is_empty(), "{} holds no stories", path.display());
    evaluate_checked(model, &all.texts, stories, protocol, threads)
}

/// [`evaluate`] of the protocol's selection of the first `stories` stories, refusing zero
/// stories and a loss that is not a finite number.
pub fn evaluate_checked(
    model: &Model,
    texts: &[String],
    stories: usize,
    protocol: Protocol,
    threads: usize,
) -> anyhow::Result<EvalResult> {
    anyhow::ensure!(stories > 0, "the number of stories must be at least 1");
    check_finite(evaluate(model, &select(texts, stories, protocol), protocol, threads))
}
