//! `BANDIT.LOAD key payload PART token index count`: one payload sent as
//! several commands (see `bandit_core::parts` for why). This file keeps the
//! flushes being received: which part of which flush comes next, per key,
//! and the parts' decoded payloads until the last one arrives.
//!
//! Parts are numbered on arrival, on the main thread, so the order is the
//! order of the commands even when their preparations (on worker threads)
//! finish in another. A part out of order, or of another count, ends the
//! flush being received: the command gets `PARTS …` and the writer starts
//! again from part 0. A part of another token (another writer's, or a late
//! retry) gets `PARTS` and leaves the flush being received alone. A flush
//! whose parts pass MAX-PAYLOAD-BYTES together is dropped with `ERR`.
//! Nothing is applied until the last part: its command waits for the
//! earlier parts' preparations (on a worker thread; on the main thread it
//! never waits, and gets `PARTS` if they are not ready), joins them, and is
//! then applied as one LOAD of the whole payload (fenced, atomic, replicated
//! as one LOAD). A part that was refused, or parts that do not make one
//! payload, refuse the last part with the same error a single LOAD of the
//! whole would get (`ERR`, permanent: sending it again cannot help).
//!
//! A flush whose writer went away is dropped when the next part 0 for the
//! key arrives, or once it was idle (no part arrived) for PARTS-IDLE-SECONDS:
//! a timer looks every [`PURGE_EVERY`] on the main thread, so that parts a
//! full server holds are freed even when it refuses every new command
//! (`maxmemory` with `noeviction`). `INFO bandit_loads_receiving` counts it
//! until then.
//! Dropped flushes are freed on a thread of their own: their decoded parts
//! can be hundreds of megabytes. Received parts live in memory only (not in
//! RDB or AOF): after a restart the last part gets `PARTS`, and the writer
//! sends the flush again, whose offsets the model has not moved past.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bandit_core::parts::MAX_PARTS;
use bandit_core::{Payload, Prepared};

use crate::args::{is_keyword, parse_usize, Args};
use crate::error::{CommandError, Result};

/// How often the timer drops idle flushes.
pub const PURGE_EVERY: Duration = Duration::from_secs(1);
/// How long the last part, prepared on a worker thread, waits for the
/// earlier parts' preparations (which run at the same time).
pub const PREPARATION_WAIT: Duration = Duration::from_secs(60);
/// Longest token, bytes.
const MAX_TOKEN_BYTES: usize = 128;

/// `PART token index count` of one LOAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    token: Vec<u8>,
    index: usize,
    count: usize,
}

impl PartSpec {
    /// The optional `PART token index count` after the payload.
    ///
    /// # Errors
    /// A syntax error for anything else, or values out of range.
    pub fn parse(args: &mut Args<'_>) -> Result<Option<Self>> {
        let Some(keyword) = args.peek() else { return Ok(None) };
        if !is_keyword(keyword, "PART") {
            return Err(CommandError::unexpected(keyword));
        }
        let _ = args.next_arg()?;
        let token = args.next_arg()?;
        let index = parse_usize(args.next_arg()?)?;
        let count = parse_usize(args.next_arg()?)?;
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(CommandError::SyntaxDetail(format!("PART token must be 1 to {MAX_TOKEN_BYTES} bytes")));
        }
        if !(1..=MAX_PARTS).contains(&count) || index >= count {
            return Err(CommandError::SyntaxDetail(format!("PART index must be below count, and count 1 to {MAX_PARTS}")));
        }
        Ok(Some(Self { token: token.to_vec(), index, count }))
    }

    /// The whole payload in one part: a plain LOAD.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }
}

/// What a part's preparation left for the last part: the decoded part and
/// its derived values, or why it was refused.
type Slot = Option<Result<(Payload, Prepared)>>;

/// The parts of one flush, filled in by their preparations.
#[derive(Debug, Default)]
pub struct Slots {
    ready: Mutex<Vec<Slot>>,
    filled: Condvar,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A preparation that panicked holding the lock left whole values.
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for the next part before the last, as it arrives; its index.
    fn open(&self) -> usize {
        let mut ready = self.lock();
        ready.push(None);
        ready.len() - 1
    }

    /// Stores part `index`'s preparation.
    pub fn fill(&self, index: usize, part: Result<(Payload, Prepared)>) {
        if let Some(slot) = self.lock().get_mut(index) {
            *slot = Some(part);
        }
        self.filled.notify_all();
    }

    /// Waits up to `wait` until every part before the last is prepared,
    /// and takes them in order.
    ///
    /// # Errors
    /// `PARTS` when one is not prepared in time; the error of a part that
    /// was refused, naming it.
    fn take_earlier(&self, wait: Duration) -> Result<Vec<(Payload, Prepared)>> {
        let deadline = Instant::now() + wait;
        let mut ready = self.lock();
        while ready.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CommandError::Parts(
                    "the earlier parts are not prepared (send the last part after the others replied); the flush is dropped".into(),
                ));
            }
            ready = self.filled.wait_timeout(ready, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        let mut parts = Vec::with_capacity(ready.len());
        for (index, slot) in ready.drain(..).enumerate() {
            match slot {
                Some(Ok(part)) => parts.push(part),
                Some(Err(error)) => return Err(in_part(error, index)),
                None => return Err(CommandError::Parts(format!("part {index} is missing"))),
            }
        }
        Ok(parts)
    }

    /// The whole payload: the earlier parts (waited for up to `wait`; on
    /// the main thread, which must not wait, zero) and the last one, joined.
    ///
    /// # Errors
    /// As [`Slots::take_earlier`]; `ERR` for parts that do not make one
    /// payload (other headers, an arm twice, too many arms), as a single
    /// LOAD of them all would get.
    pub fn join_with_last(&self, last: (Payload, Prepared), limits: &bandit_core::Limits, wait: Duration) -> Result<(Payload, Prepared)> {
        let mut parts = self.take_earlier(wait)?;
        parts.push(last);
        bandit_core::parts::join(parts, limits).map_err(CommandError::from)
    }
}

/// A refused part's error, as the last part reports it: the same code, the
/// part named in the message.
fn in_part(error: CommandError, index: usize) -> CommandError {
    match error {
        CommandError::Other(message) => CommandError::Other(format!("part {index} was refused: {message}")),
        other => other,
    }
}

/// Where a part goes once prepared.
#[derive(Debug)]
pub enum Arrival {
    /// A part before the last: into its slot.
    Earlier { slots: Arc<Slots>, index: usize },
    /// The last part: joined with the earlier ones and applied.
    Last { slots: Arc<Slots> },
}

/// A flush being received.
#[derive(Debug)]
struct Receiving {
    token: Vec<u8>,
    count: usize,
    /// Parts whose command arrived.
    arrived: usize,
    /// Their payloads' bytes, together.
    bytes: usize,
    last_arrival: Instant,
    slots: Arc<Slots>,
}

/// Flushes being received, by (database, key).
type ByKey = HashMap<(i32, Vec<u8>), Receiving>;
static RECEIVING: Mutex<Option<ByKey>> = Mutex::new(None);

/// Numbers a part as it arrives (on the main thread, in command order).
///
/// # Errors
/// `PARTS` for a part that does not come next in the flush being received
/// (which is then dropped); `ERR` when the flush's parts together pass
/// `max_bytes`.
pub fn arrive(db: i32, key: &[u8], spec: &PartSpec, bytes: usize, max_bytes: usize) -> Result<Arrival> {
    let mut guard = RECEIVING.lock().unwrap_or_else(PoisonError::into_inner);
    let receiving = guard.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    let mut dropped = drop_idle(receiving, now);
    let name = (db, key.to_vec());
    let arrival = next_part(receiving, &name, spec, bytes, max_bytes, now, &mut dropped);
    drop(guard);
    free_elsewhere(dropped);
    arrival
}

/// [`arrive`] for one key, with `dropped` collecting the flushes it ends.
fn next_part(
    receiving: &mut ByKey,
    name: &(i32, Vec<u8>),
    spec: &PartSpec,
    bytes: usize,
    max_bytes: usize,
    now: Instant,
    dropped: &mut Vec<Arc<Slots>>,
) -> Result<Arrival> {
    if spec.index == 0 {
        let slots = Arc::new(Slots::default());
        let fresh = Receiving { token: spec.token.clone(), count: spec.count, arrived: 0, bytes: 0, last_arrival: now, slots };
        dropped.extend(receiving.insert(name.clone(), fresh).map(|old| old.slots));
    }
    let Some(flush) = receiving.get_mut(name) else {
        return Err(CommandError::Parts(format!(
            "part {} of {} arrived but no flush is being received for this key (send part 0 first)",
            spec.index, spec.count
        )));
    };
    if flush.token != spec.token {
        return Err(CommandError::Parts(format!(
            "part {} of {} of another flush (token) than the one being received for this key; send that flush again from part 0",
            spec.index, spec.count
        )));
    }
    if flush.count != spec.count || flush.arrived != spec.index {
        let expected = format!("part {} of {} of the flush being received", flush.arrived, flush.count);
        dropped.extend(receiving.remove(name).map(|old| old.slots));
        return Err(CommandError::Parts(format!(
            "part {} of {} arrived where {expected} was expected; that flush is dropped (send it again from part 0)",
            spec.index, spec.count
        )));
    }
    flush.bytes = flush.bytes.saturating_add(bytes);
    if flush.bytes > max_bytes {
        dropped.extend(receiving.remove(name).map(|old| old.slots));
        return Err(CommandError::Other(format!(
            "payload too large: its parts pass {max_bytes} bytes (MAX-PAYLOAD-BYTES) together; the flush is dropped"
        )));
    }
    flush.arrived += 1;
    flush.last_arrival = now;
    let slots = flush.slots.clone();
    if spec.index + 1 == spec.count {
        receiving.remove(name);
        return Ok(Arrival::Last { slots });
    }
    let index = slots.open();
    Ok(Arrival::Earlier { slots, index })
}

/// Removes the flushes idle for PARTS-IDLE-SECONDS at `now`; their parts.
fn drop_idle(receiving: &mut ByKey, now: Instant) -> Vec<Arc<Slots>> {
    let limit = Duration::from_secs(u64::try_from(crate::config::get().parts_idle_seconds).unwrap_or(u64::MAX));
    let mut dropped = Vec::new();
    receiving.retain(|_, flush| {
        let keep = now.duration_since(flush.last_arrival) < limit;
        if !keep {
            dropped.push(flush.slots.clone());
        }
        keep
    });
    dropped
}

/// Drops the idle flushes now, and again every [`PURGE_EVERY`] (a server
/// timer: on the main thread, between commands).
pub fn purge_idle_periodically(ctx: &redis_module::Context) {
    let dropped = {
        let mut guard = RECEIVING.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().map(|receiving| drop_idle(receiving, Instant::now())).unwrap_or_default()
    };
    free_elsewhere(dropped);
    // SAFETY: reading a function pointer Redis filled in at module init
    // (every server since 5.0 has it; the crate's wrapper would panic
    // without it).
    if unsafe { redis_module::raw::RedisModule_CreateTimer }.is_some() {
        ctx.create_timer(PURGE_EVERY, |ctx: &redis_module::Context, ()| purge_idle_periodically(ctx), ());
    }
}

/// Frees dropped flushes' parts on a thread of their own (on this one when
/// no thread can be started): hundreds of megabytes of small allocations
/// are milliseconds the main thread would not serve anyone.
fn free_elsewhere(dropped: Vec<Arc<Slots>>) {
    if dropped.is_empty() {
        return;
    }
    // When no thread starts, the closure, parts and all, is dropped here.
    let _ = std::thread::Builder::new().name("bandit-free".into()).spawn(move || drop(dropped));
}

/// How many flushes are being received now (INFO `bandit_loads_receiving`).
pub fn receiving() -> usize {
    RECEIVING.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map_or(0, HashMap::len)
}
