//! `BANDIT.LOAD key payload [PART token index count]` → integer: arms changed
//!
//! Applies a payload (binary from `bandit_core::codec`, or JSON when it starts
//! with `{`) atomically: every arm and offset, or nothing. Offsets fence
//! writers: a payload behind the model on any partition is refused with
//! `STALE`. A payload that states settings (ALPHA, LAMBDA, DECAY: every EXPORT does)
//! creates a missing key with them and is refused with `SETTINGS` by a model
//! that has others; one without settings creates the key with the module's
//! defaults. The reply counts the arms whose stored values changed (new arms
//! included; an arm loaded again with the same values is not counted).
//!
//! Replicated only when something changed. When the module filled something
//! in (an arm's update time, the settings of a model it created), replicas
//! and the AOF receive the payload as applied, with those values stated, so
//! they hold what this server holds; otherwise the command as received.
//!
//! Off the main thread: a LOAD from a client blocks that client, and a worker
//! thread decodes and validates the payload, derives every arm's θ, ranking
//! row and score bound ([`Prepared`]), looks up each arm's row in the model's
//! id index as it was when the command came ([`ModelView`]; the apply takes
//! those rows only if the index has not changed since) and, when the module will fill in values,
//! encodes the payload as it will be applied. Only the apply runs under the
//! GIL: the settings check and the offset fence against the model as it is
//! then, the copy into the model, replication and the reply. The flush stays
//! atomic (no other command sees half of it), and a LOAD that raced another
//! one built on the same offsets gets STALE at its apply. A LOAD from the
//! primary or the AOF, or inside MULTI or a script (where blocking is not
//! allowed), runs all of this on the main thread, as every LOAD once did.
//!
//! In parts (`PART token index count`, see [`super::load_parts`]): each part
//! is decoded and derived as it comes and replies 0; the last one joins them
//! and is applied as one LOAD of the whole payload, which is what replicas
//! and the AOF receive.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bandit_core::codec::{self, Format};
use bandit_core::{Applied, Limits, Model, ModelView, Payload, PayloadSettings, Prepared};
use redis_module::key::RedisKeyWritable;
use redis_module::{raw, Context, NotifyEvent, RedisString};

use super::load_parts::{self, Arrival, PartSpec};
use super::{entry_point, now_ms, publish_change, read_model, write_model, CommandSpec, Invocation};
use crate::blocking::{Blocked, Retained};
use crate::config;
use crate::datatype::BANDIT_TYPE;
use crate::docs::{ArgDoc, ArgKind, CommandDocs, KeyAccess, SINCE};
use crate::error::{CommandError, Result};
use crate::reply::Reply;

pub const SPEC: CommandSpec = CommandSpec {
    name: "bandit.load",
    flags: "write deny-oom",
    acl_categories: "write",
    keys: (1, 1, 1),
    min_argc: 3,
    handler,
    docs: CommandDocs {
        summary: c"Applies a batch of arms and trainer offsets atomically (binary or JSON payload), fenced by the offsets",
        complexity: c"O(N*d^2) for N arms of dim d",
        since: SINCE,
        key: KeyAccess::Update,
        args: &[
            ArgDoc::new(c"key", ArgKind::Key),
            ArgDoc::new(c"payload", ArgKind::String),
            ArgDoc::new(c"part", ArgKind::Block).token(c"PART").optional().with(&[
                ArgDoc::new(c"token", ArgKind::String),
                ArgDoc::new(c"index", ArgKind::Integer),
                ArgDoc::new(c"count", ArgKind::Integer),
            ]),
        ],
    },
};
entry_point!(entry, SPEC);

/// Contexts in which the client must not be blocked: the command is then
/// applied on the main thread.
const SYNCHRONOUS: u32 = raw::REDISMODULE_CTX_FLAGS_MULTI
    | raw::REDISMODULE_CTX_FLAGS_LUA
    | raw::REDISMODULE_CTX_FLAGS_REPLICATED
    | raw::REDISMODULE_CTX_FLAGS_LOADING
    | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING;

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    let bytes = call.args.next_arg()?;
    let part = PartSpec::parse(&mut call.args)?.filter(|spec| !spec.is_whole());
    if !call.args.is_empty() {
        return Err(CommandError::WrongArity(SPEC.name));
    }
    let arrival = match &part {
        Some(spec) => Some(load_parts::arrive(selected_db(call.ctx), call.key.as_slice(), spec, bytes.len(), Terms::of(call).limits.max_payload_bytes)?),
        None => None,
    };
    let arrival = if may_block(call.ctx) {
        match start_in_background(call, arrival) {
            Ok(()) => return Ok(()),
            Err(arrival) => arrival,
        }
    } else {
        arrival
    };
    synchronous(call, bytes, arrival)
}

/// The database the client has selected (parts of a flush are received per
/// database and key).
fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: the live context of the running command.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |db| db(ctx.ctx)) }
}

/// A payload (or part) decoded, validated and derived.
fn derive(bytes: &[u8], limits: &Limits) -> Result<(Payload, Prepared)> {
    let payload = codec::decode(bytes, limits)?;
    let prepared = Prepared::new(&payload);
    Ok((payload, prepared))
}

/// What a LOAD applies, once its bytes are derived: the payload, or for the
/// last part the whole payload joined from every part (`true`; the earlier
/// parts are waited for up to `wait`); `None` for a part before the last,
/// which is only kept.
fn whole(part: Result<(Payload, Prepared)>, arrival: Option<&Arrival>, limits: &Limits, wait: Duration) -> Result<Option<(Payload, Prepared, bool)>> {
    match arrival {
        None => part.map(|(payload, prepared)| Some((payload, prepared, false))),
        Some(Arrival::Earlier { slots, index }) => {
            let refused = part.as_ref().err().cloned();
            slots.fill(*index, part);
            refused.map_or(Ok(None), Err)
        }
        Some(Arrival::Last { slots }) => {
            let (payload, prepared) = slots.join_with_last(part?, limits, wait)?;
            Ok(Some((payload, prepared, true)))
        }
    }
}

fn may_block(ctx: &Context) -> bool {
    // SAFETY: the live context of the running command.
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(-1, |f| f(ctx.ctx)) };
    flags != -1 && flags & SYNCHRONOUS as i32 == 0
}

/// What every LOAD knows before it touches the model.
#[derive(Debug, Clone, Copy)]
struct Terms {
    limits: Limits,
    /// The settings of a model this LOAD creates when the payload states none.
    defaults: PayloadSettings,
    now: i64,
    /// From the AOF or the primary's stream: a stated model version is taken.
    trusted: bool,
}

impl Terms {
    fn of(call: &Invocation<'_>) -> Self {
        let config = config::get();
        // What the primary accepted, or what the AOF recorded, is applied
        // whatever this server's limits are now: a replica or a restart with a
        // smaller MAX-PAYLOAD-BYTES (or a stated payload a little larger than
        // the command received) must not silently lose arms. Validation stays.
        let trusted = call.reply.from_primary_or_aof();
        let limits = if trusted { Limits::unbounded() } else { config.limits };
        let defaults = PayloadSettings { alpha: config.default_alpha, lambda: config.default_lambda, decay: 1.0 };
        Self { limits, defaults, now: now_ms(), trusted }
    }
}

/// What one apply did to the key.
struct Outcome {
    applied: Applied,
    /// Whether the payload as applied states values the command did not
    /// (update times, the settings of a model it created).
    filled_in: bool,
}

/// Applies to the model under `key`, creating it when absent, and, when
/// `stamp` (something will receive the change), states in `payload` what
/// was filled in: otherwise nobody reads it, and stamping 10,000 arms is a
/// millisecond under the lock.
fn apply_to(key: &RedisKeyWritable, payload: &mut Payload, prepared: &mut Prepared, terms: &Terms, stamp: bool) -> Result<Outcome> {
    if payload.version.is_some() && !terms.trusted {
        // The version counts this server's changing LOADs; only an AOF
        // rewrite, which writes a model out in chunks, restates it.
        return Err(CommandError::Other("a payload states a model version only in an AOF rewrite".into()));
    }
    match write_model(key)? {
        Some(model) => {
            let applied = model.apply_prepared(payload, prepared, terms.now, &terms.limits)?;
            Ok(Outcome { applied, filled_in: stamp && model.stamp_prepared(payload, prepared) })
        }
        None => {
            let stated = payload.settings;
            let settings = stated.unwrap_or(terms.defaults);
            payload.settings = Some(settings);
            let mut model = Model::new(settings.for_dim(payload.dim));
            let mut applied = model.apply_prepared(payload, prepared, terms.now, &terms.limits)?;
            let stamped = stamp && model.stamp_prepared(payload, prepared);
            key.set_value(&BANDIT_TYPE, model).map_err(|_| CommandError::WrongType)?;
            applied.created = true;
            Ok(Outcome { applied, filled_in: stamped || stated.is_none() })
        }
    }
}

fn synchronous(call: &mut Invocation<'_>, bytes: &[u8], arrival: Option<Arrival>) -> Result<()> {
    let started = Instant::now();
    let result = apply_here(call, bytes, arrival);
    record_hold(started.elapsed());
    result
}

/// The whole LOAD on the main thread.
fn apply_here(call: &mut Invocation<'_>, bytes: &[u8], arrival: Option<Arrival>) -> Result<()> {
    let terms = Terms::of(call);
    // A panic is answered by the command's entry point; caught here too, so
    // that a part's slot is filled whatever happens (the last part would
    // otherwise wait for it). The main thread never waits for a worker's
    // preparation.
    let part = catch_unwind(AssertUnwindSafe(|| derive(bytes, &terms.limits)))
        .unwrap_or_else(|_| Err(CommandError::Other(format!("internal error in '{}', see the server log", SPEC.name))));
    let Some((mut payload, mut prepared, in_parts)) = whole(part, arrival.as_ref(), &terms.limits, Duration::ZERO)? else {
        call.reply.unsigned(0);
        return Ok(());
    };
    let key = call.ctx.open_key_writable(&call.key);
    let propagating = propagates(call.ctx);
    let outcome = apply_to(&key, &mut payload, &mut prepared, &terms, propagating)?;
    if outcome.applied.changed() {
        // Parts are replicated as the one payload they make.
        if outcome.filled_in || (in_parts && propagating) {
            let stated = codec::encode(&payload, Format::Binary)?;
            publish_change(call, SPEC.name, Some(&[stated.as_slice()]));
        } else {
            publish_change(call, SPEC.name, None);
        }
    }
    call.reply.unsigned(outcome.applied.arms_changed as u64);
    Ok(())
}

/// Whether a replicated command goes anywhere now: to the AOF, or to a
/// replication backlog (replicas, or a backlog kept for them). When nothing
/// does, the payload as applied is not worth encoding.
fn propagates(ctx: &Context) -> bool {
    // SAFETY: a live context, with the GIL held by the caller; the info
    // data is freed before returning.
    unsafe {
        let flags = raw::RedisModule_GetContextFlags.map_or(-1, |f| f(ctx.ctx));
        if flags == -1 || flags & raw::REDISMODULE_CTX_FLAGS_AOF as i32 != 0 {
            return true;
        }
        let (Some(get), Some(field), Some(free)) =
            (raw::RedisModule_GetServerInfo, raw::RedisModule_ServerInfoGetFieldSigned, raw::RedisModule_FreeServerInfo)
        else {
            return true;
        };
        let info = get(ctx.ctx, c"replication".as_ptr());
        if info.is_null() {
            return true;
        }
        let mut error = 0;
        let backlog = field(info, c"repl_backlog_active".as_ptr(), &mut error);
        free(ctx.ctx, info);
        error != 0 || backlog != 0
    }
}

/// LOADs whose preparation is running on a worker thread now (INFO
/// `bandit_loads_preparing`): raised and lowered by the worker around its
/// preparation, without the lock, so a command that sees it raised ran
/// while a payload was being prepared.
static PREPARING: AtomicUsize = AtomicUsize::new(0);

/// How many LOADs are being prepared off the main thread now.
pub fn preparing() -> usize {
    PREPARING.load(Ordering::Relaxed)
}

/// How long the last LOAD held Redis' main thread, and the longest any
/// LOAD held it since the module loaded, in microseconds (INFO
/// `bandit_loads_apply_last_usec` and `bandit_loads_apply_max_usec`): for a
/// background LOAD the apply under the lock, for one on the main thread
/// (MULTI, a script, the primary's stream, the AOF) the whole command. Every
/// other client waited that long.
static LAST_HOLD_US: AtomicU64 = AtomicU64::new(0);
static MAX_HOLD_US: AtomicU64 = AtomicU64::new(0);

/// The last and the longest main-thread hold of a LOAD, microseconds.
pub fn main_thread_holds() -> (u64, u64) {
    (LAST_HOLD_US.load(Ordering::Relaxed), MAX_HOLD_US.load(Ordering::Relaxed))
}

/// Records one main-thread hold: in INFO, and in Redis' latency monitor as
/// the event `bandit-load` (which keeps it when it reaches
/// `latency-monitor-threshold`), so `LATENCY LATEST` names the module when a
/// LOAD was what stalled the server.
fn record_hold(held: std::time::Duration) {
    let micros = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
    LAST_HOLD_US.store(micros, Ordering::Relaxed);
    MAX_HOLD_US.fetch_max(micros, Ordering::Relaxed);
    // SAFETY: called with the GIL held (the monitor is server state); the
    // event name is a static C string.
    unsafe {
        if let Some(add) = raw::RedisModule_LatencyAddSample {
            add(c"bandit-load".as_ptr(), i64::try_from(held.as_millis()).unwrap_or(i64::MAX));
        }
    }
}

/// A LOAD running in the background.
struct Job {
    key: Vec<u8>,
    payload: Retained,
    terms: Terms,
    /// Whether the key was empty when the command arrived (then the module
    /// will likely fill in the settings).
    key_was_empty: bool,
    /// The model's id index and ranking table when the command arrived, for
    /// the worker to look the arms' rows up in and build the table after the
    /// LOAD from (the apply checks they are still current).
    index: ModelView,
    /// Whether replicated commands went anywhere when the command arrived
    /// (else the worker does not encode the payload as applied).
    propagates: bool,
    /// A part of a payload sent in parts.
    arrival: Option<Arrival>,
}

/// The worker's result: the decoded payload, its derived values, and the
/// payload as it will most likely be applied, encoded.
struct Ready {
    payload: Payload,
    prepared: Prepared,
    stated: Option<Stated>,
    /// Joined from parts: replicated as the payload it makes, never as the
    /// command received (the last part).
    in_parts: bool,
}

impl Ready {
    /// Releases the string the worker created, under the GIL; the rest is
    /// plain memory, freed after the lock is released.
    fn release_string(&mut self, locked: &Context) {
        if let Some(stated) = self.stated.take() {
            stated.string.release(locked);
        }
    }
}

/// The payload encoded with the update times and settings the module fills in,
/// assuming every arm without a time changes (it takes the apply time).
struct Stated {
    string: Retained,
    settings: Option<PayloadSettings>,
}

/// Blocks the client and hands the LOAD to a worker thread. The part's
/// arrival back when that is not possible (the caller then applies it here).
fn start_in_background(call: &mut Invocation<'_>, arrival: Option<Arrival>) -> std::result::Result<(), Option<Arrival>> {
    let Some(&payload_arg) = call.argv.get(2) else { return Err(arrival) };
    let (sender, receiver) = std::sync::mpsc::channel::<(Blocked, Job)>();
    let spawned = std::thread::Builder::new().name("bandit-load".into()).spawn(move || {
        if let Ok((blocked, job)) = receiver.recv() {
            run(blocked, job);
        }
    });
    if spawned.is_err() {
        return Err(arrival);
    }
    let terms = Terms::of(call);
    let key = call.ctx.open_key(&call.key);
    let key_was_empty = key.is_null();
    let index = read_model(&key).map(Model::view).unwrap_or_default();
    drop(key);
    // SAFETY: the running command's context and one of its arguments.
    let Some(payload) = (unsafe { Retained::keep(call.ctx, payload_arg) }) else { return Err(arrival) };
    let Some(blocked) = Blocked::new(call.ctx) else {
        payload.release(call.ctx);
        return Err(arrival);
    };
    let key_name = call.key.as_slice().to_vec();
    let job = Job { key: key_name, payload, terms, key_was_empty, index, propagates: propagates(call.ctx), arrival };
    if let Err(std::sync::mpsc::SendError((blocked, job))) = sender.send((blocked, job)) {
        // The worker is gone: finish here, under the GIL this thread holds.
        let Job { payload, arrival, .. } = job;
        payload.release(call.ctx);
        blocked.unblock_without_reply();
        return Err(arrival);
    }
    Ok(())
}

/// One LOAD counted in [`PREPARING`] while it lives, also when its worker
/// panics.
struct Preparing;

impl Preparing {
    fn count() -> Self {
        PREPARING.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Preparing {
    fn drop(&mut self) {
        PREPARING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The worker thread: prepare without the GIL, apply with it, reply, unblock.
fn run(blocked: Blocked, job: Job) {
    let preparing = Preparing::count();
    // The preparation runs on a thread of its own at the lowest priority, so
    // that on a busy host Redis' main thread gets the core first (a GET
    // loop saw 10 ms pauses on 2 cores while a preparation ran at normal
    // priority). The apply below runs on this thread, at normal priority:
    // it holds Redis' lock, and a starved holder would stall everyone.
    // Without a thread to spare (the process is at its thread limit), it
    // runs here, at normal priority.
    let internal = || CommandError::Other(format!("internal error in '{}', see the server log", SPEC.name));
    let mut prepared = at_low_priority(|| prepare(&job)).unwrap_or_else(|| Err(internal()));
    if let (Err(error), Some(Arrival::Earlier { slots, index })) = (&prepared, &job.arrival) {
        // Also when the preparation panicked before it got to the slot: the
        // last part must not wait for it.
        slots.fill(*index, Err(error.clone()));
    }
    // The rows are looked up back at normal priority: while the lookup
    // reads the model's index, a LOAD that adds arms to it must copy it
    // under the lock, and a starved lookup would make that window long.
    // The ranking table the apply will swap in is built at the lowest
    // priority again: it is a copy of tens of megabytes, and only another
    // LOAD of the same model (which a sink never overlaps with its own)
    // would have to copy the table while it is read.
    if let Ok(Some(ready)) = &mut prepared {
        ready.prepared.place(&ready.payload, &job.index);
        let Ready { prepared, .. } = ready;
        at_low_priority(|| prepared.build_table(&job.index));
    }
    drop(preparing);
    let Job { key, payload, terms, key_was_empty, .. } = job;
    if let Ok(None) = prepared {
        // A part before the last, kept for it: nothing to apply yet.
        blocked.with_lock(|ctx| {
            Reply::new(ctx).unsigned(0);
            blocked.replied();
            payload.release(ctx);
        });
        return;
    }
    let leftovers = blocked.with_lock(|ctx| {
        let locked = Instant::now();
        let reply = Reply::new(ctx);
        let (outcome, leftovers) = match prepared {
            Ok(None) => (Ok(Ok(0)), None),
            Ok(Some(mut ready)) => {
                let outcome = catch_unwind(AssertUnwindSafe(|| finish(ctx, &key, &payload, &mut ready, &terms, key_was_empty)));
                ready.release_string(ctx);
                (outcome, Some(ready))
            }
            Err(error) => (Ok(Err(error)), None),
        };
        match outcome {
            Ok(Ok(changed)) => reply.unsigned(changed),
            Ok(Err(error)) => reply.error(&error.to_string()),
            Err(_) => {
                ctx.log_warning(&format!("bandit: internal error in {}", SPEC.name));
                reply.error(&format!("ERR internal error in '{}', see the server log", SPEC.name));
            }
        }
        blocked.replied();
        payload.release(ctx);
        record_hold(locked.elapsed());
        leftovers
    });
    // The decoded payload and the arm values the apply replaced are freed
    // here, without the lock; dropping `blocked` unblocks the client.
    drop(leftovers);
}

/// Runs `work` on a thread of its own at the lowest priority (see
/// [`lower_priority`]), or here when no thread can be started. None when it
/// panicked.
fn at_low_priority<T: Send>(work: impl FnOnce() -> T + Send) -> Option<T> {
    let slot = std::sync::Mutex::new(Some(work));
    let run = || {
        let work = slot.lock().ok()?.take()?;
        catch_unwind(AssertUnwindSafe(work)).ok()
    };
    std::thread::scope(|scope| match std::thread::Builder::new().spawn_scoped(scope, || {
        lower_priority();
        run()
    }) {
        Ok(running) => running.join().ok().flatten(),
        Err(_) => run(),
    })
}

/// Lowers the calling thread to the lowest priority (nice 19; only this
/// thread: Linux gives each thread its own). Raising it again would need a
/// privilege Redis may not have, hence a thread for the low-priority work.
/// What it cannot stop: that thread still takes allocator and page-table
/// locks the main thread also takes (growing a large query buffer), and a
/// low-priority holder can make the main thread wait (so far the GET loop
/// of `bandit bench flush` did better with it, not worse).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; a failure
    // (none is expected when lowering) leaves the priority as it was.
    unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, u32::try_from(thread).unwrap_or(0), 19);
    }
}

/// Decode, validate, derive, and encode the payload as it will be stated.
/// None for a part before the last (kept for the last one).
fn prepare(job: &Job) -> Result<Option<Ready>> {
    let part = derive(job.payload.bytes(), &job.terms.limits);
    let Some((payload, prepared, in_parts)) = whole(part, job.arrival.as_ref(), &job.terms.limits, load_parts::PREPARATION_WAIT)? else {
        return Ok(None);
    };
    let fills_times = payload.arms.iter().any(|arm| arm.updated_ms.is_none());
    let fills_settings = job.key_was_empty && payload.settings.is_none();
    // Encoded when something will receive it and it differs from the
    // command received (values filled in, or a payload joined from parts);
    // copied only when values are filled in.
    let stated = if job.propagates && (fills_times || fills_settings || in_parts) {
        let mut stated = std::borrow::Cow::Borrowed(&payload);
        if fills_times {
            for arm in stated.to_mut().arms.iter_mut().filter(|arm| arm.updated_ms.is_none()) {
                arm.updated_ms = Some(job.terms.now);
            }
        }
        if fills_settings {
            stated.to_mut().settings = Some(job.terms.defaults);
        }
        let bytes = codec::encode(&stated, Format::Binary)?;
        Retained::copy_of(&bytes).map(|string| Stated { string, settings: stated.settings })
    } else {
        None
    };
    Ok(Some(Ready { payload, prepared, stated, in_parts }))
}

/// The apply, under the GIL: fence and settings checked against the model as
/// it is now, the arms copied in, the change replicated; the arms changed.
fn finish(ctx: &Context, key_name: &[u8], original: &Retained, ready: &mut Ready, terms: &Terms, key_was_empty: bool) -> Result<u64> {
    // The server may have become a replica while the worker prepared (a
    // failover, REPLICAOF): a thread-safe context would write anyway, and the
    // model would differ from the new primary's.
    // SAFETY: the thread-safe context, with the GIL held by the caller.
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |flags| flags(ctx.ctx)) };
    if flags & raw::REDISMODULE_CTX_FLAGS_SLAVE as i32 != 0 {
        return Err(CommandError::ReadOnly);
    }
    let Ready { payload, prepared, stated, in_parts } = ready;
    let propagating = propagates(ctx);
    // The arms the apply will stamp (only read when the change propagates).
    let unstamped: Vec<usize> = if propagating {
        payload.arms.iter().enumerate().filter(|(_, arm)| arm.updated_ms.is_none()).map(|(index, _)| index).collect()
    } else {
        Vec::new()
    };
    let key_name = RedisString::create(NonNull::new(ctx.ctx), key_name);
    let key = ctx.open_key_writable(&key_name);
    if !key_was_empty && key.is_empty() {
        // The model was here when the LOAD came and is gone now: deleted, or
        // migrated to another cluster node. Creating it here could orphan it
        // on a node that no longer owns its slot; the client retries instead.
        return Err(CommandError::TryAgain);
    }
    let outcome = apply_to(&key, payload, prepared, terms, propagating);
    drop(key);
    let outcome = outcome?;
    if outcome.applied.changed() {
        // When nothing receives replicated commands, the command as received
        // is "replicated" (it goes nowhere, but counts as a change for the
        // save points) instead of a payload encoded for nobody.
        if (outcome.filled_in || *in_parts) && propagating {
            // The encoding made in the background states exactly what was
            // applied when every arm without a time took the apply time (it
            // changed) and the settings filled in are the ones assumed.
            let as_assumed = |stated: &Stated| {
                stated.settings == payload.settings
                    && unstamped.iter().all(|&index| payload.arms.get(index).and_then(|arm| arm.updated_ms) == Some(terms.now))
            };
            match stated.as_ref().filter(|stated| as_assumed(stated)) {
                Some(stated) => replicate(ctx, &key_name, stated.string.as_ptr()),
                None => {
                    let bytes = codec::encode(payload, Format::Binary)?;
                    let string = Retained::copy_of(&bytes).ok_or_else(|| CommandError::Other("cannot create a string".into()))?;
                    replicate(ctx, &key_name, string.as_ptr());
                    string.release(ctx);
                }
            }
        } else {
            replicate(ctx, &key_name, original.as_ptr());
        }
        ctx.notify_keyspace_event(NotifyEvent::MODULE, SPEC.name, &key_name);
    }
    Ok(outcome.applied.arms_changed as u64)
}

/// `BANDIT.LOAD key payload` into the replication stream and the AOF, from a
/// thread-safe context (propagated at once, in the client's database).
fn replicate(ctx: &Context, key: &RedisString, payload: *mut raw::RedisModuleString) {
    let Some(replicate) = (unsafe { raw::RedisModule_Replicate }) else { return };
    // SAFETY: the format names exactly the two module strings passed after
    // it, both alive for the call.
    unsafe {
        replicate(ctx.ctx, c"BANDIT.LOAD".as_ptr(), c"ss".as_ptr(), key.inner, payload);
    }
}
