//! The batch of arms (and trainer offsets) that `BANDIT.LOAD` applies
//! atomically and `BANDIT.EXPORT` produces. Matrices are held packed (see
//! [`crate::packed`]); [`crate::codec`] turns a payload into bytes and back.

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::model::ModelSettings;
use crate::packed;

/// One arm's published parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmPayload {
    /// The product id, UTF-8, non-empty.
    pub id: String,
    /// A⁻¹, packed upper triangle.
    pub a_inv: Vec<f64>,
    /// b = Σ r·x.
    pub b: Vec<f64>,
    /// The Gram matrix A, packed, when the writer supplies it (the trainer
    /// restores from it after a crash).
    pub a: Option<Vec<f64>>,
    /// Number of events folded into this arm.
    pub n: u64,
    /// Sum of rewards folded into this arm.
    pub reward_sum: f64,
    /// When the arm was last changed, in Unix milliseconds; the loader's clock
    /// is used when absent. Exports carry it so a restore is exact.
    pub updated_ms: Option<i64>,
}

/// The model-wide settings a payload may carry besides `dim`, so that a
/// backup (`EXPORT`) restores the model it came from exactly, exploration
/// and prior included. A writer that only adds arms (the trainer) leaves
/// them out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PayloadSettings {
    /// The model's default exploration weight.
    pub alpha: f64,
    /// The model's ridge prior.
    pub lambda: f64,
    /// The model's forgetting per event (1: none).
    pub decay: f64,
}

impl PayloadSettings {
    /// The settings of a model, as a payload states them.
    #[must_use]
    pub fn of(settings: &ModelSettings) -> Self {
        Self { alpha: settings.alpha, lambda: settings.lambda, decay: settings.decay }
    }

    /// The model settings these describe, for a model of `dim` features.
    #[must_use]
    pub fn for_dim(&self, dim: usize) -> ModelSettings {
        ModelSettings { dim, alpha: self.alpha, lambda: self.lambda, decay: self.decay }
    }

    /// Equal in value (validated settings are never NaN; −0 and 0 are the
    /// same setting, and a CREATE replicated as text cannot tell them apart),
    /// with no tolerance: a restore must not drift by a rounding.
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        self.alpha == other.alpha && self.lambda == other.lambda && self.decay == other.decay
    }
}

impl std::fmt::Display for PayloadSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::number::Shortest;
        write!(f, "ALPHA {} LAMBDA {} DECAY {}", Shortest(self.alpha), Shortest(self.lambda), Shortest(self.decay))
    }
}

/// A batch of arms for one model, plus the trainer's next offset for every
/// partition it folded into them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Payload {
    pub dim: usize,
    pub arms: Vec<ArmPayload>,
    /// (partition, next offset), sorted by partition, partitions unique.
    pub offsets: Vec<(i32, i64)>,
    /// The model's settings, when the writer states them: a model created by
    /// this payload takes them, and a model with other settings refuses it.
    /// Not part of the version-1 body (see [`crate::codec`]).
    #[serde(skip)]
    pub settings: Option<PayloadSettings>,
    /// Compare-and-set for writers that must not publish over a model that
    /// moved: (partition, the model's offset the writer built on, −1 for
    /// none), sorted by partition. The model refuses the whole payload as
    /// STALE unless it holds exactly these, so a model that went back (a
    /// failover that lost the last LOAD) or that another writer moved is
    /// never overwritten with arms built on another state. Empty: no check.
    #[serde(skip)]
    pub base_offsets: Vec<(i32, i64)>,
    /// The model's version after this payload (how many changing LOADs it
    /// has had, see [`crate::Model::version`]), stated only by an AOF
    /// rewrite, whose chunks would otherwise count as LOADs of their own:
    /// the module takes it from the AOF and the primary's stream only.
    #[serde(skip)]
    pub version: Option<u64>,
    /// The trainer's sequence fences: (feedback partition, source partition,
    /// highest `source.seq` folded from that source partition into that
    /// feedback partition's events, see [`crate::event::Source`]), sorted
    /// by (feedback partition, source partition), each pair once. They
    /// describe the stream up to the feedback partition's offset, so each
    /// feedback partition must have its offset in the same payload: the
    /// model writes them with the offsets, and refuses both as STALE
    /// together. A listed pair takes the given seq; pairs not listed keep
    /// theirs. Not part of the version-1 body (see [`crate::codec`]).
    #[serde(skip)]
    pub fences: Vec<(i32, i32, u64)>,
}

impl Payload {
    /// Checks every bound and invariant the model relies on. Decoders call it,
    /// so a payload that reaches a model is always valid.
    ///
    /// # Errors
    /// The first violation found, naming the arm and field.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        let dim = self.dim;
        if dim == 0 {
            return Err(Error::InvalidPayload("dim must be at least 1".into()));
        }
        if dim > limits.max_dim {
            return Err(Error::TooLarge { what: "dim", got: dim, limit: limits.max_dim });
        }
        if let Some(settings) = self.settings {
            settings.for_dim(dim).validate(limits)?;
        }
        if self.arms.len() > limits.max_arms {
            return Err(Error::TooLarge {
                what: "number of arms",
                got: self.arms.len(),
                limit: limits.max_arms,
            });
        }
        let mut seen = FxHashSet::default();
        for arm in &self.arms {
            arm.validate(dim, limits)?;
            if !seen.insert(arm.id.as_str()) {
                return Err(Error::InvalidPayload(format!("arm '{}' appears twice", arm.id)));
            }
        }
        check_partitions(&self.offsets, 0, "offsets")?;
        check_partitions(&self.base_offsets, -1, "base_offsets")?;
        self.check_fences(limits)
    }

    /// Fences listed once each, in (feedback partition, source partition)
    /// order, non-negative, each for a feedback partition whose offset this
    /// payload sets: a fence states where the stream is at that offset, so
    /// without it the two could be applied apart (and a STALE offset would
    /// not hold back its fence).
    fn check_fences(&self, limits: &Limits) -> Result<()> {
        if self.fences.len() > limits.max_fences {
            return Err(Error::TooLarge { what: "number of fences", got: self.fences.len(), limit: limits.max_fences });
        }
        let mut previous: Option<(i32, i32)> = None;
        for &(partition, source, seq) in &self.fences {
            if partition < 0 || source < 0 {
                return Err(Error::InvalidPayload(format!(
                    "fences: partition {partition}, source partition {source} is out of range"
                )));
            }
            if previous.is_some_and(|p| p >= (partition, source)) {
                return Err(Error::InvalidPayload(
                    "fences must list each (partition, source partition) once, in ascending order".into(),
                ));
            }
            if self.offsets.binary_search_by_key(&partition, |&(p, _)| p).is_err() {
                return Err(Error::InvalidPayload(format!(
                    "fences: partition {partition} has a fence (source partition {source} at seq {seq}) but no offset in the payload"
                )));
            }
            previous = Some((partition, source));
        }
        Ok(())
    }
}

/// Partitions listed once each, ascending, with offsets at least `min`.
fn check_partitions(list: &[(i32, i64)], min: i64, what: &str) -> Result<()> {
    let mut previous: Option<i32> = None;
    for &(partition, offset) in list {
        if partition < 0 || offset < min {
            return Err(Error::InvalidPayload(format!("{what}: partition {partition} at {offset} is out of range")));
        }
        if previous.is_some_and(|p| p >= partition) {
            return Err(Error::InvalidPayload(format!("{what} must list each partition once, in ascending order")));
        }
        previous = Some(partition);
    }
    Ok(())
}

impl ArmPayload {
    fn validate(&self, dim: usize, limits: &Limits) -> Result<()> {
        if self.id.is_empty() {
            return Err(Error::InvalidPayload("arm id is empty".into()));
        }
        if self.id.len() > limits.max_id_bytes {
            return Err(Error::TooLarge {
                what: "arm id length",
                got: self.id.len(),
                limit: limits.max_id_bytes,
            });
        }
        let plen = packed::len(dim);
        self.check_len("a_inv", self.a_inv.len(), plen, dim)?;
        self.check_len("b", self.b.len(), dim, dim)?;
        if let Some(a) = &self.a {
            self.check_len("a", a.len(), plen, dim)?;
            self.check_finite("a", a)?;
        }
        self.check_finite("a_inv", &self.a_inv)?;
        self.check_finite("b", &self.b)?;
        self.check_finite("reward_sum", std::slice::from_ref(&self.reward_sum))?;
        for i in 0..dim {
            let diagonal = self.a_inv.get(packed::index(dim, i, i)).copied().unwrap_or(0.0);
            if diagonal <= 0.0 {
                return Err(Error::InvalidPayload(format!(
                    "a_inv of arm '{}' has a non-positive diagonal at {i}",
                    self.id
                )));
            }
        }
        Ok(())
    }

    fn check_len(&self, field: &str, got: usize, want: usize, dim: usize) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(Error::InvalidPayload(format!(
                "{field} of arm '{}' has {got} values, expected {want} for dim {dim}",
                self.id
            )))
        }
    }

    fn check_finite(&self, field: &str, values: &[f64]) -> Result<()> {
        // Branch-free over the whole slice, so it vectorises; payloads are
        // almost always valid.
        if values.iter().fold(true, |ok, v| ok & v.is_finite()) {
            Ok(())
        } else {
            Err(Error::NotFinite { field: format!("{field} of arm '{}'", self.id) })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_fences(fences: Vec<(i32, i32, u64)>) -> Payload {
        Payload { dim: 1, offsets: vec![(0, 5), (2, 9)], fences, ..Payload::default() }
    }

    #[test]
    fn fences_are_validated() {
        let limits = Limits::default();
        with_fences(vec![(0, 0, 1), (0, 3, 0), (2, 0, u64::MAX)]).validate(&limits).unwrap();
        with_fences(vec![]).validate(&limits).unwrap();
        let cases = [
            (vec![(0, 3, 1), (0, 0, 1)], "once, in ascending order"),
            (vec![(2, 0, 1), (0, 0, 1)], "once, in ascending order"),
            (vec![(0, 3, 1), (0, 3, 2)], "once, in ascending order"),
            (vec![(1, 0, 1)], "partition 1 has a fence (source partition 0 at seq 1) but no offset"),
            (vec![(0, -1, 1)], "partition 0, source partition -1 is out of range"),
            (vec![(-1, 0, 1)], "partition -1, source partition 0 is out of range"),
        ];
        for (fences, expected) in cases {
            let error = with_fences(fences.clone()).validate(&limits).unwrap_err().to_string();
            assert!(error.contains(expected), "{fences:?}: {error}");
        }
        let limits = Limits { max_fences: 1, ..Limits::default() };
        let error = with_fences(vec![(0, 0, 1), (2, 0, 1)]).validate(&limits).unwrap_err();
        assert_eq!(error, Error::TooLarge { what: "number of fences", got: 2, limit: 1 });
    }
}
