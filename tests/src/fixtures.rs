//! Deterministic test models: arms trained by folding pseudo-random events
//! with the same accumulator the trainer uses, so the matrices are realistic
//! (positive definite, coupled), and reproducible from a seed.

use bandit_core::cholesky::Workspace;
use bandit_core::fold::ArmAccumulator;
use bandit_core::Payload;

/// A small xorshift generator: deterministic, dependency-free.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A payload of `arms` arms named `p0…`, each folded from `events` events.
pub fn trained_payload(dim: usize, arms: usize, events: usize, seed: u64) -> Payload {
    let mut rng = Rng::new(seed);
    let mut work = Workspace::default();
    let arms = (0..arms)
        .map(|k| {
            let mut acc = ArmAccumulator::new(dim, 1.0);
            let mut x = vec![0.0; dim];
            for _ in 0..events {
                x.iter_mut().for_each(|v| *v = rng.unit());
                let reward = if rng.unit() < 0.3 { 1.0 } else { 0.0 };
                acc.update(&x, reward);
            }
            acc.to_payload(&format!("p{k}"), &mut work, Some(1_767_225_600_000))
                .unwrap_or_else(|e| panic!("fixture arm {k}: {e}"))
        })
        .collect();
    Payload { dim, arms, offsets: vec![] }
}

/// A context vector in [0, 1)^dim.
pub fn context(dim: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..dim).map(|_| rng.unit()).collect()
}
