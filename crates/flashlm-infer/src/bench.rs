//! Shared helpers for the kernel benchmarks (criterion and `scripts/bench-infer.sh`).

use crate::engine::dot;
use crate::kernels::TernaryPlanes;

/// Ternary matrix shapes (rows, cols) of the small and large configs.
pub const SHAPES: [(&str, usize, usize); 8] = [
    ("small up 384x192", 384, 192),
    ("small down 192x192", 192, 192),
    ("small glu 512x192", 512, 192),
    ("small glu-down 192x512", 192, 512),
    ("large up 768x384", 768, 384),
    ("large down 384x384", 384, 384),
    ("large glu 1024x384", 1024, 384),
    ("large glu-down 384x1024", 384, 1024),
];

/// A deterministic ternary matrix (about a third zeros) and an input vector.
pub fn random_case(rows: usize, cols: usize, seed: u64) -> (Vec<i8>, TernaryPlanes, Vec<f32>, Vec<f32>) {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let w: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
    let dense: Vec<f32> = w.iter().map(|&v| f32::from(v) * 0.05).collect();
    let planes = TernaryPlanes::from_ternary(&w, rows, cols, 0.05);
    let mut x: Vec<f32> = (0..cols).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();
    x.resize(planes.padded_cols(), 0.0);
    (w, planes, dense, x)
}

/// The float baseline: y = W x with a dense f32 W (row-major [rows, cols]).
pub fn matvec_f32(w: &[f32], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    for (r, out) in y.iter_mut().enumerate().take(rows) {
        *out = dot(&w[r * cols..(r + 1) * cols], &x[..cols]);
    }
}
