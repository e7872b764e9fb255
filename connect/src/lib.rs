//! `bandit_connect`: how the bandit programs (bandit-sink, the `bandit`
//! library and CLI) reach Redis, whatever its topology: one URL, parsed once
//! ([`Target`]), shown with its passwords masked ([`Target::masked`]), and
//! opened by redis-rs's own clients ([`Connector`]) into a [`Connection`]
//! that implements `redis::ConnectionLike`, so `cmd.query(&mut connection)`
//! works the same on one server and on a cluster.
//!
//! # The URL scheme
//!
//! | Topology | URL |
//! |---|---|
//! | one server | `redis://[[user]:password@]host:port[/db]` |
//! | one server, TLS | `rediss://[[user]:password@]host:port[/db][?tls_ca=…&tls_cert=…&tls_key=…]` |
//! | unix socket | `unix:///path/to/redis.sock[?db=N&user=U&pass=P]` |
//! | Redis Cluster | `redis+cluster://[[user]:password@]host1:port1,host2:port2,…` (TLS: `rediss+cluster://`, same tls_* parameters) |
//! | Sentinel | `redis+sentinel://[[user]:password@]s1:port1,s2:port2,…/<master-name>[?sentinel_user=…&sentinel_password=…]` (TLS: `rediss+sentinel://`) |
//!
//! - **Userinfo** is the data nodes' AUTH (user and password, or the
//!   password alone as `:password@`), percent-encoded as in any URL. For
//!   Sentinel it is the primary's and replicas'; the sentinels' own AUTH is
//!   `sentinel_user` / `sentinel_password`.
//! - **TLS** (`rediss…`): the server's certificate is always verified,
//!   against `tls_ca` (a PEM file) when given, else against the system's
//!   roots; its name must match the host as written (or as the sentinels
//!   or the cluster announce it). `tls_cert` and `tls_key` (PEM) present a
//!   client certificate: both or neither. There is no insecure mode: a
//!   `#fragment` (redis-rs's `#insecure`) is refused. Under
//!   `rediss+sentinel://` the sentinels and the data nodes both speak TLS,
//!   with the same files.
//! - **Cluster**: the hosts are seeds; the slot map comes from the cluster,
//!   and MOVED and ASK are followed (redis-rs's ClusterConnection). No `/db`.
//! - **Sentinel**: the path is the master name (required). The primary is
//!   asked of the sentinels on every [`Connector::primary`], so a caller that
//!   reconnects after a connection error reaches the new primary after a
//!   failover.
//! - **Replica reads**: `read_from=replica` (default `primary`) sends reads
//!   that callers route as such ([`Connector::reader`],
//!   [`Connection::query_key`] with [`NodeRole::Replica`]) to a replica: in
//!   a cluster through READONLY connections to the slot's replicas (redis-rs
//!   `read_from_replicas`), under Sentinel to a replica from SENTINEL
//!   REPLICAS, on one server to the `replicas=host:port,host:port` it lists
//!   (only with `read_from=replica`, which it requires). When no replica
//!   answers, the primary serves the read. Writes always go to the primary.
//! - Default ports: 6379 for data nodes, 26379 for sentinels.
//! - Any other query parameter, a parameter given twice, a bad port or an
//!   empty host is an error ([`ConnectError`]), whose message never holds a
//!   password.
//!
//! Passwords live in [`Secret`], whose Display and Debug print `***`; the
//! whole [`Target`] can therefore be logged with `{:?}`, and
//! [`Target::masked`] prints it as a URL that reads back the same, less
//! its passwords ([`mask`] does so for a URL not parsed yet).
//!
//! # Layout
//! - `target.rs`: [`Target`], the URL parser and its masked Display
//!   (tests in `target_tests.rs`).
//! - `connector.rs`: [`Connector`], which opens primary and reader
//!   connections (TLS files, cluster and sentinel clients).
//! - `connection.rs`: [`Connection`] (`redis::ConnectionLike`) and its
//!   key-routed [`Connection::query_key`] (WAIT to a key's primary, RANK to
//!   its replicas).
//! - `error.rs`: [`ConnectError`] and the [`Result`] alias.

mod connection;
mod connector;
mod error;
mod target;

pub use connection::{Connection, NodeRole};
pub use connector::{Connector, Timeouts};
pub use error::{ConnectError, Result};
pub use target::{mask, Auth, ClientCertificate, Masked, Node, ReadFrom, Secret, Target, TlsFiles, Topology};
