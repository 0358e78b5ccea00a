//! The driver every table kernel shares (AVX2 / AVX-512 int8, AVX2 / NEON / SIMD128 6-bit):
//! round the input with one scale, build its tables once, look them up for every matrix that
//! reads the same input (or for four inputs per pass over one matrix's codes), and apply
//! α · scale. Each instruction set says how it does those steps through [`Lut`]; the order
//! of the steps, the per-thread buffers and the scaling are written once, here.

use std::cell::RefCell;
use std::thread::LocalKey;

use super::TernaryPlanes;

/// Per-thread buffers of one kernel: rounded inputs and their tables, for up to four inputs.
#[derive(Debug)]
pub struct Bufs<T> {
    q: Vec<i8>,
    tables: [Vec<T>; 4],
}

impl<T> Default for Bufs<T> {
    fn default() -> Self {
        Self { q: Vec::new(), tables: [Vec::new(), Vec::new(), Vec::new(), Vec::new()] }
    }
}

/// One table kernel: its input levels, quantiser, tables and products.
pub trait Lut: 'static {
    /// The tables of one step (or pair of steps).
    type Table: Copy + 'static;
    /// An empty table.
    const EMPTY: Self::Table;
    /// Tables for `steps` steps.
    fn count(steps: usize) -> usize {
        steps
    }
    /// This kernel's per-thread buffers.
    fn bufs() -> &'static LocalKey<RefCell<Bufs<Self::Table>>>;
    /// Panics if this CPU cannot run the kernel (called once per driver call).
    fn check();
    /// Round `x` into `q` (`q.len() >= x.len()`) to the kernel's levels, as
    /// [`super::lut8::quantize_to`] does; returns the scale.
    ///
    /// # Safety
    /// [`Lut::check`] passed.
    unsafe fn quantize(x: &[f32], q: &mut [i8]) -> f32;
    /// # Safety
    /// [`Lut::check`] passed; `q.len() >= 4 * steps`, `t.len() >= Self::count(steps)`.
    unsafe fn build(q: &[i8], steps: usize, t: &mut [Self::Table]);
    /// # Safety
    /// [`Lut::check`] passed; `codes` holds `ceil(rows / 32)` blocks of `steps` steps, `t`
    /// this input's tables, `y.len() >= rows`.
    unsafe fn sums1(codes: &[u8], rows: usize, steps: usize, t: &[Self::Table], y: &mut [f32]);
    /// # Safety
    /// As [`Lut::sums1`], for four inputs.
    unsafe fn sums4(codes: &[u8], rows: usize, steps: usize, t: [&[Self::Table]; 4], ys: [&mut [f32]; 4]);
}

/// Round `x[..cols]` into `q` (zeros up to 4 · steps) and build `t`; returns the input's scale.
fn prepare<L: Lut>(q: &mut Vec<i8>, t: &mut Vec<L::Table>, x: &[f32], cols: usize, steps: usize) -> f32 {
    q.clear();
    q.resize(4 * steps, 0);
    // SAFETY: the callers ran L::check(); q holds 4 · steps >= cols values.
    let s = unsafe { L::quantize(&x[..cols], q) };
    if t.len() < L::count(steps) {
        t.resize(L::count(steps), L::EMPTY);
    }
    // SAFETY: as above; t holds L::count(steps) tables.
    unsafe { L::build(q, steps, t) };
    s
}

/// `ys[i] = α_i · W_i x` for matrices that share the input (same cols): the input is rounded
/// and its tables built once.
pub fn matvecs<L: Lut>(ms: &[&TernaryPlanes], x: &[f32], ys: &mut [&mut [f32]]) {
    L::check();
    let (cols, steps) = (ms[0].cols, ms[0].steps4);
    L::bufs().with_borrow_mut(|b| {
        let Bufs { q, tables } = b;
        let s = prepare::<L>(q, &mut tables[0], x, cols, steps);
        for (m, y) in ms.iter().zip(ys.iter_mut()) {
            assert_eq!(m.cols, cols);
            assert!(m.lut.len() >= m.rows.div_ceil(32) * steps * 32 && y.len() >= m.rows);
            // SAFETY: L::check() passed; the codes, tables and output lengths were checked.
            unsafe { L::sums1(&m.lut, m.rows, steps, &tables[0], y) };
            super::scale_rows(&mut y[..m.rows], m.alpha * s);
        }
    });
}

/// `ys[t] = α · W xs[t]`, four inputs per pass over the codes; equal to [`matvecs`] on each
/// input bit for bit (the integer sums are exact).
pub fn matmul<L: Lut>(m: &TernaryPlanes, xs: &[&[f32]], ys: &mut [&mut [f32]]) {
    L::check();
    assert!(m.lut.len() >= m.rows.div_ceil(32) * m.steps4 * 32);
    let mut xs4 = xs.chunks_exact(4);
    let mut ys4 = ys.chunks_exact_mut(4);
    L::bufs().with_borrow_mut(|b| {
        let Bufs { q, tables } = b;
        for (x4, y4) in (&mut xs4).zip(&mut ys4) {
            let mut s = [0.0f32; 4];
            for ((x, t), s) in x4.iter().zip(tables.iter_mut()).zip(&mut s) {
                *s = prepare::<L>(q, t, x, m.cols, m.steps4);
            }
            let [t0, t1, t2, t3] = &*tables;
            let [y0, y1, y2, y3] = y4 else { unreachable!("chunks of four") };
            // SAFETY: L::check() passed; each table was built for m's steps; outputs hold at
            // least m.rows values (checked by the caller).
            unsafe { L::sums4(&m.lut, m.rows, m.steps4, [t0, t1, t2, t3], [y0, y1, y2, y3]) };
            for (y, s) in y4.iter_mut().zip(s) {
                super::scale_rows(&mut y[..m.rows], m.alpha * s);
            }
        }
    });
    for (x, y) in xs4.remainder().iter().zip(ys4.into_remainder()) {
        matvecs::<L>(&[m], x, &mut [y]);
    }
}
