//! [`Connector`]: opens connections to a [`Target`], for writes
//! ([`Connector::primary`]) or reads ([`Connector::reader`]), with redis-rs's
//! own clients: `Client` for one server, `ClusterClient` for a cluster,
//! `SentinelClient` to find a primary or a replica. It holds no connection
//! itself: callers keep the one they got and ask again after an error, and
//! for Sentinel asking again is what re-resolves the primary after a
//! failover.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, RedisResult, TlsCertificates, TlsMode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::connection::Connection;
use crate::error::{ConnectError, Result};
use crate::target::{Auth, Node, ReadFrom, Target, TlsFiles, Topology};

/// Spreads the readers of one process over a node's listed replicas: each
/// [`Connector::reader`] starts at the next one.
static NEXT_REPLICA: AtomicUsize = AtomicUsize::new(0);

/// How long to wait for a connection, and then for each reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(5), io: Duration::from_secs(30) }
    }
}

/// Opens connections to one target.
pub struct Connector {
    target: Target,
    timeouts: Timeouts,
    /// The PEM files, read once: a missing file is an error at start-up.
    certificates: Option<TlsCertificates>,
    /// Built on first use, kept for its cached sentinel connections.
    sentinel_primary: Option<SentinelClient>,
    sentinel_replica: Option<SentinelClient>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("target", &self.target.masked().to_string()).field("timeouts", &self.timeouts).finish()
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ConnectError::Tls(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Reads the PEM files and checks that they hold what they should, so that a
/// wrong file stops the program at start-up instead of failing every connection.
fn load_certificates(files: &TlsFiles) -> Result<Option<TlsCertificates>> {
    let certificates = |bytes: &[u8], path: &std::path::Path, what: &str| -> Result<()> {
        let count = CertificateDer::pem_slice_iter(bytes)
            .try_fold(0usize, |n, cert| cert.map(|_| n + 1))
            .map_err(|e| ConnectError::Tls(format!("the {what} {} is not PEM: {e}", path.display())))?;
        if count == 0 {
            return Err(ConnectError::Tls(format!("the {what} {} holds no certificate", path.display())));
        }
        Ok(())
    };
    let root_cert = match &files.ca {
        Some(path) => {
            let bytes = read(path, "tls_ca file")?;
            certificates(&bytes, path, "tls_ca file")?;
            Some(bytes)
        }
        None => None,
    };
    let client_tls = match &files.client {
        Some(client) => {
            let client_cert = read(&client.cert, "tls_cert file")?;
            certificates(&client_cert, &client.cert, "tls_cert file")?;
            let client_key = read(&client.key, "tls_key file")?;
            PrivateKeyDer::from_pem_slice(&client_key)
                .map_err(|e| ConnectError::Tls(format!("the tls_key file {} holds no private key: {e}", client.key.display())))?;
            Some(ClientTlsConfig { client_cert, client_key })
        }
        None => None,
    };
    Ok((root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates { client_tls, root_cert }))
}

impl Connector {
    /// A connector for `target`; reads and checks its TLS files.
    ///
    /// # Errors
    /// [`ConnectError::Tls`] for a missing or malformed file.
    pub fn new(target: Target, timeouts: Timeouts) -> Result<Self> {
        let certificates = match &target.tls {
            Some(files) => {
                // redis-rs's rustls needs a process-wide crypto provider; an
                // Err only says one is installed already.
                let _ = rustls::crypto::ring::default_provider().install_default();
                load_certificates(files)?
            }
            None => None,
        };
        Ok(Self { target, timeouts, certificates, sentinel_primary: None, sentinel_replica: None })
    }

    /// [`Target::parse`] then [`Connector::new`].
    ///
    /// # Errors
    /// As both.
    pub fn open(url: &str, timeouts: Timeouts) -> Result<Self> {
        Self::new(Target::parse(url)?, timeouts)
    }

    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connection for writes: the server, the cluster (each command goes
    /// to its key's primary), or the primary the sentinels name now.
    ///
    /// # Errors
    /// The redis crate's, to be classified by kind and code.
    pub fn primary(&mut self) -> RedisResult<Connection> {
        match &self.target.topology {
            Topology::Node { node, db, .. } => self.node(node, db.unwrap_or(0)).map(Connection::Node),
            Topology::Unix { path, db } => {
                let info = ConnectionInfo { addr: ConnectionAddr::Unix(path.clone()), redis: self.redis_info(&self.target.auth, db.unwrap_or(0)) };
                self.client(info).map(Connection::Node)
            }
            Topology::Cluster { seeds } => self.cluster(seeds, false),
            Topology::Sentinel { .. } => {
                let client = self.sentinel(SentinelServerType::Master)?.get_client()?;
                self.connect(&client).map(Connection::Node)
            }
        }
    }

    /// A connection for reads. With `read_from=replica`: a listed replica
    /// (the next one for each reader of this process), a replica the
    /// sentinels list, or a cluster connection that sends reads routed with
    /// [`crate::NodeRole::Replica`] to replicas (READONLY); when no replica
    /// answers, the primary. Otherwise, [`Connector::primary`].
    ///
    /// # Errors
    /// As [`Connector::primary`], when the primary does not answer either.
    pub fn reader(&mut self) -> RedisResult<Connection> {
        if self.target.read_from == ReadFrom::Primary {
            return self.primary();
        }
        let replica = match &self.target.topology {
            Topology::Node { replicas, db, .. } => {
                let start = NEXT_REPLICA.fetch_add(1, Ordering::Relaxed);
                // The replicas hold the primary's databases: read the one the URL names.
                (0..replicas.len())
                    .filter_map(|i| replicas.get((start + i) % replicas.len()))
                    .find_map(|node| self.node(node, db.unwrap_or(0)).ok())
                    .map(Connection::Node)
            }
            Topology::Cluster { seeds } => return self.cluster(&seeds.clone(), true).or_else(|_| self.primary()),
            Topology::Sentinel { .. } => self
                .sentinel(SentinelServerType::Replica)
                .and_then(SentinelClient::get_client)
                .and_then(|client| self.connect(&client))
                .ok()
                .map(Connection::Node),
            Topology::Unix { .. } => None,
        };
        match replica {
            Some(connection) => Ok(connection),
            None => self.primary(),
        }
    }

    fn redis_info(&self, auth: &Auth, db: i64) -> RedisConnectionInfo {
        RedisConnectionInfo {
            db,
            username: auth.user.clone(),
            password: auth.password.as_ref().map(|p| p.expose().to_owned()),
            ..RedisConnectionInfo::default()
        }
    }

    fn addr(&self, node: &Node) -> ConnectionAddr {
        match self.target.tls {
            Some(_) => ConnectionAddr::TcpTls { host: node.host.clone(), port: node.port, insecure: false, tls_params: None },
            None => ConnectionAddr::Tcp(node.host.clone(), node.port),
        }
    }

    fn node(&self, node: &Node, db: i64) -> RedisResult<redis::Connection> {
        let info = ConnectionInfo { addr: self.addr(node), redis: self.redis_info(&self.target.auth, db) };
        self.client(info)
    }

    fn client(&self, info: ConnectionInfo) -> RedisResult<redis::Connection> {
        let client = match &self.certificates {
            Some(certificates) => redis::Client::build_with_tls(info, certificates.clone())?,
            None => redis::Client::open(info)?,
        };
        self.connect(&client)
    }

    fn connect(&self, client: &redis::Client) -> RedisResult<redis::Connection> {
        let connection = client.get_connection_with_timeout(self.timeouts.connect)?;
        connection.set_read_timeout(Some(self.timeouts.io))?;
        connection.set_write_timeout(Some(self.timeouts.io))?;
        Ok(connection)
    }

    fn cluster(&self, seeds: &[Node], replica_reads: bool) -> RedisResult<Connection> {
        let infos = seeds.iter().map(|node| ConnectionInfo { addr: self.addr(node), redis: self.redis_info(&self.target.auth, 0) });
        let mut builder = ClusterClientBuilder::new(infos).connection_timeout(self.timeouts.connect).response_timeout(self.timeouts.io);
        if let Some(certificates) = &self.certificates {
            builder = builder.certs(certificates.clone());
        }
        if replica_reads {
            builder = builder.read_from_replicas();
        }
        let connection = builder.build()?.get_connection()?;
        Ok(Connection::cluster(connection, replica_reads))
    }

    /// The sentinel client for `kind`, built once. The data nodes get the
    /// URL's userinfo, the sentinels their own credentials; both TLS with
    /// the same files under `rediss+sentinel://`.
    fn sentinel(&mut self, kind: SentinelServerType) -> RedisResult<&mut SentinelClient> {
        let Topology::Sentinel { sentinels, master, sentinel_auth } = &self.target.topology else {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "not a sentinel target")));
        };
        let primary = matches!(kind, SentinelServerType::Master);
        let slot = if primary { &self.sentinel_primary } else { &self.sentinel_replica };
        if slot.is_none() {
            let addrs: Vec<ConnectionAddr> = sentinels.iter().map(|node| self.addr(node)).collect();
            let mut builder = SentinelClientBuilder::new(addrs, master.clone(), kind)?;
            if let Some(user) = &self.target.auth.user {
                builder = builder.set_client_to_redis_username(user.clone());
            }
            if let Some(password) = &self.target.auth.password {
                builder = builder.set_client_to_redis_password(password.expose().to_owned());
            }
            if let Some(user) = &sentinel_auth.user {
                builder = builder.set_client_to_sentinel_username(user.clone());
            }
            if let Some(password) = &sentinel_auth.password {
                builder = builder.set_client_to_sentinel_password(password.expose().to_owned());
            }
            if self.target.tls.is_some() {
                builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure).set_client_to_sentinel_tls_mode(TlsMode::Secure);
                if let Some(certificates) = &self.certificates {
                    builder = builder
                        .set_client_to_redis_certificates(certificates.clone())
                        .set_client_to_sentinel_certificates(certificates.clone());
                }
            }
            let client = builder.build()?;
            if primary {
                self.sentinel_primary = Some(client);
            } else {
                self.sentinel_replica = Some(client);
            }
        }
        let slot = if primary { &mut self.sentinel_primary } else { &mut self.sentinel_replica };
        slot.as_mut().ok_or_else(|| redis::RedisError::from((redis::ErrorKind::ClientError, "no sentinel client")))
    }
}
