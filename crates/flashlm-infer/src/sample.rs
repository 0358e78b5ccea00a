//! Sampling: greedy, temperature, top-k, top-p, with a seeded generator.

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// <= 0: greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    pub top_p: f32,
}

pub use flashlm_core::rng::Rng;

impl Sampler {
    /// Pick a token id from logits.
    pub fn sample(&self, logits: &[f32], rng: &mut Rng) -> usize {
        if self.temperature <= 0.0 || self.top_k == 1 {
            return argmax(logits);
        }
        let n = logits.len();
        let k = if self.top_k == 0 { n } else { self.top_k.min(n) };
        if k == n && self.top_p >= 1.0 {
            return self.sample_all(logits, rng);
        }
        let mut idx = if k < n { candidates(logits, k) } else { (0..n).collect() };
        // Largest first, ties by id: a total order, so the result never depends on how the
        // candidates were found.
        let order = |&a: &usize, &b: &usize| logits[b].total_cmp(&logits[a]).then(a.cmp(&b));
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, order);
            idx.truncate(k);
        }
        idx.sort_unstable_by(order);
        let max = logits[idx[0]];
        let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i] - max) / self.temperature).exp()).collect();
        let total: f32 = probs.iter().sum();
        for p in &mut probs {
            *p /= total;
        }
        if self.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let t: f32 = probs.iter().sum();
            for p in &mut probs {
                *p /= t;
            }
        }
        let u = rng.next_f32();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if u < acc {
                return idx[i];
            }
        }
        idx[probs.len() - 1]
    }

    /// No top-k, no top-p: every token may be drawn, so no ordering is needed: one vectorised
    /// pass of exp, then the draw walks the weights in id order, 64 at a time.
    fn sample_all(&self, logits: &[f32], rng: &mut Rng) -> usize {
        let inv_t = 1.0 / self.temperature;
        let mut w: Vec<f32> = logits.iter().map(|&l| l * inv_t).collect();
        let max = crate::vmath::max(&w);
        let total = crate::vmath::exp_shift_sum(&mut w, max);
        let target = rng.next_f32() * total;
        let mut acc = 0.0f32;
        for (ci, c) in w.chunks(64).enumerate() {
            let s = chunk_sum(c);
            if acc + s > target {
                for (j, &x) in c.iter().enumerate() {
                    acc += x;
                    if target < acc {
                        return ci * 64 + j;
                    }
                }
                break;
            }
            acc += s;
        }
        // Rounding (the partial sums disagree in their last bits) left the target past the
        // walk: the most likely token (an exp that is clamped, not zero, must never be drawn).
        argmax(logits)
    }
}

/// Sum with 8 partial sums (so the compiler can vectorise it).
fn chunk_sum(c: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = c.chunks_exact(8);
    for q in &mut it {
        for j in 0..8 {
            acc[j] += q[j];
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// Ids that include the k largest logits (a few times k of them, so ordering them is cheap).
fn candidates(logits: &[f32], k: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(4 * k);
    crate::vmath::top_k_candidates(logits, k.max(1), &mut out);
    out
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let m = crate::vmath::max(v);
    v.iter().position(|&x| x == m).unwrap_or(0)
}

/// log_softmax(logits)[target]: the shift by the max keeps every exp in (0, 1]; the sum is
/// taken in f64 from 16 f32 partial sums (relative error ~1e-6, i.e. ~1e-6 nats).
pub fn log_prob(logits: &[f32], target: usize) -> f64 {
    let max = crate::vmath::max(logits);
    let lse = crate::vmath::sum_exp(logits, max).ln() + f64::from(max);
    f64::from(logits[target]) - lse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let logits = [1.0, 5.0, 4.9, 0.0, -3.0];
        let mut rng = Rng::new(3);
        assert_eq!(Sampler { temperature: 0.0, top_k: 0, top_p: 1.0 }.sample(&logits, &mut rng), 1);
        let s = Sampler { temperature: 1.0, top_k: 2, top_p: 1.0 };
        for _ in 0..300 {
            assert!([1, 2].contains(&s.sample(&logits, &mut rng)));
        }
        let s = Sampler { temperature: 1.0, top_k: 0, top_p: 0.3 };
        for _ in 0..300 {
            assert_eq!(s.sample(&logits, &mut rng), 1);
        }
        let s = Sampler { temperature: 3.0, top_k: 0, top_p: 1.0 };
        let mut seen = [false; 5];
        for _ in 0..5000 {
            seen[s.sample(&logits, &mut rng)] = true;
        }
        assert!(seen.iter().all(|&x| x));
        assert!((log_prob(&[0.0, 0.0], 1) - 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn sampling_from_every_token_follows_the_softmax() {
        // p = 1/7, 2/7, 4/7 at temperature 1; at temperature 2 the weights are their square roots.
        let logits = [0.0f32, 2f32.ln(), 4f32.ln(), f32::NEG_INFINITY];
        for (t, want) in
            [(1.0f32, [1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0]), (2.0, [1.0 / 4.414, 1.414 / 4.414, 2.0 / 4.414])]
        {
            for s in [
                Sampler { temperature: t, top_k: 0, top_p: 1.0 },
                // The sorted path (top-p just below 1 keeps all three) agrees.
                Sampler { temperature: t, top_k: 0, top_p: 0.999_999 },
            ] {
                let mut rng = Rng::new(9);
                let mut seen = [0usize; 4];
                let draws = 70_000;
                for _ in 0..draws {
                    seen[s.sample(&logits, &mut rng)] += 1;
                }
                assert_eq!(seen[3], 0, "{s:?}: an impossible token was drawn");
                for (i, w) in want.iter().enumerate() {
                    let got = seen[i] as f64 / draws as f64;
                    assert!((got - w).abs() < 0.01, "{s:?}: token {i}: {got} vs {w}");
                }
            }
        }
    }

    #[test]
    fn top_k_keeps_exactly_the_k_largest() {
        // Spread logits (many threshold rises), ties at the boundary, and non-finite values.
        let mut logits: Vec<f32> = (0..10_000).map(|i| ((i * 7919) % 10_007) as f32 * -0.01).collect();
        logits[17] = 3.0;
        logits[5000] = f32::NEG_INFINITY;
        for k in [1, 2, 5, 50, 999, 9_999] {
            let mut want: Vec<usize> = (0..logits.len()).collect();
            want.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            want.truncate(k);
            want.sort_unstable();
            let mut got = candidates(&logits, k);
            got.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            got.truncate(k);
            got.sort_unstable();
            assert_eq!(got, want, "k = {k}");
            // And sampling only ever returns one of them.
            let s = Sampler { temperature: 1.0, top_k: k, top_p: 1.0 };
            let mut rng = Rng::new(k as u64);
            for _ in 0..50 {
                assert!(want.binary_search(&s.sample(&logits, &mut rng)).is_ok(), "k = {k}");
            }
        }
        let flat = vec![f32::NAN; 100];
        assert_eq!(candidates(&flat, 10).len(), 100);
        // Every tail length and many thresholds: small sizes, repeated values.
        for n in 1..=70usize {
            let v: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32).collect();
            for k in 1..=n.min(12) {
                // The k first ids in the sampler's order (value descending, id ascending,
                // so ties at the boundary matter) are all among the candidates.
                let mut want: Vec<usize> = (0..n).collect();
                want.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
                let got = candidates(&v, k);
                assert!(want[..k].iter().all(|i| got.contains(i)), "n={n} k={k}: {got:?}");
            }
        }
    }
}
