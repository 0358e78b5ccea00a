//! The generation API against the plain one-token path: batched steps over many streams give
//! the same logits bit for bit, and a stream's text does not depend on its neighbours, on the
//! prefill chunk size or on stop strings it never meets.

use flashlm_infer::bundled;
use flashlm_infer::eval::{Protocol, score_story};
use flashlm_infer::generate::{FinishReason, GenerateError, GenerateParams, Generation, step_many};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::{Model, StepBuffers};
use flashlm_infer::sample::{Penalties, Rng, Sampler, TokenLogprob, log_prob};
use flashlm_infer::score::{ScoreError, continuation_logprob, prompt_logprobs};

fn bundled_model(kernel: Kernel) -> Model {
    Model::from_bytes(bundled::BYTES, kernel).unwrap()
}

const PROMPTS: [&str; 5] = [
    "Once upon a time",
    "The little dog ran to the park and",
    "Tom",
    "She looked at the big red ball. \"Can I play?\" she asked her mom, who",
    "One day, a girl named Lily found a box",
];

#[test]
fn forward_many_equals_forward_for_every_kernel() {
    for (k, lack) in Kernel::unavailable() {
        eprintln!("skipped kernel {}: this CPU has no {lack}", k.name());
    }
    // WASI has no threads: one thread there (and the test says so).
    let thread_counts: &[usize] = if cfg!(target_os = "wasi") { &[1] } else { &[1, 2] };
    if cfg!(target_os = "wasi") {
        eprintln!("skipped 2 threads: WASI has no threads");
    }
    for kernel in Kernel::available() {
        for &threads in thread_counts {
            let mut m = bundled_model(kernel);
            m.set_threads(threads).unwrap();
            let ids: Vec<Vec<u16>> = PROMPTS.iter().map(|p| m.tokenizer.encode(p)).collect();
            // Streams at different positions: each alone, and all in one batch per step.
            let mut alone: Vec<_> = ids.iter().map(|_| m.new_state()).collect();
            let mut many: Vec<_> = ids.iter().map(|_| m.new_state()).collect();
            let mut scratch = StepBuffers::default();
            let longest = ids.iter().map(Vec::len).max().unwrap();
            for step in 0..longest + 12 {
                // A stream takes part while it has tokens (its prompt, then a fixed filler).
                let active: Vec<usize> =
                    (0..ids.len()).filter(|&i| step < ids[i].len() + 3 * i + 4).collect();
                let tok =
                    |i: usize| ids[i].get(step).copied().unwrap_or((100 + 37 * step + i) as u16 % 9000 + 4);
                for &i in &active {
                    m.forward(&mut alone[i], tok(i));
                }
                let tokens: Vec<u16> = active.iter().map(|&i| tok(i)).collect();
                let mut states: Vec<_> =
                    many.iter_mut().enumerate().filter(|(i, _)| active.contains(i)).map(|(_, s)| s).collect();
                m.forward_many(&mut scratch, &mut states, &tokens);
                for &i in &active {
                    assert!(
                        alone[i].logits.iter().zip(&many[i].logits).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kernel:?} threads {threads}: stream {i} step {step} differs"
                    );
                    assert_eq!(alone[i].pos, many[i].pos);
                }
            }
        }
    }
}

fn params(seed: u64, max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: Sampler { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.0 },
        seed,
        stop: Vec::new(),
        ignore_eos: true,
        ..GenerateParams::default()
    }
}

#[test]
fn a_stream_alone_or_among_63_others_gives_the_same_text() {
    let m = bundled_model(Kernel::detect());
    let alone = |i: usize| {
        let mut g = Generation::new(&m, PROMPTS[i % PROMPTS.len()], params(i as u64, 20 + i % 7)).unwrap();
        g.run(&m).unwrap()
    };
    let mut gens: Vec<Generation> = (0..64)
        .map(|i| Generation::new(&m, PROMPTS[i % PROMPTS.len()], params(i as u64, 20 + i % 7)).unwrap())
        .collect();
    let mut texts = vec![String::new(); 64];
    let mut finish = [None; 64];
    let mut scratch = StepBuffers::default();
    // Prefill in odd chunks, a few streams at a time, as a server would between steps.
    let mut round = 0;
    while finish.iter().any(Option::is_none) {
        for (i, g) in gens.iter_mut().enumerate() {
            if i % 4 == round % 4 {
                g.prefill(&m, 3);
            }
        }
        round += 1;
        let mut refs: Vec<&mut Generation> = gens.iter_mut().collect();
        for (i, r) in step_many(&m, &mut scratch, &mut refs).into_iter().enumerate() {
            let p = r.unwrap();
            texts[i].push_str(&p.text);
            if p.finish.is_some() {
                finish[i] = p.finish;
            }
        }
    }
    for i in 0..64 {
        let (want, why) = alone(i);
        assert_eq!(texts[i], want, "stream {i}");
        assert_eq!(finish[i], Some(why));
        assert_eq!(why, FinishReason::Length);
        assert_eq!(gens[i].generated(), 20 + i % 7);
    }
}

#[test]
fn pieces_concatenate_to_the_decoded_tokens_and_stop_strings_cut_the_text() {
    let m = bundled_model(Kernel::detect());
    for seed in 0..6 {
        let mut p = params(seed, 60);
        p.ignore_eos = false;
        let mut g = Generation::new(&m, "Once upon a time", p.clone()).unwrap();
        let (full, _) = g.run(&m).unwrap();
        // A stop string from the middle of the text: the text ends right before its first
        // occurrence, whatever token boundaries it spans.
        let chars: Vec<(usize, char)> = full.char_indices().collect();
        if chars.len() < 12 {
            continue;
        }
        let (a, b) = (chars[chars.len() / 2].0, chars[chars.len() / 2 + 5].0);
        let stop = full[a..b].to_string();
        let want = &full[..full.find(&stop).unwrap()];
        p.stop = vec!["never in a story \u{1F996}".into(), stop.clone()];
        let mut g = Generation::new(&m, "Once upon a time", p).unwrap();
        let mut got = String::new();
        let why = loop {
            let piece = g.step(&m).unwrap();
            got.push_str(&piece.text);
            if let Some(f) = piece.finish {
                break f;
            }
        };
        assert_eq!(got, want, "seed {seed} stop {stop:?}");
        assert_eq!(why, FinishReason::Stop);
    }
}

#[test]
fn greedy_text_is_the_argmax_chain() {
    let m = bundled_model(Kernel::detect());
    let mut p = params(1, 25);
    p.sampler.temperature = 0.0;
    let mut g = Generation::new(&m, "The cat", p).unwrap();
    let (text, why) = g.run(&m).unwrap();
    let mut s = m.new_state();
    let mut ids = Vec::new();
    let prompt = m.tokenizer.encode("The cat");
    for &t in &prompt {
        m.forward(&mut s, t);
    }
    for _ in 0..25 {
        let next = flashlm_infer::sample::argmax(&s.logits) as u16;
        if next == flashlm_infer::tokenizer::EOS_ID {
            break;
        }
        ids.push(next);
        m.forward(&mut s, next);
    }
    assert_eq!(text, m.tokenizer.decode(&ids));
    assert_eq!(why, if ids.len() == 25 { FinishReason::Length } else { FinishReason::Eos });
}

#[test]
fn bad_parameters_and_prompts_are_refused() {
    let m = bundled_model(Kernel::detect());
    let bad = |f: &dyn Fn(&mut GenerateParams)| {
        let mut p = GenerateParams::default();
        f(&mut p);
        Generation::new(&m, "hi", p).unwrap_err()
    };
    assert!(matches!(bad(&|p| p.max_tokens = 0), GenerateError::Param("max_tokens", _)));
    assert!(matches!(bad(&|p| p.sampler.temperature = -1.0), GenerateError::Param("temperature", _)));
    assert!(matches!(bad(&|p| p.sampler.temperature = f32::NAN), GenerateError::Param("temperature", _)));
    assert!(matches!(bad(&|p| p.sampler.top_p = 0.0), GenerateError::Param("top_p", _)));
    assert!(matches!(bad(&|p| p.stop = vec![String::new()]), GenerateError::Param("stop", _)));
    assert!(matches!(bad(&|p| p.sampler.min_p = 1.5), GenerateError::Param("min_p", _)));
    assert!(matches!(bad(&|p| p.penalties.presence = 2.5), GenerateError::Param("presence_penalty", _)));
    assert!(matches!(bad(&|p| p.penalties.frequency = -3.0), GenerateError::Param("frequency_penalty", _)));
    assert!(matches!(bad(&|p| p.penalties.repetition = 0.0), GenerateError::Param("repetition_penalty", _)));
    assert!(matches!(bad(&|p| p.logit_bias = vec![(5, 101.0)]), GenerateError::Param("logit_bias", _)));
    assert!(matches!(bad(&|p| p.logit_bias = vec![(10_000, 1.0)]), GenerateError::Param("logit_bias", _)));
    assert!(matches!(bad(&|p| p.logprobs = Some(21)), GenerateError::Param("logprobs", _)));
    let p = GenerateParams::default();
    assert_eq!(Generation::new(&m, "  \n", p.clone()).unwrap_err(), GenerateError::EmptyPrompt);
    assert_eq!(Generation::from_ids(&m, vec![1, 1], p).unwrap_err(), GenerateError::UnknownPrompt);
}

/// The generated ids of `g` (decoded pieces are not enough: the reference compares ids).
fn run_ids(m: &Model, prompt: &str, p: GenerateParams) -> (Vec<u16>, Vec<TokenLogprob>) {
    let ends_on_eos = !p.ignore_eos;
    let mut g =
        Generation::new(m, prompt, GenerateParams { logprobs: Some(p.logprobs.unwrap_or(0)), ..p }).unwrap();
    let mut out = Vec::new();
    loop {
        let piece = g.step(m).unwrap();
        out.extend(piece.logprob);
        if piece.finish.is_some() {
            // The end token's entry (when it ends the stream) is not a generated token.
            let mut ids: Vec<u16> = out.iter().map(|t| t.id).collect();
            if ends_on_eos && ids.last() == Some(&flashlm_infer::tokenizer::EOS_ID) {
                ids.pop();
            }
            return (ids, out);
        }
    }
}

/// The plain loop: one token at a time, the adjustments written out from their definitions,
/// then the same sampler with the same seed.
fn reference_ids(m: &Model, prompt: &str, p: &GenerateParams) -> Vec<u16> {
    let mut s = m.new_state();
    let mut history = m.tokenizer.encode(prompt);
    for &t in &history {
        m.forward(&mut s, t);
    }
    let mut rng = Rng::new(p.seed);
    let mut generated: Vec<u16> = Vec::new();
    while generated.len() < p.max_tokens {
        let window = &history[history.len().saturating_sub(p.penalties.last_n)..];
        let pen = &p.penalties;
        let mut l = s.logits.clone();
        for (j, x) in l.iter_mut().enumerate() {
            if pen.repetition != 1.0 && window.contains(&(j as u16)) {
                *x = if *x > 0.0 { *x / pen.repetition } else { *x * pen.repetition };
            }
            let c = generated.iter().filter(|&&t| t as usize == j).count() as f32;
            if c > 0.0 {
                *x -= pen.frequency * c + pen.presence;
            }
        }
        for &(t, b) in &p.logit_bias {
            l[t as usize] += b;
        }
        let next = p.sampler.sample(&l, &mut rng) as u16;
        if next == flashlm_infer::tokenizer::EOS_ID && !p.ignore_eos {
            break;
        }
        generated.push(next);
        history.push(next);
        m.forward(&mut s, next);
    }
    generated
}

#[test]
fn penalties_bias_and_min_p_follow_the_plain_loop() {
    let m = bundled_model(Kernel::detect());
    let plain = params(5, 60);
    let a_token = m.tokenizer.encode(" dog")[0];
    let cases: Vec<(&str, GenerateParams)> = vec![
        (
            "presence",
            GenerateParams {
                penalties: Penalties { presence: 1.5, ..Penalties::default() },
                ..plain.clone()
            },
        ),
        (
            "frequency",
            GenerateParams {
                penalties: Penalties { frequency: 1.0, ..Penalties::default() },
                ..plain.clone()
            },
        ),
        (
            "repetition",
            GenerateParams {
                penalties: Penalties { repetition: 1.5, last_n: 16, ..Penalties::default() },
                ..plain.clone()
            },
        ),
        (
            "all three",
            GenerateParams {
                penalties: Penalties { presence: 0.5, frequency: -0.5, repetition: 1.2, last_n: 64 },
                ..plain.clone()
            },
        ),
        ("logit_bias +10", GenerateParams { logit_bias: vec![(a_token, 10.0)], ..plain.clone() }),
        (
            "min_p 0.2",
            GenerateParams {
                sampler: Sampler { min_p: 0.2, top_k: 0, top_p: 1.0, temperature: 1.0 },
                ..plain.clone()
            },
        ),
    ];
    let base = reference_ids(&m, PROMPTS[1], &plain);
    for (name, p) in cases {
        let want = reference_ids(&m, PROMPTS[1], &p);
        let (got, _) = run_ids(&m, PROMPTS[1], p.clone());
        assert_eq!(got, want, "{name}");
        assert_ne!(want, base, "{name}: the parameter changed nothing, so this case tests nothing");
        if name.starts_with("logit_bias") {
            assert!(want.iter().filter(|&&t| t == a_token).count() > 10, "{name}: the biased token is rare");
        }
    }
    // A -100 bias bans a token the plain run uses.
    let banned = base[0];
    let (got, _) =
        run_ids(&m, PROMPTS[1], GenerateParams { logit_bias: vec![(banned, -100.0)], ..plain.clone() });
    assert!(!got.contains(&banned));
}

#[test]
fn logprobs_are_those_of_the_raw_distribution() {
    let m = bundled_model(Kernel::detect());
    // Bias and temperature change what is drawn, not the reported distribution.
    let p = GenerateParams {
        logprobs: Some(5),
        logit_bias: vec![(m.tokenizer.encode(" cat")[0], 3.0)],
        sampler: Sampler { temperature: 1.3, ..Sampler::default() },
        ..params(9, 40)
    };
    let (ids, lps) = run_ids(&m, PROMPTS[0], p);
    let mut s = m.new_state();
    for &t in &m.tokenizer.encode(PROMPTS[0]) {
        m.forward(&mut s, t);
    }
    for (i, (&id, lp)) in ids.iter().zip(&lps).enumerate() {
        let want = log_prob(&s.logits, id as usize);
        assert!((lp.logprob - want).abs() < 1e-9, "token {i}: {} vs {want}", lp.logprob);
        let mut order: Vec<usize> = (0..s.logits.len()).collect();
        order.sort_by(|&a, &b| s.logits[b].total_cmp(&s.logits[a]).then(a.cmp(&b)));
        let top: Vec<usize> = lp.top.iter().map(|&(t, _)| t as usize).collect();
        assert_eq!(top, order[..5], "token {i}");
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        m.forward(&mut s, id);
    }
    // A stream that ends with the end-of-story token reports it last (not counted as generated).
    let eos = flashlm_infer::tokenizer::EOS_ID;
    let ended = (0..20)
        .find_map(|seed| {
            let mut g = Generation::new(
                &m,
                "They played all day. The end.",
                GenerateParams { logprobs: Some(1), ignore_eos: false, ..params(seed, 200) },
            )
            .ok()?;
            let mut last = None;
            loop {
                let p = g.step(&m).unwrap();
                last = p.logprob.or(last);
                if let Some(f) = p.finish {
                    return (f == FinishReason::Eos).then_some((last, g.generated()));
                }
            }
        })
        .expect("no seed ended with the end-of-story token");
    assert_eq!(ended.0.map(|l| l.id), Some(eos));
    assert!(ended.1 < 200);
}

#[test]
fn prompt_logprobs_sum_to_the_original_protocols_loss() {
    let m = bundled_model(Kernel::detect());
    let story =
        "Tom had a red ball. He threw it to his dog. The dog ran fast and brought it back. Tom was happy.";
    let ids = m.tokenizer.encode(story);
    let lps = prompt_logprobs(&m, &ids, 3).unwrap();
    assert_eq!(lps.len(), ids.len());
    assert!(lps[0].is_none());
    let sum: f64 = lps.iter().flatten().map(|t| t.logprob).sum();
    let score = score_story(&m, story, Protocol::Original);
    assert!((sum + score.nll).abs() < 1e-9 * score.nll.abs().max(1.0), "{sum} vs {}", -score.nll);
    assert!(lps.iter().flatten().zip(&ids[1..]).all(|(t, &id)| t.id == id && t.top.len() == 3));
    // A continuation's log-likelihood is the sum of its tokens' prompt logprobs.
    let cut = 9;
    let (ll, greedy) = continuation_logprob(&m, &ids[..cut], &ids[cut..]).unwrap();
    let want: f64 = lps[cut..].iter().flatten().map(|t| t.logprob).sum();
    assert!((ll - want).abs() < 1e-9, "{ll} vs {want}");
    let want_greedy = lps[cut..].iter().flatten().all(|t| t.top[0].0 == t.id);
    assert_eq!(greedy, want_greedy);
    assert_eq!(prompt_logprobs(&m, &[5, 10_000], 0).unwrap_err(), ScoreError::BadToken(1, 10_000));
}
