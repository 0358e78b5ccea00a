//! The portable ternary kernel: plain Rust that LLVM's auto-vectoriser turns into SIMD code
//! for whatever the target's baseline is (SSE2 on x86-64, NEON on aarch64), with no
//! `target_feature` and no intrinsics.
//!
//! It works on int8 activations ([`super::lut8::quantize`]) with 16 rows per block: for
//! every input, one 16-bit word holds the plus bits (w = +1) of the block's 16 rows and one
//! the minus bits. Each row's lane selects the input or 0 under its plus bit and under its
//! minus bit (a compare against the lane's bit and an and: no multiply) and adds the first,
//! subtracts the second, in int16 lanes widened to int32 every [`FLUSH`] inputs. The sums
//! are exact: equal to [`super::lut8::matvec_i8_reference`] bit for bit.

/// Rows per block: one int16 lane each.
pub const LANES: usize = 16;

/// Inputs between two widenings of the int16 sums: each adds at most 127 to a lane, and
/// 256 · 127 = 32,512 < 32,767.
pub const FLUSH: usize = 256;

/// The bit of each lane.
const BIT: [u16; LANES] = {
    let mut b = [0u16; LANES];
    let mut i = 0;
    while i < LANES {
        b[i] = 1 << i;
        i += 1;
    }
    b
};

/// Bit planes of a ternary matrix (row-major [rows, cols], values in {−1, 0, 1}) for the
/// portable kernel: [ceil(rows / 16), 2, cols] u16: for block b, the plus bits of rows
/// 16b..16b+16 for every input c, then their minus bits (bit l = row 16b + l; rows past the
/// matrix 0). Each plane is contiguous over the inputs, so the compiler vectorises over them.
pub fn planes16(w: &[i8], rows: usize, cols: usize) -> Vec<u16> {
    let blocks = rows.div_ceil(LANES);
    let mut out = vec![0u16; blocks * cols * 2];
    for r in 0..rows {
        let (b, l) = (r / LANES, r % LANES);
        for c in 0..cols {
            match w[r * cols + c] {
                1 => out[(2 * b) * cols + c] |= 1 << l,
                -1 => out[(2 * b + 1) * cols + c] |= 1 << l,
                _ => {}
            }
        }
    }
    out
}

/// One input into the 16 lanes: all-ones masks where the lane's plus / minus bit is set,
/// `acc += (x & plus) − (x & minus)`. Fixed-size arrays, so it vectorises (two int16
/// registers on SSE2 or NEON).
#[inline(always)]
fn lanes(acc: &mut [i16; LANES], p: u16, n: u16, x: i16) {
    let mut plus = [0i16; LANES];
    let mut minus = [0i16; LANES];
    for l in 0..LANES {
        plus[l] = -(((p & BIT[l]) != 0) as i16);
        minus[l] = -(((n & BIT[l]) != 0) as i16);
    }
    for l in 0..LANES {
        acc[l] = acc[l].wrapping_add(x & plus[l]).wrapping_sub(x & minus[l]);
    }
}

/// Exact integer sums of `q` (int8 inputs, `cols` of them) against [`planes16`] planes, as
/// f32 (exact: |sum| <= 127 · cols < 2^24), into `y[..rows]`.
#[inline(never)]
pub fn sums_portable(planes: &[u16], rows: usize, cols: usize, q: &[i8], y: &mut [f32]) {
    assert!(q.len() >= cols && y.len() >= rows);
    if cols == 0 {
        y[..rows].fill(0.0);
        return;
    }
    // Blocks are peeled off with chunks (no index arithmetic, so no integer multiply; the
    // length is checked by division).
    assert!(planes.len() / (2 * cols) >= rows.div_ceil(LANES), "planes shorter than the rows");
    let blocks = planes.chunks_exact(2 * cols);
    for (block, out) in blocks.zip(y[..rows].chunks_mut(LANES)) {
        let mut acc32 = [0i32; LANES];
        let (plus, minus) = block.split_at(cols);
        for ((p, n), xs) in plus.chunks(FLUSH).zip(minus.chunks(FLUSH)).zip(q[..cols].chunks(FLUSH)) {
            let mut acc = [0i16; LANES];
            for ((&p, &n), &x) in p.iter().zip(n).zip(xs) {
                lanes(&mut acc, p, n, i16::from(x));
            }
            for (a, &s) in acc32.iter_mut().zip(&acc) {
                *a += i32::from(s);
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc32) {
            *o = a as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lut8::matvec_i8_reference;
    use super::*;

    #[test]
    fn portable_kernel_matches_the_reference() {
        let mut r = flashlm_core::rng::XorShift64::new(12345);
        let mut next = move || r.next_u64();
        let shapes = (1..=300).map(|c| (1 + (c * 5) % 41, c)).chain([(384, 192), (192, 512), (33, 1100)]);
        for (rows, cols) in shapes {
            let w: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
            // Every input ±127 on some shapes: the largest int16 sums.
            let extreme = cols % 3 == 0;
            let q: Vec<i8> = (0..cols)
                .map(
                    |_| if extreme { if next() % 2 == 0 { 127 } else { -127 } } else { (next() % 255) as i8 },
                )
                .map(|v: i8| v.max(-127))
                .collect();
            let mut y = vec![f32::NAN; rows];
            sums_portable(&planes16(&w, rows, cols), rows, cols, &q, &mut y);
            let want: Vec<f32> = matvec_i8_reference(&w, rows, cols, &q).iter().map(|&v| v as f32).collect();
            assert_eq!(y, want, "{rows}x{cols}");
        }
    }
}
