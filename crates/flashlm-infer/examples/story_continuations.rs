//! The "which continuation fits the story" multiple-choice task (tests/lm_eval/): build it from the
//! validation stories, and score it directly from the engine's per-token log-likelihoods,
//! tokenised exactly as lm-evaluation-harness does, to compare with what `lm_eval` reports
//! through `flashlm-serve` (`scripts/test-lm-eval.sh`).
//!
//! ```text
//! cargo run --release -p flashlm-infer --example story_continuations -- make VALID.txt.zst OUT.jsonl [ITEMS]
//! cargo run --release -p flashlm-infer --example story_continuations -- score ITEMS.jsonl [MODEL.flm]
//! ```
//! `make`: the first ITEMS (default 50) validation stories (in file order) with at least
//! three sentences whose middle sentence has at least six words: the context is the story up
//! to the middle of that sentence (100..=1500 characters), the right choice the rest of the
//! sentence (10..=160 characters), and the three wrong ones the rests of the next three such
//! stories' sentences; the right one is choice `i % 4`. (The model sees about 43 tokens back,
//! six blocks of 8-tap convolutions, so the task asks what fits where the text is cut.)
//! `score`: one JSON object per item (`lls`, `pred`, `pred_norm`, `label`) and a last line
//! with `acc` and `acc_norm`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::Model;
use flashlm_infer::score::continuation_logprob;
use serde_json::{Value, json};

/// Where each sentence after the first starts: after a `.`, `!` or `?` outside a quotation
/// (or one that closes it) followed by white space.
fn sentence_starts(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut quoted = false;
    for i in 0..b.len() {
        if b[i] == b'"' {
            quoted = !quoted;
        }
        // Not inside a quotation: "Thank you. I polish it every day." is one sentence.
        if !matches!(b[i], b'.' | b'!' | b'?') || (quoted && b.get(i + 1) != Some(&b'"')) {
            continue;
        }
        let j = if b.get(i + 1) == Some(&b'"') { i + 1 } else { i };
        if b.get(j + 1).is_some_and(u8::is_ascii_whitespace) {
            let start = j + 1 + text[j + 1..].len() - text[j + 1..].trim_start().len();
            if start < b.len() {
                out.push(start);
            }
        }
    }
    out
}

/// A story cut inside its middle sentence, after about half of that sentence's words: the
/// text before the cut, and the rest of the sentence.
fn split(story: &str) -> Option<(String, String)> {
    let t = story.trim();
    let starts = sentence_starts(t);
    if starts.len() < 3 {
        return None;
    }
    let k = starts.len() / 2;
    let (at, end) = (starts[k - 1], starts[k]);
    let sentence = t[at..end].trim_end();
    let words: Vec<usize> = sentence.match_indices(' ').map(|(i, _)| i).collect();
    if words.len() < 5 {
        return None;
    }
    let cut = at + words[words.len() / 2];
    Some((t[..cut].to_string(), t[cut..at + sentence.len()].trim().to_string()))
}

fn make(valid: &Path, out: &Path, items: usize) -> anyhow::Result<()> {
    let stories = flashlm_infer::tokenizer::stories::read_story_file(valid)?.texts;
    let mut pairs: Vec<(String, String)> = Vec::new(); // (context, the sentence that follows)
    for s in &stories {
        let Some((context, next)) = split(s) else { continue };
        if (10..=160).contains(&next.len()) && !next.contains('\n') && (100..=1500).contains(&context.len()) {
            pairs.push((context, next));
        }
        if pairs.len() == items + 3 {
            break;
        }
    }
    if pairs.len() < items + 3 {
        bail!("{} has only {} usable stories; {} are needed", valid.display(), pairs.len(), items + 3);
    }
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("{}", out.display()))?);
    for i in 0..items {
        let label = i % 4;
        let mut wrong = (1..=3).map(|k| pairs[i + k].1.clone());
        let choices: Vec<String> = (0..4)
            .map(|c| if c == label { pairs[i].1.clone() } else { wrong.next().unwrap_or_default() })
            .collect();
        let item = json!({"id": i, "context": pairs[i].0, "choices": choices, "label": label});
        writeln!(f, "{item}")?;
    }
    f.flush()?;
    eprintln!("story_continuations: {items} items written to {}", out.display());
    Ok(())
}

/// lm-evaluation-harness's split of (context, continuation) into tokens: trailing spaces of
/// the context move to the continuation; the whole text is encoded and the context's own
/// encoding's length is cut off it.
fn encode_pair(m: &Model, context: &str, continuation: &str) -> (Vec<u16>, Vec<u16>) {
    let n_spaces = context.len() - context.trim_end().len();
    let (context, continuation) = (
        &context[..context.len() - n_spaces],
        format!("{}{continuation}", &context[context.len() - n_spaces..]),
    );
    let whole = m.tokenizer.encode(&format!("{context}{continuation}"));
    let ctx = m.tokenizer.encode(context);
    let cont = whole[ctx.len().min(whole.len())..].to_vec();
    (ctx, cont)
}

fn score(items: &Path, model: Option<&Path>) -> anyhow::Result<()> {
    let m = Model::load(model, Kernel::detect())?;
    let text = std::fs::read_to_string(items).with_context(|| format!("{}", items.display()))?;
    let (mut right, mut right_norm, mut n) = (0usize, 0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let item: Value = serde_json::from_str(line)?;
        let context = item["context"].as_str().context("an item without a context")?;
        let label = item["label"].as_u64().context("an item without a label")? as usize;
        let mut lls = Vec::new();
        let choices: Vec<&str> = item["choices"]
            .as_array()
            .context("an item without choices")?
            .iter()
            .map(|c| c.as_str().unwrap_or_default())
            .collect();
        for c in &choices {
            // The task's target_delimiter " " comes before each choice.
            let (ctx, cont) = encode_pair(&m, context, &format!(" {c}"));
            lls.push(continuation_logprob(&m, &ctx, &cont)?.0);
        }
        // np.argmax: the first of equal maxima; acc_norm divides by the choice's length in
        // characters, as lm-eval does.
        let argmax = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        let pred = argmax(&lls);
        let lens: Vec<f64> = choices.iter().map(|c| c.chars().count() as f64).collect();
        let pred_norm = argmax(&lls.iter().zip(&lens).map(|(l, n)| l / n).collect::<Vec<_>>());
        right += usize::from(pred == label);
        right_norm += usize::from(pred_norm == label);
        n += 1;
        writeln!(
            out,
            "{}",
            json!({"id": item["id"], "lls": lls, "pred": pred, "pred_norm": pred_norm, "label": label})
        )?;
    }
    let (acc, acc_norm) = (right as f64 / n.max(1) as f64, right_norm as f64 / n.max(1) as f64);
    writeln!(out, "{}", json!({"items": n, "correct": right, "acc": acc, "acc_norm": acc_norm}))?;
    eprintln!(
        "story_continuations: {right} of {n} right, acc {acc:.4}, acc_norm {acc_norm:.4} (chance 0.25)"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["make", valid, out] => make(Path::new(valid), Path::new(out), 50),
        ["make", valid, out, n] => {
            make(Path::new(valid), Path::new(out), n.parse().context("ITEMS must be a number")?)
        }
        ["score", items] => score(Path::new(items), None),
        ["score", items, model] => score(Path::new(items), Some(Path::new(model))),
        _ => bail!(
            "usage: story_continuations make VALID OUT.jsonl [ITEMS] | story_continuations score ITEMS.jsonl [MODEL.flm]"
        ),
    }
}
