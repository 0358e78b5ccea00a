//! The f32 GEMM behind every matrix product of the step ([`super::layers::mm`]), chosen once:
//!
//! * the `gemm` crate's own dispatch (AVX-512 wherever the CPU has it, else AVX2 + FMA);
//! * under a `FLASHLM_ISA` cap below what the CPU has, the crate's AVX2+FMA (or scalar)
//!   kernels called through its generic driver, because its entry point ignores the cap;
//! * on AVX2 level (an AVX2-only CPU, or the cap), OpenBLAS when the system has it
//!   (`libopenblas.so.0`, opened at run time, never linked): its Haswell/Zen kernels run these
//!   shapes about 20% faster than the crate's AVX2 kernels (`examples/bench_step_gemms`).
//!   `FLASHLM_BLAS=off` keeps the crate; `FLASHLM_BLAS=openblas` asks for OpenBLAS at any level.
//!
//! Every choice is tested against an f64 triple loop on every tail (`tests` below).

use gemm::Parallelism;

/// The signature of the `gemm` crate's f32 entry points (column-major argument order).
pub(crate) type GemmF32 = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    bool,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    f32,
    f32,
    bool,
    bool,
    bool,
    Parallelism,
);

/// Which f32 GEMM the step runs (see the module's notes). Chosen once.
pub(crate) fn capped_gemm() -> GemmF32 {
    gemm_choice().0
}

/// The kernels [`capped_gemm`] runs, in words, for logs and benchmark output.
pub fn gemm_kernels() -> &'static str {
    &gemm_choice().1
}

/// What `FLASHLM_BLAS` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlasWish {
    /// OpenBLAS on AVX2 level when the system has it (the default).
    Auto,
    /// Never OpenBLAS.
    Off,
    /// OpenBLAS at any level, when the system has it.
    OpenBlas,
}

fn blas_wish() -> BlasWish {
    match std::env::var("FLASHLM_BLAS").as_deref().map(str::to_ascii_lowercase).as_deref() {
        Err(_) | Ok("") | Ok("auto") => BlasWish::Auto,
        Ok("off") | Ok("gemm") | Ok("none") => BlasWish::Off,
        Ok("openblas") => BlasWish::OpenBlas,
        Ok(other) => {
            eprintln!("warning: FLASHLM_BLAS={other:?} is not auto, off or openblas; using auto");
            BlasWish::Auto
        }
    }
}

fn gemm_choice() -> &'static (GemmF32, String) {
    static CHOICE: std::sync::OnceLock<(GemmF32, String)> = std::sync::OnceLock::new();
    CHOICE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use flashlm_core::cpu;
            use std::arch::is_x86_feature_detected as has;
            let picked = if has!("avx512f") { 2 } else { u8::from(has!("fma") && has!("avx2")) };
            let allowed = match cpu::level() {
                cpu::Isa::Avx512 => 2,
                cpu::Isa::Avx2 => 1,
                cpu::Isa::Portable => 0,
            };
            let (f, name) = pick_gemm(picked, allowed);
            let wish = blas_wish();
            if wish == BlasWish::Off {
                return (f, name.to_string());
            }
            match openblas::load() {
                Ok(lib) => {
                    let avx2_core = openblas::is_avx2_core(&lib.core);
                    if wish == BlasWish::OpenBlas || allowed == 1 && avx2_core {
                        openblas::set_fallback(f);
                        return (openblas::gemm as GemmF32, format!("{} ({} kernels)", lib.version, lib.core));
                    }
                    let why = if allowed == 1 {
                        format!(
                            "; OpenBLAS runs its {} kernels here: OPENBLAS_CORETYPE=Haswell to use it at AVX2 level",
                            lib.core
                        )
                    } else {
                        String::new()
                    };
                    (f, format!("{name}{why}"))
                }
                Err(e) => {
                    if wish == BlasWish::OpenBlas {
                        eprintln!("warning: FLASHLM_BLAS=openblas but {e}; using the gemm crate");
                    }
                    let hint = if allowed == 1 { "; libopenblas0 would be faster here" } else { "" };
                    (f, format!("{name}{hint}"))
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            (gemm::gemm::<f32> as GemmF32, "gemm crate".to_string())
        }
    })
}

/// Levels 2 = AVX-512F, 1 = AVX2 + FMA, 0 = scalar: `picked` is what the crate's dispatch
/// takes on this CPU, `allowed` the most the cap allows (never above `picked`).
#[cfg(target_arch = "x86_64")]
fn pick_gemm(picked: u8, allowed: u8) -> (GemmF32, &'static str) {
    match (picked == allowed, allowed) {
        (true, 2) => (gemm::gemm::<f32>, "gemm crate, avx512f kernels"),
        (true, 1) => (gemm::gemm::<f32>, "gemm crate, avx2+fma kernels"),
        (true, _) => (gemm::gemm::<f32>, "gemm crate, scalar kernels"),
        (false, 1) => (capped::gemm_fma, "gemm crate, avx2+fma kernels (FLASHLM_ISA cap)"),
        (false, _) => (capped::gemm_scalar, "gemm crate, scalar kernels (FLASHLM_ISA cap)"),
    }
}

#[cfg(target_arch = "x86_64")]
mod openblas;

/// The `gemm` crate's AVX2+FMA and scalar f32 GEMMs, which its entry point skips on an
/// AVX-512 CPU: the same driver (`gemm_basic_generic`), microkernels and parameters as its
/// own `fma` and `scalar` modules.
#[cfg(target_arch = "x86_64")]
mod capped {
    use gemm::Parallelism;
    use gemm_common::gemm::gemm_basic_generic;
    use gemm_common::simd::{Scalar, V3};

    macro_rules! capped_gemm {
        ($(#[$doc:meta])* $name:ident, $simd:ty, $simd_new:expr, $kernels:path, $lanes:expr) => {
            $(#[$doc])*
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name(
                m: usize,
                n: usize,
                k: usize,
                dst: *mut f32,
                dst_cs: isize,
                dst_rs: isize,
                read_dst: bool,
                lhs: *const f32,
                lhs_cs: isize,
                lhs_rs: isize,
                rhs: *const f32,
                rhs_cs: isize,
                rhs_rs: isize,
                alpha: f32,
                beta: f32,
                conj_dst: bool,
                conj_lhs: bool,
                conj_rhs: bool,
                parallelism: Parallelism,
            ) {
                use $kernels as ukr;
                let simd: $simd = $simd_new;
                // SAFETY: the caller's contract (gemm's): the pointers and strides describe
                // valid, non-overlapping matrices; `simd` proves the CPU has the features.
                unsafe {
                    gemm_basic_generic::<
                        _,
                        f32,
                        { $lanes },
                        { ukr::MR_DIV_N * $lanes },
                        { ukr::NR },
                        { ukr::MR_DIV_N },
                        { ukr::H_M },
                        { ukr::H_N },
                    >(
                        simd,
                        m,
                        n,
                        k,
                        dst,
                        dst_cs,
                        dst_rs,
                        read_dst,
                        lhs,
                        lhs_cs,
                        lhs_rs,
                        rhs,
                        rhs_cs,
                        rhs_rs,
                        alpha,
                        beta,
                        conj_dst,
                        conj_lhs,
                        conj_rhs,
                        |a, b, c| a * b + c,
                        &ukr::UKR,
                        &ukr::H_UKR,
                        false,
                        parallelism,
                    )
                }
            }
        };
    }

    capped_gemm!(
        /// AVX2 + FMA kernels (8 lanes), what an AVX2-only CPU runs.
        gemm_fma,
        V3,
        V3::try_new().expect("capped_gemm only picks this with AVX2 and FMA"),
        gemm_f32::microkernel::fma::f32,
        8
    );
    capped_gemm!(
        /// Scalar kernels.
        gemm_scalar,
        Scalar,
        Scalar,
        gemm_f32::microkernel::scalar::f32,
        1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C[m, n] (+)= A[m, k] · B[k, n] in f64, the obvious triple loop.
    #[allow(clippy::too_many_arguments)]
    fn mm_reference(
        (m, n, k): (usize, usize, usize),
        c: &mut [f32],
        acc: bool,
        a: &[f32],
        (a_rs, a_cs): (usize, usize),
        b: &[f32],
        (b_rs, b_cs): (usize, usize),
    ) {
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| f64::from(a[i * a_rs + p * a_cs]) * f64::from(b[p * b_rs + j * b_cs]))
                    .sum();
                let c0 = if acc { f64::from(c[i * n + j]) } else { 0.0 };
                c[i * n + j] = (c0 + dot) as f32;
            }
        }
    }

    /// Every f32 GEMM the step can run on this CPU (the crate's dispatch and the kernels the
    /// `FLASHLM_ISA` cap selects), against the reference on every m and n tail up to 2 full
    /// AVX-512 microkernel tiles (64 x 6) plus one, several depths, both layouts of A and B,
    /// with and without accumulation, one and two threads.
    #[test]
    fn every_gemm_kernel_matches_the_reference_on_every_tail() {
        let mut kernels: Vec<(&str, GemmF32)> = vec![("gemm crate dispatch", gemm::gemm::<f32>)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(("avx2+fma (capped)", capped::gemm_fma));
            } else {
                eprintln!("skipped: the capped avx2+fma GEMM (this CPU has no AVX2/FMA)");
            }
            kernels.push(("scalar (capped)", capped::gemm_scalar));
            match openblas::load() {
                Ok(lib) => {
                    // Its fallback (strides CBLAS cannot take, multi-threaded calls) is the
                    // crate's dispatch unless the step's choice set another.
                    openblas::set_fallback(gemm::gemm::<f32>);
                    eprintln!("{} ({} kernels) under test", lib.version, lib.core);
                    kernels.push(("OpenBLAS", openblas::gemm));
                }
                Err(e) => eprintln!("skipped: OpenBLAS ({e}; Debian package libopenblas0)"),
            }
        }
        let mut r = flashlm_core::rng::XorShift64::new(11);
        let mut next = move || (r.next_u64() % 2001) as f32 / 1000.0 - 1.0;
        let ms: Vec<usize> = (1..=20).chain([31, 32, 33, 63, 64, 65, 127, 128, 129]).collect();
        let ns: Vec<usize> = (1..=13).chain([17, 24, 25]).collect();
        for (name, f) in kernels {
            for &m in &ms {
                for &n in &ns {
                    for (case, k) in [1usize, 7, 64, 300].into_iter().enumerate() {
                        let (ta, tb, acc) = (case % 2 == 1, case / 2 == 1, case % 3 == 0);
                        let a_s = if ta { (1, m) } else { (k, 1) };
                        let b_s = if tb { (1, k) } else { (n, 1) };
                        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                        let c0: Vec<f32> = (0..m * n).map(|_| next()).collect();
                        let mut want = c0.clone();
                        mm_reference((m, n, k), &mut want, acc, &a, a_s, &b, b_s);
                        for threads in [1, 2] {
                            let mut got = c0.clone();
                            super::super::layers::mm_with(
                                f,
                                (m, n, k),
                                &mut got,
                                (n, 1),
                                acc,
                                &a,
                                a_s,
                                &b,
                                b_s,
                                threads,
                            );
                            for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    (g - w).abs() <= 1e-5 * (k as f32).sqrt() * (1.0 + w.abs()),
                                    "{name}: m {m} n {n} k {k} (A transposed {ta}, B transposed {tb}, acc {acc}, {threads} threads): element {idx}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mm_uses_the_kernels_it_names() {
        let name = gemm_kernels();
        let f = capped_gemm() as usize;
        // scripts/test.sh runs this test again with FLASHLM_ISA=avx2: on an AVX-512 CPU the
        // step must then run AVX2 kernels (OpenBLAS's, when it has them, or the crate's capped
        // ones), not the crate's own AVX-512 choice.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && blas_wish() != BlasWish::OpenBlas {
            let openblas_avx2 = blas_wish() == BlasWish::Auto
                && openblas::load().is_ok_and(|l| openblas::is_avx2_core(&l.core));
            match flashlm_core::cpu::cap() {
                flashlm_core::cpu::Isa::Avx512 => {
                    assert!(name.starts_with("gemm crate, avx512f kernels"), "{name}");
                    assert_eq!(f, gemm::gemm::<f32> as GemmF32 as usize);
                }
                flashlm_core::cpu::Isa::Avx2 if openblas_avx2 => {
                    assert!(name.starts_with("OpenBLAS") && name.contains("Haswell"), "{name}");
                    assert_eq!(f, openblas::gemm as GemmF32 as usize);
                }
                flashlm_core::cpu::Isa::Avx2 => {
                    assert!(name.starts_with("gemm crate, avx2+fma kernels (FLASHLM_ISA cap)"), "{name}");
                    assert_eq!(f, capped::gemm_fma as GemmF32 as usize);
                }
                flashlm_core::cpu::Isa::Portable => {
                    assert!(name.starts_with("gemm crate, scalar kernels (FLASHLM_ISA cap)"), "{name}");
                }
            }
        }
        assert!(!name.is_empty() && f != 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn openblas_takes_only_operands_cblas_reads_in_place() {
        use openblas::operand;
        // rows x cols with (row stride, column stride) -> (transpose, leading dimension)
        assert_eq!(operand(4, 3, 3, 1), Some((111, 3)));
        assert_eq!(operand(4, 3, 10, 1), Some((111, 10)));
        assert_eq!(operand(4, 3, 1, 4), Some((112, 4)));
        assert_eq!(operand(4, 3, 1, 9), Some((112, 9)));
        assert_eq!(operand(4, 3, 2, 1), None, "row stride shorter than a row");
        assert_eq!(operand(4, 3, 1, 3), None, "column stride shorter than a column");
        assert_eq!(operand(4, 3, 3, 2), None, "no unit stride");
        assert_eq!(operand(4, 3, -3, 1), None, "negative stride");
        assert_eq!(operand(2, 2, 1 << 40, 1), None, "past i32");
        assert!(openblas::is_avx2_core("Haswell") && openblas::is_avx2_core("Zen"));
        assert!(!openblas::is_avx2_core("SkylakeX") && !openblas::is_avx2_core("SapphireRapids"));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_cap_picks_the_crate_dispatch_only_when_it_would_choose_the_same() {
        let crate_fn = gemm::gemm::<f32> as GemmF32 as usize;
        for (picked, allowed, want_fn, want_name) in [
            (2, 2, crate_fn, "gemm crate, avx512f kernels"),
            (1, 1, crate_fn, "gemm crate, avx2+fma kernels"),
            (0, 0, crate_fn, "gemm crate, scalar kernels"),
            (2, 1, capped::gemm_fma as GemmF32 as usize, "gemm crate, avx2+fma kernels (FLASHLM_ISA cap)"),
            (2, 0, capped::gemm_scalar as GemmF32 as usize, "gemm crate, scalar kernels (FLASHLM_ISA cap)"),
            (1, 0, capped::gemm_scalar as GemmF32 as usize, "gemm crate, scalar kernels (FLASHLM_ISA cap)"),
        ] {
            let (f, name) = pick_gemm(picked, allowed);
            assert_eq!((f as usize, name), (want_fn, want_name), "picked {picked}, allowed {allowed}");
        }
    }
}
