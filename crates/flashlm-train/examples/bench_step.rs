//! Time the fused training step (forward + backward) against nothing else: small config,
//! random init, random tokens. cargo run --release -p flashlm-train --example bench_step -- [BATCH=8] [THREADS=2] [large]
use std::time::Instant;

use flashlm_model::{BoltConfig, cpu_device};
use flashlm_train::fused::{Params, forward_backward};

fn main() {
    let mut args = std::env::args().skip(1);
    let batch: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(8);
    let threads: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(2);
    let cfg = if args.next().as_deref() == Some("large") { BoltConfig::large() } else { BoltConfig::small() };
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let model = cfg.init(&cpu_device(false));
    let params = Params::from_model(&cfg, &model).unwrap();
    let t = cfg.seq_len;
    let mut s = 12345u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % cfg.vocab_size as u64) as u16
    };
    let inputs: Vec<u16> = (0..batch * t).map(|_| next()).collect();
    let targets: Vec<u16> = (0..batch * t).map(|_| next()).collect();
    let mut grads = params.zeros_like();
    for _ in 0..2 {
        forward_backward(&cfg, &params, &mut grads, &inputs, &targets, t, threads);
    }
    let steps = 5;
    let t0 = Instant::now();
    for _ in 0..steps {
        forward_backward(&cfg, &params, &mut grads, &inputs, &targets, t, threads);
    }
    let dt = t0.elapsed().as_secs_f64() / steps as f64;
    println!(
        "fused step {cfg} batch {batch}, {threads} threads: {:.1} ms/step, {:.0} tok/s",
        dt * 1e3,
        (batch * t) as f64 / dt
    );
}
