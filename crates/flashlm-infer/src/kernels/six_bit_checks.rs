//! Checks every SIMD 6-bit kernel family (`neon-i6`, `simd128-i6`) passes against the
//! portable code: its tables byte for byte against [`lut8::tables6_generic`], its quantiser
//! value for value against [`lut8::quantize_to`], its products bit for bit against
//! `portable-i6` on every size 1..=300 and the model shapes (one input and five at once), and
//! the largest sums its 16-bit stage carries over more than one flush. Test code only.

use super::lut8::{self, FLUSH6, StepTable6};
use super::{Kernel, TernaryPlanes};

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut r = flashlm_core::rng::XorShift64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    move || r.next_u64()
}

/// `build(q, steps, tables)` writes the generic builder's tables.
pub fn tables_equal_the_generic_ones(build: impl Fn(&[i8], usize, &mut [StepTable6])) {
    let mut next = rng(11);
    for steps in 0..=70 {
        let q: Vec<i8> = (0..4 * steps).map(|_| (next() % 63) as i8 - 31).collect();
        let (mut a, mut b) = (vec![StepTable6([0; 32]); steps], vec![StepTable6([7; 32]); steps]);
        lut8::tables6_generic(&q, steps, &mut a);
        build(&q, steps, &mut b);
        for (k, (a, b)) in a.iter().zip(&b).enumerate() {
            assert_eq!(a.0, b.0, "step {k} of {steps}");
        }
    }
}

/// `quantize(x, q, levels)` rounds as [`lut8::quantize_to`] does, scale and values, on every
/// length 0..=300 and a few longer ones, with zeros, NaN and infinity.
pub fn quantize_equals_the_portable_one(quantize: impl Fn(&[f32], &mut [i8], i8) -> f32) {
    let mut next = rng(3);
    for n in (0..=300).chain([1024, 4099]) {
        for kind in 0..4 {
            let mut x: Vec<f32> = (0..n).map(|_| (next() % 2_000_001) as f32 / 1_000_000.0 - 1.0).collect();
            match kind {
                1 => x.iter_mut().for_each(|v| *v = 0.0),
                2 if n > 0 => x[n / 2] = f32::NAN,
                3 if n > 0 => x[n - 1] = f32::INFINITY,
                _ => {}
            }
            for levels in [31, 127] {
                let (mut a, mut b) = (vec![5i8; n], vec![9i8; n]);
                let sa = lut8::quantize_to(&x, &mut a, levels);
                let sb = quantize(&x, &mut b, levels);
                assert_eq!(sa.to_bits(), sb.to_bits(), "n {n} kind {kind}");
                assert_eq!(a, b, "n {n} kind {kind} levels {levels}");
            }
        }
    }
}

/// `k`'s outputs equal `portable-i6`'s bit for bit (the same integer sums, the same scale),
/// for one input (`matvec`) and five at once (`matmul`).
pub fn equals_portable_i6_bit_for_bit(k: Kernel) {
    let mut next = rng(5);
    let shapes = (1..=300).map(|c| (1 + (c * 7) % 67, c)).chain([
        (384, 192),
        (192, 192),
        (512, 192),
        (192, 512),
        (768, 384),
        (1024, 384),
        (384, 1024),
        (40, 1100),
    ]);
    for (rows, cols) in shapes {
        let w: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let m = TernaryPlanes::from_ternary(&w, rows, cols, 0.37);
        let xs: Vec<Vec<f32>> = (0..5)
            .map(|_| {
                let mut x: Vec<f32> = (0..cols).map(|_| (next() % 20_001) as f32 / 10_000.0 - 1.0).collect();
                x.resize(m.padded_cols(), 0.0);
                x
            })
            .collect();
        let want: Vec<Vec<f32>> = xs
            .iter()
            .map(|x| {
                let mut y = vec![0.0; rows];
                Kernel::PortableI6.matvec(&m, x, &mut y);
                y
            })
            .collect();
        let mut y = vec![f32::NAN; rows];
        k.matvec(&m, &xs[0], &mut y);
        assert_eq!(y, want[0], "{k:?} {rows}x{cols}");
        let xr: Vec<&[f32]> = xs.iter().map(|x| &x[..]).collect();
        let mut ys = vec![vec![f32::NAN; rows]; xs.len()];
        let mut yr: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
        k.matmul(&m, &xr, &mut yr);
        assert_eq!(ys, want, "{k:?} {rows}x{cols}, five inputs");
    }
}

/// The largest sums the 16-bit stage carries: every input 31 and whole rows of +1 or −1,
/// over more than one flush of steps.
pub fn extreme_sums_are_exact(k: Kernel) {
    for cols in [4 * FLUSH6 - 1, 4 * FLUSH6, 4 * FLUSH6 + 5, 3000] {
        let rows = 33;
        let w: Vec<i8> = (0..rows * cols).map(|i| if (i / cols) % 2 == 0 { 1 } else { -1 }).collect();
        let q = vec![31i8; cols];
        let m = TernaryPlanes::from_ternary(&w, rows, cols, 1.0);
        let mut x: Vec<f32> = q.iter().map(|&v| f32::from(v)).collect();
        x.resize(m.padded_cols(), 0.0);
        let mut y = vec![0.0; rows];
        k.matvec(&m, &x, &mut y);
        let want: Vec<f32> =
            lut8::matvec_i8_reference(&w, rows, cols, &q).into_iter().map(|v| v as f32).collect();
        assert_eq!(y, want, "{k:?} cols {cols}");
    }
}
