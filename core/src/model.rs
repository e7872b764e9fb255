//! One LinUCB model: its settings, the arm table and the trainer's offset
//! and sequence fences.
//!
//! The arm table is column-oriented: every per-arm quantity ranking reads
//! lives in one contiguous vector indexed by row, and the two things ranking
//! reads for an arm, θ and packed A⁻¹, sit side by side in one f32 row
//! (`scoring`), so a scan over arms is a walk through memory. Ranking is bound
//! by memory bandwidth, so single precision halves its time, and it is far
//! finer than any difference a ranking acts on. Ids map to rows through one
//! hash map.
//!
//! The exact f64 values that EXPORT, STATS and persistence use (θ, A⁻¹, b and
//! A when the writer sent it) are one boxed slice per arm (`exact`): an apply
//! prepared on another thread ([`Prepared`]) swaps the box in instead of
//! copying thousands of values under Redis' lock, the old box is freed after
//! the lock is released, and an arm without A stores none.
//! Beside each f32 row sit its θ codes and score bound ([`crate::bounds`]),
//! which let a top-k skip most rows; like the f32 rows they are derived
//! whenever a row is written, never stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use rustc_hash::FxHashMap;

use crate::bounds::{codes_per_arm, place_codes, BoundBlock, BoundWork, BLOCK};
use crate::error::{Error, Result};
use crate::kernel::Layout;
use crate::limits::Limits;
use crate::packed;
use crate::parallel;
use crate::payload::{ArmPayload, Payload, PayloadSettings};
use crate::prepare::{ranking_copy, Prepared};

/// A model's id → row map.
pub(crate) type Index = FxHashMap<Box<str>, u32>;

/// A model's id index and ranking table as they were when a LOAD began, for
/// its worker thread to look the payload's rows up, and to build the whole
/// table the apply will swap in, without Redis' lock
/// ([`crate::Prepared::place`]).
///
/// It holds both weakly. Reading upgrades one for the work only; the model
/// never writes an index or table that is shared (it copies it first), and
/// writing one that is only held weakly moves it to a new allocation. So at
/// the apply, under the lock, the model's index (table) still at the address
/// the view points to means it is the one the worker read, unchanged, and the
/// apply takes what was derived from it; anything else (arms added since,
/// another LOAD's rows, the model replaced) and it does the work itself.
/// Held weakly, the view never makes a writer copy a large index or table,
/// except while a worker is reading it.
#[derive(Debug, Clone, Default)]
pub struct ModelView {
    index: Weak<Index>,
    scoring: Weak<Vec<f32>>,
}

impl ModelView {
    /// Whether this views `index` as it is now.
    pub(crate) fn index_is(&self, index: &Arc<Index>) -> bool {
        std::ptr::eq(self.index.as_ptr(), Arc::as_ptr(index))
    }

    /// Whether this views `scoring` as it is now.
    pub(crate) fn scoring_is(&self, scoring: &Arc<Vec<f32>>) -> bool {
        std::ptr::eq(self.scoring.as_ptr(), Arc::as_ptr(scoring))
    }

    /// The index, while the model has not changed it.
    pub(crate) fn read_index(&self) -> Option<Arc<Index>> {
        self.index.upgrade()
    }

    /// The ranking table, while the model has not changed it.
    pub(crate) fn read_scoring(&self) -> Option<Arc<Vec<f32>>> {
        self.scoring.upgrade()
    }
}

impl PartialEq for ModelView {
    fn eq(&self, other: &Self) -> bool {
        Weak::ptr_eq(&self.index, &other.index) && Weak::ptr_eq(&self.scoring, &other.scoring)
    }
}

/// The row of an arm the model does not have yet (see [`Model::check`]).
pub(crate) const NEW_ROW: u32 = u32::MAX;

/// Arms per thread below which an apply stays on one thread.
const PARALLEL_ARMS: usize = 1024;

/// The settings a model is created with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSettings {
    /// Number of context features.
    pub dim: usize,
    /// Default exploration weight for RANK.
    pub alpha: f64,
    /// Ridge prior: an arm with no data has A = λI, b = 0.
    pub lambda: f64,
    /// Forgetting, per event of an arm: before each event its evidence is
    /// kept at this weight and pulled toward the prior
    /// (A ← γA + (1−γ)λI, b ← γb; see [`crate::fold::Learning`]). 1 keeps
    /// everything (no forgetting). Trainers apply it; the model stores it so
    /// every trainer learns the same way.
    pub decay: f64,
}

impl ModelSettings {
    /// # Errors
    /// [`Error::InvalidSetting`] or [`Error::TooLarge`] for out-of-range values.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::InvalidSetting("DIM must be at least 1".into()));
        }
        if self.dim > limits.max_dim {
            return Err(Error::TooLarge { what: "DIM", got: self.dim, limit: limits.max_dim });
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::InvalidSetting("ALPHA must be a finite number >= 0".into()));
        }
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(Error::InvalidSetting("LAMBDA must be a finite number > 0".into()));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(Error::InvalidSetting("DECAY must be a number in (0, 1]".into()));
        }
        Ok(())
    }
}

/// A read-only view of one arm.
#[derive(Debug, Clone, Copy)]
pub struct ArmView<'a> {
    pub id: &'a str,
    pub theta: &'a [f64],
    pub a_inv: &'a [f64],
    pub b: &'a [f64],
    pub a: Option<&'a [f64]>,
    pub n: u64,
    pub reward_sum: f64,
    pub updated_ms: i64,
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub(crate) settings: ModelSettings,
    /// d (θ) + d(d+1)/2 (A⁻¹): the first values of an arm's exact box.
    pub(crate) stride: usize,
    /// Layout of the rows of `scoring` (padded for the kernel).
    pub(crate) layout: Layout,
    pub(crate) ids: Vec<Box<str>>,
    /// Id → row. Shared (never written while shared: an insert copies it
    /// first) so that a LOAD's worker can look rows up without Redis' lock
    /// ([`IndexView`]).
    pub(crate) index: Arc<Index>,
    /// [θ | packed A⁻¹ | b | packed A (when sent)] per arm, exact.
    pub(crate) exact: Vec<Box<[f64]>>,
    /// The same rows in f32, padded, for ranking (see [`crate::kernel`]).
    /// Shared (never written while shared: a write copies it first) so that
    /// a LOAD's worker can build the table after the LOAD without Redis'
    /// lock, for the apply to swap in ([`ModelView`]).
    pub(crate) scoring: Arc<Vec<f32>>,
    /// θ of each f32 row as i8 codes, by blocks of eight arms
    /// ([`codes_per_arm`] × 8 per block, in feature pairs; see [`crate::bounds`]).
    pub(crate) codes: Vec<i8>,
    /// Each f32 row's score bound, eight rows per block.
    pub(crate) bounds: Vec<BoundBlock>,
    pub(crate) n: Vec<u64>,
    pub(crate) reward_sum: Vec<f64>,
    pub(crate) updated_ms: Vec<i64>,
    pub(crate) offsets: BTreeMap<i32, i64>,
    /// (partition, source partition) → highest seq folded: the trainer's
    /// sequence fences, written with the partition's offset (see
    /// [`Payload::fences`]).
    pub(crate) fences: BTreeMap<(i32, i32), u64>,
    pub(crate) loads: u64,
    pub(crate) last_load_ms: i64,
}

/// What one [`Model::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Arms whose stored values changed (new arms included).
    pub arms_changed: usize,
    /// Whether any partition offset or sequence fence moved.
    pub offsets_changed: bool,
    /// Set by callers that created the model for this payload.
    pub created: bool,
}

impl Applied {
    /// Whether the model is now different from before.
    #[must_use]
    pub fn changed(&self) -> bool {
        self.arms_changed > 0 || self.offsets_changed || self.created
    }
}

/// Model-wide figures for STATS.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStats {
    pub arms: usize,
    pub updates: u64,
    pub reward_sum: f64,
    pub loads: u64,
    pub last_load_ms: i64,
    pub memory_bytes: usize,
}

impl Model {
    /// An empty model. Settings must have been validated.
    #[must_use]
    pub fn new(settings: ModelSettings) -> Self {
        Self {
            settings,
            stride: settings.dim + packed::len(settings.dim),
            layout: Layout::new(settings.dim),
            ids: Vec::new(),
            index: Arc::default(),
            exact: Vec::new(),
            scoring: Arc::default(),
            codes: Vec::new(),
            bounds: Vec::new(),
            n: Vec::new(),
            reward_sum: Vec::new(),
            updated_ms: Vec::new(),
            offsets: BTreeMap::new(),
            fences: BTreeMap::new(),
            loads: 0,
            last_load_ms: 0,
        }
    }

    #[must_use]
    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    #[must_use]
    pub fn dim(&self) -> usize {
        self.settings.dim
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The trainer's next offset per partition.
    #[must_use]
    pub fn offsets(&self) -> &BTreeMap<i32, i64> {
        &self.offsets
    }

    /// The trainer's sequence fences: (partition, source partition) →
    /// highest seq folded.
    #[must_use]
    pub fn fences(&self) -> &BTreeMap<(i32, i32), u64> {
        &self.fences
    }

    /// Row of an arm id, if the model has it.
    #[must_use]
    pub fn row_of(&self, id: &[u8]) -> Option<usize> {
        let id = std::str::from_utf8(id).ok()?;
        self.index.get(id).map(|&row| row as usize)
    }

    /// A view of the id index and ranking table for a worker thread (see
    /// [`ModelView`]).
    #[must_use]
    pub fn view(&self) -> ModelView {
        ModelView { index: Arc::downgrade(&self.index), scoring: Arc::downgrade(&self.scoring) }
    }

    /// The id stored at a row ("" past the end).
    #[must_use]
    pub fn id_at(&self, row: usize) -> &str {
        self.ids.get(row).map_or("", |id| id)
    }

    /// A view of the arm at `row`.
    #[must_use]
    pub fn arm(&self, row: usize) -> Option<ArmView<'_>> {
        let (theta, a_inv, b, a) = exact_parts(self.dim(), self.exact.get(row)?)?;
        Some(ArmView {
            id: self.ids.get(row)?,
            theta,
            a_inv,
            b,
            a,
            n: *self.n.get(row)?,
            reward_sum: *self.reward_sum.get(row)?,
            updated_ms: *self.updated_ms.get(row)?,
        })
    }

    /// The model's version: how many LOADs changed it (STATS `loads`). It
    /// seeds the randomised policies with the event id, so that a decision
    /// can be replayed against the model it was made with.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.loads
    }

    /// Model-wide figures.
    #[must_use]
    pub fn stats(&self) -> ModelStats {
        ModelStats {
            arms: self.len(),
            updates: self.n.iter().fold(0u64, |sum, &n| sum.saturating_add(n)),
            // + 0.0: the sum over no arms is -0, which users should read as 0.
            reward_sum: self.reward_sum.iter().sum::<f64>() + 0.0,
            loads: self.loads,
            last_load_ms: self.last_load_ms,
            memory_bytes: self.memory_bytes(),
        }
    }

    /// Heap footprint, for MEMORY USAGE and STATS: every allocation at the
    /// size a size-classed allocator hands out for it (see [`allocated`]).
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        fn vec<T>(values: &Vec<T>) -> usize {
            allocated(values.capacity() * std::mem::size_of::<T>())
        }
        let exact: usize = self.exact.iter().map(|values| allocated(values.len() * 8)).sum();
        // Each id twice: in the row list and as the index's key.
        let ids: usize = self.ids.iter().map(|id| 2 * allocated(id.len())).sum();
        // The index's table: buckets (a power of two, at most 7/8 full) of
        // (key, row) plus one control byte each and a group's worth more.
        let buckets = if self.index.capacity() == 0 { 0 } else { (self.index.capacity() * 8 / 7).next_power_of_two() };
        let index = allocated(buckets * (std::mem::size_of::<(Box<str>, u32)>() + 1) + 16);
        std::mem::size_of::<Self>()
            + exact
            + ids
            + index
            + vec(&self.exact)
            + vec(&self.ids)
            + vec(&self.scoring)
            + vec(&self.codes)
            + vec(&self.bounds)
            + vec(&self.n)
            + vec(&self.reward_sum)
            + vec(&self.updated_ms)
            + (self.offsets.len() + self.fences.len()) * 48
    }

    /// Applies a validated payload atomically: either every arm and offset is
    /// written, or (on error) nothing is. Reports what changed, so callers
    /// replicate only real changes.
    ///
    /// # Errors
    /// [`Error::DimMismatch`] for another dim, [`Error::Stale`] when the model
    /// holds a later offset for a listed partition, [`Error::TooLarge`] when
    /// the new arms would pass `limits.max_arms` (or the new fences
    /// `limits.max_fences`).
    pub fn apply(&mut self, payload: &Payload, now_ms: i64, limits: &Limits) -> Result<Applied> {
        let rows = self.check(payload, None, limits)?;
        let mut prepared = Prepared::new(payload);
        Ok(self.write(payload, &mut prepared, rows, now_ms))
    }

    /// As [`Model::apply`], with the payload's derived values computed
    /// beforehand (possibly on another thread). The checks run here, against
    /// the model as it is now. The exact values of changed arms are swapped
    /// with the model's: afterwards `prepared` holds the replaced ones, to be
    /// freed wherever that costs nothing.
    ///
    /// # Errors
    /// As [`Model::apply`]; [`Error::InvalidPayload`] when `prepared` was
    /// derived from another payload.
    pub fn apply_prepared(&mut self, payload: &Payload, prepared: &mut Prepared, now_ms: i64, limits: &Limits) -> Result<Applied> {
        if !prepared.fits(payload) {
            return Err(Error::InvalidPayload("prepared values belong to another payload".into()));
        }
        let rows = self.check(payload, Some(prepared), limits)?;
        Ok(self.write(payload, prepared, rows, now_ms))
    }

    /// Everything [`Model::apply`] refuses, checked before anything is
    /// written; returns the row of every arm of the payload ([`NEW_ROW`]
    /// for an arm the model lacks), looked up once for the whole apply.
    fn check(&self, payload: &Payload, placed: Option<&Prepared>, limits: &Limits) -> Result<Vec<u32>> {
        let dim = self.dim();
        if payload.dim != dim {
            return Err(Error::PayloadDim { payload: payload.dim, model: dim });
        }
        if let Some(given) = payload.settings {
            let have = PayloadSettings::of(&self.settings);
            if !given.same_as(&have) {
                return Err(Error::SettingsMismatch { payload: given, model: have });
            }
        }
        for &(partition, base) in &payload.base_offsets {
            let stored = self.offsets.get(&partition).copied();
            let expected = (base >= 0).then_some(base);
            if stored != expected {
                return Err(Error::Moved { partition, stored, expected });
            }
        }
        for &(partition, given) in &payload.offsets {
            if let Some(&stored) = self.offsets.get(&partition) {
                if stored > given {
                    return Err(Error::Stale { partition, stored, given });
                }
            }
        }
        let rows = self.rows_of(payload, placed);
        let new_arms = rows.iter().filter(|&&row| row == NEW_ROW).count();
        if self.len() + new_arms > limits.max_arms {
            return Err(Error::TooLarge {
                what: "number of arms in the model",
                got: self.len() + new_arms,
                limit: limits.max_arms,
            });
        }
        let new_fences = payload.fences.iter().filter(|&&(p, s, _)| !self.fences.contains_key(&(p, s))).count();
        if self.fences.len() + new_fences > limits.max_fences {
            return Err(Error::TooLarge {
                what: "number of fences in the model",
                got: self.fences.len() + new_fences,
                limit: limits.max_fences,
            });
        }
        Ok(rows)
    }

    /// The row of each arm ([`NEW_ROW`] when the model lacks it): the rows
    /// `placed` found off the lock when the index has not changed since,
    /// else looked up now.
    fn rows_of(&self, payload: &Payload, placed: Option<&Prepared>) -> Vec<u32> {
        match placed {
            Some(prepared) if prepared.placed_in.index_is(&self.index) && prepared.placed_for(payload) => prepared.placed.clone(),
            _ => look_up(&self.index, &payload.arms),
        }
    }

    /// Writes a checked payload (`rows` from [`Model::check`]): nothing here
    /// can fail.
    fn write(&mut self, payload: &Payload, prepared: &mut Prepared, mut rows: Vec<u32>, now_ms: i64) -> Applied {
        let new_arms = rows.iter().filter(|&&row| row == NEW_ROW).count();
        let swapped = self.swap_table(payload, prepared, new_arms);
        self.reserve(new_arms);
        for (row, arm) in rows.iter_mut().zip(&payload.arms).filter(|(row, _)| **row == NEW_ROW) {
            *row = u32::try_from(self.push_empty_row(&arm.id)).unwrap_or(NEW_ROW);
        }
        let mut applied = Applied::default();
        // (arm, row) of every arm whose values changed, in payload order.
        let mut changed = Vec::with_capacity(rows.len());
        let Prepared { exact, codes, bounds, placed, .. } = prepared;
        let derived = exact.iter_mut().zip(codes.chunks_exact(self.dim().max(1))).zip(bounds.iter());
        for (index, ((arm, &row), ((exact, codes), bound))) in payload.arms.iter().zip(&rows).zip(derived).enumerate() {
            let row = row as usize;
            if self.update(row, arm, exact, now_ms) {
                self.set_bound(row, codes, bound);
                changed.push((index, row));
            }
        }
        applied.arms_changed = changed.len();
        if !swapped {
            self.copy_rows(&changed, &prepared.rows);
        }
        *placed = rows;
        for &(partition, given) in &payload.offsets {
            applied.offsets_changed |= self.offsets.insert(partition, given) != Some(given);
        }
        // Validation put every fence's partition among the offsets just
        // written (or refused with them as STALE in `check`).
        for &(partition, source, seq) in &payload.fences {
            applied.offsets_changed |= self.fences.insert((partition, source), seq) != Some(seq);
        }
        if applied.changed() {
            self.loads += 1;
            self.last_load_ms = now_ms;
        }
        // An AOF rewrite states the version the model had, whatever number of
        // chunks it took to write it out.
        if let Some(version) = payload.version {
            self.loads = version;
        }
        applied
    }

    /// Stores an arm's exact values (a swap of boxes) and counters at `row`
    /// unless they are there already; whether it did.
    fn update(&mut self, row: usize, arm: &ArmPayload, exact: &mut Box<[f64]>, now_ms: i64) -> bool {
        if self.row_equals(row, arm, exact) {
            return false;
        }
        if let Some(slot) = self.exact.get_mut(row) {
            std::mem::swap(slot, exact);
        }
        set(&mut self.n, row, arm.n);
        set(&mut self.reward_sum, row, arm.reward_sum);
        set(&mut self.updated_ms, row, arm.updated_ms.unwrap_or(now_ms));
        true
    }

    /// Swaps in the ranking table `prepared` built off the lock (see
    /// [`Prepared::build_table`]), or for an empty model its rows as they
    /// are, when it was built from this very table, with the
    /// rows this apply writes to: it then holds every arm of the payload at
    /// its row (an unchanged arm's row is rewritten with the same bits), new
    /// arms after the model's. `prepared` keeps the replaced table, to be
    /// freed off the lock. Whether it swapped.
    fn swap_table(&mut self, payload: &Payload, prepared: &mut Prepared, new_arms: usize) -> bool {
        let stride = self.layout.stride;
        if self.is_empty() && new_arms == payload.arms.len() && prepared.rows.len() == new_arms * stride {
            // A model's first arms take rows 0, 1, … in payload order: the
            // prepared rows are the table as they are.
            self.scoring = Arc::new(std::mem::take(&mut prepared.rows));
            return true;
        }
        let fits = |table: &Arc<Vec<f32>>| table.len() == (self.len() + new_arms) * stride;
        let built_here = prepared.placed_in.index_is(&self.index)
            && prepared.placed_in.scoring_is(&self.scoring)
            && prepared.placed_for(payload);
        match prepared.table.as_mut() {
            Some(table) if built_here && fits(table) => {
                std::mem::swap(&mut self.scoring, table);
                true
            }
            _ => false,
        }
    }

    /// Copies the prepared f32 row of each changed (arm, row) into the
    /// ranking table. At d = 32 a row is 2.2 KB, so a flush of 10,000 arms
    /// copies 22 MB while every other client waits; several threads copy
    /// disjoint row ranges at once (the apply holds Redis' lock, so its
    /// main thread is idle and its core free).
    fn copy_rows(&mut self, changed: &[(usize, usize)], prepared_rows: &[f32]) {
        let stride = self.layout.stride;
        let copy = |first_row: usize, table: &mut [f32]| {
            let rows = first_row..first_row + table.len() / stride.max(1);
            for &(arm, row) in changed.iter().filter(|(_, row)| rows.contains(row)) {
                let source = prepared_rows.get(arm * stride..(arm + 1) * stride);
                let target = table.get_mut((row - first_row) * stride..(row - first_row + 1) * stride);
                if let (Some(source), Some(target)) = (source, target) {
                    target.copy_from_slice(source);
                }
            }
        };
        let threads = parallel::threads_for(changed.len(), PARALLEL_ARMS);
        let rows_per_thread = self.len().div_ceil(threads).max(1);
        let parts = Arc::make_mut(&mut self.scoring).chunks_mut(rows_per_thread * stride.max(1)).enumerate().collect();
        parallel::run_parts(parts, |(part, table)| copy(part * rows_per_thread, table));
    }

    /// True when the stored row already holds exactly this arm (bit for bit);
    /// `exact` is the arm's exact box as [`Prepared`] built it.
    fn row_equals(&self, row: usize, arm: &ArmPayload, exact: &[f64]) -> bool {
        let (Some(stored), Some(&n), Some(reward_sum), Some(&updated_ms)) =
            (self.exact.get(row), self.n.get(row), self.reward_sum.get(row), self.updated_ms.get(row))
        else {
            return false;
        };
        // Cheap fields first: a changed arm almost always differs there.
        n == arm.n
            && reward_sum.to_bits() == arm.reward_sum.to_bits()
            && arm.updated_ms.is_none_or(|ms| ms == updated_ms)
            && stored.len() == exact.len()
            && stored.iter().zip(exact.iter()).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Room for `additional` arms in every column at once, so a large load
    /// grows each vector once. Growth is by at least a quarter (not the
    /// doubling of `Vec::reserve`), so chunked loads still grow
    /// geometrically while at most a fifth of a column is spare.
    fn reserve(&mut self, additional: usize) {
        fn grow<T>(values: &mut Vec<T>, additional: usize) {
            if values.capacity() - values.len() < additional {
                values.reserve_exact(additional.max(values.len() / 4));
            }
        }
        let blocks = (additional.div_ceil(BLOCK) + 1) * BLOCK;
        let dim = self.dim();
        grow(&mut self.ids, additional);
        if additional > 0 {
            Arc::make_mut(&mut self.index).reserve(additional);
        }
        grow(&mut self.exact, additional);
        // A table swapped in by this apply already holds the new rows.
        let rows = (self.len() + additional) * self.layout.stride;
        if let Some(more) = rows.checked_sub(self.scoring.len()).filter(|&more| more > 0) {
            grow(Arc::make_mut(&mut self.scoring), more);
        }
        grow(&mut self.codes, blocks * codes_per_arm(dim));
        grow(&mut self.bounds, blocks / BLOCK);
        grow(&mut self.n, additional);
        grow(&mut self.reward_sum, additional);
        grow(&mut self.updated_ms, additional);
    }

    fn push_empty_row(&mut self, id: &str) -> usize {
        let row = self.ids.len();
        let dim = self.dim();
        self.ids.push(id.into());
        Arc::make_mut(&mut self.index).insert(id.into(), u32::try_from(row).unwrap_or(u32::MAX));
        self.exact.push(Box::default());
        let rows = (row + 1) * self.layout.stride;
        if self.scoring.len() < rows {
            Arc::make_mut(&mut self.scoring).resize(rows, 0.0);
        }
        if row.is_multiple_of(BLOCK) {
            self.bounds.push(BoundBlock::NEVER);
            self.codes.resize(self.codes.len() + BLOCK * codes_per_arm(dim), 0);
        }
        self.n.push(0);
        self.reward_sum.push(0.0);
        // A fresh row never equals an incoming arm, so it is always written.
        self.updated_ms.push(i64::MIN);
        row
    }

    /// The arms at the given rows (all when `rows` is None) and every stored
    /// offset and fence, as a payload that [`Model::apply`] restores exactly.
    #[must_use]
    pub fn export(&self, rows: Option<&[usize]>) -> Payload {
        let to_payload = |view: ArmView<'_>| ArmPayload {
            id: view.id.to_owned(),
            a_inv: view.a_inv.to_vec(),
            b: view.b.to_vec(),
            a: view.a.map(<[f64]>::to_vec),
            n: view.n,
            reward_sum: view.reward_sum,
            updated_ms: Some(view.updated_ms),
        };
        let arms = match rows {
            Some(rows) => rows.iter().filter_map(|&row| self.arm(row)).map(to_payload).collect(),
            None => (0..self.len()).filter_map(|row| self.arm(row)).map(to_payload).collect(),
        };
        Payload {
            dim: self.dim(),
            arms,
            offsets: self.offsets.iter().map(|(&p, &o)| (p, o)).collect(),
            settings: Some(PayloadSettings::of(&self.settings)),
            base_offsets: Vec::new(),
            version: None,
            fences: self.fences.iter().map(|(&(partition, source), &seq)| (partition, source, seq)).collect(),
        }
    }

    /// Fills in, for every arm of an applied payload that came without an
    /// update time, the time this model stored for it (the apply time when
    /// the arm changed, its earlier time when it did not). The payload then
    /// states exactly what the model holds, so replicas and the AOF can be
    /// sent it instead of the command as received. Returns whether anything
    /// was filled in.
    pub fn stamp(&self, payload: &mut Payload) -> bool {
        let rows = look_up(&self.index, &payload.arms);
        self.stamp_rows(payload, &rows)
    }

    /// [`Model::stamp`] for the payload `prepared` was just applied with,
    /// from the rows that apply found (no second lookup of every id).
    pub fn stamp_prepared(&self, payload: &mut Payload, prepared: &Prepared) -> bool {
        if prepared.placed.len() != payload.arms.len() {
            return self.stamp(payload);
        }
        self.stamp_rows(payload, &prepared.placed)
    }

    fn stamp_rows(&self, payload: &mut Payload, rows: &[u32]) -> bool {
        let mut filled = false;
        for (arm, &row) in payload.arms.iter_mut().zip(rows).filter(|(arm, _)| arm.updated_ms.is_none()) {
            let stored = self.ids.get(row as usize).filter(|id| ***id == *arm.id).and_then(|_| self.updated_ms.get(row as usize));
            if let Some(&ms) = stored {
                arm.updated_ms = Some(ms);
                filled = true;
            }
        }
        filled
    }
}

/// The row of each arm in `index` ([`NEW_ROW`] when absent). A flush of
/// thousands of arms is thousands of cache misses into the index; they
/// overlap on several threads (the index is only read).
pub(crate) fn look_up(index: &Index, arms: &[ArmPayload]) -> Vec<u32> {
    let lookup = |arms: &[ArmPayload], rows: &mut [u32]| {
        for (slot, arm) in rows.iter_mut().zip(arms) {
            *slot = index.get(arm.id.as_str()).copied().unwrap_or(NEW_ROW);
        }
    };
    let mut rows = vec![NEW_ROW; arms.len()];
    let chunk = arms.len().div_ceil(parallel::threads_for(arms.len(), PARALLEL_ARMS)).max(1);
    parallel::run_parts(arms.chunks(chunk).zip(rows.chunks_mut(chunk)).collect(), |(arms, rows)| lookup(arms, rows));
    rows
}

/// The bytes a size-classed allocator (jemalloc, Redis' default) reserves for
/// a request of `bytes`: 8, multiples of 16 up to 128, then four classes per
/// doubling, so a request just above a class boundary costs up to a quarter
/// more.
#[must_use]
pub fn allocated(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    if bytes <= 16 {
        return bytes.next_multiple_of(8);
    }
    // Quantum 16 up to 128, then four classes per doubling.
    let spacing = (bytes - 1).ilog2().saturating_sub(2).max(4);
    bytes.next_multiple_of(1 << spacing)
}

/// An arm's exact box split into θ, A⁻¹, b and A (when it has one).
#[allow(clippy::type_complexity)]
fn exact_parts(dim: usize, values: &[f64]) -> Option<(&[f64], &[f64], &[f64], Option<&[f64]>)> {
    let plen = packed::len(dim);
    let (theta, rest) = values.split_at_checked(dim)?;
    let (a_inv, rest) = rest.split_at_checked(plen)?;
    let (b, rest) = rest.split_at_checked(dim)?;
    let a = match rest.len() {
        0 => None,
        len if len == plen => Some(rest),
        _ => return None,
    };
    Some((theta, a_inv, b, a))
}


impl Model {
    /// Stores the θ codes (`dim` values) and bound of the arm at `row`.
    fn set_bound(&mut self, row: usize, codes: &[i8], bound: &crate::bounds::ArmBound) {
        let (block, lane) = (row / BLOCK, row % BLOCK);
        let per_block = BLOCK * codes_per_arm(self.dim());
        if let Some(slots) = self.codes.get_mut(block * per_block..(block + 1) * per_block) {
            place_codes(lane, codes, slots);
        }
        if let Some(block) = self.bounds.get_mut(block) {
            block.set(lane, bound);
        }
    }

    /// Rebuilds the ranking copy (f32 rows, θ codes, bounds) from the exact
    /// values (after a snapshot load).
    pub(crate) fn rebuild_ranking(&mut self) {
        let dim = self.dim();
        let layout = self.layout;
        let arms = self.exact.len();
        self.codes = vec![0; arms.div_ceil(BLOCK) * BLOCK * codes_per_arm(dim)];
        self.bounds = vec![BoundBlock::NEVER; arms.div_ceil(BLOCK)];
        let mut work = BoundWork::default();
        let mut codes = vec![0; dim];
        let mut scoring = vec![0.0f32; arms * layout.stride];
        let exact = std::mem::take(&mut self.exact);
        for (index, (values, row)) in exact.iter().zip(scoring.chunks_exact_mut(layout.stride)).enumerate() {
            let Some((theta, a_inv, _, _)) = exact_parts(dim, values) else { continue };
            let bound = ranking_copy(&layout, theta, a_inv, row, &mut codes, &mut work);
            self.set_bound(index, &codes, &bound);
        }
        self.scoring = Arc::new(scoring);
        self.exact = exact;
    }
}

fn set<T>(values: &mut [T], row: usize, value: T) {
    if let Some(slot) = values.get_mut(row) {
        *slot = value;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::needless_range_loop)]
mod tests {
    use super::*;

    pub(crate) fn settings(dim: usize) -> ModelSettings {
        ModelSettings { dim, alpha: 1.0, lambda: 1.0, decay: 1.0 }
    }

    fn arm(id: &str, b: [f64; 2], n: u64) -> ArmPayload {
        ArmPayload {
            id: id.into(),
            a_inv: vec![0.5, 0.0, 0.25],
            b: b.to_vec(),
            a: Some(vec![2.0, 0.0, 4.0]),
            n,
            reward_sum: n as f64 / 2.0,
            updated_ms: None,
        }
    }

    #[test]
    fn allocation_classes() {
        // jemalloc's classes: 8, 16, 32, 48, …, 128, then four per doubling (160, …, 2048, 2560, 3072, 3584, 4096, 5120, …).
        let want = [(1, 8), (9, 16), (17, 32), (33, 48), (129, 160), (2048, 2048), (2049, 2560), (2160, 2560), (8960, 10240), (4096, 4096), (4097, 5120)];
        for (bytes, class) in want {
            assert_eq!(allocated(bytes), class, "{bytes}");
        }
    }

    #[test]
    fn apply_computes_theta_and_keeps_everything() {
        let mut model = Model::new(settings(2));
        let payload = Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4)], offsets: vec![(0, 5)], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        assert_eq!(model.apply(&payload, 1000, &Limits::default()).unwrap().arms_changed, 1);
        let view = model.arm(0).unwrap();
        assert_eq!(view.theta, &[0.5, 0.5]);
        assert_eq!(view.a, Some(&[2.0, 0.0, 4.0][..]));
        assert_eq!(view.updated_ms, 1000);
        assert_eq!(model.offsets()[&0], 5);
        let stats = model.stats();
        assert_eq!((stats.arms, stats.updates, stats.reward_sum, stats.loads), (1, 4, 2.0, 1));
    }

    #[test]
    fn an_identical_load_changes_nothing() {
        let mut model = Model::new(settings(2));
        let payload = Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4)], offsets: vec![(0, 5)], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        assert!(model.apply(&payload, 1000, &Limits::default()).unwrap().changed());
        assert!(!model.apply(&payload, 2000, &Limits::default()).unwrap().changed());
        assert_eq!(model.arm(0).unwrap().updated_ms, 1000);
        assert_eq!(model.stats().loads, 1);
    }

    #[test]
    fn stale_offsets_reject_the_whole_payload() {
        let mut model = Model::new(settings(2));
        let first = Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4)], offsets: vec![(0, 5), (1, 7)], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        model.apply(&first, 1000, &Limits::default()).unwrap();
        let before = model.clone();
        let stale = Payload { dim: 2, arms: vec![arm("b", [1.0, 0.0], 1)], offsets: vec![(0, 6), (1, 6)], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        let error = model.apply(&stale, 2000, &Limits::default()).unwrap_err();
        assert_eq!(error, Error::Stale { partition: 1, stored: 7, given: 6 });
        assert_eq!(model, before);
    }

    #[test]
    fn arm_limit_is_checked_before_writing() {
        let mut model = Model::new(settings(2));
        let limits = Limits { max_arms: 1, ..Limits::default() };
        let payload = Payload { dim: 2, arms: vec![arm("a", [0.0, 0.0], 0), arm("b", [0.0, 0.0], 0)], offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        assert!(matches!(model.apply(&payload, 0, &limits), Err(Error::TooLarge { .. })));
        assert!(model.is_empty());
    }

    #[test]
    fn export_then_apply_restores_exactly() {
        let mut model = Model::new(settings(2));
        let payload = Payload {
            dim: 2,
            arms: vec![arm("a", [1.0, 2.0], 4), arm("b", [0.1, 0.7], 9)],
            offsets: vec![(2, 11)],
            settings: None,
            base_offsets: vec![],
            version: None,
            fences: vec![],
        };
        model.apply(&payload, 1234, &Limits::default()).unwrap();
        let mut copy = Model::new(settings(2));
        copy.apply(&model.export(None), 9999, &Limits::default()).unwrap();
        assert_eq!(copy.export(None), model.export(None));
        assert_eq!(model.export(Some(&[1])).arms[0].id, "b");
    }

    #[test]
    fn export_carries_the_settings_and_other_settings_are_refused() {
        let mut model = Model::new(ModelSettings { dim: 2, alpha: 0.3, lambda: 2.0, decay: 0.99 });
        model.apply(&Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4)], offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] }, 5, &Limits::default()).unwrap();
        let export = model.export(None);
        assert_eq!(export.settings, Some(PayloadSettings { alpha: 0.3, lambda: 2.0, decay: 0.99 }));
        let before = model.clone();
        for (alpha, lambda, decay) in [(1.0, 2.0, 0.99), (0.3, 1.0, 0.99), (0.3, 2.0, 1.0)] {
            let other = Payload { settings: Some(PayloadSettings { alpha, lambda, decay }), ..export.clone() };
            let error = model.apply(&other, 9, &Limits::default()).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("payload has ALPHA {alpha} LAMBDA {lambda} DECAY {decay}, the model has ALPHA 0.3 LAMBDA 2 DECAY 0.99")
            );
            assert_eq!(model, before, "nothing applied");
        }
        model.apply(&export, 9, &Limits::default()).unwrap();
        // −0 and 0 are the same setting (a CREATE replicated as text cannot
        // tell them apart).
        let mut zero = Model::new(ModelSettings { alpha: 0.0, ..*model.settings() });
        let minus_zero = PayloadSettings { alpha: -0.0, ..PayloadSettings::of(model.settings()) };
        zero.apply(&Payload { dim: 2, settings: Some(minus_zero), ..Payload::default() }, 1, &Limits::default()).unwrap();
        let error = model.apply(&Payload { dim: 3, ..Payload::default() }, 9, &Limits::default()).unwrap_err();
        assert_eq!(error.to_string(), "payload is for dim 3, the model has dim 2");
    }

    #[test]
    fn base_offsets_are_a_compare_and_set() {
        let mut model = Model::new(settings(2));
        let first = Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4)], offsets: vec![(0, 5)], ..Payload::default() };
        model.apply(&first, 1, &Limits::default()).unwrap();
        let before = model.clone();
        // Built on offset 5 of partition 0 and on nothing for partition 1: accepted.
        let next = Payload {
            dim: 2,
            arms: vec![arm("b", [0.0, 1.0], 1)],
            offsets: vec![(0, 9), (1, 3)],
            base_offsets: vec![(0, 5), (1, -1)],
            ..Payload::default()
        };
        let mut copy = model.clone();
        copy.apply(&next, 2, &Limits::default()).unwrap();
        // Built on 7 while the model is at 5 (it went back): refused whole.
        let ahead = Payload { base_offsets: vec![(0, 7)], ..next.clone() };
        let error = model.apply(&ahead, 2, &Limits::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "partition 0 is at offset 5 in the model, the writer built on offset 7 (the model went back or another writer moved it)"
        );
        // Built on "nothing" for a partition the model has: refused too.
        let error = model.apply(&Payload { base_offsets: vec![(0, -1)], ..next }, 2, &Limits::default()).unwrap_err();
        assert!(matches!(error, Error::Moved { partition: 0, stored: Some(5), expected: None }), "{error:?}");
        assert_eq!(model, before);
    }

    #[test]
    fn fences_are_written_with_their_offsets_and_exported() {
        let mut model = Model::new(settings(2));
        let limits = Limits::default();
        let first = Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4)], offsets: vec![(0, 5), (1, 7)], fences: vec![(0, 2, 40), (1, 0, 9)], ..Payload::default() };
        assert!(model.apply(&first, 1, &limits).unwrap().offsets_changed);
        assert_eq!(model.fences(), &BTreeMap::from([((0, 2), 40), ((1, 0), 9)]));
        // Listed pairs take the given seq, the others keep theirs.
        let second = Payload { dim: 2, offsets: vec![(0, 8)], fences: vec![(0, 2, 41), (0, 3, 1)], ..Payload::default() };
        model.apply(&second, 2, &limits).unwrap();
        assert_eq!(model.fences(), &BTreeMap::from([((0, 2), 41), ((0, 3), 1), ((1, 0), 9)]));
        // A fence alone is a change (the model's version moves), an identical one is not.
        let loads = model.stats().loads;
        let moved = Payload { dim: 2, offsets: vec![(0, 8)], fences: vec![(0, 3, 2)], ..Payload::default() };
        assert!(model.apply(&moved, 3, &limits).unwrap().changed());
        assert!(!model.apply(&moved, 4, &limits).unwrap().changed());
        assert_eq!(model.stats().loads, loads + 1);
        // STALE on the offset: the fences are not written either.
        let before = model.clone();
        let stale = Payload { dim: 2, offsets: vec![(0, 9), (1, 6)], fences: vec![(0, 2, 99), (1, 0, 99)], ..Payload::default() };
        assert_eq!(model.apply(&stale, 5, &limits).unwrap_err(), Error::Stale { partition: 1, stored: 7, given: 6 });
        let moved_under = Payload { base_offsets: vec![(0, 5)], ..stale.clone() };
        assert!(matches!(model.apply(&moved_under, 5, &limits), Err(Error::Moved { partition: 0, .. })));
        assert_eq!(model, before);
        // Bounded across payloads: one more pair than the model may hold.
        let bounded = Limits { max_fences: 4, ..limits };
        let more = Payload { dim: 2, offsets: vec![(1, 8)], fences: vec![(1, 0, 10), (1, 1, 1), (1, 2, 1)], ..Payload::default() };
        let error = model.apply(&more, 6, &bounded).unwrap_err();
        assert_eq!(error, Error::TooLarge { what: "number of fences in the model", got: 5, limit: 4 });
        assert_eq!(model, before);
        // Every fence is in every export (an arm's too, which the trainer
        // restores from), and an export restores them exactly.
        let export = model.export(Some(&[]));
        assert_eq!(export.fences, vec![(0, 2, 41), (0, 3, 2), (1, 0, 9)]);
        assert_eq!(model.export(Some(&[0])).fences, export.fences);
        export.validate(&limits).unwrap();
        let mut copy = Model::new(settings(2));
        copy.apply(&model.export(None), 7, &limits).unwrap();
        assert_eq!(copy.fences(), model.fences());
    }

    /// A payload of `count` arms "p{first}"… at dim 3 with values that
    /// depend on `salt`.
    fn many_arms(first: usize, count: usize, salt: f64) -> Vec<ArmPayload> {
        (first..first + count)
            .map(|k| {
                let x = k as f64 * 0.001 + salt;
                ArmPayload {
                    id: format!("p{k}"),
                    a_inv: vec![1.0 / (2.0 + x), 0.01, 0.0, 0.5, 0.02, 1.0 / (1.0 + x)],
                    b: vec![x, 1.0 - x, salt],
                    a: Some(vec![2.0 + x, 0.0, 0.0, 2.0, 0.0, 1.0 + x]),
                    n: k as u64 + 1,
                    reward_sum: x,
                    updated_ms: None,
                }
            })
            .collect()
    }

    /// Applies large enough to split across threads (row lookups, row
    /// copies) give the model that arm-by-arm applies (one thread) give:
    /// new arms, changed arms scattered over the table, unchanged arms.
    #[test]
    fn a_large_apply_equals_arm_by_arm_applies() {
        let limits = Limits::default();
        let settings = ModelSettings { dim: 3, alpha: 0.7, lambda: 1.0, decay: 1.0 };
        let first = Payload { dim: 3, arms: many_arms(0, 6000, 0.25), offsets: vec![(0, 6000)], ..Payload::default() };
        // Every third arm changes, every seventh is new, the rest are resent as they are.
        let mut second_arms: Vec<ArmPayload> = many_arms(0, 6000, 0.25).into_iter().step_by(2).collect();
        let changed = many_arms(0, 6000, 0.5);
        for (slot, arm) in second_arms.iter_mut().zip(changed.into_iter().step_by(2)).step_by(3) {
            *slot = arm;
        }
        second_arms.extend(many_arms(6000, 3000, 0.75).into_iter().step_by(7));
        second_arms.reverse();
        let second = Payload { dim: 3, arms: second_arms, offsets: vec![(0, 9000)], ..Payload::default() };

        let mut whole = Model::new(settings);
        whole.apply(&first, 10, &limits).unwrap();
        let applied = whole.apply(&second, 20, &limits).unwrap();

        let mut by_arm = Model::new(settings);
        let mut changed = 0;
        for (payload, now) in [(&first, 10), (&second, 20)] {
            for arm in &payload.arms {
                let one = Payload { dim: 3, arms: vec![arm.clone()], ..Payload::default() };
                changed += usize::from(by_arm.apply(&one, now, &limits).unwrap().arms_changed > 0);
            }
        }
        by_arm.apply(&Payload { dim: 3, offsets: vec![(0, 9000)], ..Payload::default() }, 20, &limits).unwrap();
        // 1000 of the 3000 resent arms changed, and 429 arms are new.
        assert_eq!(applied.arms_changed, 1000 + 429);
        assert_eq!(changed, 6000 + 1000 + 429);
        assert_eq!(whole.scoring, by_arm.scoring);
        assert_eq!(whole.exact, by_arm.exact);
        assert_eq!(whole.codes, by_arm.codes);
        assert_eq!(whole.bounds, by_arm.bounds);
        assert_eq!((&whole.ids, &whole.n, &whole.updated_ms), (&by_arm.ids, &by_arm.n, &by_arm.updated_ms));
        // Stamping from the apply's rows states what a lookup states.
        let mut stamped = second.clone();
        let mut looked_up = second.clone();
        let mut prepared = Prepared::new(&second);
        let mut copy = Model::new(settings);
        copy.apply(&first, 10, &limits).unwrap();
        copy.apply_prepared(&second, &mut prepared, 20, &limits).unwrap();
        assert!(copy.stamp_prepared(&mut stamped, &prepared));
        assert!(copy.stamp(&mut looked_up));
        assert_eq!(stamped, looked_up);
        assert!(stamped.arms.iter().all(|arm| arm.updated_ms.is_some()));
    }

    /// Rows looked up off the lock (`Prepared::place`) are taken only while
    /// the index is the one they were looked up in: an apply after another
    /// one added arms, or on another model, looks them up again. Every way
    /// gives the model a plain apply gives.
    #[test]
    fn rows_placed_off_the_lock_are_used_only_while_the_index_is_unchanged() {
        let limits = Limits::default();
        let settings = ModelSettings { dim: 3, alpha: 0.7, lambda: 1.0, decay: 1.0 };
        let base = Payload { dim: 3, arms: many_arms(0, 300, 0.25), ..Payload::default() };
        let update = Payload { dim: 3, arms: many_arms(100, 300, 0.5), ..Payload::default() };
        let other = Payload { dim: 3, arms: many_arms(1000, 5, 0.5), ..Payload::default() };
        let mut plain = Model::new(settings);
        plain.apply(&base, 1, &limits).unwrap();
        plain.apply(&update, 2, &limits).unwrap();

        // Unchanged: the placed rows are current (200 found, 100 new).
        let mut model = Model::new(settings);
        model.apply(&base, 1, &limits).unwrap();
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &model.view());
        assert!(prepared.placed_in.index_is(&model.index));
        assert_eq!(prepared.placed.iter().filter(|&&row| row == NEW_ROW).count(), 100);
        model.apply_prepared(&update, &mut prepared, 2, &limits).unwrap();
        assert_eq!(model, plain);

        // The apply does take the placed rows (two of them swapped, two arms
        // trade places)…
        let mut model = Model::new(settings);
        model.apply(&base, 1, &limits).unwrap();
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &model.view());
        prepared.placed.swap(0, 1);
        model.apply_prepared(&update, &mut prepared, 2, &limits).unwrap();
        assert_ne!(model, plain);
        // …but only for the payload they were placed for: a copy of it (the
        // same shape, its arms elsewhere in memory) is looked up again.
        let mut model = Model::new(settings);
        model.apply(&base, 1, &limits).unwrap();
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &model.view());
        prepared.placed.swap(0, 1);
        model.apply_prepared(&update.clone(), &mut prepared, 2, &limits).unwrap();
        assert_eq!(model, plain);

        // Another LOAD added arms in between: the index moved, the rows are
        // looked up again (the placed ones would put "p300" on the row
        // "p1000" took).
        let mut model = Model::new(settings);
        model.apply(&base, 1, &limits).unwrap();
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &model.view());
        model.apply(&other, 1, &limits).unwrap();
        assert!(!prepared.placed_in.index_is(&model.index));
        model.apply_prepared(&update, &mut prepared, 2, &limits).unwrap();
        let mut expected = Model::new(settings);
        expected.apply(&base, 1, &limits).unwrap();
        expected.apply(&other, 1, &limits).unwrap();
        expected.apply(&update, 2, &limits).unwrap();
        assert_eq!(model, expected);

        // Placed in one model, applied to another (the key was replaced).
        let mut first = Model::new(settings);
        first.apply(&update, 1, &limits).unwrap();
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &first.view());
        let mut model = Model::new(settings);
        model.apply(&base, 1, &limits).unwrap();
        model.apply_prepared(&update, &mut prepared, 2, &limits).unwrap();
        assert_eq!(model, plain);

        // A view of a model that is gone reads nothing.
        let view = first.view();
        drop(first);
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &view);
        assert!(prepared.placed.is_empty());
    }

    /// The ranking copy (rows, codes, bounds) is what deriving it again from
    /// the exact values gives, row by row (as an RDB load does).
    fn assert_ranking_is_derived(model: &Model) {
        let mut derived = model.clone();
        derived.rebuild_ranking();
        assert!(derived.scoring == model.scoring, "ranking rows differ from the exact values'");
        assert!(derived == *model);
    }

    /// The ranking table built off the lock is swapped in whole, and gives
    /// the model a plain apply gives: for a payload that changes most arms
    /// (and adds some), and not for one that changes few or that meets a
    /// table another apply wrote in between.
    #[test]
    fn a_table_built_off_the_lock_is_swapped_in_only_while_current() {
        let limits = Limits::default();
        let settings = ModelSettings { dim: 3, alpha: 0.3, lambda: 2.0, decay: 1.0 };
        let base = Payload { dim: 3, arms: many_arms(0, 400, 0.25), ..Payload::default() };
        // 250 of the 400 arms change, 50 are new: above a quarter.
        let update = Payload { dim: 3, arms: many_arms(200, 300, 0.5), ..Payload::default() };
        // 40 changed arms: below a quarter of 450.
        let small = Payload { dim: 3, arms: many_arms(10, 40, 0.75), ..Payload::default() };
        let mut plain = Model::new(settings);
        plain.apply(&base, 1, &limits).unwrap();
        plain.apply(&update, 2, &limits).unwrap();

        let mut model = Model::new(settings);
        model.apply(&base, 1, &limits).unwrap();
        let before = model.scoring.clone();
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &model.view());
        prepared.build_table(&model.view());
        let built = prepared.table.clone().unwrap();
        assert_ranking_is_derived(&model);
        model.apply_prepared(&update, &mut prepared, 2, &limits).unwrap();
        assert_eq!(model, plain);
        assert_ranking_is_derived(&model);
        assert!(Arc::ptr_eq(&model.scoring, &built), "the built table is the model's now");
        assert!(prepared.table.as_ref().is_some_and(|old| Arc::ptr_eq(old, &before)), "the replaced table is handed back");

        let mut prepared = Prepared::new(&small);
        prepared.place(&small, &model.view());
        prepared.build_table(&model.view());
        assert!(prepared.table.is_none());
        model.apply_prepared(&small, &mut prepared, 3, &limits).unwrap();
        plain.apply(&small, 3, &limits).unwrap();
        assert_eq!(model, plain);
        assert_ranking_is_derived(&model);

        // Another apply wrote rows (no new arms, so the index stayed) after
        // the table was built: it is not swapped in.
        let mut model = Model::new(settings);
        model.apply(&base, 1, &limits).unwrap();
        let mut prepared = Prepared::new(&update);
        prepared.place(&update, &model.view());
        prepared.build_table(&model.view());
        assert!(prepared.table.is_some());
        let meanwhile = Payload { dim: 3, arms: many_arms(0, 150, 0.9), ..Payload::default() };
        model.apply(&meanwhile, 1, &limits).unwrap();
        model.apply_prepared(&update, &mut prepared, 2, &limits).unwrap();
        let mut expected = Model::new(settings);
        expected.apply(&base, 1, &limits).unwrap();
        expected.apply(&meanwhile, 1, &limits).unwrap();
        expected.apply(&update, 2, &limits).unwrap();
        assert_eq!(model, expected);
        assert_ranking_is_derived(&model);
    }

    #[test]
    fn stamp_states_what_the_model_stored() {
        let mut model = Model::new(settings(2));
        let mut first = Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4)], offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        model.apply(&first, 1000, &Limits::default()).unwrap();
        assert!(model.stamp(&mut first));
        assert_eq!(first.arms[0].updated_ms, Some(1000));
        // An unchanged arm keeps its time; a changed one takes the new time.
        let mut second = Payload { dim: 2, arms: vec![arm("a", [1.0, 2.0], 4), arm("b", [0.0, 1.0], 1)], offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        model.apply(&second, 2000, &Limits::default()).unwrap();
        assert!(model.stamp(&mut second));
        assert_eq!(second.arms.iter().map(|a| a.updated_ms).collect::<Vec<_>>(), vec![Some(1000), Some(2000)]);
        // Already stamped: nothing to fill in.
        assert!(!model.stamp(&mut second));
        let mut replica = Model::new(settings(2));
        replica.apply(&first, 5555, &Limits::default()).unwrap();
        replica.apply(&second, 7777, &Limits::default()).unwrap();
        assert_eq!(replica.export(None).arms, model.export(None).arms);
    }
}
