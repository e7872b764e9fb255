//! The lab's random numbers are the core's ([`bandit_core::rng`]): the
//! module's randomised policies and every simulation draw from one stream
//! definition.

pub use bandit_core::rng::{GammaShape, Rng};
