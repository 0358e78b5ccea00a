//! Tokenization throughput on the real shared training text (MB/s of text).
//!
//! cargo bench -p flashlm-data --bench tokenize   (FLASHLM_DATA_DIR, default ../shared/data)

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flashlm_data::stories::read_story_files;
use flashlm_data::tokenize::{count_vocab, tokenize_stories};

fn data_dir() -> PathBuf {
    std::env::var_os("FLASHLM_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn bench(c: &mut Criterion) {
    let d = data_dir();
    let files = vec![d.join("tinystories-train-v1.txt.zst"), d.join("tinystories-train-v2gpt4.txt.zst")];
    let stories = read_story_files(&files).unwrap_or_else(|e| panic!("{e} (set FLASHLM_DATA_DIR)"));
    let bytes: u64 = stories.texts.iter().map(|s| s.len() as u64).sum();
    let (tok, _) = count_vocab(&stories.texts, false).build(10_000).expect("vocab");

    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.bench_function("all_threads", |b| b.iter(|| tokenize_stories(&tok, &stories.texts, false)));
    g.bench_function("one_thread", |b| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
        b.iter(|| pool.install(|| tokenize_stories(&tok, &stories.texts, false)))
    });
    g.bench_function("count_vocab_all_threads", |b| b.iter(|| count_vocab(&stories.texts, false)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
