//! `bandit`: the client side of the recommender.
//!
//! What a shop links, first:
//! - [`models`]: rank, stats, export, load, create over Redis (BANDIT.*).
//! - [`feedback`]: the buffered Kafka producer of feedback events.
//! - [`decision_log`]: the learning loop's producers: decisions after RANK,
//!   rewards after the user acts (the join turns them into feedback).
//! - [`history`]: historical logs and item lists (CSV), for bootstrap and evaluation.
//! - [`export_log`]: the joined decision log read from the decisions and
//!   rewards topics (`bandit export-log`), for off-policy evaluation.
//! - [`error`]: this crate's error type.
//!
//! Then the laboratory, [`lab`]: the simulated shop, the learning loop and
//! its drift experiment, offline policy evaluation, generated logs and the
//! benchmarks, all learning through the same core code as the sink:
//! - [`lab::rng`]: deterministic random numbers and samplers.
//! - [`lab::local`]: LinUCB trained and served in process (core's trainer and model).
//! - [`lab::shop`]: catalogue, visitors, context, and the hidden click model (and its drift).
//! - [`lab::simulate`]: the learning loop against a recommender, with random
//!   and oracle baselines; its table, SVG curve, summary and recovery after a drift.
//! - [`lab::live`]: the live stack (Redis + Kafka) as a recommender: on the
//!   learning loop (decisions and rewards, bandit-join) or with direct feedback.
//! - [`lab::generate`]: historical logs made by the simulated shop.
//! - [`lab::evaluate`]: offline policy evaluation (six policies, four metrics).
//! - [`lab::ope`]: off-policy evaluation on decision logs (IPS, SNIPS, DM, DR,
//!   SNDR, Switch-DR, Replay, and RIPS and position-wise IPS on slates, with
//!   95% intervals; candidates, report, ground truth).
//! - [`lab::bench`]: RANK versus GET, fold rate and flush cost.
//! - [`lab::bench_replicas`]: RANK throughput, primary alone versus read from replicas.

pub mod decision_log;
pub mod error;
pub mod export_log;
pub mod feedback;
pub mod history;
pub mod models;

pub mod lab;

pub use error::{ClientError, Result};
