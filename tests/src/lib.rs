//! Test harness and benchmarks for the bandit stack, against real servers.
//!
//! Layout:
//! - [`server`]: `redis-server --loadmodule …` per test, RAII-stopped.
//! - [`resp`]: an exact RESP2/RESP3 client, so tests see reply types.
//! - [`topology`]: a Redis Cluster, Sentinels over a primary and replicas,
//!   and a TLS server with generated certificates.
//! - [`fixtures`]: deterministic models built with the trainer's own fold.
//! - [`registry`]: an in-memory Confluent Schema Registry (the endpoints
//!   our clients use).
//! - [`join`]: bandit-join as a process, decisions and rewards, and an
//!   independent computation of their join.
//! - [`reference`]: a textbook dense LinUCB, independent of `bandit_core`,
//!   that the model, the sink and the persistence tests are compared with.
//! - [`process`]: a command run within a deadline, its process group killed
//!   after it.
//! - [`bench_args`]: the benchmark binaries' `--flag number` command lines.
//! - `src/bin/bench_sink.rs`: the sink's end-to-end rate and freshness.
//! - `tests/*.rs`: the integration tests.

pub mod bench_args;
pub mod fixtures;
pub mod join;
pub mod kafka;
pub mod process;
pub mod reference;
pub mod registry;
pub mod resp;
pub mod server;
pub mod service;
pub mod sink;
pub mod topology;
