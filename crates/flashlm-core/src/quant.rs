//! The weight quantisers, each written once: ternary (every linear layer), int8 rows and int4
//! groups (the embedding / head storage of a `.flm` file).

use crate::QUANT_EPS;

/// α = mean |w|, the ternary scale: an f64 sum in order, so every caller gets the same bits.
pub fn ternary_alpha(w: &[f32]) -> f32 {
    (w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len().max(1) as f64) as f32
}

/// The ternary level of one weight: clamp(round_ties_even(v / denom), -1, 1) with
/// denom = α + 1e-8 (ties to even as burn's `round`).
#[inline(always)]
fn level(v: f32, denom: f32) -> f32 {
    (v / denom).round_ties_even().clamp(-1.0, 1.0)
}

/// Codes in {-1, 0, 1} and α (so `code · α` is the quantised weight): what a `.flm` file stores.
pub fn ternary_codes(w: &[f32]) -> (Vec<i8>, f32) {
    let alpha = ternary_alpha(w);
    let mut codes = vec![0i8; w.len()];
    ternary_codes_into(&mut codes, w, alpha + QUANT_EPS as f32);
    (codes, alpha)
}

crate::multiversion! {
    /// out = level(w, denom) as i8 (the rounding vectorises where SSE4.1's `roundps` exists,
    /// instead of a libm call per weight).
    fn ternary_codes_into(out: &mut [i8], w: &[f32], denom: f32) {
        for (o, &v) in out.iter_mut().zip(w) {
            *o = level(v, denom) as i8;
        }
    }
}

/// The quantised weight as floats, `α · code` (what the training forward pass multiplies by):
/// equal to [`ternary_codes`]' codes times α, one vectorised pass.
pub fn ternary_values(w: &[f32]) -> Vec<f32> {
    let alpha = ternary_alpha(w);
    let mut out = vec![0.0f32; w.len()];
    ternary_values_into(&mut out, w, alpha, alpha + QUANT_EPS as f32);
    out
}

crate::multiversion! {
    /// out = alpha · level(w, denom).
    fn ternary_values_into(out: &mut [f32], w: &[f32], alpha: f32, denom: f32) {
        for (o, &v) in out.iter_mut().zip(w) {
            *o = level(v, denom) * alpha;
        }
    }
}

/// Int8 rows: each row of `w` ([rows, cols]) scaled by max|row| / 127 and rounded; an all-zero
/// row gets scale 1. Returns (codes [rows·cols], scales [rows]).
pub fn int8_rows(w: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / cols.max(1));
    for row in w.chunks(cols.max(1)) {
        let m = row.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
        q.extend(row.iter().map(|&x| (x / s).round().clamp(-127.0, 127.0) as i8));
        scales.push(s);
    }
    (q, scales)
}

/// Values per int4 group (one f16 scale each).
pub const INT4_GROUP: usize = 32;
const _: () = assert!(INT4_GROUP.is_multiple_of(8));

/// Quantise a [rows, cols] matrix into int4 groups (cols a multiple of [`INT4_GROUP`]): the
/// bytes of `.flm`'s `Int4Groups` kind, [rows·cols/2] nibbles q+8 (low nibble first), then
/// [rows·cols/32] f16 scales. Each group of 32 values gets the f16 scale, among 21 clip levels
/// from 60% to 100% of max|x| / 7, whose rounding q = clamp(round(x / scale), -8, 7) has the
/// least squared error.
pub fn int4_groups(w: &[f32], rows: usize, cols: usize) -> Result<Vec<u8>, String> {
    if !cols.is_multiple_of(INT4_GROUP) || cols == 0 || w.len() != rows * cols {
        return Err(format!(
            "int4 groups need a [rows, cols] matrix with cols a multiple of {INT4_GROUP}; got {} values as [{rows}, {cols}]",
            w.len()
        ));
    }
    if w.iter().any(|x| !x.is_finite()) {
        return Err("cannot quantise non-finite values".into());
    }
    let mut nibbles = vec![0u8; rows * cols / 2];
    let mut scales = Vec::with_capacity(rows * cols / INT4_GROUP * 2);
    let level = |x: f32, s: f32| (x / s).round().clamp(-8.0, 7.0);
    for (gi, g) in w.chunks_exact(INT4_GROUP).enumerate() {
        let max = g.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let mut best = (f32::INFINITY, 0.0f32);
        for step in 0..=20 {
            let s = half::f16::from_f32(max * (0.6 + 0.02 * step as f32) / 7.0).to_f32();
            if s <= 0.0 || !s.is_finite() {
                continue;
            }
            let err: f32 = g.iter().map(|&x| (x - level(x, s) * s).powi(2)).sum();
            if err < best.0 {
                best = (err, s);
            }
        }
        let s = best.1;
        for (i, &x) in g.iter().enumerate() {
            let q = if s > 0.0 { level(x, s) as i32 } else { 0 };
            let at = gi * INT4_GROUP + i;
            nibbles[at / 2] |= ((q + 8) as u8) << (4 * (at % 2));
        }
        scales.extend(half::f16::from_f32(s).to_bits().to_le_bytes());
    }
    nibbles.extend(scales);
    Ok(nibbles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternary_values_are_codes_times_alpha_on_every_length() {
        for n in 0..70 {
            let w: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.013).collect();
            let (codes, alpha) = ternary_codes(&w);
            let want: Vec<f32> = codes.iter().map(|&c| c as f32 * alpha).collect();
            assert_eq!(ternary_values(&w), want, "n = {n}");
            assert!(codes.iter().all(|c| (-1..=1).contains(c)));
            // The multiversioned pass against the plain per-weight rounding.
            let plain: Vec<i8> = w.iter().map(|&v| level(v, alpha + QUANT_EPS as f32) as i8).collect();
            assert_eq!(codes, plain, "n = {n}");
        }
    }

    #[test]
    fn ternary_levels_round_ties_to_even() {
        // mean |w| = 1: 0.5 is a tie and rounds to 0; 1.5 rounds to 2 and clamps to 1.
        let (codes, alpha) = ternary_codes(&[0.5, -0.5, 1.5, -1.5, 1.0, -1.0]);
        assert_eq!(alpha, 1.0);
        assert_eq!(codes, [0, 0, 1, -1, 1, -1]);
    }

    #[test]
    fn int8_rows_keep_each_row_within_half_a_step() {
        let w = [0.0, 0.0, 0.0, 1.0, -0.5, 0.3];
        let (q, s) = int8_rows(&w, 3);
        assert_eq!(s[0], 1.0, "an all-zero row gets scale 1");
        assert_eq!(q, [0, 0, 0, 127, -64, 38]);
        for (i, (&x, &c)) in w.iter().zip(&q).enumerate() {
            assert!((x - c as f32 * s[i / 3]).abs() <= s[i / 3] / 2.0);
        }
    }

    #[test]
    fn int4_groups_refuse_bad_shapes_and_non_finite_values() {
        assert!(int4_groups(&[0.0; 33], 1, 33).unwrap_err().contains("multiple of 32"));
        let mut w = vec![0.1f32; 32];
        w[3] = f32::NAN;
        assert!(int4_groups(&w, 1, 32).unwrap_err().contains("non-finite"));
        let w: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 10.0).collect();
        let bytes = int4_groups(&w, 2, 32).unwrap();
        assert_eq!(bytes.len(), 64 / 2 + 2 * 2);
    }
}
