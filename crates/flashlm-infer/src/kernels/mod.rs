//! Ternary matrix-vector kernels: `y[r] = α · (Σ_{w[r,i]=+1} x[i] − Σ_{w[r,i]=−1} x[i])`.
//!
//! The `.flm` file has one layout for every CPU (2-bit codes, row-major). At load time each
//! matrix is repacked for the kernels ([`TernaryPlanes`]). The kernels return raw sums; the
//! per-matrix scale α (and, for int8 activations, the input's scale) is applied afterwards,
//! so the kernels contain no multiply of any kind (`scripts/check-no-multiply.sh` checks the
//! disassembly of every `sums_*` and `tables_*` function). One file per kind:
//!
//! | file | kernels | activations |
//! |---|---|---|
//! | [`scalar`] | [`Kernel::Scalar`]: walks the set bits of each plane word; the reference | f32, exact |
//! | [`portable`] | [`Kernel::Portable`], [`Kernel::PortableI6`]: plain Rust the compiler vectorises for any target | int8 / 6-bit |
//! | [`lut8`] | the int8 arithmetic written plainly: quantiser, integer reference, layout, tables | int8 |
//! | [`x86_avx2`] | [`Kernel::Avx2`]: subset sums via `vpermps`; [`Kernel::Avx2I8`], [`Kernel::Avx2I6`]: `vpshufb` tables of pair sums | f32 exact / int8 / 6-bit |
//! | [`head`] | the output head: [`head::Embedding`] (four storages) and [`head::HeadPath`]'s dispatch, plain references | f32 / int16 |
//! | [`head4`] | the int4 output head: reference, portable, AVX2, AVX-512 VNNI (bit-identical) | int8 per group |
//! | [`head_x86`] | the f32 / f16 / int8 output heads' AVX2 and AVX-512 paths | f32 / int16 |
//! | [`x86_avx512`] | [`Kernel::Avx512`]: 27-entry tables of 3-input sums via `vpermi2ps`; [`Kernel::Avx512I8`]: the int8 tables, two steps per register | f32 exact / int8 |
//! | `aarch64_neon` | [`Kernel::NeonI6`]: the 6-bit tables via `vqtbl1q_u8`; [`Kernel::Neon`]: subset sums via `vqtbl2q_u8` (aarch64 builds) | 6-bit / f32 exact |
//! | `head_neon` | the int4 (`smlal`) and f32 (`fmla`) heads on NEON | int8 per group / f32 |
//! | `wasm_simd128` | [`Kernel::Simd128I6`]: the 6-bit tables via `i8x16.swizzle` (wasm32 builds with `+simd128`) | 6-bit |
//! | `head_simd128` | the int4 head on SIMD128 (`i32x4.dot_i16x8_s`) | int8 per group |
//!
//! Every table kernel (x86 int8 / 6-bit, NEON, SIMD128) runs through one driver
//! (`lut_driver`: round, build tables once per input, look up, scale); each instruction set
//! says how it does each step.
//!
//! The default ([`Kernel::detect`]) is `avx2-i6` on any CPU with AVX2 (AVX-512 ones included:
//! it is the fastest kernel there too), `neon-i6` on aarch64, `simd128-i6` in a SIMD128
//! WebAssembly build, else `portable-i6`: all round the input to 6 bits and compute the same
//! exact integer sums, so the results are the same on every CPU;
//! `--kernel` / `FLASHLM_KERNEL` choose by name, `exact` picks the fastest exact kernel.
//! The choice is made once, when a model is loaded. Every exact kernel is tested
//! against [`matvec_reference`] on all sizes 1..=300 (bit-identical with small-integer
//! inputs) and on the model shapes; every int8 kernel against
//! [`lut8::matvec_i8_reference`] bit for bit.

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
    /// ([`portable`]).
    Portable,
    /// [`Kernel::Portable`] on inputs rounded to 6 bits (−31..=31): the default without AVX2
    /// (ARM, older x86), the same integer sums as [`Kernel::Avx2I6`].
    PortableI6,
    /// x86-64 AVX2, 8 rows per register, look-up tables of 3-input subset sums.
    Avx2,
    /// x86-64 AVX2 on int8 activations (one scale per vector): `vpshufb` look-up tables of
    /// pair sums, 32 rows per register ([`lut8`]). Not exact in f32: the input is rounded.
    Avx2I8,
    /// [`Kernel::Avx2I8`] with inputs rounded to 6 bits (−31..=31): byte tables, two pairs
    /// added before widening, half the shuffles ([`lut8::LEVELS6`]).
    Avx2I6,
    /// x86-64 AVX-512 (F), 16 rows per register, look-up tables of 3-input sums.
    Avx512,
    /// [`Kernel::Avx2I8`] with 512-bit registers (AVX-512 F + BW): two steps per register.
    Avx512I8,
    /// aarch64 NEON, f32 activations (exact): subset sums of three inputs looked up per row
    /// with `vqtbl2q_u8` ([`aarch64_neon::sums_neon_exact`]).
    Neon,
    /// aarch64 NEON on inputs rounded to 6 bits: [`Kernel::Avx2I6`]'s tables and integer
    /// sums with `vqtbl1q_u8` ([`aarch64_neon`]); the default on aarch64.
    NeonI6,
    /// WebAssembly SIMD128 (a build with `+simd128`) on inputs rounded to 6 bits: the same
    /// tables and integer sums with `i8x16.swizzle` ([`wasm_simd128`]); the default there.
    Simd128I6,
}

/// Every kernel, in the order [`Kernel::available`] lists them.
const ALL: [Kernel; 11] = [
    Kernel::Scalar,
    Kernel::Portable,
    Kernel::PortableI6,
    Kernel::Avx2,
    Kernel::Avx2I8,
    Kernel::Avx2I6,
    Kernel::Avx512,
    Kernel::Avx512I8,
    Kernel::Neon,
    Kernel::NeonI6,
    Kernel::Simd128I6,
];

impl Kernel {
    /// Whether this CPU can run the kernel.
    pub fn runs_here(self) -> bool {
        match self {
            Kernel::Scalar | Kernel::Portable | Kernel::PortableI6 => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx2I8 | Kernel::Avx2I6 => crate::cpu::avx2(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => crate::cpu::avx512f(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512I8 => crate::cpu::avx512f() && crate::cpu::avx512bw(),
            // NEON is part of every aarch64 CPU.
            Kernel::Neon | Kernel::NeonI6 => crate::cpu::neon(),
            // WebAssembly has no run-time detection: SIMD128 is on when the build enables it.
            Kernel::Simd128I6 => crate::cpu::simd128(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// What the CPU lacks to run the kernel (None if it runs here).
    pub fn missing(self) -> Option<&'static str> {
        match self {
            _ if self.runs_here() => None,
            Kernel::Avx2 | Kernel::Avx2I8 | Kernel::Avx2I6 => Some("AVX2 (or FLASHLM_ISA caps it)"),
            Kernel::Avx512 => Some("AVX-512F (or FLASHLM_ISA caps it)"),
            Kernel::Avx512I8 => Some("AVX-512 F + BW (or FLASHLM_ISA caps it)"),
            Kernel::Neon | Kernel::NeonI6 => Some("NEON (an aarch64 CPU; or FLASHLM_ISA caps it)"),
            Kernel::Simd128I6 => {
                Some("WebAssembly SIMD128 (a wasm32 build with +simd128; or FLASHLM_ISA caps it)")
            }
            Kernel::Scalar | Kernel::Portable | Kernel::PortableI6 => None,
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
    /// int8 kernels round the input first ([`Kernel::input_levels`]).
    pub fn is_exact(self) -> bool {
        self.input_levels().is_none()
    }

    /// The levels an int8 kernel rounds its input to (−L..=L), None for the exact ones.
    pub fn input_levels(self) -> Option<i8> {
        match self {
            Kernel::Avx2I8 | Kernel::Avx512I8 | Kernel::Portable => Some(127),
            Kernel::Avx2I6 | Kernel::PortableI6 | Kernel::NeonI6 | Kernel::Simd128I6 => Some(lut8::LEVELS6),
            Kernel::Scalar | Kernel::Avx2 | Kernel::Avx512 | Kernel::Neon => None,
        }
    }

    /// The exact (f32-activation) kernels this CPU runs: what the parity tests use.
    pub fn available_exact() -> Vec<Kernel> {
        Kernel::available().into_iter().filter(|k| k.is_exact()).collect()
    }

    /// The default kernel: `avx2-i6` with AVX2 (on AVX-512 CPUs too, where it is faster than
    /// `avx512-i8`), else `portable-i6`. Both round each input to 6 bits with one scale and
    /// compute the same exact integer sums, so they give the same logits bit for bit (the
    /// same text on every CPU); on the bundled model they cost 0.0017 BPC against the exact
    /// kernels (`docs/PERFORMANCE.md`; the int8 kernels cost 0.0001).
    pub fn detect() -> Kernel {
        [Kernel::Avx2I6, Kernel::NeonI6, Kernel::Simd128I6]
            .into_iter()
            .find(|k| k.runs_here())
            .unwrap_or(Kernel::PortableI6)
    }

    /// The fastest exact kernel this CPU runs (`avx512`, `avx2` or `scalar`).
    pub fn detect_exact() -> Kernel {
        [Kernel::Avx512, Kernel::Avx2, Kernel::Neon]
            .into_iter()
            .find(|k| k.runs_here())
            .unwrap_or(Kernel::Scalar)
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
            Kernel::PortableI6 => "portable-i6",
            Kernel::Avx2 => "avx2",
            Kernel::Avx2I8 => "avx2-i8",
            Kernel::Avx2I6 => "avx2-i6",
            Kernel::Avx512 => "avx512",
            Kernel::Avx512I8 => "avx512-i8",
            Kernel::Neon => "neon",
            Kernel::NeonI6 => "neon-i6",
            Kernel::Simd128I6 => "simd128-i6",
        }
    }

    /// `y[r] = α · Σ ±x` for every row. `x` must hold at least `m.padded_cols()` values
    /// (zeros past `m.cols`); `y` at least `m.rows`.
    pub fn matvec(self, m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
        assert!(x.len() >= m.padded_cols(), "input shorter than the padded row");
        assert!(y.len() >= m.rows, "output shorter than the rows");
        if self.int8_matvecs(&[m], x, &mut [y]) {
            return;
        }
        if let Some(levels) =
            self.input_levels().filter(|_| matches!(self, Kernel::Portable | Kernel::PortableI6))
        {
            PORTABLE_Q.with_borrow_mut(|q| {
                q.resize(m.cols, 0);
                let s = lut8::quantize_to(&x[..m.cols], q, levels);
                portable::sums_portable(&m.planes16, m.rows, m.cols, q, y);
                scale_rows(&mut y[..m.rows], m.alpha * s);
            });
            return;
        }
        match self {
            Kernel::Scalar => sums_scalar(m, x, y),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(std::arch::is_x86_feature_detected!("avx2"));
                x86_avx2::TABLES8.with_borrow_mut(|tables| {
                    // SAFETY: AVX2 support was just checked; lengths were checked above.
                    unsafe { x86_avx2::sums_avx2(m, x, y, tables) }
                });
            }
            Kernel::Portable | Kernel::PortableI6 => unreachable!("handled above"),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => aarch64_neon::TABLES8.with_borrow_mut(|t| {
                // SAFETY: NEON is part of every aarch64 CPU (the target's baseline).
                unsafe { aarch64_neon::sums_neon_exact(m, x, y, t) }
            }),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2I8 | Kernel::Avx2I6 | Kernel::Avx512I8 => unreachable!("handled above"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                assert!(std::arch::is_x86_feature_detected!("avx512f"));
                x86_avx512::TABLES.with_borrow_mut(|tables| {
                    // SAFETY: AVX-512F support was just checked; lengths were checked above.
                    unsafe {
                        x86_avx512::sums_avx512_tables(x, m.cols, m.quads, tables);
                        x86_avx512::sums_avx512_apply(m, tables, y);
                    }
                });
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::NeonI6 => unreachable!("handled above"),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128I6 => unreachable!("handled above"),
            #[cfg(not(target_arch = "aarch64"))]
            Kernel::Neon | Kernel::NeonI6 => panic!("kernel {} does not run on this CPU", self.name()),
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            Kernel::Simd128I6 => panic!("kernel {} does not run on this CPU", self.name()),
            #[cfg(not(target_arch = "x86_64"))]
            _ => panic!("kernel {} does not run on this CPU", self.name()),
        }
        scale_rows(&mut y[..m.rows], m.alpha);
    }
}

impl Kernel {
    /// `matvec` of two matrices with the same input (`a.cols == b.cols`); the table kernels
    /// build the input's tables once for both.
    pub fn matvec2(self, a: &TernaryPlanes, b: &TernaryPlanes, x: &[f32], ya: &mut [f32], yb: &mut [f32]) {
        assert_eq!(a.cols, b.cols, "matvec2 needs matrices with the same input");
        assert!(x.len() >= a.padded_cols(), "input shorter than the padded row");
        assert!(ya.len() >= a.rows && yb.len() >= b.rows, "output shorter than the rows");
        if self.int8_matvecs(&[a, b], x, &mut [ya, yb]) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            assert!(std::arch::is_x86_feature_detected!("avx512f"));
            x86_avx512::TABLES.with_borrow_mut(|tables| {
                // SAFETY: AVX-512F support was just checked; lengths were checked above; a and
                // b have the same cols, and quads follows from cols.
                unsafe {
                    x86_avx512::sums_avx512_tables(x, a.cols, a.quads, tables);
                    x86_avx512::sums_avx512_apply(a, tables, ya);
                    x86_avx512::sums_avx512_apply(b, tables, yb);
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
        assert!(xs.iter().all(|x| x.len() >= m.padded_cols()), "input shorter than the padded row");
        assert!(ys.iter().all(|y| y.len() >= m.rows), "output shorter than the rows");
        match self {
            #[cfg(target_arch = "aarch64")]
            Kernel::NeonI6 => return lut_driver::matmul::<aarch64_neon::NeonI6>(m, xs, ys),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128I6 => return lut_driver::matmul::<wasm_simd128::Simd128I6>(m, xs, ys),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2I8 => return lut_driver::matmul::<i8x86::Avx2I8>(m, xs, ys),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2I6 => return lut_driver::matmul::<i8x86::Avx2I6>(m, xs, ys),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512I8 => return lut_driver::matmul::<i8x86::Avx512I8>(m, xs, ys),
            _ => {}
        }
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            assert!(std::arch::is_x86_feature_detected!("avx512f"));
            let mut xs4 = xs.chunks_exact(4);
            let mut ys4 = ys.chunks_exact_mut(4);
            x86_avx512::TABLES4.with_borrow_mut(|tables| {
                for (x4, y4) in (&mut xs4).zip(&mut ys4) {
                    for (x, t) in x4.iter().zip(tables.iter_mut()) {
                        // SAFETY: AVX-512F was checked; lengths were checked above.
                        unsafe { x86_avx512::sums_avx512_tables(x, m.cols, m.quads, t) };
                    }
                    let [t0, t1, t2, t3] = &*tables;
                    let [y0, y1, y2, y3] = y4 else { unreachable!("chunks of four") };
                    // SAFETY: AVX-512F was checked; each table was built for m; outputs hold
                    // at least m.rows values.
                    unsafe { x86_avx512::sums_avx512_apply4(m, [t0, t1, t2, t3], [y0, y1, y2, y3]) };
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

impl Kernel {
    /// Run an int8 / 6-bit table kernel (x86 or NEON) on matrices that share the input
    /// (tables built once); false for every other kernel. The caller has checked the lengths.
    fn int8_matvecs(self, ms: &[&TernaryPlanes], x: &[f32], ys: &mut [&mut [f32]]) -> bool {
        type Run = fn(&[&TernaryPlanes], &[f32], &mut [&mut [f32]]);
        let run: Option<Run> = match self {
            #[cfg(target_arch = "aarch64")]
            Kernel::NeonI6 => Some(lut_driver::matvecs::<aarch64_neon::NeonI6>),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Simd128I6 => Some(lut_driver::matvecs::<wasm_simd128::Simd128I6>),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2I8 => Some(lut_driver::matvecs::<i8x86::Avx2I8>),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2I6 => Some(lut_driver::matvecs::<i8x86::Avx2I6>),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512I8 => Some(lut_driver::matvecs::<i8x86::Avx512I8>),
            _ => None,
        };
        let Some(run) = run else { return false };
        run(ms, x, ys);
        true
    }
}

/// Multiply the raw sums by α (kept out of the kernels, which must not multiply).
#[inline(never)]
fn scale_rows(y: &mut [f32], alpha: f32) {
    for v in y {
        *v *= alpha;
    }
}

pub use scalar::sums_scalar;

#[cfg(target_arch = "aarch64")]
pub mod aarch64_neon;
pub mod head;
pub mod head4;
#[cfg(target_arch = "aarch64")]
pub mod head_neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod head_simd128;
#[cfg(target_arch = "x86_64")]
pub mod head_x86;
pub mod lut8;
mod lut_driver;
pub mod portable;
pub mod scalar;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod wasm_simd128;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512;

thread_local! {
    /// Per-thread rounded input of the portable kernel.
    static PORTABLE_Q: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The AVX2 int8 table kernel behind [`Kernel::Avx2I8`]: quantise, build tables, look up.
#[cfg(target_arch = "x86_64")]
mod i8x86;

#[cfg(test)]
mod six_bit_checks;
#[cfg(test)]
mod tests;
