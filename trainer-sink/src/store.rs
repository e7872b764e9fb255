//! The model in Redis, as the sink sees it: create it, read its offsets,
//! sequence fences and arms (BANDIT.EXPORT) and publish batches
//! (BANDIT.LOAD, which carry the fences of the partitions they move), optionally
//! followed by WAIT. The connection (any topology of `bandit_connect`:
//! one server, TLS, cluster, sentinel) is re-opened after any transient
//! error, so a Redis restart costs a retry, not a crash, and under Sentinel
//! the reconnection asks the sentinels for the primary again (failover).
//! Every command's outcome is recorded in [`Health`], and every failure is
//! classified as transient or permanent (see
//! [`crate::error::is_transient_redis`]).
//!
//! WAIT after LOAD (`min_replicas_ack`) narrows the window in which a
//! failover loses the last LOAD; it does not close it (replication stays
//! asynchronous, and a promoted replica may still miss it). Too few
//! acknowledgements are therefore logged and counted, not treated as a
//! failed flush: the LOAD is on the primary already, retrying it would not
//! replicate it faster, and a lost LOAD is noticed and replayed from the
//! model's offsets anyway (engine.rs, reconcile).

use std::sync::Arc;
use std::time::Duration;

use bandit_core::codec;
use bandit_core::{Limits, ModelSettings, Payload};

use bandit_connect::{Connection, Connector, NodeRole, Target, Timeouts};

use crate::config::Config;
use crate::error::{is_transient_redis, Result, SinkError};
use crate::health::Health;
use crate::metrics::Metrics;

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


/// WAIT after each LOAD: how many replicas, how long.
#[derive(Debug, Clone, Copy)]
struct Wait {
    replicas: u32,
    timeout_ms: u64,
}

/// A Redis connection to one model.
pub struct ModelStore {
    connector: Connector,
    connection: Option<Connection>,
    key: String,
    wait: Option<Wait>,
    limits: Limits,
    /// The settings the model was checked or created with, to create it
    /// again if it is deleted under the running sink.
    settings: Option<ModelSettings>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore").field("key", &self.key).field("connected", &self.connection.is_some()).finish()
    }
}

impl ModelStore {
    /// The store of `config`'s model at `config`'s Redis; replies are
    /// awaited `timeout` (and WAIT's timeout on top).
    ///
    /// # Errors
    /// [`SinkError::Config`] for a malformed URL or an unreadable TLS file
    /// (nothing is contacted yet).
    pub fn new(config: &Config, timeout: Duration, health: Arc<Health>, metrics: Arc<Metrics>) -> Result<Self> {
        let target = Target::parse(&config.redis_url).map_err(|e| SinkError::Config(format!("redis_url: {e}")))?;
        tracing::info!(redis = %target.masked(), model = %config.model_key, "Redis");
        let wait = (config.min_replicas_ack > 0).then_some(Wait { replicas: config.min_replicas_ack, timeout_ms: config.wait_timeout_ms });
        let io = timeout + Duration::from_millis(wait.map_or(0, |w| w.timeout_ms));
        let connector = Connector::new(target, Timeouts { connect: timeout, io }).map_err(|e| SinkError::Config(e.to_string()))?;
        // Exports are read back without the module's size limits: the model
        // itself already enforced them when it was written.
        let limits = Limits::unbounded();
        let key = config.model_key.clone();
        Ok(Self { connector, connection: None, key, wait, limits, settings: None, health, metrics })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The primary's connection, opened when there is none.
    fn connect(&mut self) -> Result<&mut Connection, redis::RedisError> {
        if self.connection.is_none() {
            self.connection = Some(self.connector.primary()?);
        }
        self.connection.as_mut().ok_or_else(|| redis::RedisError::from((redis::ErrorKind::ClientError, "no connection")))
    }

    fn query<T: redis::FromRedisValue>(&mut self, command: &redis::Cmd) -> Result<T, redis::RedisError> {
        self.run(|connection| command.query(connection))
    }

    /// Runs a request; drops the connection after a transient error so the
    /// next call reconnects (to the primary the sentinels name now, not to a
    /// demoted one answering READONLY), and records whether Redis answered.
    fn run<T>(&mut self, request: impl FnOnce(&mut Connection) -> Result<T, redis::RedisError>) -> Result<T, redis::RedisError> {
        let result = self.connect().and_then(request);
        match &result {
            Err(error) if is_transient_redis(error) => {
                self.connection = None;
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

    /// The arms with these ids (those the model has) and every stored offset
    /// and sequence fence, read atomically (what the trainer restores from).
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

    /// Publishes one payload, encoded, atomically: in one BANDIT.LOAD, or
    /// when it came in several parts (see `bandit_core::parts`), as
    /// `BANDIT.LOAD key part PART token index count` commands, one at a
    /// time, that the module applies together when the last one arrives
    /// (the fence is checked then). A part refused, or a connection lost
    /// between parts, fails the whole flush, which is retried from its first
    /// part; nothing of it was applied.
    ///
    /// # Errors
    /// [`SinkError::RedisUnavailable`] or [`SinkError::RedisRefused`] for
    /// transport or server errors other than STALE.
    pub fn load(&mut self, parts: &[Vec<u8>]) -> Result<LoadOutcome> {
        let token = part_token();
        let count = parts.len();
        let mut changed = 0;
        for (index, bytes) in parts.iter().enumerate() {
            let mut command = redis::cmd("BANDIT.LOAD");
            command.arg(&self.key).arg(bytes.as_slice());
            if count > 1 {
                command.arg("PART").arg(&token).arg(index).arg(count);
            }
            match self.query::<u64>(&command) {
                Ok(arms) => changed = arms,
                Err(e) if e.code() == Some(STALE) => return Ok(LoadOutcome::Stale(e.detail().unwrap_or_default().to_owned())),
                Err(e) => return Err(e.into()),
            }
        }
        self.wait_for_replicas();
        Ok(LoadOutcome::Applied(changed))
    }

    /// WAIT on the primary that took the LOAD (in a cluster, the primary of
    /// the model key's slot, through the same connection). Too few
    /// acknowledgements, or a failed WAIT, are logged and counted; the LOAD
    /// stands (see the top of this file).
    fn wait_for_replicas(&mut self) {
        let Some(Wait { replicas, timeout_ms }) = self.wait else { return };
        let mut command = redis::cmd("WAIT");
        command.arg(replicas).arg(timeout_ms);
        let key = self.key.clone();
        match self.run(|connection| connection.query_key::<u64>(&key, NodeRole::Primary, &command)) {
            Ok(acked) if acked >= u64::from(replicas) => {}
            Ok(acked) => {
                self.metrics.wait_short();
                tracing::warn!(
                    model = %self.key,
                    acked,
                    min_replicas_ack = replicas,
                    "fewer replicas than min_replicas_ack acknowledged the LOAD within wait_timeout_ms: a failover now may lose it (it is then replayed from the topic)"
                );
            }
            Err(error) => {
                self.metrics.wait_short();
                tracing::warn!(model = %self.key, %error, "WAIT after the LOAD failed: the LOAD stands, its replication is unconfirmed");
            }
        }
    }
}

/// A token naming one flush's parts: unique enough that parts of two
/// flushes (a restarted sink's, another instance's) never pass for one.
fn part_token() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}
