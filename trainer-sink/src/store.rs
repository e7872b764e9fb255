//! The model in Redis, as the sink sees it: create it, read its offsets and
//! arms (BANDIT.EXPORT) and publish batches (BANDIT.LOAD). The connection is
//! re-opened after any I/O error, so a Redis restart costs a retry, not a
//! crash. Every command's outcome is recorded in [`Health`], and every
//! failure is classified as transient or permanent (see
//! [`crate::error::is_transient_redis`]).

use std::sync::Arc;
use std::time::Duration;

use bandit_core::codec::{self, Format};
use bandit_core::{Limits, ModelSettings, Payload};

use crate::error::{is_transient_redis, Result, SinkError};
use crate::health::Health;

/// The module's error code for a key that holds no model.
const NO_MODEL: &str = "NOMODEL";
/// The module's error code for CREATE of an existing model with other settings.
const EXISTS: &str = "EXISTS";
/// The module's error code for a LOAD refused by the offset fence.
const STALE: &str = "STALE";

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
    /// The settings the model was checked or created with, to create it
    /// again if it is deleted under the running sink.
    settings: Option<ModelSettings>,
    health: Arc<Health>,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore").field("key", &self.key).field("connected", &self.connection.is_some()).finish()
    }
}

impl ModelStore {
    /// # Errors
    /// [`SinkError::Config`] for a malformed URL (nothing is contacted yet).
    pub fn new(url: &str, key: &str, timeout: Duration, health: Arc<Health>) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| SinkError::Config(format!("redis_url: {e}")))?;
        // Exports are read back without the module's size limits: the model
        // itself already enforced them when it was written.
        let limits = Limits::unbounded();
        Ok(Self { client, connection: None, key: key.to_owned(), timeout, limits, settings: None, health })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn connect(&mut self) -> Result<&mut redis::Connection, redis::RedisError> {
        if self.connection.is_none() {
            let connection = self.client.get_connection_with_timeout(self.timeout)?;
            connection.set_read_timeout(Some(self.timeout))?;
            connection.set_write_timeout(Some(self.timeout))?;
            self.connection = Some(connection);
        }
        self.connection.as_mut().ok_or_else(|| redis::RedisError::from((redis::ErrorKind::ClientError, "no connection")))
    }

    /// Runs a command; drops the connection after a transport error so the
    /// next call reconnects, and records whether Redis answered.
    fn query<T: redis::FromRedisValue>(&mut self, command: &redis::Cmd) -> Result<T, redis::RedisError> {
        let result = self.connect().and_then(|connection| command.query(connection));
        match &result {
            Err(error) if is_transient_redis(error) => {
                if error.is_io_error() || error.is_unrecoverable_error() {
                    self.connection = None;
                }
                self.health.redis_failed(&error.to_string());
            }
            Err(error) => {
                if error.is_unrecoverable_error() {
                    self.connection = None;
                }
                // Redis answered: it is reachable, the command was refused.
                self.health.redis_ok();
            }
            Ok(_) => self.health.redis_ok(),
        }
        result
    }

    /// PING, so health follows Redis while the sink has nothing to write.
    ///
    /// # Errors
    /// [`SinkError::RedisUnavailable`] or [`SinkError::RedisRefused`].
    pub fn ping(&mut self) -> Result<()> {
        self.query::<()>(&redis::cmd("PING")).map_err(SinkError::from)
    }

    /// Creates the model with the sink's settings if it is missing, and checks
    /// that an existing one has the sink's dim and lambda: RANK scores arms it
    /// has never seen with the model's prior, the sink trains with its own.
    /// Another ALPHA is only worth a warning: the model's is RANK's default.
    ///
    /// # Errors
    /// [`SinkError::Model`] for a mismatched or foreign key,
    /// [`SinkError::RedisRefused`] for any other refusal,
    /// [`SinkError::RedisUnavailable`] while Redis cannot answer.
    pub fn ensure_model(&mut self, settings: ModelSettings) -> Result<()> {
        self.settings = Some(settings);
        let stats = match self.query::<Vec<redis::Value>>(redis::cmd("BANDIT.STATS").arg(&self.key)) {
            Ok(stats) => stats,
            Err(e) if e.code() == Some(NO_MODEL) => return self.create(settings),
            Err(e) if e.code() == Some("WRONGTYPE") => {
                return Err(SinkError::Model(format!("{} holds another type of value ({e})", self.key)))
            }
            Err(e) if !is_transient_redis(&e) && !self.module_loaded() => {
                return Err(SinkError::RedisRefused(format!("the bandit module is not loaded in this Redis ({e})")))
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
        let ModelSettings { dim, alpha, lambda, decay } = settings;
        if field("dim") != Some(dim as f64) {
            return Err(SinkError::Model(format!(
                "{} has dim {}, the sink is configured with dim {dim}",
                self.key,
                field("dim").unwrap_or(f64::NAN)
            )));
        }
        if field("lambda") != Some(lambda) {
            return Err(SinkError::Model(format!(
                "{} was created with LAMBDA {}, the sink is configured with lambda {lambda}: \
                 arms would be trained with another prior than the model scores new arms with",
                self.key,
                field("lambda").unwrap_or(f64::NAN)
            )));
        }
        // Models created before DECAY existed have none (1).
        let stored_decay = if stats.iter().any(|v| matches!(v, redis::Value::BulkString(k) if k.as_slice() == b"decay")) {
            field("decay")
        } else {
            Some(1.0)
        };
        if stored_decay != Some(decay) {
            return Err(SinkError::Model(format!(
                "{} was created with DECAY {}, the sink is configured with decay {decay}: \
                 arms would forget at another rate than the model's other trainers",
                self.key,
                stored_decay.unwrap_or(f64::NAN)
            )));
        }
        if let Some(stored) = field("alpha").filter(|&stored| stored != alpha) {
            tracing::warn!(
                model = %self.key,
                model_alpha = stored,
                sink_alpha = alpha,
                "the model's ALPHA is {stored}, the sink's alpha {alpha} is ignored: alpha only applies when the sink creates the model"
            );
        }
        Ok(())
    }

    fn create(&mut self, settings: ModelSettings) -> Result<()> {
        let mut create = redis::cmd("BANDIT.CREATE");
        create.arg(&self.key).arg("DIM").arg(settings.dim).arg("ALPHA").arg(settings.alpha).arg("LAMBDA").arg(settings.lambda);
        create.arg("DECAY").arg(settings.decay);
        match self.query::<()>(&create) {
            Ok(()) => Ok(()),
            // Another instance created it at the same moment with other
            // settings: the check above names the difference.
            Err(e) if e.code() == Some(EXISTS) => self.ensure_model(settings),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether BANDIT.STATS is a command of this server, asked through
    /// COMMAND INFO's structure (a nil entry) rather than an error's text.
    /// When COMMAND itself is not allowed, assume it is loaded: the original
    /// error is then reported as it is.
    fn module_loaded(&mut self) -> bool {
        match self.query::<Vec<redis::Value>>(redis::cmd("COMMAND").arg("INFO").arg("BANDIT.STATS")) {
            Ok(entries) => !matches!(entries.as_slice(), [redis::Value::Nil]),
            Err(_) => true,
        }
    }

    /// The arms with these ids (those the model has) and every stored offset,
    /// read atomically.
    ///
    /// # Errors
    /// [`SinkError::RedisUnavailable`], [`SinkError::RedisRefused`] or
    /// [`SinkError::Model`].
    pub fn export(&mut self, ids: &[&str]) -> Result<Payload> {
        let mut command = redis::cmd("BANDIT.EXPORT");
        command.arg(&self.key).arg("ARMS").arg(ids.len());
        for id in ids {
            command.arg(*id);
        }
        let bytes: Vec<u8> = match self.query(&command) {
            Ok(bytes) => bytes,
            // A model deleted under a running sink reads as empty: partitions
            // then restart from the beginning and rebuild it, in a model made
            // again with the sink's settings (a LOAD would otherwise create
            // it with the module's defaults: another prior, no forgetting).
            Err(e) if e.code() == Some(NO_MODEL) => {
                if let Some(settings) = self.settings {
                    tracing::warn!(model = %self.key, "the model is gone: creating it again with the sink's settings and rebuilding it from the topic");
                    self.create(settings)?;
                }
                return Ok(Payload::default());
            }
            Err(e) if e.code() == Some("WRONGTYPE") => {
                return Err(SinkError::Model(format!("{} holds another type of value ({e})", self.key)))
            }
            Err(e) => return Err(e.into()),
        };
        codec::decode(&bytes, &self.limits).map_err(|e| SinkError::Model(format!("cannot read the export: {e}")))
    }

    /// Publishes one payload atomically.
    ///
    /// # Errors
    /// [`SinkError::RedisUnavailable`] or [`SinkError::RedisRefused`] for
    /// transport or server errors other than STALE.
    pub fn load(&mut self, payload: &Payload) -> Result<LoadOutcome> {
        let bytes = codec::encode(payload, Format::Binary).map_err(|e| SinkError::Model(e.to_string()))?;
        let mut command = redis::cmd("BANDIT.LOAD");
        command.arg(&self.key).arg(bytes);
        match self.query::<u64>(&command) {
            Ok(changed) => Ok(LoadOutcome::Applied(changed)),
            Err(e) if e.code() == Some(STALE) => Ok(LoadOutcome::Stale(e.detail().unwrap_or_default().to_owned())),
            Err(e) => Err(e.into()),
        }
    }
}
