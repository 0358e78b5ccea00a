//! The AVX2 int8 table kernel behind [`super::Kernel::Avx2I8`]: quantise, build tables, look up.

use std::cell::RefCell;
use std::thread::LocalKey;

use super::TernaryPlanes;
use super::lut8::{LEVELS6, StepTable, StepTable6};
use super::x86_avx2 as avx2;
use super::x86_avx512::{self, PairTable};

/// One of the AVX2 table kernels: its input levels, tables and products.
pub trait Lut: Copy + 'static {
    /// Inputs are rounded to −LEVELS..=LEVELS.
    const LEVELS: i8;
    /// An empty table.
    const EMPTY: Self;
    /// Tables for `steps` steps.
    fn count(steps: usize) -> usize {
        steps
    }
    /// Per-thread buffers of this kind.
    fn bufs() -> &'static LocalKey<RefCell<Bufs<Self>>>;
    /// # Safety
    /// AVX2; `q.len() >= 4 * steps`, `t.len() >= Self::count(steps)`.
    unsafe fn build(q: &[i8], steps: usize, t: &mut [Self]);
    /// # Safety
    /// AVX2; the sizes of [`avx2::sums_lut_avx2`].
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[Self], y: &mut [f32]);
    /// # Safety
    /// AVX2; the sizes of [`avx2::sums_lut_avx2`].
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[Self]; 4], ys: [&mut [f32]; 4]);
}

/// Per-thread buffers: rounded inputs and their tables, for up to four inputs.
pub struct Bufs<T> {
    q: Vec<i8>,
    tables: [Vec<T>; 4],
}

impl<T> Default for Bufs<T> {
    fn default() -> Self {
        Self { q: Vec::new(), tables: [Vec::new(), Vec::new(), Vec::new(), Vec::new()] }
    }
}

thread_local! {
    static BUFS8: RefCell<Bufs<StepTable>> = RefCell::new(Bufs::default());
    static BUFS6: RefCell<Bufs<StepTable6>> = RefCell::new(Bufs::default());
    static BUFS512: RefCell<Bufs<PairTable>> = RefCell::new(Bufs::default());
    /// The per-step tables [`PairTable`]s are laid out from.
    static STEPS512: RefCell<Vec<StepTable>> = const { RefCell::new(Vec::new()) };
}

impl Lut for PairTable {
    const LEVELS: i8 = 127;
    const EMPTY: Self = PairTable([0; 256]);
    fn count(steps: usize) -> usize {
        steps.div_ceil(2)
    }
    fn bufs() -> &'static LocalKey<RefCell<Bufs<Self>>> {
        &BUFS512
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [Self]) {
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        STEPS512.with_borrow_mut(|st| {
            st.resize(steps.max(st.len()), StepTable([0; 64]));
            // SAFETY: AVX2 (the caller) and AVX-512F (just checked); the sizes are the
            // callers' (q: 4 · steps values, t: ceil(steps / 2) tables) and st's.
            unsafe {
                avx2::tables_avx2(q, steps, st);
                x86_avx512::tables_avx512_pairs(st, steps, t);
            }
        });
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[Self], y: &mut [f32]) {
        assert!(std::arch::is_x86_feature_detected!("avx512bw"));
        // SAFETY: forwarded; AVX-512 BW was just checked (F comes with it).
        unsafe { x86_avx512::sums_avx512_lut1(codes, rows, steps, t, y) }
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[Self]; 4], ys: [&mut [f32]; 4]) {
        assert!(std::arch::is_x86_feature_detected!("avx512bw"));
        // SAFETY: as above.
        unsafe { x86_avx512::sums_avx512_lut4(codes, rows, steps, t, ys) }
    }
}

impl Lut for StepTable {
    const LEVELS: i8 = 127;
    const EMPTY: Self = StepTable([0; 64]);
    fn bufs() -> &'static LocalKey<RefCell<Bufs<Self>>> {
        &BUFS8
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [Self]) {
        // SAFETY: forwarded.
        unsafe { avx2::tables_avx2(q, steps, t) }
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[Self], y: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut1(codes, rows, steps, t, y) }
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[Self]; 4], ys: [&mut [f32]; 4]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut4(codes, rows, steps, t, ys) }
    }
}

impl Lut for StepTable6 {
    const LEVELS: i8 = LEVELS6;
    const EMPTY: Self = StepTable6([0; 32]);
    fn bufs() -> &'static LocalKey<RefCell<Bufs<Self>>> {
        &BUFS6
    }
    unsafe fn build(q: &[i8], steps: usize, t: &mut [Self]) {
        // SAFETY: forwarded.
        unsafe { avx2::tables_avx2_i6(q, steps, t) }
    }
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[Self], y: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut6x1(codes, rows, steps, t, y) }
    }
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[Self]; 4], ys: [&mut [f32]; 4]) {
        // SAFETY: forwarded.
        unsafe { avx2::sums_avx2_lut6x4(codes, rows, steps, t, ys) }
    }
}

/// Round `x[..cols]` to the kind's levels into `q` (zeros up to 4 · steps) and build
/// `t`; returns the input's scale.
fn prepare<T: Lut>(q: &mut Vec<i8>, t: &mut Vec<T>, x: &[f32], cols: usize, steps: usize) -> f32 {
    q.clear();
    q.resize(4 * steps, 0);
    // SAFETY: the caller checked AVX2; q holds 4 · steps >= cols values.
    let s = unsafe { avx2::quantize_to_avx2(&x[..cols], q, T::LEVELS) };
    if t.len() < T::count(steps) {
        t.resize(T::count(steps), T::EMPTY);
    }
    // SAFETY: the caller checked AVX2; q holds 4 · steps values and t T::count(steps).
    unsafe { T::build(q, steps, t) };
    s
}

/// `ys[i] = α_i · W_i x` for matrices that share the input (same cols): the input is
/// rounded and its tables built once.
pub fn matvecs<T: Lut>(ms: &[&TernaryPlanes], x: &[f32], ys: &mut [&mut [f32]]) {
    assert!(std::arch::is_x86_feature_detected!("avx2"));
    let (cols, steps) = (ms[0].cols, ms[0].steps4);
    T::bufs().with_borrow_mut(|b| {
        let Bufs { q, tables } = b;
        let s = prepare(q, &mut tables[0], x, cols, steps);
        for (m, y) in ms.iter().zip(ys.iter_mut()) {
            assert_eq!(m.cols, cols);
            assert!(m.lut.len() >= m.rows.div_ceil(32) * steps * 32 && y.len() >= m.rows);
            // SAFETY: AVX2 was checked; the codes, tables and output lengths were checked.
            unsafe { T::sums1(&m.lut, m.rows, steps, &tables[0], y) };
            super::scale_rows(&mut y[..m.rows], m.alpha * s);
        }
    });
}

/// `ys[t] = α · W xs[t]`, four inputs per pass over the codes; equal to [`matvecs`] on
/// each input bit for bit (the integer sums are exact).
pub fn matmul<T: Lut>(m: &TernaryPlanes, xs: &[&[f32]], ys: &mut [&mut [f32]]) {
    assert!(std::arch::is_x86_feature_detected!("avx2"));
    assert!(m.lut.len() >= m.rows.div_ceil(32) * m.steps4 * 32);
    let mut xs4 = xs.chunks_exact(4);
    let mut ys4 = ys.chunks_exact_mut(4);
    T::bufs().with_borrow_mut(|b| {
        let Bufs { q, tables } = b;
        for (x4, y4) in (&mut xs4).zip(&mut ys4) {
            let mut s = [0.0f32; 4];
            for ((x, t), s) in x4.iter().zip(tables.iter_mut()).zip(&mut s) {
                *s = prepare(q, t, x, m.cols, m.steps4);
            }
            let [t0, t1, t2, t3] = &*tables;
            let [y0, y1, y2, y3] = y4 else { unreachable!("chunks of four") };
            // SAFETY: AVX2 was checked; each table was built for m's steps; outputs hold
            // at least m.rows values (checked by the caller).
            unsafe { T::sums4(&m.lut, m.rows, m.steps4, [t0, t1, t2, t3], [y0, y1, y2, y3]) };
            for (y, s) in y4.iter_mut().zip(s) {
                super::scale_rows(&mut y[..m.rows], m.alpha * s);
            }
        }
    });
    for (x, y) in xs4.remainder().iter().zip(ys4.into_remainder()) {
        matvecs::<T>(&[m], x, &mut [y]);
    }
}
