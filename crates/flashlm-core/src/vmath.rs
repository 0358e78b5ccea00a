//! Element-wise float helpers of the forward pass (the non-ternary parts: conv, gates, norms).
//!
//! Each helper is plain Rust written so that it vectorises; the same body is compiled three
//! times (portable, AVX2+FMA, AVX-512) and the widest one the CPU runs is picked once.
//! Results do not depend on the variant: each output element is computed by the same
//! operations in the same order (Rust never fuses `a * b + c` on its own).

use std::sync::OnceLock;

/// exp(x) for f32 with a Cephes-style polynomial: relative error below 2e-7 on
/// [-87, 88]; inputs outside are clamped (so it never returns inf or NaN for finite x).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer.
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // n is an integer in -126..=127; t holds it in its low mantissa bits, so the integer
    // comes from the bits (`n as i32`, a saturating conversion, would not vectorise).
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((ni + 127) << 23) as u32)
}

/// 1 / (1 + e^-x).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// The widest vector unit this CPU has (used by [`multiversion!`](crate::multiversion)).
#[doc(hidden)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

#[doc(hidden)]
pub fn width() -> Width {
    static W: OnceLock<Width> = OnceLock::new();
    *W.get_or_init(|| match crate::cpu::level() {
        #[cfg(target_arch = "x86_64")]
        crate::cpu::Isa::Avx512 => Width::Avx512,
        #[cfg(target_arch = "x86_64")]
        crate::cpu::Isa::Avx2 => Width::Avx2,
        _ => Width::Portable,
    })
}

/// Defines `pub fn $name(args)` that runs `$body` compiled three times (portable, AVX2+FMA,
/// AVX-512) and dispatches to the widest variant this CPU runs (detected once). Exported so
/// the trainer's fused step can use it too.
#[macro_export]
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
            match $crate::vmath::width() {
                // SAFETY: width() returns Avx512 / Avx2 only where the CPU has the features.
                #[cfg(target_arch = "x86_64")]
                $crate::vmath::Width::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::vmath::Width::Avx2 => unsafe { avx2($($arg),*) },
                $crate::vmath::Width::Portable => body($($arg),*),
            }
        }
    };
}

multiversion! {
    /// out = x / sqrt(mean(x²) + eps) * gain (16 partial sums for the mean).
    fn rmsnorm(out: &mut [f32], x: &[f32], gain: &[f32], eps: f32) {
        let mut acc = [0.0f32; 16];
        let chunks = x.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..16 {
                acc[j] += c[j] * c[j];
            }
        }
        let mut ss = 0.0f32;
        for a in acc {
            ss += a;
        }
        for v in rest {
            ss += v * v;
        }
        let r = 1.0 / (ss / x.len() as f32 + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(gain) {
            *o = v * r * g;
        }
    }
}

multiversion! {
    /// mix = conv(value) * sigmoid(gate) for one token: `taps` is [k, d] (row j multiplies
    /// the input k-1-j steps back, row k-1 the current `value`), `history` is the ring of the
    /// last k-1 values ([k-1, d]) whose oldest row is `head`.
    fn conv_gate(mix: &mut [f32], gate: &[f32], value: &[f32], taps: &[f32], history: &[f32], head: usize) {
        let d = value.len();
        let hist_rows = history.len() / d;
        let (mix, gate) = (&mut mix[..d], &gate[..d]);
        let last = &taps[hist_rows * d..(hist_rows + 1) * d];
        for ((m, &t), &v) in mix.iter_mut().zip(last).zip(value) {
            *m = t * v;
        }
        for j in 0..hist_rows {
            let row = (head + j) % hist_rows;
            let (t, h) = (&taps[j * d..(j + 1) * d], &history[row * d..(row + 1) * d]);
            for ((m, &t), &h) in mix.iter_mut().zip(t).zip(h) {
                *m += t * h;
            }
        }
        for (m, &g) in mix.iter_mut().zip(gate) {
            *m *= sigmoid(g);
        }
    }
}

multiversion! {
    /// out = silu(g) * u = g * sigmoid(g) * u.
    fn silu_mul(out: &mut [f32], g: &[f32], u: &[f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *o = g * sigmoid(g) * u;
        }
    }
}

multiversion! {
    /// x += y.
    fn add_assign(x: &mut [f32], y: &[f32]) {
        for (a, &b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

multiversion! {
    /// The largest value (−inf for an empty slice; inputs must not be NaN).
    fn max(v: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 16];
        let chunks = v.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..16 {
                acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for x in acc.iter().chain(rest) {
            m = if *x > m { *x } else { m };
        }
        m
    }
}

multiversion! {
    /// Ids of `v` that include its k largest values (k >= 1), into `out` (cleared first):
    /// one pass, keeping a threshold that only rises. Chunks of 16 with no value at or above
    /// it are skipped with one vector compare; the others add their qualifying ids, and
    /// whenever `out` reaches 4k ids it is cut to its k first in the order (value
    /// descending, id ascending) and the threshold becomes the k-th value, so `out` always
    /// holds the k first ids of that order. NaN values never qualify (when fewer than k
    /// values do, `out` holds every id).
    fn top_k_candidates(v: &[f32], k: usize, out: &mut Vec<usize>) {
        out.clear();
        let mut threshold = f32::NEG_INFINITY;
        let mut chunks = v.chunks_exact(16);
        let mut base = 0;
        let push = |out: &mut Vec<usize>, threshold: &mut f32, i: usize, x: f32| {
            if x >= *threshold {
                out.push(i);
                if out.len() >= 4 * k {
                    out.select_nth_unstable_by(k - 1, |&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
                    out.truncate(k);
                    *threshold = v[out[k - 1]];
                }
            }
        };
        for c in &mut chunks {
            let any = c.iter().fold(false, |a, &x| a | (x >= threshold));
            if any {
                for (j, &x) in c.iter().enumerate() {
                    push(out, &mut threshold, base + j, x);
                }
            }
            base += 16;
        }
        for (j, &x) in chunks.remainder().iter().enumerate() {
            push(out, &mut threshold, base + j, x);
        }
        if out.len() < k {
            out.clear();
            out.extend(0..v.len());
        }
    }
}

multiversion! {
    /// Σ exp(v[i] − shift), with [`exp`] in f32 and 16 partial sums (pass shift = max(v)
    /// so every term is in (0, 1]).
    fn sum_exp(v: &[f32], shift: f32) -> f64 {
        let mut acc = [0.0f32; 16];
        let chunks = v.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..16 {
                acc[j] += exp(c[j] - shift);
            }
        }
        let mut s = 0.0f64;
        for a in acc {
            s += f64::from(a);
        }
        for &x in rest {
            s += f64::from(exp(x - shift));
        }
        s
    }
}

multiversion! {
    /// v[i] = exp(v[i] − shift) in place; returns Σ v[i] (16 partial sums, in f32).
    fn exp_shift_sum(v: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0.0f32; 16];
        let mut chunks = v.chunks_exact_mut(16);
        for c in &mut chunks {
            for j in 0..16 {
                c[j] = exp(c[j] - shift);
                acc[j] += c[j];
            }
        }
        let mut s = 0.0f32;
        for x in chunks.into_remainder() {
            *x = exp(*x - shift);
            s += *x;
        }
        for a in acc {
            s += a;
        }
        s
    }
}

multiversion! {
    /// v[i] *= k.
    fn scale(v: &mut [f32], k: f32) {
        for x in v {
            *x *= k;
        }
    }
}

/// Whether every value is finite (no NaN, no infinity). A value is not finite when its
/// exponent field is all ones; adding one to that field carries into bit 31 exactly then. AND,
/// ADD and OR over 16 lanes: SSE2 vectorises it (an integer max would need SSE4.1).
pub fn all_finite(v: &[f32]) -> bool {
    const EXP: u32 = 0x7F80_0000;
    const ONE: u32 = 0x0080_0000;
    let flag = |x: &f32| (x.to_bits() & EXP) + ONE;
    let mut lanes = [0u32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l |= flag(x);
        }
    }
    let all = rest.iter().fold(lanes.iter().fold(0, |a, &l| a | l), |a, x| a | flag(x));
    all & 0x8000_0000 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_any_nan_or_infinity_at_every_position() {
        assert!(all_finite(&[]));
        for n in 1..40 {
            let mut v: Vec<f32> = (0..n).map(|i| i as f32 / 40.0 * -1.5e38).collect();
            v.push(f32::MAX);
            assert!(all_finite(&v));
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for i in 0..v.len() {
                    let mut w = v.clone();
                    w[i] = bad;
                    assert!(!all_finite(&w), "{bad} at {i} of {}", w.len());
                }
            }
        }
    }

    #[test]
    fn exp_is_close_to_std() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) >= 0.0 && exp(1000.0).is_finite());
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn exp_takes_the_exponent_from_the_bits_exactly() {
        // The integer part read from the bits equals the float's saturating conversion
        // (what `n as i32` gives) for every input, including clamped ones.
        let mut x = -100.0f32;
        while x < 100.0 {
            let t = x.clamp(-87.0, 88.0) * std::f32::consts::LOG2_E + 12_582_912.0;
            let ni = t.to_bits() as i32 - 12_582_912f32.to_bits() as i32;
            assert_eq!(ni, (t - 12_582_912.0) as i32, "x = {x}");
            x += 0.00731;
        }
    }

    #[test]
    fn exp_shift_sum_stores_and_sums() {
        let mut v: Vec<f32> = (0..37).map(|i| i as f32 * 0.1 - 2.0).collect();
        let orig = v.clone();
        let s = exp_shift_sum(&mut v, 1.5);
        let mut want = 0.0f64;
        for (a, b) in v.iter().zip(&orig) {
            assert!((a - (b - 1.5).exp()).abs() <= 1e-6 * (b - 1.5).exp());
            want += f64::from(*a);
        }
        assert!((f64::from(s) - want).abs() < 1e-4);
        scale(&mut v, 2.0);
        assert!((v[3] - 2.0 * (orig[3] - 1.5).exp()).abs() < 1e-5);
    }

    #[test]
    fn max_and_sum_exp() {
        for n in [0, 1, 15, 16, 17, 100, 10_000] {
            let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 0.013 - 6.0).collect();
            let want = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&v), want, "n={n}");
            let exact: f64 = v.iter().map(|&x| (f64::from(x) - f64::from(want)).exp()).sum();
            let got = sum_exp(&v, want);
            assert!((got - exact).abs() <= 1e-6 * exact.max(1.0), "n={n}: {got} vs {exact}");
        }
    }

    #[test]
    fn vector_variants_equal_the_scalar_formulas() {
        // Odd length so every variant runs a tail; compare against one-element calls.
        let d = 37;
        let g: Vec<f32> = (0..d).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let u: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).sin()).collect();
        let mut out = vec![0.0; d];
        silu_mul(&mut out, &g, &u);
        for i in 0..d {
            let mut one = [0.0];
            silu_mul(&mut one, &g[i..i + 1], &u[i..i + 1]);
            assert_eq!(out[i], one[0]);
            let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
            assert!((out[i] - want).abs() <= 1e-6 * (1.0 + want.abs()));
        }
        let (k, hist) = (4, 3);
        let taps: Vec<f32> = (0..k * d).map(|i| (i as f32 * 0.7).cos()).collect();
        let history: Vec<f32> = (0..hist * d).map(|i| (i as f32 * 0.3).sin()).collect();
        let mut mix = vec![0.0; d];
        conv_gate(&mut mix, &g, &u, &taps, &history, 2);
        for ch in 0..d {
            // Oldest row first: rows 2, 0, 1 then the current value.
            let mut want = taps[(k - 1) * d + ch] * u[ch];
            for (j, row) in [2, 0, 1].into_iter().enumerate() {
                want += taps[j * d + ch] * history[row * d + ch];
            }
            want /= 1.0 + (-g[ch]).exp();
            assert!((mix[ch] - want).abs() <= 1e-5 * (1.0 + want.abs()), "{ch}");
        }
        let x: Vec<f32> = (0..d).map(|i| i as f32 - 5.0).collect();
        let gain = vec![2.0; d];
        rmsnorm(&mut out, &x, &gain, 1e-6);
        let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
        for i in 0..d {
            assert!((out[i] - x[i] / (ms + 1e-6).sqrt() * 2.0).abs() < 1e-5);
        }
    }
}
