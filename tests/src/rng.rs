//! A deterministic pseudo-random generator for test inputs: splitmix64 for bits, Box-Muller for
//! normal samples. No external crate, so the inputs never change with a dependency update.

/// splitmix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, trivially seedable.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
    /// The second normal sample of the last Box-Muller pair, not yet returned.
    spare: Option<f64>,
}

impl SplitMix64 {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 {
            state: seed,
            spare: None,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform integer in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the tiny bias is irrelevant for test inputs.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform double in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform double in `(0, 1]`: never 0, so its logarithm is finite.
    pub fn unit_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform double in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A standard normal sample (Box-Muller, both outputs of each pair used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.unit_open0().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.unit();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// A standard Cauchy sample (heavy tails: no mean, no variance).
    pub fn cauchy(&mut self) -> f64 {
        (std::f64::consts::PI * (self.unit() - 0.5)).tan()
    }

    /// A Laplace sample with scale 1 (exponential tails).
    pub fn laplace(&mut self) -> f64 {
        let e = -self.unit_open0().ln();
        if self.next_u64() & 1 == 0 {
            e
        } else {
            -e
        }
    }

    /// A Student-t sample with `nu` degrees of freedom (`nu` a positive integer; polynomial
    /// tails, heavier for small `nu`).
    pub fn student_t(&mut self, nu: u32) -> f64 {
        let z = self.normal();
        let chi2: f64 = (0..nu.max(1)).map(|_| self.normal().powi(2)).sum();
        z / (chi2 / f64::from(nu.max(1))).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sequence() {
        // The first outputs of splitmix64 seeded with 0 (from the reference C implementation).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn moments_are_plausible() {
        let mut r = SplitMix64::new(42);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        let u: Vec<f64> = (0..n).map(|_| r.unit()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert!((u.iter().sum::<f64>() / n as f64 - 0.5).abs() < 0.01);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
