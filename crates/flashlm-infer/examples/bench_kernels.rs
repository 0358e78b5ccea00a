//! Ternary kernels vs plain f32 matrix-vector products, per model shape and on bitnet.cpp's
//! 2048x2048 shape, single thread. Prints µs per product, the ratio over the best f32
//! product this CPU runs, and G weights/s; the last line gives the default kernel's worst
//! ratio over the FlashLM shapes.
//! cargo run --release -p flashlm-infer --example bench_kernels

#[allow(dead_code)]
#[path = "../benches/support/bench.rs"]
mod bench;

use std::hint::black_box;
use std::time::Instant;

use bench::{BITNET_SHAPE, SHAPES, fma_name, matvec_f32, matvec_f32_avx2, matvec_f32_fma, random_case};
use flashlm_infer::kernels::Kernel;

fn time<F: FnMut()>(mut f: F) -> f64 {
    // Warm up, then take the best of 7 runs of enough iterations for ~20 ms.
    for _ in 0..20 {
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
    println!("cpu: {}", flashlm_infer::cpu::describe());
    let kernels = Kernel::available();
    for (k, lack) in Kernel::unavailable() {
        println!("(kernel {} skipped: this CPU has no {lack})", k.name());
    }
    // Ratios are over the faster of the two float products (plain Rust dot; AVX-512 or
    // AVX2 FMA, whichever the CPU has).
    print!("{:<26} {:>10} {:>10}", "shape", "f32 µs", format!("{} µs", fma_name()));
    for k in &kernels {
        print!(" {:>12} {:>7} {:>7}", format!("{} µs", k.name()), "ratio", "Gw/s");
    }
    println!();
    let mut worst_default = f64::INFINITY;
    // On an AVX-512 machine, the AVX2 kernels are also compared with the AVX2 FMA product:
    // the best f32 product an AVX2-only CPU has, on this core.
    let avx2_here = Kernel::Avx2I8.runs_here() && fma_name() == "avx512-fma";
    let mut worst_avx2 = f64::INFINITY;
    for (i, (name, rows, cols)) in SHAPES.into_iter().chain([BITNET_SHAPE]).enumerate() {
        let (_, planes, dense, x) = random_case(rows, cols, 42);
        let mut y = vec![0.0f32; rows];
        let plain = time(|| matvec_f32(black_box(&dense), rows, cols, black_box(&x), &mut y));
        let fma = time(|| matvec_f32_fma(black_box(&dense), rows, cols, black_box(&x), &mut y));
        let f = plain.min(fma);
        print!("{name:<26} {:>10.2} {:>10.2}", plain * 1e6, fma * 1e6);
        for k in &kernels {
            let t = time(|| k.matvec(black_box(&planes), black_box(&x), &mut y));
            let gw = (rows * cols) as f64 / t / 1e9;
            print!(" {:>12.2} {:>6.2}x {:>7.1}", t * 1e6, f / t, gw);
            if *k == Kernel::detect() && i < SHAPES.len() {
                worst_default = worst_default.min(f / t);
            }
            if *k == Kernel::Avx2I8 && avx2_here && i < SHAPES.len() {
                let f2 = time(|| matvec_f32_avx2(black_box(&dense), rows, cols, black_box(&x), &mut y));
                worst_avx2 = worst_avx2.min(plain.min(f2) / t);
            }
        }
        println!();
    }
    if avx2_here {
        println!(
            "min ratio of avx2-i8 over the best AVX2 f32 product (AVX2 FMA or plain, this core): {worst_avx2:.2}x"
        );
    }
    println!(
        "min ratio of the default kernel ({}) over the best f32 product: {worst_default:.2}x",
        Kernel::detect().name()
    );
}
