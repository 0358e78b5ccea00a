//! Batched decoding speed: N streams advanced together by `generate::step_many` (what the
//! server's engine loop runs), against N = 1, with the time split into the batched forward
//! pass and the per-stream sampling.
//! cargo run --release -p flashlm-infer --example bench_streams -- [MODEL.flm] [THREADS=1]
//! (no model: the bundled one)

use std::time::Instant;

use flashlm_infer::bundled;
use flashlm_infer::generate::{GenerateParams, Generation, step_many};
use flashlm_infer::kernels::Kernel;
use flashlm_infer::model::{Model, StepBuffers};
use flashlm_infer::sample::{Rng, Sampler};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bytes = match args.next() {
        Some(p) if p != "-" => std::fs::read(p)?,
        _ => bundled::BYTES.to_vec(),
    };
    let threads: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let mut model = Model::from_bytes(&bytes, Kernel::detect())?;
    model.set_threads(threads).map_err(anyhow::Error::msg)?;
    println!(
        "kernel {} head {} threads {threads} (tokens/s of all streams together, 128 tokens each)",
        model.kernel.name(),
        model.head.name()
    );
    for (label, sampler) in [
        ("temperature 1, all tokens", Sampler { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 }),
        ("top-k 50", Sampler { temperature: 0.8, top_k: 50, top_p: 1.0, min_p: 0.0 }),
        ("greedy", Sampler { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0 }),
    ] {
        for n in [1usize, 4, 16, 64] {
            let params = |i: usize| GenerateParams {
                max_tokens: 128,
                sampler,
                seed: i as u64,
                stop: vec![],
                ignore_eos: true,
                ..GenerateParams::default()
            };
            let mut gens: Vec<Generation> = (0..n)
                .map(|i| Generation::new(&model, "Once upon a time", params(i)))
                .collect::<Result<_, _>>()?;
            for g in &mut gens {
                g.prefill(&model, usize::MAX);
            }
            let mut scratch = StepBuffers::default();
            let t = Instant::now();
            let mut tokens = 0usize;
            loop {
                let mut refs: Vec<&mut Generation> = gens.iter_mut().collect();
                let out = step_many(&model, &mut scratch, &mut refs);
                tokens += out.iter().filter(|r| r.is_ok()).count();
                if gens.iter().all(|g| g.finished().is_some()) {
                    break;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            // The forward pass alone for the same batch (no sampling).
            let mut states: Vec<_> = (0..n).map(|_| model.new_state()).collect();
            let t = Instant::now();
            for step in 0..128u16 {
                let mut refs: Vec<_> = states.iter_mut().collect();
                let toks: Vec<u16> = (0..n as u16).map(|i| 4 + (step * 31 + i * 7) % 5000).collect();
                model.forward_many(&mut scratch, &mut refs, &toks);
            }
            let fwd = t.elapsed().as_secs_f64();
            let mut rng = Rng::new(1);
            let t = Instant::now();
            for s in &states {
                for _ in 0..128 {
                    std::hint::black_box(sampler.sample(&s.logits, &mut rng));
                }
            }
            let smp = t.elapsed().as_secs_f64();
            println!(
                "{label:<26} streams {n:>2}: {:>7.0} tok/s | per token: forward {:>6.1} µs, sampling {:>5.1} µs",
                tokens as f64 / secs,
                fwd * 1e6 / (128 * n) as f64,
                smp * 1e6 / (128 * n) as f64
            );
        }
    }
    Ok(())
}
