//! The model in Redis, as the sink sees it: create it, read its offsets and
//! arms (BANDIT.EXPORT) and publish batches (BANDIT.LOAD). The connection is
//! re-opened after any I/O error, so a Redis restart costs a retry, not a
//! crash.

use std::time::Duration;

use bandit_core::codec::{self, Format};
use bandit_core::{Limits, Payload};

use crate::error::{Result, SinkError};

/// How a LOAD ended.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadOutcome {
    /// Applied; the number of arms that changed.
    Applied(u64),
    /// Refused by the offset fence: another writer is ahead.
    Stale(String),
}

/// A Redis connection to one model.
pub struct ModelStore {
    client: redis::Client,
    connection: Option<redis::Connection>,
    key: String,
    timeout: Duration,
    limits: Limits,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore").field("key", &self.key).field("connected", &self.connection.is_some()).finish()
    }
}

impl ModelStore {
    /// # Errors
    /// [`SinkError::Config`] for a malformed URL (nothing is contacted yet).
    pub fn new(url: &str, key: &str, timeout: Duration) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| SinkError::Config(format!("redis_url: {e}")))?;
        // Exports are read back without the module's size limits: the model
        // itself already enforced them when it was written.
        let limits = Limits { max_payload_bytes: usize::MAX, max_arms: usize::MAX, max_dim: usize::MAX, ..Limits::default() };
        Ok(Self { client, connection: None, key: key.to_owned(), timeout, limits })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn connection(&mut self) -> Result<&mut redis::Connection> {
        if self.connection.is_none() {
            let connection = self.client.get_connection_with_timeout(self.timeout)?;
            connection.set_read_timeout(Some(self.timeout))?;
            connection.set_write_timeout(Some(self.timeout))?;
            self.connection = Some(connection);
        }
        self.connection.as_mut().ok_or_else(|| SinkError::Redis("no connection".into()))
    }

    /// Runs a command; drops the connection after a transport error so the
    /// next call reconnects.
    fn query<T: redis::FromRedisValue>(&mut self, command: &redis::Cmd) -> Result<T, redis::RedisError> {
        let connection = match self.connection() {
            Ok(connection) => connection,
            Err(e) => return Err(redis::RedisError::from((redis::ErrorKind::IoError, "connect", e.to_string()))),
        };
        let result = command.query(connection);
        if let Err(error) = &result {
            if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() || error.is_unrecoverable_error() {
                self.connection = None;
            }
        }
        result
    }

    /// Creates the model with the sink's settings if it is missing, and checks
    /// that an existing one has the sink's dim and lambda: RANK scores arms it
    /// has never seen with the model's prior, the sink trains with its own.
    ///
    /// # Errors
    /// [`SinkError::Model`] for a mismatched or foreign key, [`SinkError::Redis`] otherwise.
    pub fn ensure_model(&mut self, dim: usize, alpha: f64, lambda: f64) -> Result<()> {
        let stats = match self.query::<Vec<redis::Value>>(redis::cmd("BANDIT.STATS").arg(&self.key)) {
            Ok(stats) => stats,
            Err(e) if e.to_string().contains("no such model") => {
                let mut create = redis::cmd("BANDIT.CREATE");
                create.arg(&self.key).arg("DIM").arg(dim).arg("ALPHA").arg(alpha).arg("LAMBDA").arg(lambda);
                return match self.query::<()>(&create) {
                    Ok(()) => Ok(()),
                    // Another instance created it at the same moment: check it.
                    Err(e) if e.to_string().contains("model exists") => self.ensure_model(dim, alpha, lambda),
                    Err(e) => Err(e.into()),
                };
            }
            Err(e) if e.code() == Some("WRONGTYPE") => {
                return Err(SinkError::Model(format!("{} holds another type of value", self.key)))
            }
            Err(e) if e.to_string().to_lowercase().contains("unknown command") => {
                return Err(SinkError::Model("the bandit module is not loaded in this Redis".into()))
            }
            Err(e) => return Err(e.into()),
        };
        let field = |name: &str| {
            stats
                .chunks(2)
                .find(|pair| matches!(pair.first(), Some(redis::Value::BulkString(key)) if key.as_slice() == name.as_bytes()))
                .and_then(|pair| pair.get(1))
                .and_then(|value| redis::from_redis_value::<f64>(value).ok())
        };
        if field("dim") != Some(dim as f64) {
            return Err(SinkError::Model(format!(
                "{} has dim {}, the sink is configured with dim {dim}",
                self.key,
                field("dim").unwrap_or(f64::NAN)
            )));
        }
        if field("lambda") != Some(lambda) {
            return Err(SinkError::Model(format!(
                "{} was created with LAMBDA {}, the sink is configured with lambda {lambda}",
                self.key,
                field("lambda").unwrap_or(f64::NAN)
            )));
        }
        Ok(())
    }

    /// The arms with these ids (those the model has) and every stored offset,
    /// read atomically.
    ///
    /// # Errors
    /// [`SinkError::Redis`] or [`SinkError::Model`].
    pub fn export(&mut self, ids: &[&str]) -> Result<Payload> {
        let mut command = redis::cmd("BANDIT.EXPORT");
        command.arg(&self.key).arg("ARMS").arg(ids.len());
        for id in ids {
            command.arg(*id);
        }
        let bytes: Vec<u8> = match self.query(&command) {
            Ok(bytes) => bytes,
            // A model deleted under a running sink reads as empty: partitions
            // then restart from the beginning and rebuild it.
            Err(e) if e.to_string().contains("no such model") => return Ok(Payload::default()),
            Err(e) => return Err(e.into()),
        };
        codec::decode(&bytes, &self.limits).map_err(|e| SinkError::Model(format!("cannot read the export: {e}")))
    }

    /// Publishes one payload atomically.
    ///
    /// # Errors
    /// [`SinkError::Redis`] for transport or server errors other than STALE.
    pub fn load(&mut self, payload: &Payload) -> Result<LoadOutcome> {
        let bytes = codec::encode(payload, Format::Binary).map_err(|e| SinkError::Model(e.to_string()))?;
        let mut command = redis::cmd("BANDIT.LOAD");
        command.arg(&self.key).arg(bytes);
        match self.query::<u64>(&command) {
            Ok(changed) => Ok(LoadOutcome::Applied(changed)),
            Err(e) if e.code() == Some("STALE") => Ok(LoadOutcome::Stale(e.detail().unwrap_or_default().to_owned())),
            Err(e) => Err(e.into()),
        }
    }
}
