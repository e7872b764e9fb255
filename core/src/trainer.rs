//! The trainer's exactly-once state machine, free of sockets: it never calls
//! Kafka or Redis, it is told what happened and says what to do next. The
//! sink drives it with a thin I/O loop; tests drive it with an in-memory
//! model and any interleaving of events, redeliveries, crashes, rebalances
//! and a second writer (see the property tests beside this file).
//!
//! Per assigned partition it tracks `published` (the offset the model holds
//! for it, as of the last restore or publish), `next` (the offset after the
//! last record handled) and its sequence fences: per source partition, the
//! highest `source.seq` folded (see [`crate::event::Source`]). Per arm it
//! keeps the accumulator and the partition that owns the arm.
//!
//! The invariant that makes delivery exactly once: an arm's accumulator
//! always equals the model's copy at its partition's `published` offset plus
//! every event of that partition from there to `next`, and so do the
//! partition's fences (the model's at `published`, raised by the events
//! folded since). Hence:
//! - records below `next` are skipped, so redeliveries are never counted twice;
//! - an event whose source seq is at or below its fence is a duplicate (the
//!   join emitted the example again after a crash, at a later offset): it is
//!   not folded, and its offset counts as handled ([`Handled::Duplicate`]).
//!   Events without `source` are never duplicates. The fence check comes
//!   before validation, so an invalid example emitted again is dropped, not
//!   dead-lettered twice; but a rejected event does not raise the fence;
//! - an arm is restored from the model on its first event ([`Handled::NeedArm`]
//!   then [`Trainer::restored`]), and only while the model's offset for the
//!   partition is still `published`; if another writer moved it, the partition
//!   is reset to the model (its arms dropped, `next` = the model's offset) and
//!   the caller seeks there;
//! - a publish carries every changed arm and, for every partition that moved,
//!   its `next` and all its fences, and the offsets it was built on: the model
//!   ([`crate::Model::apply`]) refuses it as STALE when another writer is
//!   ahead or the model is not where the trainer left it (it went back), and
//!   [`Trainer::reconcile`] resets the partitions that moved.
//!
//! The calls, in the order the I/O loop makes them:
//! 1. [`Trainer::assign`] with the model's export (its offsets and fences;
//!    no arms needed): where to start each partition.
//! 2. [`Trainer::handle`] per record; on `NeedArm`, export that arm (and the
//!    offsets and fences) from the model, [`Trainer::restored`], then handle it again.
//!    On `Rejected`, dead-letter it and [`Trainer::advance`], or stop.
//! 3. [`Trainer::flush`]: the payload to LOAD (built on the offsets the model
//!    had, which it checks: [`crate::Payload::base_offsets`]); then
//!    [`Trainer::published`] (commit the returned offsets) or, on STALE,
//!    [`Trainer::reconcile`] with the model's export (seek the returned
//!    partitions) and flush again. With nothing to publish, reconcile with
//!    the model's export anyway: that is how a failover that lost the last
//!    LOAD is noticed on a quiet partition.
//! 4. [`Trainer::revoke`] after a final flush when partitions go away.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::cholesky::Workspace;
use crate::error::{Error, Result};
use crate::event::FeedbackEvent;
use crate::fold::{ArmAccumulator, Learning};
use crate::payload::{ArmPayload, Payload};

/// What became of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Folded into its arm.
    Folded,
    /// Already in the model (a redelivery), or for a partition not held.
    Skipped,
    /// An example the join emitted again: its source seq is at or below the
    /// fence of its source partition. Not folded; its offset is handled.
    Duplicate,
    /// Cannot be folded; `next` does not move until the caller decides
    /// (dead-letter then [`Trainer::advance`], or stop before it).
    Rejected(String),
    /// The event's arm is not in memory: export it from the model, pass the
    /// export to [`Trainer::restored`], then handle the record again. Nothing
    /// changed.
    NeedArm(String),
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// The arm is in memory: handle the record again.
    Ready,
    /// Another writer moved the partition: it was reset to the model; seek
    /// the consumer to `offset` (0 when the model has none).
    Reset { partition: i32, offset: i64 },
}

#[derive(Debug, Clone)]
struct PartitionState {
    published: Option<i64>,
    next: Option<i64>,
    /// Records handled since `published` (folded, skipped past or advanced
    /// over): what a reset of this partition gives up.
    unflushed: u64,
    /// Source partition → highest seq folded, as of `next`.
    fences: BTreeMap<i32, u64>,
}

impl PartitionState {
    /// The partition as `model` (an export: offsets and fences) holds it.
    fn at(partition: i32, model: &Payload) -> Self {
        let offset = offset_of(&model.offsets, partition);
        let fences = model
            .fences
            .iter()
            .filter(|&&(p, _, _)| p == partition)
            .map(|&(_, source, seq)| (source, seq))
            .collect();
        Self { published: offset, next: offset, unflushed: 0, fences }
    }
}

#[derive(Debug)]
struct Arm {
    accumulator: ArmAccumulator,
    partition: i32,
    dirty: bool,
}

/// Dirty arms per thread below which a flush inverts on one thread: below
/// a few hundred arms a thread costs more than it saves.
const PARALLEL_ARMS: usize = 256;

/// One publishing thread's scratch space.
#[derive(Debug, Default)]
struct Publishing {
    a_inv: Vec<f64>,
    cholesky: Workspace,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Trainer {
    dim: usize,
    learning: Learning,
    arms: FxHashMap<String, Arm>,
    dirty: Vec<String>,
    partitions: BTreeMap<i32, PartitionState>,
    work: Workspace,
}

impl Trainer {
    /// A trainer for arms of `dim` features that folds as `learning` says.
    #[must_use]
    pub fn new(dim: usize, learning: Learning) -> Self {
        Self {
            dim,
            learning,
            arms: FxHashMap::default(),
            dirty: Vec::new(),
            partitions: BTreeMap::new(),
            work: Workspace::default(),
        }
    }

    /// Records handled and not yet published, over the partitions held.
    #[must_use]
    pub fn unflushed(&self) -> u64 {
        self.partitions.values().map(|state| state.unflushed).sum()
    }

    /// Arms changed since the last publish.
    #[must_use]
    pub fn dirty_arms(&self) -> usize {
        self.dirty.len()
    }

    /// Arms held in memory.
    #[must_use]
    pub fn arms_in_memory(&self) -> usize {
        self.arms.len()
    }

    /// The partitions held.
    #[must_use]
    pub fn assigned(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// Takes partitions over at the model's offsets and fences (`model`: an
    /// export of the model; its arms are not used). Returns where to start
    /// each: the model's offset, or None for the beginning.
    pub fn assign(&mut self, partitions: &[i32], model: &Payload) -> Vec<(i32, Option<i64>)> {
        partitions
            .iter()
            .map(|&partition| {
                self.reset(partition, model);
                (partition, offset_of(&model.offsets, partition))
            })
            .collect()
    }

    /// Sequence fences held, over the partitions held.
    #[must_use]
    pub fn fences(&self) -> usize {
        self.partitions.values().map(|state| state.fences.len()).sum()
    }

    /// Gives partitions up (after the caller's final flush): their arms may
    /// change elsewhere from now on, so they are forgotten.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for &partition in partitions {
            self.drop_arms_of(partition);
            self.partitions.remove(&partition);
        }
    }

    /// Handles one record: the decoded event, or why it could not be decoded.
    pub fn handle(&mut self, partition: i32, offset: i64, event: std::result::Result<&FeedbackEvent, &str>) -> Handled {
        let Some(state) = self.partitions.get(&partition) else {
            return Handled::Skipped;
        };
        if state.next.is_some_and(|next| offset < next) {
            return Handled::Skipped;
        }
        let event = match event {
            Ok(event) => event,
            Err(reason) => return Handled::Rejected(reason.to_owned()),
        };
        if let Some(source) = event.source {
            if state.fences.get(&source.partition).is_some_and(|&fence| source.seq <= fence) {
                self.advance(partition, offset);
                return Handled::Duplicate;
            }
        }
        if let Err(error) = event.validate(self.dim) {
            return Handled::Rejected(error.to_string());
        }
        let Some(arm) = self.arms.get_mut(&event.product_id) else {
            return Handled::NeedArm(event.product_id.clone());
        };
        if arm.partition != partition {
            return Handled::Rejected(format!(
                "product {} arrived on partition {partition}, but partition {} owns its arm: producers must key events by product_id",
                event.product_id, arm.partition
            ));
        }
        self.learning.fold(&mut arm.accumulator, &event.context_vector, event.reward);
        if !arm.dirty {
            arm.dirty = true;
            self.dirty.push(event.product_id.clone());
        }
        if let (Some(source), Some(state)) = (event.source, self.partitions.get_mut(&partition)) {
            let fence = state.fences.entry(source.partition).or_insert(source.seq);
            *fence = (*fence).max(source.seq);
        }
        self.advance(partition, offset);
        Handled::Folded
    }

    /// Marks a record as handled without folding it (after dead-lettering).
    pub fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.next = Some(offset + 1);
            state.unflushed += 1;
        }
    }

    /// Takes the model's export of arm `id` (absent when the model lacks it)
    /// with every offset and fence the model holds, for a record of `partition`.
    ///
    /// # Errors
    /// [`Error::InvalidPayload`] when the model's arm cannot be trained on
    /// (no Gram matrix, or another dim).
    pub fn restored(&mut self, partition: i32, id: &str, export: &Payload) -> Result<Restored> {
        let stored = offset_of(&export.offsets, partition);
        let published = self.partitions.get(&partition).and_then(|state| state.published);
        if stored != published {
            self.reset(partition, export);
            return Ok(Restored::Reset { partition, offset: stored.unwrap_or(0) });
        }
        let accumulator = match export.arms.iter().find(|arm| arm.id == id) {
            Some(arm) => ArmAccumulator::from_payload(arm)?,
            None => self.learning.prior(self.dim),
        };
        if accumulator.dim() != self.dim {
            return Err(Error::InvalidPayload(format!("arm {id} has dim {}, the trainer {}", accumulator.dim(), self.dim)));
        }
        self.arms.insert(id.to_owned(), Arm { accumulator, partition, dirty: false });
        Ok(Restored::Ready)
    }

    /// The payload that publishes every changed arm with the next offset and
    /// the fences of every partition that moved, or None when nothing moved
    /// (records below the model's offsets only; they count as published).
    ///
    /// # Errors
    /// [`Error::NotPositiveDefinite`] if an arm's A lost definiteness, which
    /// finite events and λ > 0 cannot cause.
    pub fn flush(&mut self) -> Result<Option<Payload>> {
        let Some(mut payload) = self.flush_header() else { return Ok(None) };
        payload.arms = self.invert_dirty()?;
        Ok(Some(payload))
    }

    /// [`Trainer::flush`], binary-encoded into `parts` (one buffer per part;
    /// buffers kept between flushes have their memory already) without
    /// building the payload's arms: each dirty arm is inverted and written
    /// straight from its accumulator, on several threads for large flushes.
    /// The arms are cut into parts of at most `part_bytes` of arms each
    /// (a part holds at least one arm), every part with the whole header,
    /// to be sent as `BANDIT.LOAD … PART` commands (see [`crate::parts`]);
    /// one part is the whole payload. Returns the payload without its arms
    /// (for [`Trainer::published`]) and how many arms were written.
    ///
    /// # Errors
    /// As [`Trainer::flush`].
    pub fn flush_encoded(&mut self, parts: &mut Vec<Vec<u8>>, part_bytes: usize) -> Result<Option<(Payload, usize)>> {
        let Some(header) = self.flush_header() else {
            parts.clear();
            return Ok(None);
        };
        let arms: Vec<(&str, &ArmAccumulator)> =
            self.dirty.iter().filter_map(|id| self.arms.get(id).map(|arm| (id.as_str(), &arm.accumulator))).collect();
        let dim = self.dim;
        let plen = crate::packed::len(dim);
        let len = |&(id, _): &(&str, &ArmAccumulator)| crate::wire::arm_len_parts(id.len(), plen, dim, Some(plen), false);
        let put = |out: &mut dyn crate::wire::Out, &(id, arm): &(&str, &ArmAccumulator), work: &mut Publishing| {
            work.a_inv.resize(plen, 0.0);
            arm.invert(&mut work.a_inv, &mut work.cholesky)?;
            let fields = crate::wire::ArmParts {
                id,
                a_inv: &work.a_inv,
                b: &arm.b,
                a: Some(&arm.a),
                n: arm.n,
                reward_sum: arm.reward_sum,
                updated_ms: None,
            };
            crate::wire::put_arm_parts(out, &fields);
            Ok(())
        };
        let groups = split_by_bytes(&arms, part_bytes, len);
        parts.truncate(groups.len());
        parts.resize_with(groups.len(), Vec::new);
        for (group, out) in groups.into_iter().zip(parts.iter_mut()) {
            crate::codec::encode_binary_with(&header, group.len(), out, |out| {
                crate::wire::put_items(group, PARALLEL_ARMS, out, len, put)
            })?;
        }
        Ok(Some((header, arms.len())))
    }

    /// The payload of a flush without its arms (offsets, fences, base
    /// offsets), or None when there is nothing to publish.
    fn flush_header(&mut self) -> Option<Payload> {
        let offsets: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(&partition, state)| match state.next {
                Some(next) if Some(next) != state.published => Some((partition, next)),
                _ => None,
            })
            .collect();
        if self.dirty.is_empty() && offsets.is_empty() {
            self.partitions.values_mut().for_each(|state| state.unflushed = 0);
            return None;
        }
        // Fences change only with a fold, which moves `next`: those of the
        // partitions that moved are all that can differ from the model's.
        let fences = offsets
            .iter()
            .filter_map(|(partition, _)| self.partitions.get(partition).map(|state| (partition, state)))
            .flat_map(|(&partition, state)| state.fences.iter().map(move |(&source, &seq)| (partition, source, seq)))
            .collect();
        // What this trainer built on, for every partition it holds (moved or
        // not): the model must still hold exactly it, so a LOAD a failover
        // lost on a quiet partition is noticed even while others are busy.
        let base_offsets = self
            .partitions
            .iter()
            .map(|(&partition, state)| (partition, state.published.unwrap_or(-1)))
            .collect();
        Some(Payload { dim: self.dim, arms: Vec::new(), offsets, settings: None, base_offsets, version: None, fences })
    }

    /// The model accepted the payload of the last [`Trainer::flush`] (or
    /// [`Trainer::flush_encoded`]; only its offsets are read): they are
    /// published (commit them to Kafka).
    pub fn published(&mut self, payload: &Payload) {
        for &(partition, offset) in &payload.offsets {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.published = Some(offset);
            }
        }
        self.partitions.values_mut().for_each(|state| state.unflushed = 0);
        for id in self.dirty.drain(..) {
            if let Some(arm) = self.arms.get_mut(&id) {
                arm.dirty = false;
            }
        }
    }

    /// Aligns the trainer with the model's offsets now (`model`, an export
    /// of it; its arms are not used):
    /// after a payload was refused as STALE, and whenever there was nothing to
    /// publish, so that a model that went back (a failover that lost the last
    /// LOAD) or that another writer moved is noticed even on a quiet
    /// partition. Every partition whose model offset is not the one this
    /// trainer published is reset to the model (its offset and fences);
    /// returns (partition, offset)
    /// for the consumer to seek, which replays what the model lacks. After a
    /// STALE, flush again: the rest is still waiting.
    pub fn reconcile(&mut self, model: &Payload) -> Vec<(i32, i64)> {
        let moved: Vec<(i32, Option<i64>)> = self
            .partitions
            .iter()
            .map(|(&partition, state)| (partition, state.published, offset_of(&model.offsets, partition)))
            .filter(|(_, published, stored)| published != stored)
            .map(|(partition, _, stored)| (partition, stored))
            .collect();
        moved
            .into_iter()
            .map(|(partition, stored)| {
                self.reset(partition, model);
                (partition, stored.unwrap_or(0))
            })
            .collect()
    }

    /// Drops the partition's arms and takes its offset and fences from `model`.
    fn reset(&mut self, partition: i32, model: &Payload) {
        self.drop_arms_of(partition);
        self.partitions.insert(partition, PartitionState::at(partition, model));
    }

    fn drop_arms_of(&mut self, partition: i32) {
        let before = self.arms.len();
        self.arms.retain(|_, arm| arm.partition != partition);
        if self.arms.len() != before {
            let arms = &self.arms;
            self.dirty.retain(|id| arms.get(id).is_some_and(|arm| arm.dirty));
        }
    }

    /// Inverts every dirty arm; large flushes are split across cores (each
    /// inversion is independent, O(d³)).
    fn invert_dirty(&mut self) -> Result<Vec<ArmPayload>> {
        let arms = &self.arms;
        let invert = |ids: &[String], work: &mut Workspace| -> Result<Vec<ArmPayload>> {
            ids.iter()
                .filter_map(|id| arms.get(id).map(|arm| (id, arm)))
                .map(|(id, arm)| arm.accumulator.to_payload(id, work, None))
                .collect()
        };
        let threads = crate::parallel::threads_for(self.dirty.len(), PARALLEL_ARMS);
        if threads == 1 {
            return invert(&self.dirty, &mut self.work);
        }
        let chunk = self.dirty.len().div_ceil(threads);
        let parts = crate::parallel::run_parts(self.dirty.chunks(chunk).collect(), |ids| invert(ids, &mut Workspace::default()));
        let mut out = Vec::with_capacity(self.dirty.len());
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }
}

fn offset_of(offsets: &[(i32, i64)], partition: i32) -> Option<i64> {
    offsets.iter().find(|(p, _)| *p == partition).map(|&(_, offset)| offset)
}

/// `items` cut in order into runs of at most `budget` bytes each (by
/// `len`), every run holding at least one item; no items: one empty run.
fn split_by_bytes<T>(items: &[T], budget: usize, len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let mut bytes = 0usize;
        let end = rest
            .iter()
            .position(|item| {
                bytes = bytes.saturating_add(len(item));
                bytes > budget
            })
            .map_or(rest.len(), |first_over| first_over.max(1));
        let (run, after) = rest.split_at(end);
        runs.push(run);
        rest = after;
    }
    if runs.is_empty() {
        runs.push(items);
    }
    runs
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::codec;

    /// Two trainers fed the same events over two partitions, one flushing
    /// through payloads and the encoder, the other straight into bytes.
    fn twins(arms: usize, dim: usize) -> (Trainer, Trainer) {
        let learning = Learning { lambda: 0.7, decay: 0.99 };
        let (mut one, mut other) = (Trainer::new(dim, learning), Trainer::new(dim, learning));
        let model = Payload { dim, offsets: vec![(1, 40)], fences: vec![(1, 3, 9)], ..Payload::default() };
        for trainer in [&mut one, &mut other] {
            trainer.assign(&[0, 1], &model);
            let empty = Payload { dim, ..model.clone() };
            for k in 0..arms * 2 {
                let event = FeedbackEvent {
                    product_id: format!("item-{}", k % arms),
                    reward: (k % 3) as f64 * 0.5,
                    context_vector: (0..dim).map(|i| ((k * 7 + i * 3) % 11) as f64 / 10.0 - 0.3).collect(),
                    ..FeedbackEvent::default()
                };
                let (partition, offset) = if k % 2 == 0 { (0, k as i64 / 2) } else { (1, 40 + k as i64 / 2) };
                while let Handled::NeedArm(id) = trainer.handle(partition, offset, Ok(&event)) {
                    trainer.restored(partition, &id, &empty).unwrap();
                }
            }
        }
        (one, other)
    }

    /// The bytes written straight from the accumulators are the encoding of
    /// the payload `flush` builds, for a flush on one thread and one split
    /// across threads; both trainers then publish the same offsets.
    #[test]
    fn an_encoded_flush_is_the_flush_encoded() {
        for arms in [3, 3000] {
            let (mut one, mut other) = twins(arms, 5);
            let payload = one.flush().unwrap().unwrap();
            let mut parts = vec![vec![1, 2, 3], vec![4]];
            let (header, count) = other.flush_encoded(&mut parts, usize::MAX).unwrap().unwrap();
            assert_eq!(count, arms);
            assert_eq!(parts, vec![codec::encode_binary(&payload).unwrap()], "{arms} arms");
            assert_eq!(header, Payload { arms: Vec::new(), ..payload.clone() });
            assert_eq!(codec::decode(&parts[0], &crate::Limits::default()).unwrap(), payload);
            one.published(&payload);
            other.published(&header);
            assert!(one.flush().unwrap().is_none() && other.flush_encoded(&mut parts, usize::MAX).unwrap().is_none());
            assert!(parts.is_empty());
        }
    }

    /// Cut into parts, each part is a payload with the whole header and its
    /// share of the arms, in order, none over the budget unless it holds a
    /// single arm; joined, they are the flush.
    #[test]
    fn a_flush_in_parts_joins_into_the_flush() {
        let dim = 5;
        let arm_bytes = crate::wire::arm_len_parts("item-0".len(), crate::packed::len(dim), dim, Some(crate::packed::len(dim)), false);
        // 40 arms with ids item-0..item-39 (6 or 7 bytes): budgets that
        // fit 2.5 arms, exactly 3, one arm less than one, and everything.
        for (budget, expected_parts) in [(arm_bytes * 5 / 2, 20), (arm_bytes * 3 + 10, 14), (arm_bytes / 2, 40), (usize::MAX, 1)] {
            let (mut one, mut other) = twins(40, dim);
            let payload = one.flush().unwrap().unwrap();
            let mut parts = Vec::new();
            let (header, count) = other.flush_encoded(&mut parts, budget).unwrap().unwrap();
            assert_eq!((count, parts.len()), (40, expected_parts), "budget {budget}");
            let limits = crate::Limits::default();
            let decoded: Vec<Payload> = parts.iter().map(|part| codec::decode(part, &limits).unwrap()).collect();
            for part in &decoded {
                assert_eq!(Payload { arms: Vec::new(), ..part.clone() }, header);
                let bytes: usize = part.arms.iter().map(|arm| crate::wire::arm_len_parts(arm.id.len(), arm.a_inv.len(), dim, Some(arm.a_inv.len()), false)).sum();
                assert!(bytes <= budget || part.arms.len() == 1, "{bytes} > {budget}");
            }
            let derived = decoded.into_iter().map(|part| { let prepared = crate::Prepared::new(&part); (part, prepared) }).collect();
            let (joined, _) = crate::parts::join(derived, &limits).unwrap();
            assert_eq!(joined, payload, "budget {budget}");
        }
    }
}
