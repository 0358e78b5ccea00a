//! The fused step's ternary products: table kernel (`fused::ternary`) against the float GEMM
//! on the same quantised weights, one thread, per model shape.
//! cargo run --release -p flashlm-train --example bench_ternary_mm -- [ROWS=1024]
use std::time::Instant;

use flashlm_core::quant::{ternary_codes, ternary_values};
use flashlm_train::fused::layers::linear;
use flashlm_train::fused::ternary::{TernaryMatrix, ternary_mm};

fn best(mut f: impl FnMut()) -> f64 {
    (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let mut r = flashlm_core::rng::XorShift64::new(7);
    let mut next = move || (r.next_u64() % 2001) as f32 / 1000.0 - 1.0;
    for (name, p, q) in [
        ("small up 384x192", 384, 192),
        ("small down 192x192", 192, 192),
        ("small glu 1024x192", 1024, 192),
        ("small glu-down 192x512", 192, 512),
        ("large up 768x384", 768, 384),
        ("large glu 2048x384", 2048, 384),
        ("large glu-down 384x1024", 384, 1024),
    ] {
        let w: Vec<f32> = (0..p * q).map(|_| next()).collect();
        let wq = ternary_values(&w);
        let x: Vec<f32> = (0..n * q).map(|_| next()).collect();
        let mut y = vec![0.0f32; n * p];
        let g = best(|| linear(&mut y, &x, &wq, n, q, p, 1));
        let (t, alpha) = ternary_codes(&w);
        let m = TernaryMatrix::from_codes(&t, alpha, p, q, false);
        let mut y2 = vec![0.0f32; n * p];
        let t = best(|| ternary_mm(&mut y2, p, false, &x, q, n, &m, 1));
        let err = y.iter().zip(&y2).fold(0.0f32, |a, (u, v)| a.max((u - v).abs()));
        let gf = 2.0 * (n * p * q) as f64 / 1e9;
        println!(
            "{name:<26} rows {n}: gemm {:8.1} µs ({:5.1} GFLOP/s)  ternary {:8.1} µs ({:5.1} GFLOP/s-equivalent)  {:.2}x  max |diff| {err:.2e}",
            g * 1e6,
            gf / g,
            t * 1e6,
            gf / t,
            g / t
        );
    }
}
