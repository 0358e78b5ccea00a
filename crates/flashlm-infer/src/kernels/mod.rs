//! Ternary matrix-vector kernels: `y[r] = Σ_{w[r,i]=+1} x[i] − Σ_{w[r,i]=−1} x[i]`.
//!
//! The `.flm` file has one layout for every CPU (2-bit codes, row-major). At load time each
//! matrix is repacked for the kernels ([`TernaryPlanes`]): two bit planes per row, and look-up
//! codes for groups of three inputs. The kernels return raw sums; the per-matrix scale α is
//! applied afterwards, so the kernels contain no multiply of any kind
//! (`scripts/check-no-multiply.sh` checks the disassembly of every `sums_*` function):
//! * [`Kernel::Scalar`]: portable; walks the set bits of each plane word (the fallback).
//! * [`Kernel::Avx2`] (default without AVX-512): 8 rows per register. For every group of
//!   three inputs the 8 subset sums are built with adds; the plus bits and the minus bits of
//!   each row's group select one each (`vpermps`), added and subtracted.
//! * [`Kernel::Avx512`] (default with AVX-512F): 16 rows per register. For every group of
//!   three inputs a 27-entry table of all ±/0 sums is built with masked adds/subtracts; each
//!   row's 5-bit code selects its entry with a two-register permute (`vpermi2ps`): one
//!   permute and one add per 48 weights, no horizontal sums (T-MAC / TL2 style).
//! * [`Kernel::Avx2Mask`], [`Kernel::Avx512Mask`]: the earlier masked add/sub kernels on the
//!   bit planes, kept for comparison (`--kernel avx2-mask` / `avx512-mask`).
//!
//! The choice is made once ([`Kernel::detect`], or `--kernel` / `FLASHLM_KERNEL`), and every
//! kernel is tested against [`matvec_reference`] on all sizes 1..=300 (bit-identical with
//! small-integer inputs) and on the model shapes.

/// A ternary matrix repacked for the kernels: bit planes and look-up codes.
#[derive(Debug, Clone)]
pub struct TernaryPlanes {
    /// Output rows.
    pub rows: usize,
    /// Inputs per row.
    pub cols: usize,
    /// 64-bit words per row per plane: ceil(cols / 64).
    pub words: usize,
    /// [rows * words] bit i of row r set where w[r, i] = +1.
    pub plus: Vec<u64>,
    /// [rows * words] bit i of row r set where w[r, i] = −1.
    pub minus: Vec<u64>,
    /// Per-matrix scale α.
    pub alpha: f32,
    /// Blocks of 16 rows: ceil(rows / 16).
    pub row_blocks: usize,
    /// Quads of four 3-input groups per row: ceil(ceil(cols / 3) / 4).
    pub quads: usize,
    /// [row_blocks, quads, 16] look-up codes for the table kernel: lane = row within the
    /// block, byte b of the word = code of group 4q+b, code = 9(w0+1) + 3(w1+1) + (w2+1)
    /// for that group's three weights (weights past the matrix count as 0: code 13).
    pub codes: Vec<u32>,
    /// [ceil(rows / 8), quads, 8] codes for the AVX2 table kernel: lane = row within the
    /// block of 8, byte b of the word = plus bits (w = +1) of group 4q+b's three inputs in
    /// bits 0..3 and its minus bits (w = −1) in bits 4..7.
    pub codes8: Vec<u32>,
    /// Steps of four inputs for the int8 table kernels: ceil(cols / 4).
    pub steps4: usize,
    /// [ceil(rows / 32), steps4, 32] pair codes for the int8 table kernels
    /// ([`lut8::lut_codes`]).
    pub lut: Vec<u8>,
    /// [ceil(rows / 16), cols, 2] bit planes of the portable kernel ([`portable::planes16`]).
    pub planes16: Vec<u16>,
}

impl TernaryPlanes {
    /// Build planes from ternary values (row-major [rows, cols], each in {-1, 0, 1}).
    pub fn from_ternary(w: &[i8], rows: usize, cols: usize, alpha: f32) -> Self {
        assert_eq!(w.len(), rows * cols, "weights do not match the shape");
        let words = cols.div_ceil(64);
        let mut plus = vec![0u64; rows * words];
        let mut minus = vec![0u64; rows * words];
        for r in 0..rows {
            for c in 0..cols {
                let bit = 1u64 << (c % 64);
                match w[r * cols + c] {
                    1 => plus[r * words + c / 64] |= bit,
                    -1 => minus[r * words + c / 64] |= bit,
                    _ => {}
                }
            }
        }
        let row_blocks = rows.div_ceil(16);
        let quads = cols.div_ceil(3).div_ceil(4);
        // 27-way code of the group's three weights: 9(w0+1) + 3(w1+1) + (w2+1).
        let codes = lane_words(w, rows, cols, 16, |g| g.iter().fold(0, |c, &t| c * 3 + (t + 1) as u32));
        // Plus bits in bits 0..3, minus bits in bits 4..7.
        let codes8 = lane_words(w, rows, cols, 8, |g| {
            g.iter().enumerate().fold(0, |b, (j, &t)| match t {
                1 => b | 1 << j,
                -1 => b | 1 << (4 + j),
                _ => b,
            })
        });
        let (steps4, lut) = (lut8::steps(cols), lut8::lut_codes(w, rows, cols));
        let planes16 = portable::planes16(w, rows, cols);
        Self {
            rows,
            cols,
            words,
            plus,
            minus,
            alpha,
            row_blocks,
            quads,
            codes,
            codes8,
            steps4,
            lut,
            planes16,
        }
    }

    /// Inputs the kernels read per row: cols rounded up to 64 (pad `x` with zeros).
    pub fn padded_cols(&self) -> usize {
        self.words * 64
    }
}

/// Code words for a table kernel with `lanes` rows per register: [ceil(rows / lanes), quads,
/// lanes] u32, byte b of a word = `byte(weights of group 4q+b)` for that row (weights past the
/// matrix count as 0).
fn lane_words(w: &[i8], rows: usize, cols: usize, lanes: usize, byte: impl Fn([i8; 3]) -> u32) -> Vec<u32> {
    let quads = cols.div_ceil(3).div_ceil(4);
    let blocks = rows.div_ceil(lanes);
    let mut out = vec![0u32; blocks * quads * lanes];
    for rb in 0..blocks {
        for q in 0..quads {
            for lane in 0..lanes {
                let r = rb * lanes + lane;
                let mut word = 0u32;
                for b in 0..4 {
                    let mut g = [0i8; 3];
                    for (j, t) in g.iter_mut().enumerate() {
                        let c = (q * 4 + b) * 3 + j;
                        if r < rows && c < cols {
                            *t = w[r * cols + c];
                        }
                    }
                    word |= byte(g) << (8 * b);
                }
                out[(rb * quads + q) * lanes + lane] = word;
            }
        }
    }
    out
}

/// The slow, obvious reference: one add or subtract per non-zero weight, scaled by α.
pub fn matvec_reference(w: &[i8], rows: usize, cols: usize, alpha: f32, x: &[f32]) -> Vec<f32> {
    (0..rows)
        .map(|r| {
            let mut s = 0.0f32;
            for c in 0..cols {
                match w[r * cols + c] {
                    1 => s += x[c],
                    -1 => s -= x[c],
                    _ => {}
                }
            }
            s * alpha
        })
        .collect()
}

/// Available kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable scalar code: walks the set bits (the exact reference everywhere).
    Scalar,
    /// Portable code that the compiler vectorises for any target, on int8 activations
    /// ([`portable`]): the default without AVX2 (ARM, older x86).
    Portable,
    /// x86-64 AVX2, masked adds through a byte-mask table (kept for comparison).
    Avx2Mask,
    /// x86-64 AVX2, 8 rows per register, look-up tables of 3-input subset sums.
    Avx2,
    /// x86-64 AVX2 on int8 activations (one scale per vector): `vpshufb` look-up tables of
    /// pair sums, 32 rows per register ([`lut8`]). Not exact in f32: the input is rounded.
    Avx2I8,
    /// x86-64 AVX-512 (F), masked add/sub on the bit planes (kept for comparison).
    Avx512Mask,
    /// x86-64 AVX-512 (F), 16 rows per register, look-up tables of 3-input sums.
    Avx512,
}

/// Every kernel, in the order [`Kernel::available`] lists them.
const ALL: [Kernel; 7] = [
    Kernel::Scalar,
    Kernel::Portable,
    Kernel::Avx2Mask,
    Kernel::Avx2,
    Kernel::Avx2I8,
    Kernel::Avx512Mask,
    Kernel::Avx512,
];

impl Kernel {
    /// Whether this CPU can run the kernel.
    pub fn runs_here(self) -> bool {
        match self {
            Kernel::Scalar | Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Mask | Kernel::Avx2 | Kernel::Avx2I8 => crate::cpu::avx2(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Mask | Kernel::Avx512 => crate::cpu::avx512f(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// What the CPU lacks to run the kernel (None if it runs here).
    pub fn missing(self) -> Option<&'static str> {
        match self {
            _ if self.runs_here() => None,
            Kernel::Avx2Mask | Kernel::Avx2 | Kernel::Avx2I8 => Some("AVX2 (or FLASHLM_ISA caps it)"),
            Kernel::Avx512Mask | Kernel::Avx512 => Some("AVX-512F (or FLASHLM_ISA caps it)"),
            Kernel::Scalar | Kernel::Portable => None,
        }
    }

    /// Every kernel this CPU can run.
    pub fn available() -> Vec<Kernel> {
        ALL.into_iter().filter(|k| k.runs_here()).collect()
    }

    /// Every kernel of this build that this CPU cannot run, with what it lacks (tests print
    /// these so a machine without AVX-512 never passes silently).
    pub fn unavailable() -> Vec<(Kernel, &'static str)> {
        ALL.into_iter().filter_map(|k| k.missing().map(|m| (k, m))).collect()
    }

    /// Whether the kernel computes the f32 sums exactly (up to float reassociation); the
    /// int8 kernels round the input first.
    pub fn is_exact(self) -> bool {
        !matches!(self, Kernel::Avx2I8 | Kernel::Portable)
    }

    /// The exact (f32-activation) kernels this CPU runs: what the parity tests use.
    pub fn available_exact() -> Vec<Kernel> {
        Kernel::available().into_iter().filter(|k| k.is_exact()).collect()
    }

    /// The default kernel: `avx512` with AVX-512F, else `avx2-i8` with AVX2, else
    /// `portable` (both on int8 activations: on the bundled model they cost 0.0001 BPC,
    /// README).
    pub fn detect() -> Kernel {
        [Kernel::Avx512, Kernel::Avx2I8].into_iter().find(|k| k.runs_here()).unwrap_or(Kernel::Portable)
    }

    /// The fastest exact kernel this CPU runs (`avx512`, `avx2` or `scalar`).
    pub fn detect_exact() -> Kernel {
        [Kernel::Avx512, Kernel::Avx2].into_iter().find(|k| k.runs_here()).unwrap_or(Kernel::Scalar)
    }

    /// Kernel by name (`scalar`, `avx2`, `avx2-i8`, `avx512`, ..., `auto`, `exact`); errors
    /// if unknown or not supported here.
    pub fn from_name(name: &str) -> Result<Kernel, String> {
        let k = match name.to_ascii_lowercase().as_str() {
            "auto" => return Ok(Kernel::detect()),
            "exact" => return Ok(Kernel::detect_exact()),
            "avx-512" => Kernel::Avx512,
            other => match ALL.into_iter().find(|k| k.name() == other) {
                Some(k) => k,
                None => {
                    let names: Vec<&str> = ALL.iter().map(|k| k.name()).collect();
                    return Err(format!(
                        "unknown kernel {other:?} (one of {}, auto, exact)",
                        names.join(", ")
                    ));
                }
            },
        };
        if let Some(lack) = k.missing() {
            let names: Vec<&str> = Kernel::available().iter().map(|k| k.name()).collect();
            return Err(format!(
                "kernel {name} needs {lack}, which this CPU does not have (available here: {})",
                names.join(", ")
            ));
        }
        Ok(k)
    }

    /// Name as accepted by [`Kernel::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx2I8 => "avx2-i8",
            Kernel::Avx2Mask => "avx2-mask",
            Kernel::Avx512Mask => "avx512-mask",
            Kernel::Avx512 => "avx512",
        }
    }

    /// `y[r] = α · Σ ±x` for every row. `x` must hold at least `m.padded_cols()` values
    /// (zeros past `m.cols`); `y` at least `m.rows`.
    pub fn matvec(self, m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
        assert!(x.len() >= m.padded_cols(), "input shorter than the padded row");
        assert!(y.len() >= m.rows, "output shorter than the rows");
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx2I8 {
            i8x86::matvecs(&[m], x, &mut [y]);
            return;
        }
        if self == Kernel::Portable {
            PORTABLE_Q.with_borrow_mut(|q| {
                q.resize(m.cols, 0);
                let s = lut8::quantize(&x[..m.cols], q);
                portable::sums_portable(&m.planes16, m.rows, m.cols, q, y);
                scale_rows(&mut y[..m.rows], m.alpha * s);
            });
            return;
        }
        match self {
            Kernel::Scalar => sums_scalar(m, x, y),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Mask => {
                assert!(std::arch::is_x86_feature_detected!("avx2"));
                // SAFETY: AVX2 support was just checked; lengths were checked above.
                unsafe { x86::sums_avx2_mask(m, x, y) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(std::arch::is_x86_feature_detected!("avx2"));
                x86::TABLES8.with_borrow_mut(|tables| {
                    // SAFETY: AVX2 support was just checked; lengths were checked above.
                    unsafe { x86::sums_avx2(m, x, y, tables) }
                });
            }
            Kernel::Portable => unreachable!("handled above"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2I8 => unreachable!("handled above"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Mask => {
                assert!(std::arch::is_x86_feature_detected!("avx512f"));
                // SAFETY: AVX-512F support was just checked; lengths were checked above.
                unsafe { x86::sums_avx512_mask(m, x, y) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                assert!(std::arch::is_x86_feature_detected!("avx512f"));
                x86::TABLES.with_borrow_mut(|tables| {
                    // SAFETY: AVX-512F support was just checked; lengths were checked above.
                    unsafe {
                        x86::sums_avx512_tables(x, m.cols, m.quads, tables);
                        x86::sums_avx512_apply(m, tables, y);
                    }
                });
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => sums_scalar(m, x, y),
        }
        scale_rows(&mut y[..m.rows], m.alpha);
    }
}

impl Kernel {
    /// `matvec` of two matrices with the same input (`a.cols == b.cols`); the table kernels
    /// build the input's tables once for both.
    pub fn matvec2(self, a: &TernaryPlanes, b: &TernaryPlanes, x: &[f32], ya: &mut [f32], yb: &mut [f32]) {
        assert_eq!(a.cols, b.cols, "matvec2 needs matrices with the same input");
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx2I8 {
            assert!(x.len() >= a.padded_cols(), "input shorter than the padded row");
            assert!(ya.len() >= a.rows && yb.len() >= b.rows, "output shorter than the rows");
            i8x86::matvecs(&[a, b], x, &mut [ya, yb]);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            assert!(x.len() >= a.padded_cols(), "input shorter than the padded row");
            assert!(ya.len() >= a.rows && yb.len() >= b.rows, "output shorter than the rows");
            assert!(std::arch::is_x86_feature_detected!("avx512f"));
            x86::TABLES.with_borrow_mut(|tables| {
                // SAFETY: AVX-512F support was just checked; lengths were checked above; a and
                // b have the same cols, and quads follows from cols.
                unsafe {
                    x86::sums_avx512_tables(x, a.cols, a.quads, tables);
                    x86::sums_avx512_apply(a, tables, ya);
                    x86::sums_avx512_apply(b, tables, yb);
                }
            });
            scale_rows(&mut ya[..a.rows], a.alpha);
            scale_rows(&mut yb[..b.rows], b.alpha);
            return;
        }
        self.matvec(a, x, ya);
        self.matvec(b, x, yb);
    }
}

impl Kernel {
    /// `matvec` for several inputs: `ys[t] = α · W xs[t]`. The AVX-512 table kernel reads
    /// each code word once for four inputs; results equal `matvec` on each input exactly.
    pub fn matmul(self, m: &TernaryPlanes, xs: &[&[f32]], ys: &mut [&mut [f32]]) {
        assert_eq!(xs.len(), ys.len(), "one output per input");
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx2I8 {
            assert!(xs.iter().all(|x| x.len() >= m.padded_cols()), "input shorter than the padded row");
            assert!(ys.iter().all(|y| y.len() >= m.rows), "output shorter than the rows");
            i8x86::matmul(m, xs, ys);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            assert!(std::arch::is_x86_feature_detected!("avx512f"));
            assert!(xs.iter().all(|x| x.len() >= m.padded_cols()), "input shorter than the padded row");
            assert!(ys.iter().all(|y| y.len() >= m.rows), "output shorter than the rows");
            let mut xs4 = xs.chunks_exact(4);
            let mut ys4 = ys.chunks_exact_mut(4);
            x86::TABLES4.with_borrow_mut(|tables| {
                for (x4, y4) in (&mut xs4).zip(&mut ys4) {
                    for (x, t) in x4.iter().zip(tables.iter_mut()) {
                        // SAFETY: AVX-512F was checked; lengths were checked above.
                        unsafe { x86::sums_avx512_tables(x, m.cols, m.quads, t) };
                    }
                    let [t0, t1, t2, t3] = &*tables;
                    let [y0, y1, y2, y3] = y4 else { unreachable!("chunks of four") };
                    // SAFETY: AVX-512F was checked; each table was built for m; outputs hold
                    // at least m.rows values.
                    unsafe { x86::sums_avx512_apply4(m, [t0, t1, t2, t3], [y0, y1, y2, y3]) };
                    for y in y4.iter_mut() {
                        scale_rows(&mut y[..m.rows], m.alpha);
                    }
                }
            });
            for (x, y) in xs4.remainder().iter().zip(ys4.into_remainder()) {
                self.matvec(m, x, y);
            }
            return;
        }
        for (x, y) in xs.iter().zip(ys.iter_mut()) {
            self.matvec(m, x, y);
        }
    }
}

/// Multiply the raw sums by α (kept out of the kernels, which must not multiply).
#[inline(never)]
fn scale_rows(y: &mut [f32], alpha: f32) {
    for v in y {
        *v *= alpha;
    }
}

/// Portable kernel: add the inputs under set plus bits, subtract those under minus bits.
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

pub mod lut8;
pub mod portable;

thread_local! {
    /// Per-thread rounded input of the portable kernel.
    static PORTABLE_Q: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The AVX2 int8 table kernel behind [`Kernel::Avx2I8`]: quantise, build tables, look up.
#[cfg(target_arch = "x86_64")]
mod i8x86 {
    use super::TernaryPlanes;
    use super::lut8::{StepTable, avx2};

    /// Per-thread buffers: rounded inputs and their tables, for up to four inputs.
    #[derive(Default)]
    struct Bufs {
        q: Vec<i8>,
        tables: [Vec<StepTable>; 4],
    }

    thread_local! {
        static BUFS: std::cell::RefCell<Bufs> = std::cell::RefCell::new(Bufs::default());
    }

    /// Round `x[..cols]` to int8 into `q` (zeros up to 4 · steps) and build `t`; returns the
    /// input's scale.
    fn prepare(q: &mut Vec<i8>, t: &mut Vec<StepTable>, x: &[f32], cols: usize, steps: usize) -> f32 {
        q.clear();
        q.resize(4 * steps, 0);
        // SAFETY: the caller checked AVX2; q holds 4 · steps >= cols values.
        let s = unsafe { avx2::quantize_avx2(&x[..cols], q) };
        if t.len() < steps {
            t.resize(steps, StepTable([0; 64]));
        }
        // SAFETY: the caller checked AVX2; q holds 4 · steps values and t at least steps.
        unsafe { avx2::tables_avx2(q, steps, t) };
        s
    }

    /// `ys[i] = α_i · W_i x` for matrices that share the input (same cols): the input is
    /// rounded and its tables built once.
    pub fn matvecs(ms: &[&TernaryPlanes], x: &[f32], ys: &mut [&mut [f32]]) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        let (cols, steps) = (ms[0].cols, ms[0].steps4);
        BUFS.with_borrow_mut(|b| {
            let Bufs { q, tables } = b;
            let s = prepare(q, &mut tables[0], x, cols, steps);
            for (m, y) in ms.iter().zip(ys.iter_mut()) {
                assert_eq!(m.cols, cols);
                // SAFETY: AVX2 was checked; m.lut has ceil(rows / 32) · steps · 32 codes, the
                // tables hold at least steps, y at least m.rows values (checked by callers).
                unsafe { avx2::sums_avx2_lut1(&m.lut, m.rows, steps, &tables[0], y) };
                super::scale_rows(&mut y[..m.rows], m.alpha * s);
            }
        });
    }

    /// `ys[t] = α · W xs[t]`, four inputs per pass over the codes; equal to [`matvecs`] on
    /// each input bit for bit (the integer sums are exact).
    pub fn matmul(m: &TernaryPlanes, xs: &[&[f32]], ys: &mut [&mut [f32]]) {
        assert!(std::arch::is_x86_feature_detected!("avx2"));
        let mut xs4 = xs.chunks_exact(4);
        let mut ys4 = ys.chunks_exact_mut(4);
        BUFS.with_borrow_mut(|b| {
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
                unsafe { avx2::sums_avx2_lut4(&m.lut, m.rows, m.steps4, [t0, t1, t2, t3], [y0, y1, y2, y3]) };
                for (y, s) in y4.iter_mut().zip(s) {
                    super::scale_rows(&mut y[..m.rows], m.alpha * s);
                }
            }
        });
        for (x, y) in xs4.remainder().iter().zip(ys4.into_remainder()) {
            matvecs(&[m], x, &mut [y]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::TernaryPlanes;
    use std::arch::x86_64::*;

    /// For each byte value b, eight i32 lanes: lane j is all ones where bit j of b is set.
    static BYTE_MASKS: [[i32; 8]; 256] = {
        let mut t = [[0i32; 8]; 256];
        let mut b = 0;
        while b < 256 {
            let mut j = 0;
            while j < 8 {
                if (b >> j) & 1 == 1 {
                    t[b][j] = -1;
                }
                j += 1;
            }
            b += 1;
        }
        t
    };

    /// AVX2 sums.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x.len() >= m.words * 64`, `y.len() >= m.rows`.
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    pub unsafe fn sums_avx2_mask(m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
        let table = BYTE_MASKS.as_ptr();
        let (mut plus, mut minus) = (&m.plus[..], &m.minus[..]);
        for out in y.iter_mut().take(m.rows) {
            let (prow, prest) = plus.split_at(m.words);
            let (nrow, nrest) = minus.split_at(m.words);
            (plus, minus) = (prest, nrest);
            // Independent accumulators for even and odd bytes break the add chains.
            let mut pos = [_mm256_setzero_ps(); 2];
            let mut neg = [_mm256_setzero_ps(); 2];
            for ((&p, &n), xs) in prow.iter().zip(nrow).zip(x.chunks_exact(64)) {
                if p | n == 0 {
                    continue;
                }
                let xp = xs.as_ptr();
                for byte in 0..8 {
                    let pb = ((p >> (8 * byte)) & 0xFF) as usize;
                    let nb = ((n >> (8 * byte)) & 0xFF) as usize;
                    // SAFETY: byte * 8 + 8 <= 64 = xs.len(); pb, nb < 256 = table rows.
                    let xv = unsafe { _mm256_loadu_ps(xp.add(byte * 8)) };
                    let pm = unsafe { _mm256_loadu_si256(table.add(pb) as *const __m256i) };
                    let nm = unsafe { _mm256_loadu_si256(table.add(nb) as *const __m256i) };
                    let k = byte & 1;
                    pos[k] = _mm256_add_ps(pos[k], _mm256_and_ps(xv, _mm256_castsi256_ps(pm)));
                    neg[k] = _mm256_add_ps(neg[k], _mm256_and_ps(xv, _mm256_castsi256_ps(nm)));
                }
            }
            let acc0 = _mm256_add_ps(pos[0], pos[1]);
            let acc1 = _mm256_add_ps(neg[0], neg[1]);
            let d = _mm256_sub_ps(acc0, acc1);
            // Horizontal sum: shuffles and adds.
            let lo = _mm256_castps256_ps128(d);
            let hi = _mm256_extractf128_ps(d, 1);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            *out = _mm_cvtss_f32(s);
        }
    }

    /// AVX-512 sums.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `x.len() >= m.words * 64`, `y.len() >= m.rows`.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    pub unsafe fn sums_avx512_mask(m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
        let (mut plus, mut minus) = (&m.plus[..], &m.minus[..]);
        for out in y.iter_mut().take(m.rows) {
            let (prow, prest) = plus.split_at(m.words);
            let (nrow, nrest) = minus.split_at(m.words);
            (plus, minus) = (prest, nrest);
            // Four independent accumulators (one per 16-input quarter of a word) so the
            // masked adds do not wait on each other.
            let mut acc = [_mm512_setzero_ps(); 4];
            for ((&p, &n), xs) in prow.iter().zip(nrow).zip(x.chunks_exact(64)) {
                let xp = xs.as_ptr();
                for (q, a) in acc.iter_mut().enumerate() {
                    let kp = (p >> (16 * q)) as u16;
                    let kn = (n >> (16 * q)) as u16;
                    // SAFETY: q * 16 + 16 <= 64 = xs.len().
                    let xv = unsafe { _mm512_loadu_ps(xp.add(q * 16)) };
                    *a = _mm512_mask_add_ps(*a, kp, *a, xv);
                    *a = _mm512_mask_sub_ps(*a, kn, *a, xv);
                }
            }
            let acc = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            *out = _mm512_reduce_add_ps(acc);
        }
    }

    /// Sixteen f32 lanes, aligned to a cache line.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    pub struct Lanes(pub [f32; 16]);

    thread_local! {
        /// Per-thread tables for [`sums_avx512`]: two registers (32 slots) per 3-input group.
        pub static TABLES: std::cell::RefCell<Vec<Lanes>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Slots (bit c for code c, 0..27) whose digit `pos` (0 = most significant, weight of
    /// the group's first input) equals `val`.
    const fn digit_mask(pos: u32, val: u32) -> u32 {
        let mut m = 0u32;
        let mut c = 0;
        while c < 27 {
            let digit = match pos {
                0 => c / 9,
                1 => (c / 3) % 3,
                _ => c % 3,
            };
            if digit == val {
                m |= 1 << c;
            }
            c += 1;
        }
        m
    }
    const PLUS: [u32; 3] = [digit_mask(0, 2), digit_mask(1, 2), digit_mask(2, 2)];
    const MINUS: [u32; 3] = [digit_mask(0, 0), digit_mask(1, 0), digit_mask(2, 0)];

    /// Slot i of the second table register holds code 16+i = −(code 10−i) (flipping every
    /// digit negates the sum), so it is the first register reversed and negated.
    const REVERSE: [i32; 16] = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0];

    /// One group's two table registers from its three inputs.
    #[inline(always)]
    fn group_table(x0: f32, x1: f32, x2: f32, pair: &mut [Lanes]) {
        // SAFETY (whole function): only called from AVX-512F functions; pair has two Lanes,
        // each 64 bytes and 64-byte aligned.
        unsafe {
            let zero = _mm512_setzero_ps();
            // Codes 0..=15: the first digit is 0 (w0 = −1) for codes 0..=8, 1 (w0 = 0) after.
            let mut lo = _mm512_mask_sub_ps(zero, MINUS[0] as u16, zero, _mm512_set1_ps(x0));
            let x1b = _mm512_set1_ps(x1);
            lo = _mm512_mask_add_ps(lo, PLUS[1] as u16, lo, x1b);
            lo = _mm512_mask_sub_ps(lo, MINUS[1] as u16, lo, x1b);
            let x2b = _mm512_set1_ps(x2);
            lo = _mm512_mask_add_ps(lo, PLUS[2] as u16, lo, x2b);
            lo = _mm512_mask_sub_ps(lo, MINUS[2] as u16, lo, x2b);
            let rev = _mm512_loadu_si512(REVERSE.as_ptr() as *const _);
            let hi = _mm512_sub_ps(zero, _mm512_permutexvar_ps(rev, lo));
            _mm512_store_ps(pair[0].0.as_mut_ptr(), lo);
            _mm512_store_ps(pair[1].0.as_mut_ptr(), hi);
        }
    }

    /// Tables for the AVX-512 table kernel: two registers per group of three inputs of
    /// `x[..cols]`, `quads * 4` groups (zeros past the end).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    pub unsafe fn sums_avx512_tables(x: &[f32], cols: usize, quads: usize, tables: &mut Vec<Lanes>) {
        if tables.len() < quads * 8 {
            tables.resize(quads * 8, Lanes([0.0; 16]));
        }
        let mut pairs = tables[..quads * 8].chunks_exact_mut(2);
        // Peel three inputs at a time (`chunks_exact(3)` would divide by 3 with a multiply).
        let mut rest = &x[..cols];
        while rest.len() >= 3 {
            let Some(pair) = pairs.next() else { break };
            group_table(rest[0], rest[1], rest[2], pair);
            rest = &rest[3..];
        }
        if !rest.is_empty() && rest.len() < 3 {
            let mut v = [0.0f32; 3];
            v[..rest.len()].copy_from_slice(rest);
            if let Some(pair) = pairs.next() {
                group_table(v[0], v[1], v[2], pair);
            }
        }
        for pair in pairs {
            group_table(0.0, 0.0, 0.0, pair);
        }
    }

    /// AVX-512 table kernel (T-MAC style, rows in lanes), given the tables of its input.
    ///
    /// For every group of three inputs, [`sums_avx512_tables`] holds a 27-entry table of
    /// all their ±/0 sums (two registers, built with masked adds and subtracts). For every
    /// block of 16 rows, each code word selects one table entry per row with a two-register
    /// permute (`vpermi2ps`) and the entries are added: one permute and one add per 48
    /// weights, no horizontal sums.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `tables` built for `m.cols` and `m.quads`;
    /// `y.len() >= m.rows`.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    pub unsafe fn sums_avx512_apply(m: &TernaryPlanes, tables: &[Lanes], y: &mut [f32]) {
        if m.quads == 0 {
            y[..m.rows].fill(0.0);
            return;
        }
        assert!(tables.len() >= m.quads * 8);
        let mut out = y[..m.rows].chunks_mut(16);
        for block in m.codes.chunks_exact(m.quads * 16) {
            let mut acc = [_mm512_setzero_ps(); 4];
            for (words, t) in block.chunks_exact(16).zip(tables.chunks_exact(8)) {
                // SAFETY: words holds 16 u32 (64 bytes); every Lanes is 64 bytes, aligned.
                unsafe {
                    let idx = _mm512_loadu_si512(words.as_ptr() as *const _);
                    let tp = t.as_ptr() as *const f32;
                    // vpermi2ps reads bits 0..=3 (slot) and bit 4 (which register) of each
                    // lane, so byte b of the code word is reached by a right shift.
                    let i0 = idx;
                    let i1 = _mm512_srli_epi32::<8>(idx);
                    let i2 = _mm512_srli_epi32::<16>(idx);
                    let i3 = _mm512_srli_epi32::<24>(idx);
                    let r0 = _mm512_permutex2var_ps(_mm512_load_ps(tp), i0, _mm512_load_ps(tp.add(16)));
                    let r1 =
                        _mm512_permutex2var_ps(_mm512_load_ps(tp.add(32)), i1, _mm512_load_ps(tp.add(48)));
                    let r2 =
                        _mm512_permutex2var_ps(_mm512_load_ps(tp.add(64)), i2, _mm512_load_ps(tp.add(80)));
                    let r3 =
                        _mm512_permutex2var_ps(_mm512_load_ps(tp.add(96)), i3, _mm512_load_ps(tp.add(112)));
                    acc[0] = _mm512_add_ps(acc[0], r0);
                    acc[1] = _mm512_add_ps(acc[1], r1);
                    acc[2] = _mm512_add_ps(acc[2], r2);
                    acc[3] = _mm512_add_ps(acc[3], r3);
                }
            }
            let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            let Some(dst) = out.next() else { break };
            let mut lanes = Lanes([0.0; 16]);
            // SAFETY: lanes is 64 bytes, 64-byte aligned.
            unsafe { _mm512_store_ps(lanes.0.as_mut_ptr(), sum) };
            dst.copy_from_slice(&lanes.0[..dst.len()]);
        }
    }

    thread_local! {
        /// Per-thread tables of four inputs for [`sums_avx512_apply4`].
        pub static TABLES4: std::cell::RefCell<[Vec<Lanes>; 4]> = const {
            std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()])
        };
    }

    /// [`sums_avx512_apply`] for four inputs at once: each code word is loaded and shifted
    /// once and used with the four inputs' tables. Every input gets the same four
    /// accumulators in the same order as in `sums_avx512_apply`, so results are identical.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; every table built for `m.cols` and `m.quads`; every
    /// `ys[i].len() >= m.rows`.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    pub unsafe fn sums_avx512_apply4(m: &TernaryPlanes, tables: [&[Lanes]; 4], ys: [&mut [f32]; 4]) {
        if m.quads == 0 {
            for y in ys {
                y[..m.rows].fill(0.0);
            }
            return;
        }
        assert!(tables.iter().all(|t| t.len() >= m.quads * 8));
        let mut outs = ys.map(|y| y[..m.rows].chunks_mut(16));
        for block in m.codes.chunks_exact(m.quads * 16) {
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            let mut tq = tables.map(|t| t.chunks_exact(8));
            for words in block.chunks_exact(16) {
                // SAFETY: words holds 16 u32 (64 bytes).
                let idx = unsafe { _mm512_loadu_si512(words.as_ptr() as *const _) };
                let i = [
                    idx,
                    _mm512_srli_epi32::<8>(idx),
                    _mm512_srli_epi32::<16>(idx),
                    _mm512_srli_epi32::<24>(idx),
                ];
                for (a, tq) in acc.iter_mut().zip(tq.iter_mut()) {
                    let Some(t) = tq.next() else { return };
                    let tp = t.as_ptr() as *const f32;
                    for (b, a) in a.iter_mut().enumerate() {
                        // SAFETY: t holds 8 Lanes (64 bytes each, aligned): b * 32 + 32 <= 128.
                        let r = unsafe {
                            _mm512_permutex2var_ps(
                                _mm512_load_ps(tp.add(b * 32)),
                                i[b],
                                _mm512_load_ps(tp.add(b * 32 + 16)),
                            )
                        };
                        *a = _mm512_add_ps(*a, r);
                    }
                }
            }
            for (a, out) in acc.iter().zip(outs.iter_mut()) {
                let sum = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
                let Some(dst) = out.next() else { return };
                let mut lanes = Lanes([0.0; 16]);
                // SAFETY: lanes is 64 bytes, 64-byte aligned.
                unsafe { _mm512_store_ps(lanes.0.as_mut_ptr(), sum) };
                dst.copy_from_slice(&lanes.0[..dst.len()]);
            }
        }
    }

    /// Eight f32 lanes, aligned to 32 bytes.
    #[derive(Clone, Copy)]
    #[repr(C, align(32))]
    pub struct Lanes8(pub [f32; 8]);

    thread_local! {
        /// Per-thread tables for [`sums_avx2`]: one register (8 subset sums) per group.
        pub static TABLES8: std::cell::RefCell<Vec<Lanes8>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// AVX2 table kernel (rows in lanes).
    ///
    /// For every group of three inputs, the 8 subset sums are built with scalar adds. For
    /// every block of 8 rows, the plus bits and the minus bits of a group each select a
    /// subset sum per row (`vpermps`, which reads bits 0..=2 of each lane); the first is
    /// added and the second subtracted.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x.len() >= m.words * 64`, `y.len() >= m.rows`.
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    pub unsafe fn sums_avx2(m: &TernaryPlanes, x: &[f32], y: &mut [f32], tables: &mut Vec<Lanes8>) {
        if m.quads == 0 {
            y[..m.rows].fill(0.0);
            return;
        }
        tables.clear();
        tables.resize(m.quads * 4, Lanes8([0.0; 8]));
        let mut xs = &x[..m.cols];
        for t in tables.iter_mut() {
            let mut v = [0.0f32; 3];
            let n = xs.len().min(3);
            v[..n].copy_from_slice(&xs[..n]);
            xs = &xs[n..];
            let [a, b, c] = v;
            let ab = a + b;
            t.0 = [0.0, a, b, ab, c, a + c, b + c, ab + c];
        }
        let tables = &tables[..];
        let mut out = y[..m.rows].chunks_mut(8);
        for block in m.codes8.chunks_exact(m.quads * 8) {
            let mut pos = [_mm256_setzero_ps(); 4];
            let mut neg = [_mm256_setzero_ps(); 4];
            for (words, t) in block.chunks_exact(8).zip(tables.chunks_exact(4)) {
                // SAFETY: words holds 8 u32 (32 bytes); every Lanes8 is 32 bytes, aligned.
                unsafe {
                    let idx = _mm256_loadu_si256(words.as_ptr() as *const __m256i);
                    let tp = t.as_ptr() as *const f32;
                    let t0 = _mm256_load_ps(tp);
                    let t1 = _mm256_load_ps(tp.add(8));
                    let t2 = _mm256_load_ps(tp.add(16));
                    let t3 = _mm256_load_ps(tp.add(24));
                    pos[0] = _mm256_add_ps(pos[0], _mm256_permutevar8x32_ps(t0, idx));
                    neg[0] = _mm256_add_ps(neg[0], _mm256_permutevar8x32_ps(t0, _mm256_srli_epi32::<4>(idx)));
                    pos[1] = _mm256_add_ps(pos[1], _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32::<8>(idx)));
                    neg[1] =
                        _mm256_add_ps(neg[1], _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32::<12>(idx)));
                    pos[2] =
                        _mm256_add_ps(pos[2], _mm256_permutevar8x32_ps(t2, _mm256_srli_epi32::<16>(idx)));
                    neg[2] =
                        _mm256_add_ps(neg[2], _mm256_permutevar8x32_ps(t2, _mm256_srli_epi32::<20>(idx)));
                    pos[3] =
                        _mm256_add_ps(pos[3], _mm256_permutevar8x32_ps(t3, _mm256_srli_epi32::<24>(idx)));
                    neg[3] =
                        _mm256_add_ps(neg[3], _mm256_permutevar8x32_ps(t3, _mm256_srli_epi32::<28>(idx)));
                }
            }
            let p = _mm256_add_ps(_mm256_add_ps(pos[0], pos[1]), _mm256_add_ps(pos[2], pos[3]));
            let n = _mm256_add_ps(_mm256_add_ps(neg[0], neg[1]), _mm256_add_ps(neg[2], neg[3]));
            let Some(dst) = out.next() else { break };
            let mut lanes = Lanes8([0.0; 8]);
            // SAFETY: lanes is 32 bytes, 32-byte aligned.
            unsafe { _mm256_store_ps(lanes.0.as_mut_ptr(), _mm256_sub_ps(p, n)) };
            dst.copy_from_slice(&lanes.0[..dst.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic ternary weights and inputs.
    fn case(rows: usize, cols: usize, seed: u64, int_inputs: bool) -> (Vec<i8>, Vec<f32>) {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
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
        for (k, lack) in Kernel::unavailable() {
            eprintln!("skipped kernel {}: this CPU has no {lack}", k.name());
        }
        Kernel::available_exact()
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

    #[test]
    fn model_shapes() {
        for (rows, cols) in
            [(384, 192), (192, 192), (512, 192), (192, 512), (768, 384), (1024, 384), (384, 1024)]
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
        for k in Kernel::available() {
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
        for k in Kernel::available() {
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
            let mut q = vec![0i8; cols];
            let s = lut8::quantize(&x, &mut q);
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
            for &k in &int8 {
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
}
