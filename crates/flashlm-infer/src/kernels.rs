//! Ternary matrix-vector kernels: `y[r] = Σ_{w[r,i]=+1} x[i] − Σ_{w[r,i]=−1} x[i]`.
//!
//! Weights are repacked at load time into two bit planes per row (`plus`, `minus`, one bit
//! per input, 64 inputs per word); the `.flm` file itself has one layout for every CPU.
//! The kernels return the raw sums: the caller applies the per-matrix scale α afterwards,
//! so the kernels contain no multiply of any kind (`scripts/check-no-multiply.sh` checks the
//! disassembly):
//! * [`Kernel::Scalar`]: portable; walks the set bits of each plane word.
//! * [`Kernel::Avx2`]: 8 lanes; each plane byte selects lanes through a 256-entry mask table,
//!   the input is AND-ed with the mask and added or subtracted.
//! * [`Kernel::Avx512`]: 16 lanes; each 16-bit piece of a plane word is an AVX-512 mask
//!   register for a masked add (`vaddps{k}`) or masked subtract (`vsubps{k}`).
//!
//! The choice is made once ([`Kernel::detect`], or `--kernel` / `FLASHLM_KERNEL`), and every
//! kernel is tested against [`matvec_reference`] on all sizes 1..=300.

/// A ternary matrix as bit planes.
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
        Self { rows, cols, words, plus, minus, alpha }
    }

    /// Inputs the kernels read per row: cols rounded up to 64 (pad `x` with zeros).
    pub fn padded_cols(&self) -> usize {
        self.words * 64
    }
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
    /// Portable scalar code.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 (F).
    Avx512,
}

impl Kernel {
    /// Every kernel this CPU can run, slowest first.
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Kernel::Avx512);
            }
        }
        v
    }

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        *Kernel::available().last().expect("scalar is always available")
    }

    /// Kernel by name (`scalar`, `avx2`, `avx512`); errors if unknown or not supported here.
    pub fn from_name(name: &str) -> Result<Kernel, String> {
        let k = match name.to_ascii_lowercase().as_str() {
            "scalar" => Kernel::Scalar,
            "avx2" => Kernel::Avx2,
            "avx512" | "avx-512" => Kernel::Avx512,
            "auto" => return Ok(Kernel::detect()),
            other => return Err(format!("unknown kernel {other:?} (scalar, avx2, avx512, auto)")),
        };
        if !Kernel::available().contains(&k) {
            return Err(format!(
                "kernel {name} is not supported by this CPU (available: {:?})",
                Kernel::available()
            ));
        }
        Ok(k)
    }

    /// Name as accepted by [`Kernel::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }

    /// `y[r] = α · Σ ±x` for every row. `x` must hold at least `m.padded_cols()` values
    /// (zeros past `m.cols`); `y` at least `m.rows`.
    pub fn matvec(self, m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
        assert!(x.len() >= m.padded_cols(), "input shorter than the padded row");
        assert!(y.len() >= m.rows, "output shorter than the rows");
        match self {
            Kernel::Scalar => sums_scalar(m, x, y),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(std::arch::is_x86_feature_detected!("avx2"));
                // SAFETY: AVX2 support was just checked; lengths were checked above.
                unsafe { x86::sums_avx2(m, x, y) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                assert!(std::arch::is_x86_feature_detected!("avx512f"));
                // SAFETY: AVX-512F support was just checked; lengths were checked above.
                unsafe { x86::sums_avx512(m, x, y) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => sums_scalar(m, x, y),
        }
        scale_rows(&mut y[..m.rows], m.alpha);
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
    pub unsafe fn sums_avx2(m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
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
    pub unsafe fn sums_avx512(m: &TernaryPlanes, x: &[f32], y: &mut [f32]) {
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

    #[test]
    fn every_kernel_matches_the_reference_on_all_sizes() {
        for k in Kernel::available() {
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
            for k in Kernel::available() {
                let mut y = vec![0.0; rows];
                k.matvec(&m, &padded(&x, &m), &mut y);
                assert_eq!(y, expect, "{k:?} {rows}x{cols}");
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
