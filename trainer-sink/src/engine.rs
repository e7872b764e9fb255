//! The sink's state machine, free of Kafka types so it can be reasoned about
//! (and tested) on its own.
//!
//! Per assigned partition it tracks `published` (the offset the model holds
//! for it) and `next` (the offset after the last event handled). Per arm it
//! keeps the trainer's accumulator and the partition that owns the arm.
//!
//! The invariant that makes delivery exactly once: an arm's accumulator
//! always equals the model's copy at the partition's `published` offset plus
//! every event from there to `next`. Arms are restored from the model lazily,
//! on their first event, and the restore checks that the model's offset for
//! the partition is still `published`; if another writer moved it, the
//! partition is reset to the model (arms dropped, `next` = the model's
//! offset) and the consumer seeks there. Events below `next` are skipped, so
//! redeliveries after a crash or a seek are never counted twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bandit_core::cholesky::Workspace;
use bandit_core::event::FeedbackEvent;
use bandit_core::fold::ArmAccumulator;
use bandit_core::{ArmPayload, Payload};
use rustc_hash::FxHashMap;

use crate::error::{Result, SinkError};
use crate::metrics::Metrics;
use crate::store::{LoadOutcome, ModelStore};

/// What became of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Folded into its arm.
    Folded,
    /// Already in the model (a redelivery), or for a partition not held.
    Skipped,
    /// Cannot be folded; `next` is not advanced until the caller decides
    /// (dead-letter then [`Engine::advance`], or stop).
    Rejected(String),
    /// Another writer moved the partition; seek the consumer to `offset`.
    Reset { partition: i32, offset: i64 },
}

/// What a successful flush published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flushed {
    /// Arms written.
    pub arms: usize,
    /// (partition, next offset) now in the model: commit these to Kafka.
    pub offsets: Vec<(i32, i64)>,
    /// Partitions reset because the model was ahead (STALE): seek these.
    pub resets: Vec<(i32, i64)>,
}

#[derive(Debug, Clone)]
struct PartitionState {
    /// The model's offset for this partition as of our last restore or publish.
    published: Option<i64>,
    /// Offset after the last record handled (None: from the beginning).
    next: Option<i64>,
    /// Records handled since `published` (folded, skipped past or
    /// dead-lettered), i.e. what a reset of this partition gives up.
    unflushed: u64,
}

impl PartitionState {
    fn at(offset: Option<i64>) -> Self {
        Self { published: offset, next: offset, unflushed: 0 }
    }
}

#[derive(Debug)]
struct Arm {
    accumulator: ArmAccumulator,
    partition: i32,
    dirty: bool,
}

/// Settings the engine needs.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub dim: usize,
    pub lambda: f64,
}

#[derive(Debug)]
pub struct Engine {
    settings: EngineSettings,
    store: ModelStore,
    arms: FxHashMap<String, Arm>,
    dirty: Vec<String>,
    partitions: BTreeMap<i32, PartitionState>,
    work: Workspace,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(settings: EngineSettings, store: ModelStore, metrics: Arc<Metrics>) -> Self {
        Self {
            settings,
            store,
            arms: FxHashMap::default(),
            dirty: Vec::new(),
            partitions: BTreeMap::new(),
            work: Workspace::default(),
            metrics,
        }
    }

    /// Events folded (or skipped past) and not yet published, over the
    /// partitions held.
    pub fn unflushed(&self) -> u64 {
        self.partitions.values().map(|state| state.unflushed).sum()
    }

    /// Asks Redis whether it is there (for health while nothing is written).
    ///
    /// # Errors
    /// As [`ModelStore::ping`].
    pub fn probe(&mut self) -> Result<()> {
        self.store.ping()
    }

    pub fn dirty_arms(&self) -> usize {
        self.dirty.len()
    }

    pub fn assigned(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// Takes ownership of partitions: reads the model's offsets and returns
    /// where to start each (None: from the beginning).
    ///
    /// # Errors
    /// When Redis cannot be read; the caller retries.
    pub fn assign(&mut self, partitions: &[i32]) -> Result<Vec<(i32, Option<i64>)>> {
        let model = self.store.export(&[])?;
        let stored: BTreeMap<i32, i64> = model.offsets.into_iter().collect();
        let mut starts = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            self.drop_arms_of(partition);
            let offset = stored.get(&partition).copied();
            self.partitions.insert(partition, PartitionState::at(offset));
            starts.push((partition, offset));
        }
        self.update_gauges();
        Ok(starts)
    }

    /// Gives partitions up (after the caller flushed): their arms may change
    /// elsewhere from now on, so they are forgotten.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for &partition in partitions {
            self.drop_arms_of(partition);
            self.partitions.remove(&partition);
        }
        self.update_gauges();
    }

    fn drop_arms_of(&mut self, partition: i32) {
        let before = self.arms.len();
        self.arms.retain(|_, arm| arm.partition != partition);
        if self.arms.len() != before {
            let arms = &self.arms;
            self.dirty.retain(|id| arms.get(id).is_some_and(|arm| arm.dirty));
        }
    }

    /// Handles one record.
    ///
    /// # Errors
    /// Only Redis failures while restoring an arm; the record was not
    /// handled (nothing changed) and must be handled again, before any later
    /// record of its partition.
    pub fn handle(&mut self, partition: i32, offset: i64, payload: Option<&[u8]>) -> Result<Verdict> {
        let Some(state) = self.partitions.get(&partition) else {
            return Ok(Verdict::Skipped);
        };
        if state.next.is_some_and(|next| offset < next) {
            Metrics::inc(&self.metrics.events_skipped);
            return Ok(Verdict::Skipped);
        }
        let event = match decode(payload, self.settings.dim) {
            Ok(event) => event,
            Err(reason) => {
                Metrics::inc(&self.metrics.events_rejected);
                return Ok(Verdict::Rejected(reason));
            }
        };
        if !self.arms.contains_key(&event.product_id) {
            if let Some(reset) = self.restore(partition, &event.product_id)? {
                return Ok(reset);
            }
        }
        let Some(arm) = self.arms.get_mut(&event.product_id) else {
            return Err(SinkError::Model(format!("arm {} vanished during restore", event.product_id)));
        };
        if arm.partition != partition {
            Metrics::inc(&self.metrics.events_rejected);
            return Ok(Verdict::Rejected(format!(
                "product {} arrived on partition {partition}, but partition {} owns its arm: producers must key events by product_id",
                event.product_id, arm.partition
            )));
        }
        arm.accumulator.update(&event.context_vector, event.reward);
        if !arm.dirty {
            arm.dirty = true;
            self.dirty.push(event.product_id);
        }
        self.advance(partition, offset);
        Metrics::inc(&self.metrics.events_folded);
        Ok(Verdict::Folded)
    }

    /// Marks a record as handled without folding it (after dead-lettering).
    pub fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.next = Some(offset + 1);
            state.unflushed += 1;
        }
        Metrics::set(&self.metrics.unflushed_events, self.unflushed());
    }

    /// Loads one arm from the model, or starts it from the prior. Returns a
    /// reset when the model's offset for the partition is no longer ours.
    fn restore(&mut self, partition: i32, id: &str) -> Result<Option<Verdict>> {
        let model = self.store.export(&[id])?;
        let stored = model.offsets.iter().find(|(p, _)| *p == partition).map(|&(_, o)| o);
        let published = self.partitions.get(&partition).and_then(|s| s.published);
        if stored != published {
            let offset = stored.unwrap_or(0);
            tracing::warn!(partition, ?published, model = ?stored, "the model moved under this instance: resetting the partition");
            Metrics::inc(&self.metrics.partition_resets);
            self.reset(partition, stored);
            return Ok(Some(Verdict::Reset { partition, offset }));
        }
        let accumulator = match model.arms.into_iter().find(|arm| arm.id == id) {
            Some(arm) => ArmAccumulator::from_payload(&arm).map_err(|e| {
                SinkError::Model(format!("cannot continue training arm {id}: {e} (was it loaded without A?)"))
            })?,
            None => ArmAccumulator::new(self.settings.dim, self.settings.lambda),
        };
        if accumulator.dim() != self.settings.dim {
            return Err(SinkError::Model(format!("arm {id} has dim {}, the sink {}", accumulator.dim(), self.settings.dim)));
        }
        self.arms.insert(id.to_owned(), Arm { accumulator, partition, dirty: false });
        Metrics::set(&self.metrics.arms_in_memory, self.arms.len() as u64);
        Ok(None)
    }

    fn reset(&mut self, partition: i32, stored: Option<i64>) {
        self.drop_arms_of(partition);
        self.partitions.insert(partition, PartitionState::at(stored));
        self.update_gauges();
    }

    /// Inverts the dirty arms and publishes them, with the next offset of
    /// every partition that moved, in one BANDIT.LOAD.
    ///
    /// # Errors
    /// When Redis is unavailable or refuses the payload for another reason
    /// than STALE; state is kept and the flush can be retried.
    pub fn flush(&mut self) -> Result<Flushed> {
        let mut resets = Vec::new();
        // One retry after a STALE: the reset partitions are out of the payload.
        for _ in 0..2 {
            let started = Instant::now();
            let payload = self.build_payload()?;
            if payload.arms.is_empty() && payload.offsets.is_empty() {
                // Nothing moved (records below the model's offsets only).
                for state in self.partitions.values_mut() {
                    state.unflushed = 0;
                }
                self.update_gauges();
                return Ok(Flushed { resets, ..Flushed::default() });
            }
            match self.store.load(&payload) {
                Ok(LoadOutcome::Applied(_)) => {
                    for &(partition, offset) in &payload.offsets {
                        if let Some(state) = self.partitions.get_mut(&partition) {
                            state.published = Some(offset);
                        }
                    }
                    // Every held partition's records are in the model now.
                    for state in self.partitions.values_mut() {
                        state.unflushed = 0;
                    }
                    for id in self.dirty.drain(..) {
                        if let Some(arm) = self.arms.get_mut(&id) {
                            arm.dirty = false;
                        }
                    }
                    self.metrics.observe_flush(started.elapsed(), payload.arms.len() as u64);
                    self.update_gauges();
                    return Ok(Flushed { arms: payload.arms.len(), offsets: payload.offsets, resets });
                }
                Ok(LoadOutcome::Stale(detail)) => {
                    Metrics::inc(&self.metrics.flushes_stale);
                    tracing::warn!(%detail, "publish refused as STALE: another instance is ahead");
                    let model: BTreeMap<i32, i64> = self.store.export(&[])?.offsets.into_iter().collect();
                    let moved: Vec<i32> = self
                        .partitions
                        .iter()
                        .filter(|(p, state)| model.get(p).copied() != state.published)
                        .map(|(&p, _)| p)
                        .collect();
                    for partition in moved {
                        let stored = model.get(&partition).copied();
                        tracing::warn!(partition, model = ?stored, "resetting the partition to the model's offset");
                        Metrics::inc(&self.metrics.partition_resets);
                        self.reset(partition, stored);
                        resets.push((partition, stored.unwrap_or(0)));
                    }
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.flushes_failed);
                    return Err(e);
                }
            }
        }
        Err(SinkError::Model("publish stayed STALE after resetting the moved partitions".into()))
    }

    fn build_payload(&mut self) -> Result<Payload> {
        let arms = self.invert_dirty()?;
        let offsets = self
            .partitions
            .iter()
            .filter_map(|(&p, state)| match (state.next, state.published) {
                (Some(next), published) if Some(next) != published => Some((p, next)),
                _ => None,
            })
            .collect();
        Ok(Payload { dim: self.settings.dim, arms, offsets, settings: None })
    }

    /// Inverts every dirty arm; large flushes are split across cores (each
    /// inversion is independent, O(d³)).
    fn invert_dirty(&mut self) -> Result<Vec<ArmPayload>> {
        let invert = |ids: &[String], work: &mut Workspace| -> Result<Vec<ArmPayload>> {
            ids.iter()
                .filter_map(|id| self.arms.get(id).map(|arm| (id, arm)))
                .map(|(id, arm)| {
                    arm.accumulator.to_payload(id, work, None).map_err(|e| SinkError::Model(format!("arm {id}: {e}")))
                })
                .collect()
        };
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(8);
        // Below a few hundred arms a thread costs more than it saves.
        let threads = cores.min(self.dirty.len() / 256).max(1);
        if threads == 1 {
            return invert(&self.dirty, &mut self.work);
        }
        let chunk = self.dirty.len().div_ceil(threads);
        let parts: Vec<Result<Vec<ArmPayload>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .dirty
                .chunks(chunk)
                .map(|ids| scope.spawn(move || invert(ids, &mut Workspace::default())))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| Err(SinkError::Model("an inversion thread panicked".into()))))
                .collect()
        });
        let mut arms = Vec::with_capacity(self.dirty.len());
        for part in parts {
            arms.extend(part?);
        }
        Ok(arms)
    }

    fn update_gauges(&self) {
        Metrics::set(&self.metrics.dirty_arms, self.dirty.len() as u64);
        Metrics::set(&self.metrics.arms_in_memory, self.arms.len() as u64);
        Metrics::set(&self.metrics.unflushed_events, self.unflushed());
    }
}

/// Parses and validates one event.
fn decode(payload: Option<&[u8]>, dim: usize) -> Result<FeedbackEvent, String> {
    let bytes = payload.ok_or_else(|| "empty record (no value)".to_owned())?;
    let event: FeedbackEvent = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON event: {e}"))?;
    event.validate(dim).map_err(|e| e.to_string())?;
    Ok(event)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decode_names_each_kind_of_bad_event() {
        let ok = br#"{"event_id": "e", "product_id": "1", "reward": 1, "context_vector": [0.5, 1], "timestamp": 0}"#;
        assert!(decode(Some(ok), 2).is_ok());
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "invalid JSON event"),
            (br#"{"event_id": "e", "reward": 1, "context_vector": [0.5, 1]}"#, "missing field `product_id`"),
            (br#"{"event_id": "e", "product_id": "1", "reward": 1, "context_vector": [0.5]}"#, "context_vector has 1 values, model dim is 2"),
            (br#"{"event_id": "e", "product_id": "1", "reward": 1e999, "context_vector": [0.5, 1]}"#, "invalid JSON event"),
            (br#"{"event_id": "e", "product_id": "", "reward": 1, "context_vector": [0.5, 1]}"#, "product_id is empty"),
            (br#"{"event_id": "e", "product_id": "1", "reward": "x", "context_vector": [0.5, 1]}"#, "invalid type"),
        ];
        for (bytes, expected) in cases {
            let error = decode(Some(bytes), 2).unwrap_err();
            assert!(error.contains(expected), "{}: {error}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(decode(None, 2).unwrap_err(), "empty record (no value)");
    }
}
