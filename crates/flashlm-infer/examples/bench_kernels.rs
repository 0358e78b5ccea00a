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

/// Times every closure of `fs` (µs per call, best of 15 rounds). Each round runs each closure
/// once for about 4 ms, in turn, so a slow stretch of a shared machine hits every variant
/// of a shape alike and the ratios stay same-run ratios.
fn time_all(fs: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    let iters: Vec<u64> = fs
        .iter_mut()
        .map(|f| {
            for _ in 0..20 {
                f();
            }
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() < 0.004 {
                f();
                n += 1;
            }
            n
        })
        .collect();
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..15 {
        for ((f, &n), b) in fs.iter_mut().zip(&iters).zip(&mut best) {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            *b = b.min(t.elapsed().as_secs_f64() / n as f64);
        }
    }
    best
}

fn main() {
    println!("cpu: {}", flashlm_infer::cpu::describe());
    let kernels = Kernel::available();
    for (k, lack) in Kernel::unavailable() {
        println!("(kernel {} skipped: this CPU has no {lack})", k.name());
    }
    // Ratios are over the faster of the float products (plain Rust dot; AVX-512 or AVX2
    // FMA, whichever the CPU has).
    print!("{:<26} {:>10} {:>10}", "shape", "f32 µs", format!("{} µs", fma_name()));
    for k in &kernels {
        print!(" {:>14} {:>7} {:>7}", format!("{} µs", k.name()), "ratio", "Gw/s");
    }
    println!();
    let default = Kernel::detect();
    let mut worst_default = f64::INFINITY;
    // On an AVX-512 machine, the default (an AVX2 kernel) is also compared with the AVX2 FMA
    // product: the best f32 product an AVX2-only CPU has, on this core.
    let avx2_here = Kernel::Avx2I6.runs_here() && fma_name() == "avx512-fma";
    let mut worst_avx2 = f64::INFINITY;
    for (i, (name, rows, cols)) in SHAPES.into_iter().chain([BITNET_SHAPE]).enumerate() {
        let (_, planes, dense, x) = random_case(rows, cols, 42);
        let (planes, dense, x) = (&planes, &dense, &x);
        let mut ys = vec![vec![0.0f32; rows]; kernels.len() + 3];
        let mut fs: Vec<Box<dyn FnMut()>> = Vec::new();
        let mut yi = ys.iter_mut();
        let y = yi.next().unwrap();
        fs.push(Box::new(move || matvec_f32(black_box(dense), rows, cols, black_box(x), y)));
        let y = yi.next().unwrap();
        fs.push(Box::new(move || matvec_f32_fma(black_box(dense), rows, cols, black_box(x), y)));
        let y = yi.next().unwrap();
        fs.push(Box::new(move || matvec_f32_avx2(black_box(dense), rows, cols, black_box(x), y)));
        for (k, y) in kernels.iter().zip(yi) {
            fs.push(Box::new(move || k.matvec(black_box(planes), black_box(x), y)));
        }
        let t = time_all(&mut fs);
        let (plain, fma, avx2_fma) = (t[0], t[1], t[2]);
        let f = plain.min(fma);
        print!("{name:<26} {:>10.2} {:>10.2}", plain * 1e6, fma * 1e6);
        for (k, &t) in kernels.iter().zip(&t[3..]) {
            let gw = (rows * cols) as f64 / t / 1e9;
            print!(" {:>14.2} {:>6.2}x {:>7.1}", t * 1e6, f / t, gw);
            if *k == default && i < SHAPES.len() {
                worst_default = worst_default.min(f / t);
                worst_avx2 = worst_avx2.min(plain.min(avx2_fma) / t);
            }
        }
        println!();
    }
    if avx2_here {
        println!(
            "min ratio of the default kernel ({}) over the best AVX2 f32 product (AVX2 FMA or plain, this core): {worst_avx2:.2}x",
            default.name()
        );
    }
    println!(
        "min ratio of the default kernel ({}) over the best f32 product: {worst_default:.2}x",
        default.name()
    );
}
