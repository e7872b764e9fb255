//! `bandit`: a Redis module that ranks products server-side with disjoint
//! LinUCB against models stored in a custom data type.
//!
//! Commands: `BANDIT.CREATE`, `BANDIT.LOAD`, `BANDIT.RANK`, `BANDIT.STATS`,
//! `BANDIT.EXPORT` (see the README's command reference). The math and the
//! model itself live in `bandit_core`; this crate is the Redis shell around
//! them.
//!
//! Layout:
//! - [`registration`]: module registration, load-time set-up, INFO section.
//! - [`config`]: module arguments (defaults and size limits).
//! - [`datatype`]: the `BanditUCB` type: RDB, AOF rewrite, copy, free.
//! - [`commands`]: one file per command, metadata beside the handler, and the
//!   single panic-catching dispatcher.
//! - [`docs`]: COMMAND DOCS / COMMAND INFO metadata, attached where the
//!   server supports it.
//! - [`acl`]: the `bandit` ACL category, where the server supports it.
//! - [`args`]: argument cursor and number parsing.
//! - [`blocking`]: blocked clients and thread-safe contexts, for work off the
//!   main thread (BANDIT.LOAD).
//! - [`reply`]: direct reply writing (RESP2/RESP3 aware).
//! - `runtime_config`: the settings as `CONFIG GET/SET bandit.*` configs.
//! - [`error`]: command errors and their reply text.
//!
//! Commands are registered through `RedisModule_CreateCommand` with legacy key
//! positions, which Redis 7.0 understands (the crate's `#[command]` attribute
//! needs 7.2).

pub mod acl;
pub mod args;
pub mod blocking;
pub mod commands;
pub mod config;
pub mod datatype;
pub mod docs;
pub mod error;
pub mod reply;
#[cfg(not(test))]
mod runtime_config;

// Unit tests run outside Redis, where the Redis allocator does not exist.
#[cfg(not(test))]
mod registration;
