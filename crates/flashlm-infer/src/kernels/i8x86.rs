//! The x86 table kernels behind [`super::Kernel::Avx2I8`], [`super::Kernel::Avx2I6`] and
//! [`super::Kernel::Avx512I8`]: how each rounds, builds tables and looks them up
//! ([`Lut`]); [`super::lut_driver`] runs them.

use std::cell::RefCell;
use std::thread::LocalKey;

use super::lut_driver::{Bufs, Lut};
use super::lut8::{LEVELS6, StepTable, StepTable6};
use super::x86_avx2 as avx2;
use super::x86_avx512::{self, PairTable};

/// `avx2-i8`: int8 inputs, low- and high-byte pair tables.
#[derive(Debug)]
pub struct Avx2I8;
/// `avx2-i6`: 6-bit inputs, biased byte tables.
#[derive(Debug)]
pub struct Avx2I6;
/// `avx512-i8`: the int8 tables of two steps per 512-bit register.
#[derive(Debug)]
pub struct Avx512I8;

thread_local! {
    static BUFS8: RefCell<Bufs<StepTable>> = RefCell::new(Bufs::default());
    static BUFS6: RefCell<Bufs<StepTable6>> = RefCell::new(Bufs::default());
    static BUFS512: RefCell<Bufs<PairTable>> = RefCell::new(Bufs::default());
    /// The per-step tables [`PairTable`]s are laid out from.
    static STEPS512: RefCell<Vec<StepTable>> = const { RefCell::new(Vec::new()) };
}

/// Every x86 table kernel needs AVX2 (to round the input and build the step tables).
fn check_avx2() {
    assert!(std::arch::is_x86_feature_detected!("avx2"));
}

/// # Safety
/// AVX2; `q.len() >= x.len()`.
unsafe fn quantize(x: &[f32], q: &mut [i8], levels: i8) -> f32 {
    // SAFETY: forwarded.
    unsafe { avx2::quantize_to_avx2(x, q, levels) }
}

impl Lut for Avx512I8 {
    type Table = PairTable;
    const EMPTY: PairTable = PairTable([0; 256]);
    fn count(steps: usize) -> usize {
        steps.div_ceil(2)
    }
    fn bufs() -> &'static LocalKey<RefCell<Bufs<PairTable>>> {
        &BUFS512
    }
    fn check() {
        check_avx2();
        assert!(
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
        );
    }
    unsafe fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
        // SAFETY: forwarded (check() asserted AVX2).
        unsafe { quantize(x, q, 127) }
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [PairTable]) {
        STEPS512.with_borrow_mut(|st| {
            st.resize(steps.max(st.len()), StepTable([0; 64]));
            // SAFETY: AVX2 and AVX-512F (check()); the sizes are the callers' (q: 4 · steps
            // values, t: ceil(steps / 2) tables) and st's.
            unsafe {
                avx2::tables_avx2(q, steps, st);
                x86_avx512::tables_avx512_pairs(st, steps, t);
            }
        });
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[PairTable], y: &mut [f32]) {
        // SAFETY: forwarded; AVX-512 F and BW (check()).
        unsafe { x86_avx512::sums_avx512_lut1(codes, rows, steps, t, y) }
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[PairTable]; 4], ys: [&mut [f32]; 4]) {
        // SAFETY: as above.
        unsafe { x86_avx512::sums_avx512_lut4(codes, rows, steps, t, ys) }
    }
}

impl Lut for Avx2I8 {
    type Table = StepTable;
    const EMPTY: StepTable = StepTable([0; 64]);
    fn bufs() -> &'static LocalKey<RefCell<Bufs<StepTable>>> {
        &BUFS8
    }
    fn check() {
        check_avx2();
    }
    unsafe fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
        // SAFETY: forwarded.
        unsafe { quantize(x, q, 127) }
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [StepTable]) {
        // SAFETY: forwarded.
        unsafe { avx2::tables_avx2(q, steps, t) }
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable], y: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut1(codes, rows, steps, t, y) }
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[StepTable]; 4], ys: [&mut [f32]; 4]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut4(codes, rows, steps, t, ys) }
    }
}

impl Lut for Avx2I6 {
    type Table = StepTable6;
    const EMPTY: StepTable6 = StepTable6([0; 32]);
    fn bufs() -> &'static LocalKey<RefCell<Bufs<StepTable6>>> {
        &BUFS6
    }
    fn check() {
        check_avx2();
    }
    unsafe fn quantize(x: &[f32], q: &mut [i8]) -> f32 {
        // SAFETY: forwarded.
        unsafe { quantize(x, q, LEVELS6) }
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [StepTable6]) {
        // SAFETY: forwarded.
        unsafe { avx2::tables_avx2_i6(q, steps, t) }
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[StepTable6], y: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut6x1(codes, rows, steps, t, y) }
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[StepTable6]; 4], ys: [&mut [f32]; 4]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut6x4(codes, rows, steps, t, ys) }
    }
}
