//! The generation API against the plain one-token path: batched steps over many streams give
//! the same logits bit for bit, and a stream's text does not depend on its neighbours, on the
//! prefill chunk size or on stop strings it never meets.

use flashlm_infer::bundled;
use flashlm_infer::generate::{FinishReason, GenerateError, GenerateParams, Generation, step_many};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::{Model, StepBuffers};
use flashlm_infer::sample::Sampler;

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
        sampler: Sampler { temperature: 0.8, top_k: 40, top_p: 0.95 },
        seed,
        stop: Vec::new(),
        ignore_eos: true,
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
    let p = GenerateParams::default();
    assert_eq!(Generation::new(&m, "  \n", p.clone()).unwrap_err(), GenerateError::EmptyPrompt);
    assert_eq!(Generation::from_ids(&m, vec![1, 1], p).unwrap_err(), GenerateError::UnknownPrompt);
}
