//! The benchmarks' f32 baselines (`benches/support/bench.rs`, shared by the criterion bench
//! and `examples/bench_kernels.rs`) agree with each other: a ratio against a wrong baseline
//! would be meaningless.

#[allow(dead_code)]
#[path = "../benches/support/bench.rs"]
mod bench;

use bench::{matvec_f32, matvec_f32_avx2, matvec_f32_fma, random_case};

#[test]
fn fma_baseline_matches_the_plain_one() {
    for (rows, cols) in [(1, 1), (3, 17), (5, 33), (384, 192), (7, 300)] {
        let (_, _, dense, x) = random_case(rows, cols, 3);
        let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
        matvec_f32(&dense, rows, cols, &x, &mut a);
        matvec_f32_fma(&dense, rows, cols, &x, &mut b);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{rows}x{cols}: {p} vs {q}");
        }
        matvec_f32_avx2(&dense, rows, cols, &x, &mut b);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "avx2 {rows}x{cols}: {p} vs {q}");
        }
    }
}
