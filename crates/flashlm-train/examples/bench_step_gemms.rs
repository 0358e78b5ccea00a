//! Every matrix product of the fused step at its real shape and strides, one thread (one
//! data-parallel group of ROWS token rows), against the core's measured f32 FMA peak: which
//! products run far from the peak, and what share of the step's product time each takes.
//! cargo run --release -p flashlm-train --example bench_step_gemms -- [small|large] [ROWS]
//! (ROWS defaults to one group of batch 8 on 2 threads: 1,024 small, 2,048 large)
//! FLASHLM_ISA=avx2 measures the AVX2+FMA kernels and the AVX2 peak, as on an AVX2-only CPU.
use std::time::Instant;

use flashlm_core::Config;
use flashlm_train::fused::layers::{CE_CHUNK, mm};

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Independent FMA chains on full vectors: GFLOP/s of one core (2 FLOP per lane per FMA).
fn fma_peak() -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        // What the step's GEMMs may use (FLASHLM_ISA caps it), not only what the CPU has.
        use flashlm_core::cpu;
        if cpu::avx512f() {
            // SAFETY: avx512f was detected at run time just above (cpu:: checks the CPU).
            return (unsafe { x86::peak_avx512() }, "avx512f, 16 lanes");
        }
        if cpu::avx2() && cpu::fma() {
            // SAFETY: avx2 and fma were detected at run time just above (cpu:: checks the CPU).
            return (unsafe { x86::peak_fma() }, "avx2+fma, 8 lanes");
        }
    }
    (0.0, "not measured on this CPU")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::time::Instant;

    const ITERS: usize = 20_000_000;
    /// Independent chains: enough to cover two FMA units of latency 4-5, few enough to stay
    /// in registers.
    const CHAINS: usize = 10;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn peak_avx512() -> f64 {
        let (m, a) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        let t = Instant::now();
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        let s = t.elapsed().as_secs_f64();
        let sum = acc.iter().fold(0.0, |x, v| x + _mm512_reduce_add_ps(*v));
        std::hint::black_box(sum);
        (ITERS * CHAINS * 16 * 2) as f64 / s / 1e9
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn peak_fma() -> f64 {
        let (m, a) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        let t = Instant::now();
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        let s = t.elapsed().as_secs_f64();
        let mut lanes = [0.0f32; 8];
        for v in acc {
            let mut x = [0.0f32; 8];
            // SAFETY: x holds the 8 floats the store writes.
            unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) };
            for (l, y) in lanes.iter_mut().zip(x) {
                *l += y;
            }
        }
        std::hint::black_box(lanes);
        (ITERS * CHAINS * 8 * 2) as f64 / s / 1e9
    }
}

/// One product: C[m, n] (+)= A[m, k] · B[k, n] with (row, column) strides.
struct Product {
    name: String,
    count: usize,
    m: usize,
    n: usize,
    k: usize,
    a: (usize, usize),
    b: (usize, usize),
    acc: bool,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let size = args.next().unwrap_or_else(|| "small".into());
    let cfg = match size.as_str() {
        "small" => Config::small(),
        "large" => Config::large(),
        other => {
            eprintln!("error: unknown config {other:?} (small or large)");
            std::process::exit(2);
        }
    };
    let rows: usize = match args.next().map(|s| s.parse()) {
        None => 4 * cfg.seq_len,
        Some(Ok(r)) if r > 0 => r,
        Some(_) => {
            eprintln!("error: ROWS must be a positive integer");
            std::process::exit(2);
        }
    };
    let (d, h, v, nb) = (cfg.dim, cfg.glu_hidden, cfg.vocab_size, cfg.n_blocks);
    let c = CE_CHUNK.min(rows);
    let mut ps = Vec::new();
    let mut add = |name: &str, count, (m, n, k), a, b, acc| {
        ps.push(Product { name: name.into(), count, m, n, k, a, b, acc });
    };
    // Per block, as in fused::block_forward / block_backward (x [n, i], W [o, i], dy [n, o]).
    for (lin, o, i, dy_rs) in
        [("up", 2 * d, d, 2 * d), ("down", d, d, d), ("glu", 2 * h, d, 2 * h), ("w_down", d, h, d)]
    {
        add(&format!("{lin} forward  y = x·Wᵀ"), nb, (rows, o, i), (i, 1), (1, i), false);
        add(&format!("{lin} input    dx = dy·W"), nb, (rows, i, o), (dy_rs, 1), (i, 1), false);
        // The GLU's weight gradient is two products (W_gate and W_up) of o = h each.
        let (wo, wc) = if lin == "glu" { (h, 2) } else { (o, 1) };
        add(&format!("{lin} weight   dW += dyᵀ·x"), nb * wc, (wo, i, rows), (1, dy_rs), (i, 1), true);
    }
    let chunks = rows.div_ceil(c);
    add("head forward  logits = nf·Eᵀ", chunks, (c, v, d), (d, 1), (1, d), false);
    add("head input    dnf = dl·E", chunks, (c, d, v), (v, 1), (d, 1), false);
    add("head weight   dE += dlᵀ·nf", chunks, (v, d, c), (1, v), (d, 1), true);

    let (peak, isa) = fma_peak();
    println!(
        "config {size}: {rows} rows per group (one thread), head chunk {c}; {}",
        flashlm_train::fused::layers::gemm_kernels()
    );
    println!("f32 FMA peak of one core: {peak:.1} GFLOP/s ({isa})");
    println!(
        "{:<32} {:>5} {:>20} {:>10} {:>9} {:>7} {:>7}",
        "product", "count", "m x n x k", "µs", "GFLOP/s", "% peak", "% time"
    );
    let mut rowsout = Vec::new();
    for p in &ps {
        let len = |r: usize, cl: usize, (rs, cs): (usize, usize)| (r - 1) * rs + (cl - 1) * cs + 1;
        let a = vec![0.5f32; len(p.m, p.k, p.a)];
        let b = vec![0.25f32; len(p.k, p.n, p.b)];
        let mut out = vec![0.0f32; p.m * p.n];
        let reps = if p.m * p.n * p.k > 200_000_000 { 3 } else { 9 };
        let s = best(reps, || mm(p.m, p.n, p.k, &mut out, (p.n, 1), p.acc, &a, p.a, &b, p.b, 1));
        rowsout.push((p, s));
    }
    let total: f64 = rowsout.iter().map(|(p, s)| s * p.count as f64).sum();
    let flops: f64 = rowsout.iter().map(|(p, _)| 2.0 * (p.m * p.n * p.k * p.count) as f64).sum();
    for (p, s) in &rowsout {
        let gf = 2.0 * (p.m * p.n * p.k) as f64 / s / 1e9;
        println!(
            "{:<32} {:>5} {:>20} {:>10.1} {:>9.1} {:>6.0}% {:>6.1}%",
            p.name,
            p.count,
            format!("{}x{}x{}", p.m, p.n, p.k),
            s * 1e6,
            gf,
            100.0 * gf / peak,
            100.0 * s * p.count as f64 / total
        );
    }
    println!(
        "all products of one group: {:.1} ms, {:.2} GFLOP, {:.1} GFLOP/s ({:.0}% of the FMA peak)",
        total * 1e3,
        flops / 1e9,
        flops / total / 1e9,
        100.0 * flops / total / 1e9 / peak
    );
}
