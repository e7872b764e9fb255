//! The sink's training loop around the core's exactly-once state machine
//! ([`bandit_core::trainer::Trainer`]): this file does the I/O the trainer
//! asks for — reads the model's offsets, fences and arms from Redis, publishes its
//! payloads with `BANDIT.LOAD`, reads the model again after a STALE — and
//! counts events, flushes and resets where they happen (its gauges are read
//! with [`Engine::gauges`]). How events are folded, which records are skipped,
//! when a partition is reset and what a flush carries is the trainer's, and
//! is property-tested there without a broker.

use std::sync::Arc;
use std::time::Instant;

use bandit_core::event::FeedbackEvent;
use bandit_core::fold::Learning;
use bandit_core::trainer::{Handled, Restored, Trainer};

use crate::error::{Result, SinkError};
use crate::metrics::{EngineGauges, Metrics};
use crate::store::{LoadOutcome, ModelStore};

/// What became of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Folded into its arm.
    Folded,
    /// Already in the model (a redelivery, or an example the join emitted
    /// again, which the sequence fence dropped), or for a partition not held.
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

/// Settings the engine needs.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub dim: usize,
    /// λ and the forgetting factor, the model's own.
    pub learning: Learning,
    /// Largest share of a flush's arms in one LOAD command, bytes (see
    /// `Config::load_part_bytes`).
    pub part_bytes: usize,
}

#[derive(Debug)]
pub struct Engine {
    trainer: Trainer,
    store: ModelStore,
    metrics: Arc<Metrics>,
    /// The last flush's encoding (its parts), kept so that the next one
    /// writes into memory it already has (a flush can be tens of megabytes).
    encoded: Vec<Vec<u8>>,
    part_bytes: usize,
}

impl Engine {
    pub fn new(settings: EngineSettings, store: ModelStore, metrics: Arc<Metrics>) -> Self {
        Self {
            trainer: Trainer::new(settings.dim, settings.learning),
            store,
            metrics,
            encoded: Vec::new(),
            part_bytes: settings.part_bytes,
        }
    }

    /// Events folded (or skipped past) and not yet published, over the
    /// partitions held.
    pub fn unflushed(&self) -> u64 {
        self.trainer.unflushed()
    }

    /// Asks Redis whether it is there (for health while nothing is written).
    ///
    /// # Errors
    /// As [`ModelStore::ping`].
    pub fn probe(&mut self) -> Result<()> {
        self.store.ping()
    }

    pub fn dirty_arms(&self) -> usize {
        self.trainer.dirty_arms()
    }

    pub fn gauges(&self) -> EngineGauges {
        EngineGauges {
            dirty_arms: self.trainer.dirty_arms(),
            arms_in_memory: self.trainer.arms_in_memory(),
            unflushed_events: self.trainer.unflushed(),
            fences: self.trainer.fences(),
        }
    }

    pub fn assigned(&self) -> Vec<i32> {
        self.trainer.assigned()
    }

    /// Takes ownership of partitions: reads the model's offsets and sequence
    /// fences and returns where to start each (None: from the beginning).
    ///
    /// # Errors
    /// When Redis cannot be read; the caller retries.
    pub fn assign(&mut self, partitions: &[i32]) -> Result<Vec<(i32, Option<i64>)>> {
        let model = self.store.export(&[])?;
        Ok(self.trainer.assign(partitions, &model))
    }

    /// Gives partitions up (after the caller flushed): their arms may change
    /// elsewhere from now on, so they are forgotten.
    pub fn revoke(&mut self, partitions: &[i32]) {
        self.trainer.revoke(partitions);
    }

    /// Handles one record, restoring its arm from the model first when the
    /// trainer does not hold it.
    ///
    /// # Errors
    /// Only Redis failures while restoring an arm; the record was not
    /// handled (nothing changed) and must be handled again, before any later
    /// record of its partition.
    pub fn handle(&mut self, partition: i32, offset: i64, event: Result<&FeedbackEvent, &str>) -> Result<Verdict> {
        loop {
            match self.trainer.handle(partition, offset, event) {
                Handled::Folded => {
                    self.metrics.event_folded();
                    return Ok(Verdict::Folded);
                }
                Handled::Skipped => {
                    self.metrics.event_skipped();
                    return Ok(Verdict::Skipped);
                }
                Handled::Duplicate => {
                    self.metrics.event_duplicate();
                    return Ok(Verdict::Skipped);
                }
                Handled::Rejected(reason) => {
                    self.metrics.event_rejected();
                    return Ok(Verdict::Rejected(reason));
                }
                Handled::NeedArm(id) => {
                    let export = self.store.export(&[&id])?;
                    let restored = self.trainer.restored(partition, &id, &export).map_err(|e| {
                        SinkError::Model(format!("cannot continue training arm {id}: {e} (was it loaded without A?)"))
                    })?;
                    if let Restored::Reset { partition, offset } = restored {
                        self.reset(partition, offset, "the model moved under this instance");
                        return Ok(Verdict::Reset { partition, offset });
                    }
                }
            }
        }
    }

    /// Marks a record as handled without folding it (after dead-lettering).
    pub fn advance(&mut self, partition: i32, offset: i64) {
        self.trainer.advance(partition, offset);
    }

    /// Publishes the changed arms, with the next offset of every partition
    /// that moved, in one BANDIT.LOAD (or, when large, in parts applied together).
    ///
    /// # Errors
    /// When Redis is unavailable or refuses the payload for another reason
    /// than STALE; state is kept and the flush can be retried.
    pub fn flush(&mut self) -> Result<Flushed> {
        let mut resets = Vec::new();
        // One retry after a STALE: the reset partitions are out of the payload.
        for _ in 0..2 {
            let started = Instant::now();
            let flushed = self.trainer.flush_encoded(&mut self.encoded, self.part_bytes).map_err(|e| SinkError::Model(e.to_string()))?;
            let Some((payload, arms)) = flushed else {
                // Nothing to publish: check that the model is still where
                // this instance left it (a failover may have lost a LOAD).
                self.reconcile(&mut resets, "the model is not where this instance left it (a failover?)")?;
                return Ok(Flushed { resets, ..Flushed::default() });
            };
            match self.store.load(&self.encoded) {
                Ok(LoadOutcome::Applied(_)) => {
                    self.trainer.published(&payload);
                    self.metrics.flushed(started.elapsed(), arms);
                    return Ok(Flushed { arms, offsets: payload.offsets, resets });
                }
                Ok(LoadOutcome::Stale(detail)) => {
                    self.metrics.flush_stale();
                    tracing::warn!(%detail, "publish refused as STALE: the model is not where this instance left it");
                    self.reconcile(&mut resets, "another instance moved it, or the model went back")?;
                }
                Err(e) => {
                    self.metrics.flush_failed();
                    return Err(e);
                }
            }
        }
        Err(SinkError::Model("publish stayed STALE after resetting the moved partitions".into()))
    }

    /// Reads the model's offsets (and fences) and resets every partition the
    /// model holds elsewhere than this instance left it, to the model's
    /// offset and fences, adding them to `resets` for the consumer to seek.
    fn reconcile(&mut self, resets: &mut Vec<(i32, i64)>, cause: &str) -> Result<()> {
        let model = self.store.export(&[])?;
        for (partition, offset) in self.trainer.reconcile(&model) {
            self.reset(partition, offset, cause);
            resets.push((partition, offset));
        }
        Ok(())
    }

    /// A partition the trainer reset to the model's offset: the one place
    /// such a reset is logged and counted.
    fn reset(&self, partition: i32, offset: i64, cause: &str) {
        tracing::warn!(partition, model = offset, cause, "resetting the partition to the model's offset");
        self.metrics.partition_reset();
    }
}
