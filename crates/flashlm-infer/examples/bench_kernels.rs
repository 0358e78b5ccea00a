//! Ternary kernels vs a plain f32 matrix-vector product, per model shape, single thread.
//! cargo run --release -p flashlm-infer --example bench_kernels

use std::hint::black_box;
use std::time::Instant;

use flashlm_infer::bench::{SHAPES, matvec_f32, matvec_f32_fma, random_case};
use flashlm_infer::kernels::Kernel;

fn time<F: FnMut()>(mut f: F) -> f64 {
    // Warm up, then take the best of 7 runs of enough iterations for ~20 ms.
    for _ in 0..200 {
        f();
    }
    let t = Instant::now();
    let mut iters = 0u64;
    while t.elapsed().as_secs_f64() < 0.02 {
        f();
        iters += 1;
    }
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    best
}

fn main() {
    let kernels = Kernel::available();
    // Ratios are over the faster of the two float products (plain Rust dot, AVX-512 FMA).
    print!("{:<26} {:>10} {:>10}", "shape", "f32 µs", "fma µs");
    for k in &kernels {
        print!(" {:>10} {:>7}", format!("{} µs", k.name()), "ratio");
    }
    println!();
    let mut worst_default = f64::INFINITY;
    for (name, rows, cols) in SHAPES {
        let (_, planes, dense, x) = random_case(rows, cols, 42);
        let mut y = vec![0.0f32; rows];
        let plain = time(|| matvec_f32(black_box(&dense), rows, cols, black_box(&x), &mut y));
        let fma = time(|| matvec_f32_fma(black_box(&dense), rows, cols, black_box(&x), &mut y));
        let f = plain.min(fma);
        print!("{name:<26} {:>10.2} {:>10.2}", plain * 1e6, fma * 1e6);
        for k in &kernels {
            let t = time(|| k.matvec(black_box(&planes), black_box(&x), &mut y));
            print!(" {:>10.2} {:>6.2}x", t * 1e6, f / t);
            if *k == Kernel::detect() {
                worst_default = worst_default.min(f / t);
            }
        }
        println!();
    }
    println!(
        "min ratio of the default kernel ({}) over the best f32 product: {worst_default:.2}x",
        Kernel::detect().name()
    );
}
