//! Time the fused training step (forward + backward) against nothing else: small config,
//! random init, random tokens. cargo run --release -p flashlm-train --example bench_step -- [BATCH=8] [THREADS=2] [large]
//! `PRODUCTS=tables|gemm` picks the ternary products (default: `fused::Products::for_this_cpu`);
//! `FLASHLM_ISA=avx2` runs what an AVX2-only CPU runs (GEMM kernels included).
use flashlm_core::Config;
use std::time::Instant;

use flashlm_model::{Bolt, cpu_device};
use flashlm_train::fused::{Params, Products, Scratch, forward_backward_with};

fn main() {
    let mut args = std::env::args().skip(1);
    let batch: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(8);
    let threads: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(2);
    let cfg = if args.next().as_deref() == Some("large") { Config::large() } else { Config::small() };
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let model = Bolt::init(&cfg, &cpu_device(false));
    let params = Params::from_model(&cfg, &model).unwrap();
    let t = cfg.seq_len;
    let mut r = flashlm_core::rng::XorShift64::new(12345);
    let mut next = || (r.next_u64() % cfg.vocab_size as u64) as u16;
    let inputs: Vec<u16> = (0..batch * t).map(|_| next()).collect();
    let targets: Vec<u16> = (0..batch * t).map(|_| next()).collect();
    let mut grads = params.zeros_like();
    // As the trainer: buffers kept from step to step.
    let products = match std::env::var("PRODUCTS").as_deref() {
        Ok("tables") => Products::Tables,
        Ok("gemm") => Products::Gemm,
        Err(_) => Products::for_this_cpu(),
        Ok(other) => {
            eprintln!("PRODUCTS={other}: expected tables or gemm");
            std::process::exit(2);
        }
    };
    let mut scratch = Scratch::with_products(products);
    for _ in 0..2 {
        forward_backward_with(&mut scratch, &cfg, &params, &mut grads, &inputs, &targets, t, threads);
    }
    // Each step timed on its own; the median is robust to a noisy, shared machine.
    let steps: usize = std::env::var("STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let t0 = Instant::now();
            forward_backward_with(&mut scratch, &cfg, &params, &mut grads, &inputs, &targets, t, threads);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (median, best) = (times[steps / 2], times[0]);
    println!(
        "fused step {cfg} batch {batch}, {threads} threads, {products:?} products ({}), {steps} steps: median {:.1} ms/step, {:.0} tok/s (best {:.0} tok/s)",
        flashlm_train::fused::layers::gemm_kernels(),
        median * 1e3,
        (batch * t) as f64 / median,
        (batch * t) as f64 / best
    );
}
