//! The two seeded generators, fully specified here so that shuffles and samples are the same
//! on every platform and every version (no dependency on a crate's RNG internals).
//!
//! * [`SplitMix64`]: the data order (window shuffles, train/validation split).
//! * [`Rng`] (xorshift64*): sampling during generation.
//! * [`XorShift64`], [`uniform_values`]: test and benchmark data.

/// SplitMix64: a tiny, fully specified generator, so shuffles are identical on every
/// platform and every version of this crate (no dependency on a crate's RNG internals).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The current state: `SplitMix64::new(g.state())` continues exactly where `g` is.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (Lemire's method with rejection; `n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// xorshift64*: small, seeded, the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The current state: `Rng::from_state(r.state())` continues exactly where `r` is.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// A generator continuing from a saved [`Rng::state`].
    pub fn from_state(state: u64) -> Self {
        Self(state.max(1))
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// xorshift64 (13, 7, 17): the bits behind test and benchmark data (weights, inputs,
/// tokens), the same on every platform.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from a seed (made odd, so it is never the all-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` values in [-1, 1] (steps of 1e-4) from [`XorShift64`] seeded with `seed`.
pub fn uniform_values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = XorShift64::new(seed);
    (0..n).map(|_| (r.next_u64() % 20_001) as f32 / 10_000.0 - 1.0).collect()
}
