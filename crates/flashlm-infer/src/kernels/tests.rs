//! The kernel family's tests: every kernel against the plain references ([`super::matvec_reference`],
//! [`super::lut8::matvec_i8_reference`]) on every size and the model shapes.

use super::*;

/// Deterministic ternary weights and inputs.
fn case(rows: usize, cols: usize, seed: u64, int_inputs: bool) -> (Vec<i8>, Vec<f32>) {
    let mut r = flashlm_core::rng::XorShift64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut next = || r.next_u64();
    let w = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
    let x = (0..cols)
        .map(|_| {
            let v = next();
            if int_inputs { (v % 21) as f32 - 10.0 } else { (v % 10_000) as f32 / 5000.0 - 1.0 }
        })
        .collect();
    (w, x)
}

fn padded(x: &[f32], m: &TernaryPlanes) -> Vec<f32> {
    let mut v = x.to_vec();
    v.resize(m.padded_cols(), 0.0);
    v
}

/// The exact kernels this CPU runs; prints the kernels it had to skip.
fn exact_kernels() -> Vec<Kernel> {
    report_skipped();
    Kernel::available_exact()
}

/// Every kernel this CPU runs; prints the kernels it had to skip.
fn kernels() -> Vec<Kernel> {
    report_skipped();
    Kernel::available()
}

fn report_skipped() {
    for (k, lack) in Kernel::unavailable() {
        eprintln!("skipped kernel {}: this CPU has no {lack}", k.name());
    }
}

#[test]
fn every_kernel_matches_the_reference_on_all_sizes() {
    for k in exact_kernels() {
        for cols in 1..=300 {
            let rows = 1 + cols % 7;
            // Small-integer inputs: sums are exact in f32, so results must be bit-identical.
            let (w, x) = case(rows, cols, cols as u64, true);
            let m = TernaryPlanes::from_ternary(&w, rows, cols, 1.0);
            let mut y = vec![0.0; rows];
            k.matvec(&m, &padded(&x, &m), &mut y);
            assert_eq!(y, matvec_reference(&w, rows, cols, 1.0, &x), "{k:?} cols {cols}");
            // Real inputs and a scale: equal up to float reassociation.
            let (w, x) = case(rows, cols, 1000 + cols as u64, false);
            let m = TernaryPlanes::from_ternary(&w, rows, cols, 0.37);
            let mut y = vec![0.0; rows];
            k.matvec(&m, &padded(&x, &m), &mut y);
            for (a, b) in y.iter().zip(matvec_reference(&w, rows, cols, 0.37, &x)) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{k:?} cols {cols}: {a} vs {b}");
            }
        }
    }
}

/// Row counts that fill whole row blocks plus a partial one (and the cases either side),
/// with ragged column counts: bit-identical to the reference on small-integer inputs.
#[test]
fn full_plus_partial_row_blocks_match_the_reference() {
    for k in exact_kernels() {
        for rows in [8, 9, 15, 16, 17, 31, 32, 33, 63, 65] {
            for cols in [1, 3, 47, 64, 65, 192, 193] {
                let (w, x) = case(rows, cols, (rows * 1000 + cols) as u64, true);
                let m = TernaryPlanes::from_ternary(&w, rows, cols, 1.0);
                let mut y = vec![0.0; rows];
                k.matvec(&m, &padded(&x, &m), &mut y);
                assert_eq!(y, matvec_reference(&w, rows, cols, 1.0, &x), "{k:?} {rows}x{cols}");
            }
        }
    }
}

#[test]
fn model_shapes() {
    for (rows, cols) in [(384, 192), (192, 192), (512, 192), (192, 512), (768, 384), (1024, 384), (384, 1024)]
    {
        let (w, x) = case(rows, cols, 7, true);
        let m = TernaryPlanes::from_ternary(&w, rows, cols, 1.0);
        let expect = matvec_reference(&w, rows, cols, 1.0, &x);
        for k in exact_kernels() {
            let mut y = vec![0.0; rows];
            k.matvec(&m, &padded(&x, &m), &mut y);
            assert_eq!(y, expect, "{k:?} {rows}x{cols}");
        }
    }
}

#[test]
fn matvec2_equals_two_matvecs() {
    for k in kernels() {
        for cols in [1, 2, 3, 4, 47, 192, 193] {
            let (wa, x) = case(37, cols, cols as u64, false);
            let (wb, _) = case(21, cols, 99 + cols as u64, false);
            let a = TernaryPlanes::from_ternary(&wa, 37, cols, 0.5);
            let b = TernaryPlanes::from_ternary(&wb, 21, cols, 2.0);
            let x = padded(&x, &a);
            let (mut ya, mut yb, mut za, mut zb) =
                (vec![0.0; 37], vec![0.0; 21], vec![0.0; 37], vec![0.0; 21]);
            k.matvec2(&a, &b, &x, &mut ya, &mut yb);
            k.matvec(&a, &x, &mut za);
            k.matvec(&b, &x, &mut zb);
            assert_eq!((ya, yb), (za, zb), "{k:?} cols {cols}");
        }
    }
}

#[test]
fn matmul_equals_matvec_per_input() {
    for k in kernels() {
        for (rows, cols, n) in [(37, 47, 9), (16, 3, 4), (5, 1, 1), (384, 192, 6), (17, 512, 5)] {
            let (w, _) = case(rows, cols, 5, false);
            let m = TernaryPlanes::from_ternary(&w, rows, cols, 0.3);
            let xs: Vec<Vec<f32>> =
                (0..n).map(|t| padded(&case(1, cols, 100 + t as u64, false).1, &m)).collect();
            let xr: Vec<&[f32]> = xs.iter().map(|x| &x[..]).collect();
            let mut ys = vec![vec![0.0; rows]; n];
            let mut yr: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
            k.matmul(&m, &xr, &mut yr);
            for (x, y) in xs.iter().zip(&ys) {
                let mut want = vec![0.0; rows];
                k.matvec(&m, x, &mut want);
                assert_eq!(y, &want, "{k:?} {rows}x{cols} n={n}");
            }
        }
    }
}

/// The int8 kernels equal their exact integer reference scaled by α · s, bit for bit.
#[test]
fn int8_kernels_equal_the_integer_reference() {
    let int8: Vec<Kernel> = Kernel::available().into_iter().filter(|k| !k.is_exact()).collect();
    if int8.is_empty() {
        eprintln!("skipped: no int8 kernel runs on this CPU (avx2-i8 needs AVX2)");
    }
    let shapes = (1..=300).map(|c| (1 + c % 45, c)).chain([
        (384, 192),
        (192, 192),
        (512, 192),
        (192, 512),
        (768, 384),
        (1024, 384),
        (384, 1024),
    ]);
    for (rows, cols) in shapes {
        let (w, x) = case(rows, cols, (rows + 3 * cols) as u64, false);
        let m = TernaryPlanes::from_ternary(&w, rows, cols, 0.37);
        for &k in &int8 {
            let levels = k.input_levels().expect("int8 kernels have levels");
            let mut q = vec![0i8; cols];
            let s = lut8::quantize_to(&x, &mut q, levels);
            let want: Vec<f32> = lut8::matvec_i8_reference(&w, rows, cols, &q)
                .into_iter()
                .map(|v| v as f32 * (0.37 * s))
                .collect();
            // And close to the exact product: the rounding error of the input only.
            let exact = matvec_reference(&w, rows, cols, 0.37, &x);
            let bound = 0.37 * s * 0.5 * cols as f32 + 1e-6;
            for (a, b) in want.iter().zip(&exact) {
                assert!((a - b).abs() <= bound, "{rows}x{cols}: {a} vs {b}");
            }
            let mut y = vec![0.0; rows];
            k.matvec(&m, &padded(&x, &m), &mut y);
            assert_eq!(y, want, "{k:?} {rows}x{cols}");
        }
    }
}

#[test]
fn kernel_names() {
    assert_eq!(Kernel::from_name("scalar"), Ok(Kernel::Scalar));
    assert!(Kernel::from_name("neon9").is_err());
    assert_eq!(Kernel::from_name("auto"), Ok(Kernel::detect()));
    for k in Kernel::available() {
        assert_eq!(Kernel::from_name(k.name()), Ok(k));
    }
}

/// Every 6-bit kernel this CPU runs (`avx2-i6`, `neon-i6`, `simd128-i6`) against
/// `portable-i6`, bit for bit, on every size 1..=300 and the model shapes, one input and five
/// at once, and on the largest sums of its 16-bit stage.
#[test]
fn six_bit_kernels_equal_portable_i6_bit_for_bit() {
    for k in [Kernel::Avx2I6, Kernel::NeonI6, Kernel::Simd128I6] {
        if let Some(lack) = k.missing() {
            eprintln!("skipped kernel {}: this CPU has no {lack}", k.name());
            continue;
        }
        super::six_bit_checks::equals_portable_i6_bit_for_bit(k);
        super::six_bit_checks::extreme_sums_are_exact(k);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_six_bit_tables_and_quantiser_equal_the_portable_ones() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("skipped: this CPU has no AVX2");
        return;
    }
    // SAFETY: AVX2 was just detected; the checks pass the lengths each function needs.
    super::six_bit_checks::tables_equal_the_generic_ones(|q, s, t| unsafe {
        x86_avx2::tables_avx2_i6(q, s, t)
    });
    // SAFETY: as above.
    super::six_bit_checks::quantize_equals_the_portable_one(|x, q, l| unsafe {
        x86_avx2::quantize_to_avx2(x, q, l)
    });
}
