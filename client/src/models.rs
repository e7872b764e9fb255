//! Models in Redis through the bandit module: rank, stats, export, load,
//! create. Errors from the server come back typed, never as panics.

use std::collections::BTreeMap;
use std::time::Duration;

use bandit_core::codec::{self, Format};
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

/// A connection to Redis for model commands.
pub struct Models {
    connection: redis::Connection,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Models")
    }
}

impl Models {
    /// Connects to `redis://host:port[/db]`.
    ///
    /// # Errors
    /// When the URL is malformed or the server unreachable.
    pub fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
        connection.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self { connection })
    }

    /// BANDIT.RANK with WITHSCORES: products best first.
    ///
    /// # Errors
    /// Server errors (no such model, wrong dim, …) as [`ClientError::Redis`].
    pub fn rank(&mut self, model: &str, context: &[f64], options: &RankOptions<'_>) -> Result<Vec<Ranked>> {
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
        command.arg("WITHSCORES");
        let flat: Vec<redis::Value> = command.query(&mut self.connection)?;
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

    /// BANDIT.STATS (of the model, or of one arm) as field → value text.
    ///
    /// # Errors
    /// Server errors.
    pub fn stats(&mut self, model: &str, arm: Option<&str>) -> Result<BTreeMap<String, String>> {
        let mut command = redis::cmd("BANDIT.STATS");
        command.arg(model);
        if let Some(arm) = arm {
            command.arg("ARM").arg(arm);
        }
        let flat: Vec<redis::Value> = command.query(&mut self.connection)?;
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
        Ok(command.query(&mut self.connection)?)
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
        Ok(redis::cmd("BANDIT.LOAD").arg(model).arg(payload).query(&mut self.connection)?)
    }

    /// BANDIT.CREATE.
    ///
    /// # Errors
    /// Server errors (exists with another dim, …).
    pub fn create(&mut self, model: &str, dim: usize, alpha: Option<f64>, lambda: Option<f64>) -> Result<()> {
        let mut command = redis::cmd("BANDIT.CREATE");
        command.arg(model).arg("DIM").arg(dim);
        if let Some(alpha) = alpha {
            command.arg("ALPHA").arg(alpha);
        }
        if let Some(lambda) = lambda {
            command.arg("LAMBDA").arg(lambda);
        }
        let () = command.query(&mut self.connection)?;
        Ok(())
    }
}

/// A reply value as display text (nested maps and arrays flattened).
fn render(value: &redis::Value) -> String {
    match value {
        redis::Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", parts.join(", "))
        }
        other => redis::from_redis_value::<String>(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}
