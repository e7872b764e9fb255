//! [`Connection`]: one server's connection or a cluster's, behind
//! `redis::ConnectionLike`, so `cmd.query(&mut connection)` works on both.
//! A cluster connection routes each command by its first key and follows
//! MOVED and ASK (redis-rs's ClusterConnection); [`Connection::query_key`]
//! routes a command by a key it does not carry as its first argument (WAIT)
//! or to a replica (RANK, which redis-rs does not know to be read-only).

use std::collections::HashMap;

use redis::cluster::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionLike, FromRedisValue, RedisResult, Value};

/// Keys whose slot a cluster connection remembers; beyond, it starts over
/// (a model key is looked up once, not per command).
const SLOT_CACHE: usize = 1024;

/// Which node of a key's shard a command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// The primary: writes, and WAIT after them.
    Primary,
    /// A replica when this connection reads from replicas, else the primary;
    /// the primary when the replica does not answer.
    Replica,
}

/// A connection to a single server (plain, TLS or unix; possibly a replica
/// chosen by [`crate::Connector::reader`]) or to a Redis Cluster.
pub enum Connection {
    Node(redis::Connection),
    Cluster {
        /// Boxed: it is several times the size of a node's connection.
        connection: Box<ClusterConnection>,
        /// Whether the cluster client was built to read from replicas.
        replica_reads: bool,
        /// CLUSTER KEYSLOT answers, so routing a key costs one round trip once.
        slots: HashMap<String, u16>,
    },
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(_) => f.write_str("Connection::Node"),
            Self::Cluster { replica_reads, .. } => f.debug_struct("Connection::Cluster").field("replica_reads", replica_reads).finish(),
        }
    }
}

impl Connection {
    pub(crate) fn cluster(connection: ClusterConnection, replica_reads: bool) -> Self {
        Self::Cluster { connection: Box::new(connection), replica_reads, slots: HashMap::new() }
    }

    /// Runs `command` on the node that serves `key`, as `role` says. On a
    /// single server that is the server (the connection was opened to a
    /// replica or the primary already); in a cluster, the primary or a
    /// replica of `key`'s slot. A replica that fails with a connection
    /// error is replaced by the primary for this command.
    ///
    /// # Errors
    /// As the command's.
    pub fn query_key<T: FromRedisValue>(&mut self, key: &str, role: NodeRole, command: &Cmd) -> RedisResult<T> {
        match self {
            Self::Node(connection) => command.query(connection),
            Self::Cluster { connection, replica_reads, slots } => {
                let slot = match slots.get(key) {
                    Some(slot) => *slot,
                    None => {
                        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(connection)?;
                        if slots.len() >= SLOT_CACHE {
                            slots.clear();
                        }
                        slots.insert(key.to_owned(), slot);
                        slot
                    }
                };
                let at = |addr| RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(slot, addr)));
                let value = if role == NodeRole::Replica && *replica_reads {
                    match connection.route_command(command, at(SlotAddr::ReplicaOptional)) {
                        Err(error) if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() => {
                            connection.route_command(command, at(SlotAddr::Master))?
                        }
                        other => other?,
                    }
                } else {
                    connection.route_command(command, at(SlotAddr::Master))?
                };
                T::from_redis_value(&value)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Node(connection) => connection.req_packed_command(cmd),
            Self::Cluster { connection, .. } => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Self::Node(connection) => connection.req_packed_commands(cmd, offset, count),
            Self::Cluster { connection, .. } => connection.req_packed_commands(cmd, offset, count),
        }
    }

    // The cluster routes a Cmd by its arguments without packing and parsing
    // it again: forward the call rather than take the default.
    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Node(connection) => connection.req_command(cmd),
            Self::Cluster { connection, .. } => connection.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(connection) => connection.get_db(),
            Self::Cluster { connection, .. } => connection.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Self::Node(connection) => connection.supports_pipelining(),
            Self::Cluster { connection, .. } => connection.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Node(connection) => connection.check_connection(),
            Self::Cluster { connection, .. } => connection.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Node(connection) => connection.is_open(),
            Self::Cluster { connection, .. } => connection.is_open(),
        }
    }
}
