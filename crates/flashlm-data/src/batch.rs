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

/// One stage of a curriculum as the batcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct BatchStage<'a> {
    /// The stage's training windows.
    pub windows: Windows<'a>,
    /// Global batches the stage lasts (`u64::MAX`: to the end of the run).
    pub batches: u64,
    /// Windows of every batch drawn from the previous stage (0: none; never for stage 0).
    pub mixed: usize,
}

/// The permutation of one epoch of one schedule, kept while batches come from it.
#[derive(Debug, Default)]
struct EpochCache {
    key: Option<(TrainSchedule, u64)>,
    perm: Vec<u32>,
}

impl EpochCache {
    /// Window ids of batch `k` of `schedule` (epochs roll over), and its epoch.
    fn windows(&mut self, schedule: TrainSchedule, k: u64) -> (u64, Vec<usize>) {
        let (epoch, j) = schedule.position(k);
        if self.key != Some((schedule, epoch)) {
            self.perm = schedule.permutation(epoch);
            self.key = Some((schedule, epoch));
        }
        let b = schedule.batch_size;
        (epoch, self.perm[j as usize * b..(j as usize + 1) * b].iter().map(|&i| i as usize).collect())
    }
}

/// Training batches from global batch number `start` on, forever (epochs roll over).
///
/// A curriculum ([`TrainBatches::staged`]) is a list of stages, each lasting a number of
/// global batches. Within stage `s` (local batch `k`), a batch is `mixed` windows of stage
/// `s - 1` (batch `k` of its own shuffled schedule) followed by `batch_size - mixed` windows
/// of stage `s`. Every batch is a pure function of (seed, global batch number), so a run
/// resumes exactly anywhere, a stage boundary included. Stage 0 uses the run's seed itself:
/// a one-stage curriculum gives the plain run's batches.
#[derive(Debug)]
pub struct TrainBatches<'a> {
    stages: Vec<BatchStage<'a>>,
    /// First global batch of each stage.
    starts: Vec<u64>,
    batch_size: usize,
    seed: u64,
    next: u64,
    own: EpochCache,
    previous: EpochCache,
}

impl<'a> TrainBatches<'a> {
    /// Start at global batch number `start` (0 for a new run; the saved position to resume).
    pub fn new(windows: Windows<'a>, batch_size: usize, seed: u64, start: u64) -> Self {
        Self::staged(vec![BatchStage { windows, batches: u64::MAX, mixed: 0 }], batch_size, seed, start)
    }

    /// A curriculum's batches (see the type's documentation).
    pub fn staged(stages: Vec<BatchStage<'a>>, batch_size: usize, seed: u64, start: u64) -> Self {
        assert!(batch_size > 0, "batch_size must be positive");
        assert!(!stages.is_empty(), "at least one stage");
        assert!(stages[0].mixed == 0, "the first stage has nothing to mix");
        assert!(stages.iter().all(|s| s.mixed < batch_size), "a stage keeps one window of its own");
        let mut starts = Vec::with_capacity(stages.len());
        let mut at = 0u64;
        for s in &stages {
            starts.push(at);
            at = at.saturating_add(s.batches);
        }
        Self {
            stages,
            starts,
            batch_size,
            seed,
            next: start,
            own: EpochCache::default(),
            previous: EpochCache::default(),
        }
    }

    /// The schedule of stage `s`'s own windows (and of the previous stage's mixed ones).
    pub fn stage_schedule(&self, s: usize) -> TrainSchedule {
        let st = &self.stages[s];
        TrainSchedule {
            n_windows: st.windows.len(),
            batch_size: self.batch_size - st.mixed,
            seed: stage_seed(self.seed, s),
        }
    }

    /// The first stage's schedule (a plain run's only one).
    pub fn schedule(&self) -> TrainSchedule {
        self.stage_schedule(0)
    }

    /// Global number of the batch the next call returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The stage global batch `batch` belongs to (past the last stage: the last one).
    pub fn stage_of(&self, batch: u64) -> usize {
        self.starts.partition_point(|&s| s <= batch).saturating_sub(1)
    }

    /// The first global batch of stage `s`.
    pub fn stage_start(&self, s: usize) -> u64 {
        self.starts[s]
    }

    /// Epoch (within its stage) of global batch `batch`.
    pub fn epoch_of(&self, batch: u64) -> u64 {
        let s = self.stage_of(batch);
        self.stage_schedule(s).position(batch - self.starts[s]).0
    }
}

/// Seed of stage `s`'s window order (stage 0: the run's seed) and, xor 1, of the previous
/// stage's windows mixed into it.
fn stage_seed(seed: u64, s: usize) -> u64 {
    if s == 0 { seed } else { seed ^ (s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) }
}

/// One training batch with its place in the schedule.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// Global batch number.
    pub index: u64,
    /// Epoch it belongs to (within its stage).
    pub epoch: u64,
    /// The tokens.
    pub batch: Batch,
}

impl Iterator for TrainBatches<'_> {
    type Item = TrainBatch;

    fn next(&mut self) -> Option<TrainBatch> {
        let s = self.stage_of(self.next);
        let own = self.stage_schedule(s);
        if own.batches_per_epoch() == 0 {
            return None;
        }
        let k = self.next - self.starts[s];
        let (epoch, ids) = self.own.windows(own, k);
        let st = self.stages[s];
        let batch = if st.mixed == 0 {
            st.windows.batch(&ids)
        } else {
            let prev = self.stages[s - 1].windows;
            let sched = TrainSchedule {
                n_windows: prev.len(),
                batch_size: st.mixed,
                seed: stage_seed(self.seed, s) ^ 1,
            };
            if sched.batches_per_epoch() == 0 {
                return None;
            }
            let (_, prev_ids) = self.previous.windows(sched, k);
            let mut b = prev.batch(&prev_ids);
            let mine = st.windows.batch(&ids);
            b.inputs.extend_from_slice(&mine.inputs);
            b.targets.extend_from_slice(&mine.targets);
            b.batch_size += mine.batch_size;
            b
        };
        let out = TrainBatch { index: self.next, epoch, batch };
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
    fn one_stage_is_the_plain_run() {
        let toks: Vec<u16> = (0..3000).map(|i| (i % 991) as u16).collect();
        let w = Windows::new(&toks, 8);
        let plain: Vec<_> = TrainBatches::new(w, 4, 9, 0).take(150).collect();
        let staged: Vec<_> =
            TrainBatches::staged(vec![BatchStage { windows: w, batches: 1000, mixed: 0 }], 4, 9, 0)
                .take(150)
                .collect();
        for (a, b) in plain.iter().zip(&staged) {
            assert_eq!((a.index, a.epoch, &a.batch), (b.index, b.epoch, &b.batch));
        }
    }

    #[test]
    fn stages_switch_mix_and_resume_exactly() {
        let a: Vec<u16> = (0..2000).map(|i| (i % 500) as u16).collect();
        let b: Vec<u16> = (0..2000).map(|i| 1000 + (i % 500) as u16).collect();
        let (wa, wb) = (Windows::new(&a, 8), Windows::new(&b, 8));
        let stages = vec![
            BatchStage { windows: wa, batches: 30, mixed: 0 },
            BatchStage { windows: wb, batches: 50, mixed: 1 },
        ];
        let full: Vec<_> = TrainBatches::staged(stages.clone(), 4, 3, 0).take(100).collect();
        let tb = TrainBatches::staged(stages.clone(), 4, 3, 0);
        assert_eq!((tb.stage_of(29), tb.stage_of(30), tb.stage_of(79), tb.stage_of(500)), (0, 1, 1, 1));
        assert_eq!(tb.stage_start(1), 30);
        for x in &full[..30] {
            assert!(x.batch.inputs.iter().all(|&t| t < 1000), "stage 0 is stage a only");
        }
        for x in &full[30..] {
            let rows: Vec<&[u16]> = x.batch.inputs.chunks(8).collect();
            assert!(rows[0].iter().all(|&t| t < 1000), "the first window comes from the previous stage");
            assert!(rows[1..].iter().all(|r| r.iter().all(|&t| t >= 1000)));
            assert_eq!(x.batch.batch_size, 4);
        }
        for start in [7u64, 29, 30, 31, 64] {
            let resumed: Vec<_> = TrainBatches::staged(stages.clone(), 4, 3, start).take(20).collect();
            for (x, y) in full[start as usize..].iter().zip(&resumed) {
                assert_eq!((x.index, x.epoch, &x.batch), (y.index, y.epoch, &y.batch));
            }
        }
        assert_eq!(full[30].epoch, 0, "epochs count within the stage");
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
