//! Tests on real TinyStories text: `FLASHLM_DATA_DIR`, default `../shared/data` from the
//! workspace root. These tests fail (they do not skip) when the data is missing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use flashlm_data::batch::{TrainBatches, Windows, val_batches};
use flashlm_data::prepare::{PrepareConfig, VocabSource, prepare};
use flashlm_data::stories::{Stories, read_story_file, read_story_files};
use flashlm_data::tokenize::count_vocab;
use flashlm_data::tokenizer::{BASE_VOCAB_SIZE, EOS_ID, NUM_SPECIAL, Tokenizer, UNK_ID, gpt2_encode};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("FLASHLM_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/data"));
    assert!(
        dir.join("tinystories-valid.txt.zst").exists(),
        "real TinyStories text not found in {} (set FLASHLM_DATA_DIR)",
        dir.display()
    );
    dir
}

fn train_files() -> Vec<PathBuf> {
    let d = data_dir();
    vec![d.join("tinystories-train-v1.txt.zst"), d.join("tinystories-train-v2gpt4.txt.zst")]
}

fn valid() -> &'static Stories {
    static V: OnceLock<Stories> = OnceLock::new();
    V.get_or_init(|| read_story_file(&data_dir().join("tinystories-valid.txt.zst")).unwrap())
}

fn train() -> &'static Stories {
    static T: OnceLock<Stories> = OnceLock::new();
    T.get_or_init(|| read_story_files(&train_files()).unwrap())
}

#[test]
fn validation_file_reads_as_documented() {
    // Figures from shared/data/README.md.
    let v = valid();
    assert_eq!(v.texts.len(), 605);
    assert!(v.texts[0].starts_with("Spot. Spot saw the shiny car"));
    assert!(v.texts[1].starts_with("Once upon a time, in a big forest, there lived a rhinoceros named Roxy"));
    assert!(v.texts[604].starts_with("Once upon a time, there was a boy. His name was Jack"));
    assert_eq!(v.chars(), 489_363);
    assert_eq!(v.texts.iter().map(|t| t.chars().count()).min(), Some(209));
    assert_eq!(v.invalid_utf8, 0);
    assert_eq!(train().texts.len(), 1000 + 1727);
}

#[test]
fn every_validation_story_round_trips_through_gpt2_ids() {
    // A vocabulary that keeps every GPT-2 id loses nothing: decode(encode(s)) == s.
    let full =
        Tokenizer::from_id_to_base(BASE_VOCAB_SIZE + NUM_SPECIAL, (0..BASE_VOCAB_SIZE as u32).collect())
            .unwrap();
    for (i, s) in valid().texts.iter().enumerate() {
        let ids = full.encode(s);
        assert!(!ids.contains(&UNK_ID));
        assert_eq!(&full.decode(&ids), s, "story {i}");
        // Streaming decode gives the same text, token by token.
        let mut d = full.stream_decoder();
        let mut out: String = ids.iter().map(|&id| d.push(id)).collect();
        out.push_str(&d.finish());
        assert_eq!(&out, s, "story {i} (streaming)");
    }
}

#[test]
fn validation_through_the_10k_vocab_loses_only_unknown_tokens() {
    let (tok, _) = count_vocab(&train().texts, false).build(10_000).unwrap();
    let mut exact = 0;
    for s in &valid().texts {
        let ids = tok.encode(s);
        let base = gpt2_encode(s);
        assert_eq!(ids.len(), base.len());
        if !ids.contains(&UNK_ID) {
            assert_eq!(&tok.decode(&ids), s);
            exact += 1;
        } else {
            // Dropping the unknown GPT-2 tokens is exactly what decoding does.
            let kept: Vec<u32> = base.iter().copied().filter(|&b| tok.base_to_id(b) != UNK_ID).collect();
            let expect =
                String::from_utf8_lossy(&flashlm_data::tokenizer::gpt2().decode_bytes(&kept).unwrap())
                    .into_owned();
            assert_eq!(tok.decode(&ids), expect);
        }
    }
    assert!(exact > 300, "only {exact} of 605 validation stories avoid UNK");
}

#[test]
fn vocab_matches_python_counter() {
    // tests/fixtures/vocab-shared-train.json was written by scripts/reference/vocab_reference.py
    // (Python's Counter.most_common, the original's code) from the GPT-2 ids of the shared
    // training stories; see that script for how to regenerate it.
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace().join("tests/fixtures/vocab-shared-train.json")).unwrap(),
    )
    .unwrap();
    let expect: Vec<u32> =
        fixture["id_to_base"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let counter = count_vocab(&train().texts[..50_000.min(train().texts.len())], false);
    let (tok, stats) = counter.build(10_000).unwrap();
    assert_eq!(tok.id_to_base(), &expect[..]);
    assert_eq!(stats.counted_tokens, fixture["counted_tokens"].as_u64().unwrap());
    assert!((stats.coverage - fixture["coverage"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(stats.texts, fixture["texts"].as_u64().unwrap());
    // A smaller vocabulary is a prefix of the same ranking, with ties broken the same way.
    let (small, small_stats) = counter.build(3000).unwrap();
    assert_eq!(small.id_to_base(), &expect[..2996]);
    assert!(small_stats.coverage < 1.0 && small_stats.coverage > 0.9);
}

#[test]
fn prepare_caches_and_rebuilds_when_inputs_change() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = PrepareConfig {
        train_files: train_files(),
        val_files: vec![data_dir().join("tinystories-valid.txt.zst")],
        out_dir: out.path().to_path_buf(),
        vocab_size: 10_000,
        vocab_stories: 50_000,
        tokenizer: None,
        rebuild_vocab: false,
        compress: true,
        progress: false,
        filter: Default::default(),
        text_column: None,
    };
    let first = prepare(&cfg).unwrap();
    assert_eq!(first.vocab_source, VocabSource::Built);
    assert!(!first.train.from_cache && !first.val.from_cache);
    // Every story ends with EOS: one EOS per story.
    let eos = first.train.tokens.iter().filter(|&&t| t == EOS_ID).count();
    assert_eq!(eos as u64, first.train.stories);
    assert_eq!(*first.train.tokens.last().unwrap(), EOS_ID);

    let second = prepare(&cfg).unwrap();
    assert_eq!(second.vocab_source, VocabSource::Reused);
    assert!(second.train.from_cache && second.val.from_cache);
    assert_eq!(second.train.tokens, first.train.tokens);
    assert_eq!(second.val.tokens, first.val.tokens);

    // A corrupted cache is detected and rebuilt to the same tokens.
    let mut bytes = std::fs::read(&first.val.cache_path).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 7);
    std::fs::write(&first.val.cache_path, &bytes).unwrap();
    let third = prepare(&cfg).unwrap();
    assert!(!third.val.from_cache && third.val.rebuilt_because.is_some());
    assert_eq!(third.val.tokens, first.val.tokens);

    // Another vocabulary: both caches are rebuilt, never reused.
    cfg.vocab_size = 3000;
    let fourth = prepare(&cfg).unwrap();
    assert_eq!(fourth.vocab_source, VocabSource::Built);
    assert!(fourth.train.rebuilt_because.as_deref().unwrap().contains("vocabulary"));
    assert_ne!(fourth.train.tokens, first.train.tokens);

    // Other source files (only the first training file): the vocabulary and caches are rebuilt.
    cfg.train_files.truncate(1);
    let fifth = prepare(&cfg).unwrap();
    assert_eq!(fifth.vocab_source, VocabSource::Built);
    assert_eq!(fifth.train.stories, 1000);
    assert!(!fifth.train.from_cache);
}

#[test]
fn batches_cover_the_shared_text() {
    let (tok, _) = count_vocab(&train().texts, false).build(10_000).unwrap();
    let (tokens, stats) = flashlm_data::tokenize::tokenize_stories(&tok, &train().texts, false);
    assert_eq!(stats.tokens as usize, tokens.len());
    let w = Windows::new(&tokens, 256);
    assert_eq!(w.len(), tokens.len() / 257);
    let batches: Vec<_> = TrainBatches::new(w, 8, 42, 0).take(w.len() / 8).collect();
    assert!(batches.iter().all(|b| b.epoch == 0));
    // One epoch visits each of the first (len / 8) * 8 shuffled windows once: count the
    // distinct window starts through the inputs.
    let mut starts: Vec<&[u16]> = batches.iter().flat_map(|b| b.batch.inputs.chunks(256)).collect();
    starts.sort();
    starts.dedup();
    assert!(starts.len() >= (w.len() / 8) * 8 - 2, "windows repeated within an epoch");
    assert_eq!(val_batches(w, 8, 50).count(), 50.min(w.len() / 8));
}

#[test]
fn cli_prepare_prints_figures_and_fails_cleanly() {
    let out = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_flashlm-data");
    let run = Command::new(exe)
        .args(["prepare", "--quiet", "--out"])
        .arg(out.path())
        .env("FLASHLM_DATA_DIR", data_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("coverage 100.00%"), "{stdout}");
    assert!(stdout.contains("train: 2727 stories"), "{stdout}");
    assert!(stdout.contains("valid: 605 stories"), "{stdout}");
    assert!(out.path().join("tokenizer.json").exists());

    for args in [
        vec!["prepare", "--quiet", "--train-file", "/nonexistent/x.txt", "--val-file", "/nonexistent/y.txt"],
        vec!["prepare", "--quiet", "--data-dir", "/nonexistent"],
        vec!["prepare", "--vocab-size", "3"],
        vec!["bogus"],
    ] {
        let r = Command::new(exe).args(&args).env("FLASHLM_DATA_DIR", data_dir()).output().unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
}
