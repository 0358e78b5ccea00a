//! Sampling: greedy, temperature, top-k, top-p, min-p, with a seeded generator; the logit
//! adjustments that come before it ([`Penalties`], [`apply_bias`]); and the logprobs of a
//! token under the model's own distribution ([`token_logprob`]).

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// <= 0: greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    pub top_p: f32,
    /// Keep only tokens whose probability is at least `min_p` times the most likely one's,
    /// measured before temperature (llama.cpp's min-p; 0: off).
    pub min_p: f32,
}

impl Default for Sampler {
    /// The CLI's defaults: temperature 0.8, top-k 50, no top-p, no min-p.
    fn default() -> Self {
        Self { temperature: 0.8, top_k: 50, top_p: 1.0, min_p: 0.0 }
    }
}

pub use flashlm_core::rng::Rng;

impl Sampler {
    /// Pick a token id from logits.
    pub fn sample(&self, logits: &[f32], rng: &mut Rng) -> usize {
        if self.temperature <= 0.0 || self.top_k == 1 {
            return argmax(logits);
        }
        if self.min_p > 0.0 {
            // p_i >= min_p * p_max  <=>  logit_i >= max + ln(min_p); the rest can never be drawn.
            let floor = crate::vmath::max(logits) + self.min_p.ln();
            let kept: Vec<f32> =
                logits.iter().map(|&l| if l >= floor { l } else { f32::NEG_INFINITY }).collect();
            return Sampler { min_p: 0.0, ..*self }.sample(&kept, rng);
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

/// Penalties on tokens already seen, applied to the logits before sampling.
///
/// * `presence` and `frequency` are OpenAI's: `logit[j] -= frequency * c[j] + presence * (c[j] > 0)`,
///   where `c[j]` counts how often token j was generated so far in this stream (-2..=2; 0: off).
/// * `repetition` is llama.cpp's `repeat_penalty`: every token among the last `last_n` tokens
///   (prompt and generated) has a positive logit divided by it and a negative one multiplied
///   by it (1: off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// OpenAI's presence penalty (0: off).
    pub presence: f32,
    /// OpenAI's frequency penalty (0: off).
    pub frequency: f32,
    /// llama.cpp's repetition penalty (1: off).
    pub repetition: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub last_n: usize,
}

impl Default for Penalties {
    fn default() -> Self {
        Self { presence: 0.0, frequency: 0.0, repetition: 1.0, last_n: 64 }
    }
}

impl Penalties {
    /// Whether any penalty is on.
    pub fn active(&self) -> bool {
        self.presence != 0.0 || self.frequency != 0.0 || self.repetition != 1.0
    }

    /// Apply to `logits`: `counts` are the generated tokens' counts (token, count > 0, each
    /// token once), `recent` the distinct tokens of the repetition window.
    pub fn apply(&self, logits: &mut [f32], counts: impl IntoIterator<Item = (u16, u32)>, recent: &[u16]) {
        if self.repetition != 1.0 {
            for &t in recent {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / self.repetition } else { *l * self.repetition };
                }
            }
        }
        if self.presence != 0.0 || self.frequency != 0.0 {
            for (t, c) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= self.frequency * c as f32 + self.presence;
                }
            }
        }
    }
}

/// OpenAI's `logit_bias`: add each bias to its token's logit (-100 bans a token in practice,
/// +100 all but forces it).
pub fn apply_bias(logits: &mut [f32], bias: &[(u16, f32)]) {
    for &(t, b) in bias {
        if let Some(l) = logits.get_mut(t as usize) {
            *l += b;
        }
    }
}

/// A token's log-probability under the model's distribution (the raw logits: before
/// temperature, top-k, top-p, min-p, penalties and bias), and the `top` most likely tokens
/// with theirs (most likely first, ties by id).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub id: u16,
    /// log_softmax(logits)[id], nats.
    pub logprob: f64,
    /// The most likely tokens and their log-probabilities.
    pub top: Vec<(u16, f64)>,
}

/// [`TokenLogprob`] of `id` from one row of logits (one log-sum-exp for all of them).
pub fn token_logprob(logits: &[f32], id: u16, top: usize) -> TokenLogprob {
    let max = crate::vmath::max(logits);
    let lse = crate::vmath::sum_exp(logits, max).ln() + f64::from(max);
    let lp = |i: usize| f64::from(logits[i]) - lse;
    let mut best = Vec::new();
    if top > 0 {
        let k = top.min(logits.len());
        best = candidates(logits, k);
        best.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        best.truncate(k);
    }
    TokenLogprob {
        id,
        logprob: lp((id as usize).min(logits.len() - 1)),
        top: best.into_iter().map(|i| (i as u16, lp(i))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let logits = [1.0, 5.0, 4.9, 0.0, -3.0];
        let mut rng = Rng::new(3);
        assert_eq!(
            Sampler { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0 }.sample(&logits, &mut rng),
            1
        );
        let s = Sampler { temperature: 1.0, top_k: 2, top_p: 1.0, min_p: 0.0 };
        for _ in 0..300 {
            assert!([1, 2].contains(&s.sample(&logits, &mut rng)));
        }
        let s = Sampler { temperature: 1.0, top_k: 0, top_p: 0.3, min_p: 0.0 };
        for _ in 0..300 {
            assert_eq!(s.sample(&logits, &mut rng), 1);
        }
        let s = Sampler { temperature: 3.0, top_k: 0, top_p: 1.0, min_p: 0.0 };
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
                Sampler { temperature: t, top_k: 0, top_p: 1.0, min_p: 0.0 },
                // The sorted path (top-p just below 1 keeps all three) agrees.
                Sampler { temperature: t, top_k: 0, top_p: 0.999_999, min_p: 0.0 },
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
            let s = Sampler { temperature: 1.0, top_k: k, top_p: 1.0, min_p: 0.0 };
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
    /// A small pseudo-random logits row (values in about -8..8) for the reference tests.
    fn row(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.next_f32() * 16.0 - 8.0).collect()
    }

    #[test]
    fn penalties_and_bias_match_the_written_definitions() {
        let generated: Vec<u16> = vec![3, 7, 7, 2, 9, 7, 3];
        let prompt: Vec<u16> = vec![1, 4, 4, 6];
        for (presence, frequency, repetition, last_n) in [
            (0.0, 0.0, 1.3, 64),
            (0.5, 0.0, 1.0, 64),
            (0.0, -0.7, 1.0, 64),
            (1.5, 2.0, 0.8, 5),
            (-2.0, 0.3, 1.1, 3),
        ] {
            let p = Penalties { presence, frequency, repetition, last_n };
            let logits = row(12, 5);
            // The reference, token by token, straight from the definitions.
            let history: Vec<u16> = prompt.iter().chain(&generated).copied().collect();
            let window = &history[history.len().saturating_sub(last_n)..];
            let want: Vec<f32> = (0..logits.len())
                .map(|j| {
                    let mut l = logits[j];
                    if window.contains(&(j as u16)) {
                        l = if l > 0.0 { l / repetition } else { l * repetition };
                    }
                    let c = generated.iter().filter(|&&t| t as usize == j).count() as f32;
                    l - (frequency * c + presence * if c > 0.0 { 1.0 } else { 0.0 })
                })
                .collect();
            let mut counts: Vec<(u16, u32)> = Vec::new();
            for &t in &generated {
                match counts.iter_mut().find(|(x, _)| *x == t) {
                    Some(e) => e.1 += 1,
                    None => counts.push((t, 1)),
                }
            }
            let mut recent = window.to_vec();
            recent.sort_unstable();
            recent.dedup();
            let mut got = logits.clone();
            p.apply(&mut got, counts.iter().copied(), &recent);
            assert_eq!(got, want, "{p:?}");
            assert!(p.active());
        }
        assert!(!Penalties::default().active());
        let mut l = vec![0.5f32; 4];
        apply_bias(&mut l, &[(1, 100.0), (3, -100.0), (9, 1.0)]);
        assert_eq!(l, [0.5, 100.5, 0.5, -99.5]);
    }

    #[test]
    fn min_p_draws_only_what_the_reference_keeps_in_its_proportions() {
        let logits = row(40, 11);
        for (min_p, temperature, top_k) in
            [(0.05f32, 1.0f32, 0usize), (0.3, 1.5, 0), (0.02, 0.7, 10), (1.0, 1.0, 0)]
        {
            // Reference: probabilities at temperature 1 decide what is kept; the draw follows
            // softmax(logits / T) renormalised over the kept (and top-k) tokens.
            let pmax = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let in_top: Vec<bool> =
                (0..logits.len()).map(|i| top_k == 0 || order[..top_k].contains(&i)).collect();
            let keep: Vec<bool> = (0..logits.len())
                .map(|i| in_top[i] && f64::from(logits[i] - pmax).exp() >= f64::from(min_p))
                .collect();
            let w: Vec<f64> =
                (0..logits.len())
                    .map(|i| {
                        if keep[i] {
                            (f64::from(logits[i] - pmax) / f64::from(temperature)).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
            let total: f64 = w.iter().sum();
            let s = Sampler { temperature, top_k, top_p: 1.0, min_p };
            let mut rng = Rng::new(1);
            let draws = 40_000;
            let mut seen = vec![0usize; logits.len()];
            for _ in 0..draws {
                seen[s.sample(&logits, &mut rng)] += 1;
            }
            for i in 0..logits.len() {
                let got = seen[i] as f64 / draws as f64;
                assert!(keep[i] || seen[i] == 0, "{s:?}: token {i} drawn but below min_p");
                assert!((got - w[i] / total).abs() < 0.012, "{s:?}: token {i}: {got} vs {}", w[i] / total);
            }
        }
    }

    #[test]
    fn token_logprob_matches_a_plain_log_softmax() {
        for (n, seed) in [(1usize, 1u64), (7, 2), (100, 3), (10_000, 4)] {
            let logits = row(n, seed);
            let lse = logits.iter().map(|&l| f64::from(l).exp()).sum::<f64>().ln();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            for top in [0usize, 1, 5, 20] {
                let id = (seed as usize * 31) % n;
                let t = token_logprob(&logits, id as u16, top);
                assert!((t.logprob - (f64::from(logits[id]) - lse)).abs() < 1e-5, "n={n}");
                let want: Vec<usize> = order[..top.min(n)].to_vec();
                assert_eq!(
                    t.top.iter().map(|&(i, _)| i as usize).collect::<Vec<_>>(),
                    want,
                    "n={n} top={top}"
                );
                for &(i, lp) in &t.top {
                    assert!((lp - (f64::from(logits[i as usize]) - lse)).abs() < 1e-5);
                }
            }
        }
    }
}
