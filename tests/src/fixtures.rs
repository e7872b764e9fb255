//! Deterministic test models: arms trained by folding pseudo-random events
//! with the same accumulator the trainer uses, so the matrices are realistic
//! (positive definite, coupled), and reproducible from a seed. The random
//! numbers and the model are the client's (`bandit::lab::rng`, `bandit::lab::bench`).

use bandit_core::Payload;

pub use bandit::lab::rng::Rng;

/// A payload of `arms` arms named `p0…`, each folded from `events` events,
/// stamped with a fixed update time so exports are reproducible.
pub fn trained_payload(dim: usize, arms: usize, events: usize, seed: u64) -> Payload {
    let mut payload = bandit::lab::bench::trained_payload(dim, arms, events, seed).unwrap();
    for arm in &mut payload.arms {
        arm.updated_ms = Some(1_767_225_600_000);
    }
    assert_eq!(payload.arms.len(), arms, "every fixture arm inverts");
    payload
}

/// A context vector in [0, 1)^dim.
pub fn context(dim: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..dim).map(|_| rng.unit()).collect()
}
