//! The laboratory: everything that tries the recommender rather than serves
//! it. The simulated shop and its learning loop, offline evaluation of
//! policies on logs, generated logs, and benchmarks. Every learner here is
//! [`local::LocalModel`], core's trainer and model in process, so what is
//! measured is what production runs. See the crate documentation for the map.

pub mod bench;
pub mod bench_replicas;
pub mod evaluate;
pub mod generate;
pub mod live;
pub mod local;
pub mod ope;
pub mod rng;
pub mod shop;
pub mod simulate;
