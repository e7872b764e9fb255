//! `bandit`: the client side of the recommender.
//!
//! Layout:
//! - [`models`]: rank, stats, export, load, create over Redis (BANDIT.*).
//! - [`feedback`]: the buffered Kafka producer of feedback events.
//! - [`format`]: numbers at their shortest round-trip text.
//! - [`shop`]: the simulated shop: catalogue, visitors, context, click model.
//! - [`simulate`]: the learning loop against a recommender, with random and
//!   oracle baselines, its table, SVG curve and summary line.
//! - [`live`]: the live stack as a recommender (Redis + Kafka).
//! - [`history`]: historical logs (CSV) for bootstrap and evaluation.
//! - [`generate`]: historical logs made by the simulated shop.
//! - [`evaluate`]: offline policy evaluation (six policies, four metrics).
//! - [`bench`]: RANK versus GET, fold rate and flush cost.
//! - [`rng`]: deterministic random numbers.
//! - [`error`]: this crate's error type.

pub mod bench;
pub mod error;
pub mod evaluate;
pub mod feedback;
pub mod format;
pub mod generate;
pub mod history;
pub mod live;
pub mod models;
pub mod rng;
pub mod shop;
pub mod simulate;

pub use error::{ClientError, Result};
