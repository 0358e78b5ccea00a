//! `flashlm-infer`: generate text with, or evaluate, a packed `.flm` FlashLM model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flashlm_infer::bundled;
use flashlm_infer::eval::{Protocol, cut_warning, evaluate_checked};
use flashlm_infer::generate::{GenerateError, GenerateParams, Generation};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::{HeadPath, Model};
use flashlm_infer::sample::{Penalties, Sampler};
use flashlm_infer::tokenizer::stories::read_story_file;

#[derive(Parser, Debug)]
#[command(
    name = "flashlm-infer",
    version,
    about = "Run packed ternary FlashLM models with add/subtract-only kernels"
)]
#[command(args_conflicts_with_subcommands = true, allow_negative_numbers = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validation bits per character and perplexity over a story file.
    Eval(EvalArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// The .flm model (from flashlm-export); without it, the bundled small model
    /// (models/flashlm-small.flm, compiled into this binary).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Ternary kernel: auto (avx2-i6 with AVX2, neon-i6 on aarch64, simd128-i6 in a SIMD128
    /// WebAssembly build, else portable-i6: 6-bit activations, the same integer sums), exact
    /// (the fastest f32-activation kernel), scalar, portable, portable-i6, avx2, avx2-i8,
    /// avx2-i6, avx512, avx512-i8, neon, neon-i6, simd128-i6 (`-i8`, `portable`: int8
    /// activations).
    #[arg(long, env = "FLASHLM_KERNEL", default_value = "auto")]
    kernel: String,
    /// Output head: auto (the fastest here; portable with --kernel scalar), portable, avx2,
    /// avx512, neon, simd128.
    #[arg(long, env = "FLASHLM_HEAD", default_value = "auto")]
    head: String,
    /// Threads: the prompt is processed in batches split across them (new tokens are
    /// generated one at a time on one thread); eval scores stories in parallel.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    #[command(flatten)]
    common: Common,
    /// Text to continue.
    #[arg(long)]
    prompt: Option<String>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// Softmax temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Min-p: keep tokens at least this times as likely as the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// OpenAI's presence penalty, -2..2: subtracted once from every token already generated.
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// OpenAI's frequency penalty, -2..2: subtracted per time a token was generated.
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// llama.cpp's repetition penalty (1 = off) over the last --repeat-last-n tokens.
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Tokens (prompt included) the repetition penalty looks back over.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Add BIAS (-100..100) to token ID's logit: `--logit-bias 1234=-100` (repeatable).
    #[arg(long, value_parser = parse_bias)]
    logit_bias: Vec<(u16, f32)>,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep going past the end-of-story token.
    #[arg(long)]
    ignore_eos: bool,
}

fn parse_bias(s: &str) -> Result<(u16, f32), String> {
    let (id, bias) = s.split_once('=').ok_or_else(|| format!("{s:?}: write ID=BIAS, e.g. 1234=-100"))?;
    let id =
        id.trim().parse::<u16>().map_err(|_| format!("{s:?}: the token id must be an integer 0..65535"))?;
    let bias = bias.trim().parse::<f32>().map_err(|_| format!("{s:?}: the bias must be a number"))?;
    Ok((id, bias))
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ProtocolArg {
    Original,
    Exact,
    Both,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[command(flatten)]
    common: Common,
    /// Story file (.txt with <|endoftext|> lines or .jsonl, optionally .zst).
    #[arg(long)]
    data: PathBuf,
    /// Stories to use (the first N).
    #[arg(long, default_value_t = 500)]
    stories: usize,
    /// original: FlashLM v4's eval (cut at 257 tokens); exact: every token.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Both)]
    protocol: ProtocolArg,
    /// One JSON object per protocol instead of the text line (for scripts).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    flashlm_core::limits::default_interrupt();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(c: &Common) -> anyhow::Result<Model> {
    let kernel = Kernel::from_name(&c.kernel).map_err(anyhow::Error::msg)?;
    let head = HeadPath::from_name(&c.head).map_err(anyhow::Error::msg)?;
    flashlm_core::limits::check_threads(c.threads).map_err(anyhow::Error::msg)?;
    let mut model = Model::load(c.model.as_deref(), kernel)?;
    if !c.head.eq_ignore_ascii_case("auto") {
        model.set_head(head).map_err(anyhow::Error::msg)?;
    }
    Ok(model)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Eval(a)) => eval(a),
        None => generate(cli.generate),
    }
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let prompt = a.prompt.as_deref().context("no prompt: pass --prompt \"Once upon a time\"")?;
    let mut model = load(&a.common)?;
    model.set_threads(a.common.threads).map_err(anyhow::Error::msg)?;
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampler: Sampler { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, min_p: a.min_p },
        seed: a.seed,
        stop: Vec::new(),
        ignore_eos: a.ignore_eos,
        penalties: Penalties {
            presence: a.presence_penalty,
            frequency: a.frequency_penalty,
            repetition: a.repetition_penalty,
            last_n: a.repeat_last_n,
        },
        logit_bias: a.logit_bias.clone(),
        logprobs: None,
    };
    let name = model_name(&a.common);
    let flag = |e: GenerateError| match e {
        GenerateError::Param(p, why) => anyhow::anyhow!("--{} {why}", p.replace('_', "-")),
        GenerateError::Overflow { .. } => anyhow::anyhow!("{name}: {e}"),
        e => anyhow::anyhow!("{e}"),
    };
    let mut g = Generation::new(&model, prompt, params).map_err(flag)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    out.flush()?;
    let t0 = Instant::now();
    // The prompt in batches; the first decode step feeds its last token.
    g.prefill(&model, usize::MAX);
    let mut piece = g.step(&model).map_err(flag)?;
    let prompt_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    loop {
        write!(out, "{}", piece.text)?;
        out.flush()?;
        if piece.finish.is_some() {
            break;
        }
        piece = g.step(&model).map_err(flag)?;
    }
    writeln!(out)?;
    let gen_secs = t1.elapsed().as_secs_f64();
    let (n_prompt, generated) = (g.prompt_tokens().len(), g.generated());
    eprintln!(
        "prompt: {n_prompt} tokens in {:.1} ms ({:.0} tok/s) | generated: {generated} tokens in {:.1} ms ({:.0} tok/s) | kernel {} | head {}",
        prompt_secs * 1e3,
        n_prompt as f64 / prompt_secs.max(1e-9),
        gen_secs * 1e3,
        generated as f64 / gen_secs.max(1e-9),
        model.kernel.name(),
        model.head.name()
    );
    Ok(())
}

/// How errors name the model: its path, or "the bundled model".
fn model_name(c: &Common) -> String {
    c.model
        .as_ref()
        .map_or_else(|| format!("the bundled model ({})", bundled::PATH), |p| p.display().to_string())
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.stories > 0, "--stories must be at least 1");
    let model = load(&a.common)?;
    let stories = read_story_file(&a.data)?;
    anyhow::ensure!(!stories.texts.is_empty(), "{} holds no stories", a.data.display());
    let protocols: &[Protocol] = match a.protocol {
        ProtocolArg::Original => &[Protocol::Original],
        ProtocolArg::Exact => &[Protocol::Exact],
        ProtocolArg::Both => &[Protocol::Original, Protocol::Exact],
    };
    for &p in protocols {
        let t0 = Instant::now();
        let r = evaluate_checked(&model, &stories.texts, a.stories, p, a.common.threads)
            .with_context(|| model_name(&a.common))?;
        let secs = t0.elapsed().as_secs_f64();
        let name = format!("{p:?}").to_lowercase();
        if let Some(w) = cut_warning(&r) {
            eprintln!("{w}");
        }
        if a.json {
            println!(
                "{{\"protocol\": \"{name}\", \"stories\": {}, \"cut\": {}, \"tokens\": {}, \"chars\": {}, \"loss\": {}, \"ppl\": {}, \"bpc\": {}, \"secs\": {secs}}}",
                r.stories,
                r.cut,
                r.tokens,
                r.chars,
                r.loss(),
                r.perplexity(),
                r.bpc()
            );
            continue;
        }
        println!(
            "{:<8} stories {} tokens {} chars {} loss {:.4} ppl {:.2} bpc {:.4} ({:.1}s, {:.0} tok/s)",
            name,
            r.stories,
            r.tokens,
            r.chars,
            r.loss(),
            r.perplexity(),
            r.bpc(),
            secs,
            r.tokens as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
