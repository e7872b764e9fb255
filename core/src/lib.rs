//! The pure core of the bandit recommender: disjoint LinUCB math, the in-memory
//! model every server-side command works on, and the wire formats that move
//! models between the module, the trainer and clients. Nothing here does I/O,
//! so the Redis module, the Kafka sink and the offline evaluator all score with
//! exactly the same code.
//!
//! Layout:
//! - [`packed`]: packed upper-triangle storage of symmetric d×d matrices.
//! - [`cholesky`]: inversion of a symmetric positive-definite matrix.
//! - [`fold`]: the trainer's per-arm accumulator (A += xxᵀ, b += r·x) and its
//!   conversion into a publishable arm.
//! - [`payload`]: the arms-and-offsets batch that `BANDIT.LOAD` takes and
//!   `BANDIT.EXPORT` gives, with its validation.
//! - [`codec`]: the binary (magic + version + fixed-width body) and JSON encodings of a
//!   payload, encoder and decoder side by side.
//! - [`wire`]: the fixed-width little-endian layout of payload bodies and
//!   snapshots, written and read with bulk copies.
//! - [`model`]: one model: settings, the arm table laid out for scans, the
//!   offset fence, and atomic application of payloads.
//! - [`kernel`]: the f32 scoring loop (padded rows, AVX2 when present), full
//!   and pruned.
//! - [`bounds`]: per-arm upper bounds on the computed score, derived when a
//!   row is written, that let an exact top-k skip most arms.
//! - [`prepare`]: the model-independent half of an apply (θ, ranking rows,
//!   bounds), computable on another thread.
//! - [`parallel`]: how many threads a large flush or apply may use.
//! - [`parts`]: a payload sent as several LOAD commands, joined back into
//!   one before it is applied.
//! - [`rank`]: LinUCB scoring of a context against the arm table and top-k
//!   selection without per-arm allocation.
//! - [`policy`]: randomised exploration (ε-greedy, softmax, Thompson
//!   sampling) over ranked candidates, with each placement's probability.
//! - [`rng`]: the seeded random stream and samplers that the randomised
//!   policies and the simulations draw from.
//! - [`trainer`]: the trainer's exactly-once state machine (accumulators,
//!   offsets, flush payloads), driven by the sink's I/O loop.
//! - [`join`]: the learning loop's join of decisions and rewards into
//!   training examples, deterministic so that a replay rebuilds them.
//! - [`snapshot`]: the versioned encoding of a whole model for RDB persistence.
//! - [`event`]: the feedback event the trainer consumes.
//! - [`number`]: numbers printed at their shortest round-trip text.
//! - [`limits`]: size bounds every decoder and command enforces.
//! - [`error`]: this crate's error type.

pub mod bounds;
pub mod cholesky;
pub mod codec;
pub mod error;
pub mod event;
pub mod fold;
pub mod join;
pub mod kernel;
pub mod limits;
pub mod model;
pub mod number;
pub mod packed;
pub mod parallel;
pub mod parts;
pub mod payload;
pub mod policy;
pub mod prepare;
pub mod rank;
pub mod rng;
pub mod snapshot;
pub mod trainer;
pub mod wire;

pub use error::{Error, Result};
pub use limits::Limits;
pub use model::{Applied, Model, ModelSettings, ModelView};
pub use payload::{ArmPayload, Payload, PayloadSettings};
pub use prepare::Prepared;
pub use rank::{RankRequest, RankScratch, Ranked};
