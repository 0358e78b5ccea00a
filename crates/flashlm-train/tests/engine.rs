//! The packed engine (flashlm-infer) against the burn forward (flashlm-model) on the same
//! exported weights.

use burn::tensor::{Int, Tensor, TensorData};
use flashlm_core::Config;
use flashlm_data::tokenizer::Tokenizer;
use flashlm_infer::format::EmbeddingDtype;
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::Model;
use flashlm_infer::sample::argmax;
use flashlm_model::{Bolt, cpu_device};
use flashlm_train::export::export;

fn setup() -> (Bolt, Tokenizer, Config) {
    setup_dim(40)
}

fn setup_dim(dim: usize) -> (Bolt, Tokenizer, Config) {
    let device = cpu_device(false);
    device.seed(99);
    let cfg = Config { vocab_size: 600, dim, n_blocks: 2, glu_hidden: 72, conv_taps: 8, seq_len: 64 };
    let model = Bolt::init(&cfg, &device);
    let tok = Tokenizer::from_id_to_base(cfg.vocab_size, (0..500).map(|i| i * 7 + 11).collect()).unwrap();
    (model, tok, cfg)
}

fn burn_logits(model: &Bolt, ids: &[u16]) -> Vec<f32> {
    let device = cpu_device(false);
    let v: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let t: Tensor<2, Int> = Tensor::from_data(TensorData::new(v, [1, ids.len()]), &device);
    model.forward(t).into_data().try_to_vec::<f32>().unwrap()
}

/// The exact (f32-activation) kernels this CPU runs, printing the ones it cannot run.
fn exact_kernels() -> Vec<Kernel> {
    for (k, lack) in Kernel::unavailable() {
        eprintln!("skipped kernel {}: this CPU has no {lack}", k.name());
    }
    Kernel::available_exact()
}

#[test]
fn engine_logits_match_burn_for_every_kernel() {
    let (model, tok, cfg) = setup();
    let (bytes, report) = export(&model, cfg.seq_len, &tok, EmbeddingDtype::F32).unwrap();
    assert_eq!(report.total, bytes.len());
    let ids: Vec<u16> = (0..300).map(|i| ((i * 37 + 5) % cfg.vocab_size) as u16).collect();
    let expect = burn_logits(&model, &ids);
    let v = cfg.vocab_size;
    for kernel in exact_kernels() {
        let engine = Model::from_bytes(&bytes, kernel).unwrap();
        let mut state = engine.new_state();
        let mut worst = 0.0f32;
        for (pos, &t) in ids.iter().enumerate() {
            let logits = engine.forward(&mut state, t);
            for j in 0..v {
                worst = worst.max((logits[j] - expect[pos * v + j]).abs());
            }
        }
        assert!(worst <= 1e-4, "{kernel:?}: max abs logit difference {worst}");
    }
    // The int8-activation kernels round every ternary layer's input: close, not exact.
    let range = expect.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for kernel in Kernel::available().into_iter().filter(|k| !k.is_exact()) {
        let engine = Model::from_bytes(&bytes, kernel).unwrap();
        let mut state = engine.new_state();
        let (mut err2, mut ref2) = (0.0f64, 0.0f64);
        for (pos, &t) in ids.iter().enumerate() {
            let logits = engine.forward(&mut state, t);
            for j in 0..v {
                err2 += f64::from(logits[j] - expect[pos * v + j]).powi(2);
                ref2 += f64::from(expect[pos * v + j]).powi(2);
            }
        }
        let ratio = (err2 / ref2).sqrt();
        eprintln!("{kernel:?}: rms logit error / rms logit = {ratio:.2e} (logits up to {range})");
        // Measured 0.026 for int8 inputs on this random model (its logits are small, so the rounding of
        // the inputs weighs more than in a trained one); the bound grows with the rounding
        // step. A wrong kernel gives about 1.
        let levels = f64::from(kernel.input_levels().expect("int8 kernels have levels"));
        assert!(ratio <= 6e-2 * 127.0 / levels, "{kernel:?}: rms logit error / rms logit = {ratio}");
    }
}

#[test]
fn two_hundred_greedy_tokens_are_identical() {
    let (model, tok, cfg) = setup();
    let (bytes, _) = export(&model, cfg.seq_len, &tok, EmbeddingDtype::F32).unwrap();
    let engine = Model::from_bytes(&bytes, Kernel::detect_exact()).unwrap();
    let prompt: Vec<u16> = vec![17, 230, 41];
    // burn: recompute the whole sequence for every token (the model is causal, so the
    // sequence may exceed seq_len: the conv only looks back k-1 steps).
    let mut seq = prompt.clone();
    for _ in 0..200 {
        let l = burn_logits(&model, &seq);
        let last = &l[(seq.len() - 1) * cfg.vocab_size..];
        seq.push(argmax(last) as u16);
    }
    let mut state = engine.new_state();
    let mut eng = prompt.clone();
    for &t in &prompt[..prompt.len() - 1] {
        engine.feed(&mut state, t);
    }
    let mut next = argmax(engine.forward(&mut state, prompt[prompt.len() - 1])) as u16;
    for _ in 0..200 {
        eng.push(next);
        next = argmax(engine.forward(&mut state, next)) as u16;
    }
    assert_eq!(eng, seq);
}

#[test]
fn compact_embeddings_stay_close() {
    let (model, tok, cfg) = setup();
    let ids: Vec<u16> = (0..50).map(|i| ((i * 13 + 1) % cfg.vocab_size) as u16).collect();
    let expect = burn_logits(&model, &ids);
    for (emb, tol) in [(EmbeddingDtype::F16, 2e-3), (EmbeddingDtype::Int8, 5e-2)] {
        let (bytes, _) = export(&model, cfg.seq_len, &tok, emb).unwrap();
        let engine = Model::from_bytes(&bytes, Kernel::detect_exact()).unwrap();
        let mut state = engine.new_state();
        let mut worst = 0.0f32;
        for (pos, &t) in ids.iter().enumerate() {
            let l = engine.forward(&mut state, t);
            for j in 0..cfg.vocab_size {
                worst = worst.max((l[j] - expect[pos * cfg.vocab_size + j]).abs());
            }
        }
        assert!(worst <= tol, "{emb:?}: {worst}");
    }
}

#[test]
fn int4_embedding_stays_close_and_every_path_agrees() {
    // d = 40 has no whole groups of 32: a clear error, not a wrong file.
    let (model, tok, cfg) = setup();
    let e = export(&model, cfg.seq_len, &tok, EmbeddingDtype::Int4).unwrap_err().to_string();
    assert!(e.contains("multiple of 32"), "{e}");

    let (model, tok, cfg) = setup_dim(64);
    let v = cfg.vocab_size;
    let ids: Vec<u16> = (0..50).map(|i| ((i * 13 + 1) % v) as u16).collect();
    let expect = burn_logits(&model, &ids);
    let (bytes, _) = export(&model, cfg.seq_len, &tok, EmbeddingDtype::Int4).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2, "int4 files are version 2");
    let range = expect.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let mut reference: Option<Vec<Vec<f32>>> = None;
    for kernel in exact_kernels() {
        let mut engine = Model::from_bytes(&bytes, kernel).unwrap();
        let mut state = engine.new_state();
        let single: Vec<Vec<f32>> = ids.iter().map(|&t| engine.forward(&mut state, t).to_vec()).collect();
        // 4-bit weights: the rounding error is about a tenth of the weights' RMS, and it enters
        // twice (the input row and the head), so the logits' error RMS is a fraction of theirs
        // (0.19 for this seed; a wrong layout or scale gives about 1 or more).
        let err2: f32 = single.iter().flatten().zip(&expect).map(|(a, b)| (a - b).powi(2)).sum();
        let ref2: f32 = expect.iter().map(|a| a * a).sum();
        let ratio = (err2 / ref2).sqrt();
        assert!(ratio <= 0.25, "{kernel:?}: rms error / rms logit = {ratio} (logits up to {range})");
        // Every kernel (the head's integer arithmetic is the same everywhere, the ternary
        // kernels agree to rounding), batched and threaded, gives the one-token numbers.
        if let Some(r) = &reference {
            for (a, b) in r.iter().flatten().zip(single.iter().flatten()) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{kernel:?}: {a} vs {b}");
            }
        } else {
            reference = Some(single.clone());
        }
        for threads in [1, 3] {
            engine.set_threads(threads).unwrap();
            let mut s = engine.new_state();
            let mut logits = vec![0.0; ids.len() * v];
            engine.forward_batch(&mut s, &ids, Some(&mut logits));
            for (i, row) in logits.chunks_exact(v).enumerate() {
                assert_eq!(row, &single[i][..], "{kernel:?} {threads} threads, token {i}");
            }
        }
    }
}

#[test]
fn batched_forward_equals_one_token_at_a_time() {
    let (model, tok, cfg) = setup();
    let v = cfg.vocab_size;
    let ids: Vec<u16> = (0..80).map(|i| ((i * 31 + 7) % v) as u16).collect();
    for emb in [EmbeddingDtype::F32, EmbeddingDtype::F16, EmbeddingDtype::Int8] {
        let (bytes, _) = export(&model, cfg.seq_len, &tok, emb).unwrap();
        for kernel in Kernel::available() {
            let mut engine = Model::from_bytes(&bytes, kernel).unwrap();
            let mut one = engine.new_state();
            let single: Vec<Vec<f32>> = ids.iter().map(|&t| engine.forward(&mut one, t).to_vec()).collect();
            // 3 tokens one at a time, 70 in a batch (chunks of 32, 32, 6), 2 fed without
            // logits in a batch, then the rest one at a time: the same numbers throughout.
            let mut s = engine.new_state();
            for (i, &t) in ids[..3].iter().enumerate() {
                assert_eq!(engine.forward(&mut s, t), &single[i][..], "{emb:?} {kernel:?} {i}");
            }
            let mut logits = vec![0.0; 70 * v];
            engine.forward_batch(&mut s, &ids[3..73], Some(&mut logits));
            for (i, row) in logits.chunks_exact(v).enumerate() {
                assert_eq!(row, &single[3 + i][..], "{emb:?} {kernel:?} batch token {i}");
            }
            assert_eq!(s.logits, single[72], "{emb:?} {kernel:?}: state logits");
            engine.forward_batch(&mut s, &ids[73..75], None);
            for (i, &t) in ids[75..].iter().enumerate() {
                assert_eq!(engine.forward(&mut s, t), &single[75 + i][..], "{emb:?} {kernel:?} after");
            }
            assert_eq!(s.pos, ids.len());
            // Split across threads: still the same numbers.
            engine.set_threads(3).unwrap();
            let mut s = engine.new_state();
            let mut logits = vec![0.0; ids.len() * v];
            engine.forward_batch(&mut s, &ids, Some(&mut logits));
            for (i, row) in logits.chunks_exact(v).enumerate() {
                assert_eq!(row, &single[i][..], "{emb:?} {kernel:?} 3 threads, token {i}");
            }
        }
    }
}
