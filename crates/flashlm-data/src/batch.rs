//! Batching as FlashLM v4 does it: the token stream (every story followed by EOS) is cut
//! into non-overlapping windows of `seq_len + 1` tokens; window i gives inputs
//! `w[..seq_len]` and targets `w[1..]`. Training visits the windows in a fresh shuffled
//! order every epoch (derived from the seed and the epoch only, so any step can be
//! recomputed: runs resume exactly); the last incomplete batch of an epoch is dropped.
//! Validation visits windows in order.

use flashlm_core::rng::SplitMix64;

/// Non-overlapping windows of `seq_len + 1` tokens.
#[derive(Debug, Clone, Copy)]
pub struct Windows<'a> {
    tokens: &'a [u16],
    seq_len: usize,
}

impl<'a> Windows<'a> {
    /// Windows over `tokens` (a trailing remainder shorter than a window is unused).
    pub fn new(tokens: &'a [u16], seq_len: usize) -> Self {
        assert!(seq_len > 0, "seq_len must be positive");
        Self { tokens, seq_len }
    }

    /// Number of whole windows.
    pub fn len(&self) -> usize {
        self.tokens.len() / (self.seq_len + 1)
    }

    /// True if there is no whole window.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence length (inputs per window).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Window `i`: `seq_len + 1` tokens.
    pub fn get(&self, i: usize) -> &'a [u16] {
        let w = self.seq_len + 1;
        &self.tokens[i * w..(i + 1) * w]
    }

    /// A batch made of the given windows.
    pub fn batch(&self, windows: &[usize]) -> Batch {
        let t = self.seq_len;
        let mut inputs = Vec::with_capacity(windows.len() * t);
        let mut targets = Vec::with_capacity(windows.len() * t);
        for &i in windows {
            let w = self.get(i);
            inputs.extend_from_slice(&w[..t]);
            targets.extend_from_slice(&w[1..]);
        }
        Batch { inputs, targets, batch_size: windows.len(), seq_len: t }
    }
}

/// A batch of token ids, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// [batch_size * seq_len] input ids.
    pub inputs: Vec<u16>,
    /// [batch_size * seq_len] next-token targets.
    pub targets: Vec<u16>,
    /// Rows.
    pub batch_size: usize,
    /// Columns.
    pub seq_len: usize,
}

/// The order in which training visits windows; a pure function of (seed, epoch, step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainSchedule {
    /// Windows in the training split.
    pub n_windows: usize,
    /// Windows per batch.
    pub batch_size: usize,
    /// Run seed.
    pub seed: u64,
}

impl TrainSchedule {
    /// Batches per epoch (the incomplete last batch is dropped).
    pub fn batches_per_epoch(&self) -> u64 {
        (self.n_windows / self.batch_size.max(1)) as u64
    }

    /// The shuffled window order of an epoch (Fisher-Yates).
    pub fn permutation(&self, epoch: u64) -> Vec<u32> {
        let mut rng = SplitMix64::new(self.seed ^ epoch.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut p: Vec<u32> = (0..self.n_windows as u32).collect();
        for i in (1..p.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }

    /// (epoch, batch index within the epoch) of a global batch number.
    pub fn position(&self, batch: u64) -> (u64, u64) {
        let per = self.batches_per_epoch().max(1);
        (batch / per, batch % per)
    }
}

/// Training batches from global batch number `start` on, forever (epochs roll over).
#[derive(Debug)]
pub struct TrainBatches<'a> {
    windows: Windows<'a>,
    schedule: TrainSchedule,
    next: u64,
    epoch: Option<(u64, Vec<u32>)>,
}

impl<'a> TrainBatches<'a> {
    /// Start at global batch number `start` (0 for a new run; the saved position to resume).
    pub fn new(windows: Windows<'a>, batch_size: usize, seed: u64, start: u64) -> Self {
        assert!(batch_size > 0, "batch_size must be positive");
        let schedule = TrainSchedule { n_windows: windows.len(), batch_size, seed };
        Self { windows, schedule, next: start, epoch: None }
    }

    /// The schedule in use.
    pub fn schedule(&self) -> TrainSchedule {
        self.schedule
    }

    /// Global number of the batch the next call returns.
    pub fn position(&self) -> u64 {
        self.next
    }
}

/// One training batch with its place in the schedule.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// Global batch number.
    pub index: u64,
    /// Epoch it belongs to.
    pub epoch: u64,
    /// The tokens.
    pub batch: Batch,
}

impl Iterator for TrainBatches<'_> {
    type Item = TrainBatch;

    fn next(&mut self) -> Option<TrainBatch> {
        if self.schedule.batches_per_epoch() == 0 {
            return None;
        }
        let (epoch, k) = self.schedule.position(self.next);
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.epoch = Some((epoch, self.schedule.permutation(epoch)));
        }
        let perm = &self.epoch.as_ref().expect("set above").1;
        let b = self.schedule.batch_size;
        let idx: Vec<usize> =
            perm[k as usize * b..(k as usize + 1) * b].iter().map(|&i| i as usize).collect();
        let out = TrainBatch { index: self.next, epoch, batch: self.windows.batch(&idx) };
        self.next += 1;
        Some(out)
    }
}

/// Validation batches: windows in order, incomplete last batch dropped; at most `max`.
pub fn val_batches<'a>(
    windows: Windows<'a>,
    batch_size: usize,
    max: usize,
) -> impl Iterator<Item = Batch> + 'a {
    assert!(batch_size > 0, "batch_size must be positive");
    let n = (windows.len() / batch_size).min(max);
    (0..n).map(move |k| windows.batch(&(k * batch_size..(k + 1) * batch_size).collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_do_not_overlap_and_targets_shift() {
        let toks: Vec<u16> = (0..23).collect();
        let w = Windows::new(&toks, 4);
        assert_eq!(w.len(), 4);
        assert_eq!(w.get(1), &[5, 6, 7, 8, 9]);
        let b = w.batch(&[0, 2]);
        assert_eq!(b.inputs, vec![0, 1, 2, 3, 10, 11, 12, 13]);
        assert_eq!(b.targets, vec![1, 2, 3, 4, 11, 12, 13, 14]);
    }

    #[test]
    fn epochs_cover_every_window_once_and_differ() {
        let s = TrainSchedule { n_windows: 103, batch_size: 10, seed: 42 };
        let p0 = s.permutation(0);
        let p1 = s.permutation(1);
        let mut sorted = p0.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..103).collect::<Vec<_>>());
        assert_ne!(p0, p1);
        assert_eq!(p0, s.permutation(0));
        assert_ne!(p0, TrainSchedule { seed: 43, ..s }.permutation(0));
        assert_eq!(s.batches_per_epoch(), 10);
    }

    #[test]
    fn resuming_gives_the_same_batches() {
        let toks: Vec<u16> = (0..2000).map(|i| (i % 997) as u16).collect();
        let w = Windows::new(&toks, 8);
        let full: Vec<_> = TrainBatches::new(w, 3, 7, 0).take(200).collect();
        let resumed: Vec<_> = TrainBatches::new(w, 3, 7, 123).take(77).collect();
        for (a, b) in full[123..].iter().zip(&resumed) {
            assert_eq!(a.index, b.index);
            assert_eq!(a.epoch, b.epoch);
            assert_eq!(a.batch, b.batch);
        }
        assert!(full.last().unwrap().epoch >= 2, "test should cross epochs");
    }

    #[test]
    fn validation_is_in_order() {
        let toks: Vec<u16> = (0..100).collect();
        let w = Windows::new(&toks, 9);
        let v: Vec<_> = val_batches(w, 3, 50).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].inputs[0], 30);
        assert_eq!(val_batches(w, 3, 2).count(), 2);
    }

    proptest! {
        #[test]
        fn below_stays_in_range(seed in any::<u64>(), n in 1u64..1_000_000) {
            let mut r = SplitMix64::new(seed);
            for _ in 0..20 {
                prop_assert!(r.below(n) < n);
            }
        }
    }
}
