//! Choosing the next token from the logits.
//!
//! In this order, like llama.cpp b2757's default sampler chain:
//!
//! 1. **repetition penalty** over the last `repeat_last_n` tokens of the history (prompt
//!    included), as Hugging Face's `RepetitionPenaltyLogitsProcessor` does: the logit of each
//!    distinct recent token is divided by the penalty when positive, multiplied when negative;
//! 2. `temp <= 0`: **greedy**, the first index of the largest logit; otherwise
//! 3. **top-k** (`top_k <= 0`: off), 4. **top-p** (`top_p >= 1`: off), 5. **min-p**
//!    (`min_p <= 0`: off), 6. **temperature**, then a draw from the softmax with the
//!    sampler's own generator ([`Rng`], xoshiro256** seeded by splitmix64: the same seed gives
//!    the same tokens on every machine).
//!
//! Candidates are ordered by logit, ties by id, so every cut is deterministic.

/// Sampling parameters (the defaults are llama.cpp's).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Temperature; `<= 0` picks the most likely token.
    pub temp: f32,
    /// Keep the `top_k` most likely tokens (`<= 0`: all).
    pub top_k: i32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (`1`: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (`0`: none).
    pub min_p: f32,
    /// Penalty for recent tokens (`1`: none).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at (`0`: none, `usize::MAX`: all).
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Checks the ranges (one line per problem, for the command line).
    pub fn validate(&self) -> Result<(), String> {
        if !self.temp.is_finite() {
            return Err(format!("--temp {} is not a number", self.temp));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("--top-p {} must be in [0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("--min-p {} must be in [0, 1]", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(format!(
                "--repeat-penalty {} must be a positive number",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A small, fast, seedable generator: xoshiro256** with its state filled by splitmix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks tokens; holds the random generator so a sequence of draws is reproducible.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
}

/// Applies the repetition penalty to `logits` for the distinct tokens among the last
/// `last_n` of `history` (ids outside `logits` are ignored).
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], last_n: usize, penalty: f32) {
    if penalty == 1.0 || last_n == 0 {
        return;
    }
    let recent = &history[history.len().saturating_sub(last_n)..];
    let mut seen = std::collections::HashSet::with_capacity(recent.len());
    for &id in recent {
        if !seen.insert(id) {
            continue;
        }
        if let Some(l) = logits.get_mut(id as usize) {
            if *l < 0.0 {
                *l *= penalty;
            } else {
                *l /= penalty;
            }
        }
    }
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

impl Sampler {
    /// A sampler with its generator seeded from `cfg.seed`.
    pub fn new(cfg: SamplerConfig) -> Sampler {
        let rng = Rng::new(cfg.seed);
        Sampler { cfg, rng }
    }

    /// The parameters.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Picks the next token. `logits` (one per vocabulary entry) is modified in place by the
    /// repetition penalty; `history` is every token so far (prompt included).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        apply_repetition_penalty(
            logits,
            history,
            self.cfg.repeat_last_n,
            self.cfg.repeat_penalty,
        );
        if self.cfg.temp <= 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        let cands = self.candidates(logits);
        if cands.is_empty() {
            return argmax(logits);
        }
        // temperature, softmax, draw
        let t = self.cfg.temp as f64;
        let max = cands[0].1 as f64 / t;
        let weights: Vec<f64> = cands
            .iter()
            .map(|&(_, l)| ((l as f64 / t) - max).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (&(id, _), &w) in cands.iter().zip(&weights) {
            if r < w {
                return id;
            }
            r -= w;
        }
        cands[cands.len() - 1].0
    }

    /// The tokens left after top-k, top-p and min-p, most likely first (the temperature is
    /// applied after these cuts, as llama.cpp does).
    pub fn candidates(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| {
            b.1.partial_cmp(&a.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.0.cmp(&b.0))
        };
        let k = self.cfg.top_k;
        if k > 0 && (k as usize) < c.len() {
            let k = k as usize;
            c.select_nth_unstable_by(k - 1, by_logit);
            c.truncate(k);
        }
        c.sort_by(by_logit);
        if c.is_empty() {
            return c;
        }
        let probs = softmax(&c);
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = c.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
        }
        if self.cfg.min_p > 0.0 {
            // probabilities of what is left, relative to the most likely one
            let max = c[0].1 as f64;
            let floor = self.cfg.min_p as f64;
            let keep = c
                .iter()
                .take_while(|&&(_, l)| ((l as f64) - max).exp() >= floor)
                .count()
                .max(1);
            c.truncate(keep);
        }
        c
    }
}

/// Softmax of sorted candidates (largest first), in f64.
fn softmax(c: &[(u32, f32)]) -> Vec<f64> {
    let max = c[0].1 as f64;
    let e: Vec<f64> = c.iter().map(|&(_, l)| (l as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}
