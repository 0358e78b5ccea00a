//! The bit-walking scalar kernel: the exact reference on every target (and what runs
//! where nothing faster does with `--kernel scalar`).

use super::TernaryPlanes;

/// Scalar kernel: add the inputs under set plus bits, subtract those under minus bits.
#[inline(never)]
pub fn sums_scalar(m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
    // Rows are peeled off with split_at (pointer increments) rather than indexed as
    // `r * words`, which keeps even integer multiplies out of the kernel.
    let (mut plus, mut minus) = (&m.plus[..], &m.minus[..]);
    for out in y.iter_mut().take(m.rows) {
        let (prow, prest) = plus.split_at(m.words);
        let (nrow, nrest) = minus.split_at(m.words);
        (plus, minus) = (prest, nrest);
        let mut s = 0.0f32;
        for ((&pw, &nw), xs) in prow.iter().zip(nrow).zip(x.chunks_exact(64)) {
            let mut p = pw;
            while p != 0 {
                s += xs[p.trailing_zeros() as usize];
                p &= p - 1;
            }
            let mut n = nw;
            while n != 0 {
                s -= xs[n.trailing_zeros() as usize];
                n &= n - 1;
            }
        }
        *out = s;
    }
}
