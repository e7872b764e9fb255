//! Deterministic random numbers, so every simulation and evaluation is
//! reproducible from its seed on any machine: xoshiro256** seeded through
//! splitmix64 (`rand_xoshiro`), and `rand_distr`'s samplers for the normal
//! and Gamma draws of the Thompson-sampling policies. The conversions below
//! (unit interval, index, Bernoulli, weighted pick) are kept here, not taken
//! from `rand`, because generated logs and simulations are defined by them:
//! changing one would change every recorded figure.

use rand_distr::{Distribution, Gamma, StandardNormal};
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256StarStar;

/// A Gamma(shape, 1) sampler, built once for many draws (building one
/// costs a square root and a division); None for a shape that is not a
/// positive finite number.
#[derive(Debug, Clone, Copy)]
pub struct GammaShape(Option<Gamma<f64>>);

impl GammaShape {
    #[must_use]
    pub fn new(shape: f64) -> Self {
        Self(Gamma::new(shape, 1.0).ok())
    }
}

/// A seeded xoshiro256** stream.
#[derive(Debug, Clone)]
pub struct Rng(Xoshiro256StarStar);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256StarStar::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1): the top 53 bits of one draw.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in the open interval (0, 1): the top 53 bits of one draw,
    /// centred in their step, so a logarithm of it is always finite.
    pub fn open_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// True with probability p.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal draw.
    pub fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.0)
    }

    /// A Gamma(shape, 1) draw; NaN for a shape that is not a positive
    /// finite number.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        self.gamma_of(&GammaShape::new(shape))
    }

    /// A draw from a Gamma built beforehand: the same draw as
    /// [`Self::gamma`] with its shape, without rebuilding the sampler.
    pub fn gamma_of(&mut self, gamma: &GammaShape) -> f64 {
        gamma.0.map_or(f64::NAN, |gamma| gamma.sample(&mut self.0))
    }

    /// Picks an index by weight.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut target = self.unit() * total;
        for (i, &w) in weights.iter().enumerate() {
            if target < w {
                return i;
            }
            target -= w;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let value = a.unit();
            assert_eq!(value, b.unit());
            assert!((0.0..1.0).contains(&value));
        }
        assert!(Rng::new(1).next_u64() != Rng::new(2).next_u64());
    }

    /// The stream every recorded figure was made with: xoshiro256** seeded
    /// by splitmix64, as the reference algorithms define them (the values
    /// come from a separate Python transcription of both, not from this code).
    /// The first three draws for seed 7.
    const EXPECTED_SEED_7: [u64; 3] = [12_923_355_070_828_475_994, 5_142_052_590_334_782_674, 15_488_392_906_492_639_638];

    #[test]
    fn the_stream_is_the_documented_one() {
        let mut rng = Rng::new(7);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(got, EXPECTED_SEED_7);
    }

    #[test]
    fn samplers_have_the_right_moments() {
        let mut rng = Rng::new(11);
        let n = 200_000;
        let normals: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = normals.iter().sum::<f64>() / f64::from(n);
        let variance = normals.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.01 && (variance - 1.0).abs() < 0.02, "{mean} {variance}");
        // Gamma(k, 1) has mean and variance k.
        let gammas: Vec<f64> = (0..n).map(|_| rng.gamma(3.0)).collect();
        let mean = gammas.iter().sum::<f64>() / f64::from(n);
        assert!((mean - 3.0).abs() < 0.03, "{mean}");
        assert!(rng.gamma(0.0).is_nan());
        // A prebuilt sampler draws exactly what a fresh one would.
        let (mut fresh, mut built) = (Rng::new(5), Rng::new(5));
        for shape in [1.0, 2.5, 40.0, 0.3] {
            let gamma = GammaShape::new(shape);
            for _ in 0..100 {
                assert_eq!(fresh.gamma(shape).to_bits(), built.gamma_of(&gamma).to_bits());
            }
        }
    }
}

