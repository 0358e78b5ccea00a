//! Criterion: every ternary kernel and the f32 baseline on the small and large shapes.
//! cargo bench -p flashlm-infer --bench kernels

#[allow(dead_code)]
#[path = "support/bench.rs"]
mod bench;

use bench::{SHAPES, matvec_f32, random_case};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flashlm_infer::kernels::Kernel;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    for (name, rows, cols) in SHAPES {
        let (_, planes, dense, x) = random_case(rows, cols, 42);
        let mut y = vec![0.0f32; rows];
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements((rows * cols) as u64));
        g.bench_function("f32", |b| {
            b.iter(|| matvec_f32(black_box(&dense), rows, cols, black_box(&x), &mut y))
        });
        for k in Kernel::available() {
            g.bench_function(k.name(), |b| b.iter(|| k.matvec(black_box(&planes), black_box(&x), &mut y)));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
