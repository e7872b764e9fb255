//! Models in Redis through the bandit module: rank, stats, export, load,
//! create. Errors from the server come back typed, never as panics.
//!
//! The URL is bandit_connect's scheme (one server, TLS, cluster, sentinel).
//! With `read_from=replica`, RANK goes to a replica (in a cluster, one of
//! the model key's slot) and falls back to the primary when no replica
//! answers; every other command goes to the primary.

use std::collections::BTreeMap;
use std::time::Duration;

use bandit_connect::{Connection, Connector, NodeRole, ReadFrom, Timeouts};

use bandit_core::codec::{self, Format};
use bandit_core::number::Shortest;
pub use bandit_core::policy::Policy;
use bandit_core::{Limits, Payload};

use crate::error::{ClientError, Result};

/// One ranked product.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub id: String,
    pub score: f64,
}

/// What to rank.
#[derive(Debug, Clone, Default)]
pub struct RankOptions<'a> {
    /// Candidates; all arms of the model when None.
    pub candidates: Option<&'a [String]>,
    /// How many; all when None.
    pub top_k: Option<usize>,
    /// Exploration weight; the model's default when None.
    pub alpha: Option<f64>,
}

/// One placed product of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub id: String,
    /// The UCB score, or for TS the posterior draw it was placed by.
    pub score: f64,
    /// The probability that it was placed here, given the items above it.
    pub probability: f64,
}

/// What [`Models::decide`] returns: the placements top first, and the
/// version of the model that made them.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub version: u64,
    pub items: Vec<Placement>,
}

/// The settings BANDIT.CREATE takes besides DIM; each one left out is the
/// module's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CreateOptions {
    /// Default exploration weight α.
    pub alpha: Option<f64>,
    /// Ridge prior λ.
    pub lambda: Option<f64>,
    /// Forgetting γ per event of an arm, in (0, 1]; 1 keeps everything.
    pub decay: Option<f64>,
}

/// Connections to Redis for model commands.
pub struct Models {
    connector: Connector,
    /// Writes and, without replica reads, reads; opened on first use when
    /// reads go to replicas.
    primary: Option<Connection>,
    /// RANK's connection with `read_from=replica`.
    reader: Option<Connection>,
    /// For messages: which server lacks the module, password masked.
    url: String,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Models")
    }
}

impl Models {
    /// Connects to a URL of bandit_connect's scheme (`redis://host:port[/db]`,
    /// `rediss://…`, `redis+cluster://…`, `redis+sentinel://…/<master>`).
    ///
    /// # Errors
    /// When the URL is malformed or the server unreachable.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_timeout(url, Duration::from_secs(5))
    }

    /// As [`Self::connect`], giving up on the connection after `timeout`.
    ///
    /// # Errors
    /// When the URL is malformed or the server unreachable.
    pub fn connect_timeout(url: &str, timeout: Duration) -> Result<Self> {
        let connector = Connector::open(url, Timeouts { connect: timeout, io: Duration::from_secs(30) })?;
        Self::with_connector(connector)
    }

    /// Connects through `connector`: to a reader when reads go to
    /// replicas, else to the primary, so that an unreachable server is
    /// reported here.
    ///
    /// # Errors
    /// When the server is unreachable.
    pub fn with_connector(mut connector: Connector) -> Result<Self> {
        let url = connector.target().masked().to_string();
        let (primary, reader) = match connector.target().read_from {
            ReadFrom::Primary => (Some(connector.primary()?), None),
            ReadFrom::Replica => (None, Some(connector.reader()?)),
        };
        Ok(Self { connector, primary, reader, url })
    }

    /// Runs a command on `model` on the primary; an unknown-command reply
    /// becomes [`ClientError::ModuleNotLoaded`] naming this server, a
    /// missing model [`ClientError::NoSuchModel`] naming the key.
    fn query<T: redis::FromRedisValue>(&mut self, model: &str, command: &redis::Cmd) -> Result<T> {
        let result = match &mut self.primary {
            Some(connection) => command.query(connection),
            None => self.connector.primary().and_then(|connection| command.query(self.primary.insert(connection))),
        };
        result.map_err(|e| ClientError::from(e).naming_model(&self.url, model))
    }

    /// As [`Self::query`], on a replica with `read_from=replica`. A reader
    /// that lost its connection is replaced once ([`Connector::reader`]:
    /// another replica, or the primary when none answers).
    fn read<T: redis::FromRedisValue>(&mut self, model: &str, command: &redis::Cmd) -> Result<T> {
        let Some(reader) = &mut self.reader else { return self.query(model, command) };
        let result = match reader.query_key(model, NodeRole::Replica, command) {
            Err(error) if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() => {
                self.reader = None;
                self.connector.reader().and_then(|connection| self.reader.insert(connection).query_key(model, NodeRole::Replica, command))
            }
            other => other,
        };
        result.map_err(|e| ClientError::from(e).naming_model(&self.url, model))
    }

    /// BANDIT.RANK with WITHSCORES: products best first.
    ///
    /// # Errors
    /// [`ClientError::NoSuchModel`], other server errors as
    /// [`ClientError::Server`]; a context
    /// whose length is not the model's dim as [`ClientError::ContextLength`]
    /// (the server's reply names CONTEXTBLOB, which the caller never wrote).
    pub fn rank(&mut self, model: &str, context: &[f64], options: &RankOptions<'_>) -> Result<Vec<Ranked>> {
        let mut command = rank_command(model, context, options);
        command.arg("WITHSCORES");
        let flat: Vec<redis::Value> = match self.read(model, &command) {
            Ok(flat) => flat,
            Err(error @ ClientError::Server { .. }) => return Err(self.explain_rank_error(model, context.len(), error)),
            Err(error) => return Err(error),
        };
        flat.chunks(2)
            .map(|pair| match pair {
                [id, score] => Ok(Ranked {
                    id: redis::from_redis_value(id)?,
                    score: redis::from_redis_value(score)?,
                }),
                _ => Err(ClientError::Protocol("RANK WITHSCORES returned an odd number of items".into())),
            })
            .collect()
    }

    /// BANDIT.RANK as a decision: placed under `policy`, with each item's
    /// score and placement probability and the model's version. With an
    /// event id the same event on the same model version gets the same
    /// decision.
    ///
    /// # Errors
    /// As [`Self::rank`]; a reply not of the decision shape as
    /// [`ClientError::Protocol`].
    pub fn decide(&mut self, model: &str, context: &[f64], options: &RankOptions<'_>, policy: Policy, event_id: Option<&str>) -> Result<Decided> {
        let mut command = rank_command(model, context, options);
        command.arg("POLICY").arg(policy.name());
        match policy {
            Policy::EpsilonGreedy { epsilon } => {
                command.arg(Shortest(epsilon).to_string());
            }
            Policy::Softmax { temperature } => {
                command.arg(Shortest(temperature).to_string());
            }
            Policy::Ucb | Policy::Thompson => {}
        }
        if let Some(event_id) = event_id {
            command.arg("EVENTID").arg(event_id);
        }
        command.arg("WITHSCORES").arg("WITHPROBS");
        let reply: redis::Value = match self.read(model, &command) {
            Ok(reply) => reply,
            Err(error @ ClientError::Server { .. }) => return Err(self.explain_rank_error(model, context.len(), error)),
            Err(error) => return Err(error),
        };
        parse_decision(reply)
    }

    /// A refused RANK whose context length differs from the model's dim
    /// is reported as that; any other error as it came.
    fn explain_rank_error(&mut self, model: &str, given: usize, error: ClientError) -> ClientError {
        match self.dim(model) {
            Ok(Some(dim)) if dim != given => ClientError::ContextLength { given, dim },
            _ => error,
        }
    }

    /// The model's dim from BANDIT.STATS; None when there is no such model.
    ///
    /// # Errors
    /// Other server errors, or a STATS reply without a numeric dim.
    pub fn dim(&mut self, model: &str) -> Result<Option<usize>> {
        let stats = match self.stats(model, None) {
            Ok(stats) => stats,
            Err(ClientError::NoSuchModel { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let dim = stats.get("dim").ok_or_else(|| ClientError::Protocol("BANDIT.STATS has no dim".into()))?;
        dim.parse().map(Some).map_err(|_| ClientError::Protocol(format!("BANDIT.STATS dim is {dim:?}")))
    }

    /// BANDIT.STATS (of the model, or of one arm) as field → value text,
    /// numbers at their shortest round-trip text ([`number_text`]).
    ///
    /// # Errors
    /// Server errors.
    pub fn stats(&mut self, model: &str, arm: Option<&str>) -> Result<BTreeMap<String, String>> {
        let mut command = redis::cmd("BANDIT.STATS");
        command.arg(model);
        if let Some(arm) = arm {
            command.arg("ARM").arg(arm);
        }
        let flat: Vec<redis::Value> = self.query(model, &command)?;
        Ok(flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [key, value] => Some((redis::from_redis_value::<String>(key).ok()?, render(value))),
                _ => None,
            })
            .collect())
    }

    /// BANDIT.EXPORT in the given format (all arms, or the listed ones).
    ///
    /// # Errors
    /// Server errors.
    pub fn export(&mut self, model: &str, arms: Option<&[String]>, format: Format) -> Result<Vec<u8>> {
        let mut command = redis::cmd("BANDIT.EXPORT");
        command.arg(model);
        if let Some(arms) = arms {
            command.arg("ARMS").arg(arms.len()).arg(arms);
        }
        command.arg("FORMAT").arg(match format {
            Format::Binary => "BINARY",
            Format::Json => "JSON",
        });
        self.query(model, &command)
    }

    /// The export, decoded.
    ///
    /// # Errors
    /// Server errors or an undecodable export.
    pub fn export_payload(&mut self, model: &str) -> Result<Payload> {
        let bytes = self.export(model, None, Format::Binary)?;
        let limits = Limits { max_payload_bytes: usize::MAX, max_arms: usize::MAX, max_dim: usize::MAX, ..Limits::default() };
        Ok(codec::decode(&bytes, &limits)?)
    }

    /// BANDIT.LOAD of raw payload bytes (binary or JSON); arms changed.
    ///
    /// # Errors
    /// Server errors, including STALE.
    pub fn load(&mut self, model: &str, payload: &[u8]) -> Result<u64> {
        self.query(model, redis::cmd("BANDIT.LOAD").arg(model).arg(payload))
    }

    /// BANDIT.CREATE.
    ///
    /// # Errors
    /// Server errors (exists with another dim, …).
    pub fn create(&mut self, model: &str, dim: usize, options: &CreateOptions) -> Result<()> {
        let mut command = redis::cmd("BANDIT.CREATE");
        command.arg(model).arg("DIM").arg(dim);
        for (name, value) in [("ALPHA", options.alpha), ("LAMBDA", options.lambda), ("DECAY", options.decay)] {
            if let Some(value) = value {
                command.arg(name).arg(value);
            }
        }
        self.query(model, &command)
    }
}

/// A reply's text: integers as integers (exact beyond 2⁵³), other numbers
/// at their shortest round-trip text ([`Shortest`]: `%.17g`'s
/// `0.40000000000000002` is 0.4, an empty sum's `-0` is 0), anything else
/// unchanged.
#[must_use]
pub fn number_text(text: &str) -> String {
    if let Ok(integer) = text.parse::<i64>() {
        return integer.to_string();
    }
    if let Ok(integer) = text.parse::<u64>() {
        return integer.to_string();
    }
    match text.parse::<f64>() {
        Ok(value) => Shortest(value).to_string(),
        Err(_) => text.to_owned(),
    }
}

/// A reply value as display text (nested maps and arrays flattened),
/// numbers through [`number_text`].
fn render(value: &redis::Value) -> String {
    match value {
        redis::Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", parts.join(", "))
        }
        redis::Value::Double(number) => Shortest(*number).to_string(),
        other => redis::from_redis_value::<String>(other).map_or_else(|_| format!("{other:?}"), |text| number_text(&text)),
    }
}

/// BANDIT.RANK key CONTEXTBLOB … [ARMS …] [TOP k] [ALPHA a].
/// BANDIT.RANK as this library sends it (also what `bandit bench` times).
pub(crate) fn rank_command(model: &str, context: &[f64], options: &RankOptions<'_>) -> redis::Cmd {
    let mut command = redis::cmd("BANDIT.RANK");
    // The binary context is exact and cheaper to parse than text.
    let blob: Vec<u8> = context.iter().flat_map(|v| v.to_le_bytes()).collect();
    command.arg(model).arg("CONTEXTBLOB").arg(blob);
    if let Some(candidates) = options.candidates {
        command.arg("ARMS").arg(candidates.len()).arg(candidates);
    }
    if let Some(k) = options.top_k {
        command.arg("TOP").arg(k);
    }
    if let Some(alpha) = options.alpha {
        command.arg("ALPHA").arg(alpha);
    }
    command
}

/// {version, items: [[id, score, probability], …]}, as a RESP2 flat array
/// of pairs or a RESP3 map.
fn parse_decision(reply: redis::Value) -> Result<Decided> {
    let pairs: Vec<(redis::Value, redis::Value)> = match reply {
        redis::Value::Map(pairs) => pairs,
        redis::Value::Array(flat) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        other => return Err(ClientError::Protocol(format!("RANK decision reply is {other:?}"))),
    };
    let mut version = None;
    let mut items = None;
    for (name, value) in pairs {
        match redis::from_redis_value::<String>(&name)?.as_str() {
            "version" => version = Some(redis::from_redis_value::<u64>(&value)?),
            "items" => {
                let rows: Vec<(String, f64, f64)> = redis::from_redis_value(&value)?;
                items = Some(rows.into_iter().map(|(id, score, probability)| Placement { id, score, probability }).collect());
            }
            _ => {}
        }
    }
    match (version, items) {
        (Some(version), Some(items)) => Ok(Decided { version, items }),
        _ => Err(ClientError::Protocol("RANK decision reply lacks version or items".into())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn stats_values_print_shortest() {
        let bulk = |text: &str| redis::Value::BulkString(text.as_bytes().to_vec());
        assert_eq!(render(&bulk("0.40000000000000002")), "0.4");
        assert_eq!(render(&bulk("-0")), "0");
        assert_eq!(render(&redis::Value::Double(-0.0)), "0");
        assert_eq!(render(&redis::Value::Int(30)), "30");
        assert_eq!(render(&redis::Value::Array(vec![bulk("0.10000000000000001"), bulk("-0")])), "[0.1, 0]");
    }

    /// Expected texts: what a person would write for the value Redis sent
    /// (core's `Shortest` switches to an exponent below 1e-5 and from 1e16).
    #[test]
    fn reply_numbers_shortest_round_trip_and_no_negative_zero() {
        let cases = [
            ("0.40000000000000002", "0.4"),
            ("0.29999999999999999", "0.3"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("0.55901699437494745", "0.5590169943749475"),
            ("1.0000000000000001e-300", "1e-300"),
            ("-2.5000000000000001e-07", "-2.5e-7"),
            ("0.00001", "0.00001"),
            ("0.000001", "1e-6"),
            ("1e16", "1e16"),
            ("1234567890123456.5", "1234567890123456.5"),
            ("inf", "inf"),
            ("-2.5", "-2.5"),
        ];
        for (text, expected) in cases {
            assert_eq!(number_text(text), expected, "{text}");
        }
    }

    #[test]
    fn integers_and_text_are_kept() {
        assert_eq!(number_text("30"), "30");
        assert_eq!(number_text("18446744073709551615"), "18446744073709551615");
        assert_eq!(number_text("9007199254740993"), "9007199254740993");
        assert_eq!(number_text("123456789012345678"), "123456789012345678");
        assert_eq!(number_text("p4"), "p4");
        assert_eq!(number_text(""), "");
    }
}
