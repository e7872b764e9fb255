//! The BANDIT.* commands. Each file holds one command: its metadata
//! ([`CommandSpec`]: name, flags, key positions, arity) beside its handler.
//! [`dispatch`] is the single entry from Redis: it reads argv without copying,
//! checks arity, runs the handler under `catch_unwind` and turns any error
//! into the reply.

pub mod create;
pub mod export;
pub mod load;
pub mod load_parts;
pub mod rank;
pub mod stats;

use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bandit_core::Model;
use redis_module::key::{RedisKey, RedisKeyWritable};
use redis_module::{raw, Context, NotifyEvent, RedisString};

use crate::args::Args;
use crate::datatype::BANDIT_TYPE;
use crate::docs::CommandDocs;
use crate::error::{CommandError, Result};
use crate::reply::Reply;

/// What a handler receives: the context, the key (argv\[1\]) and a cursor over
/// the arguments after the key.
#[allow(missing_debug_implementations)] // Context has no Debug
pub struct Invocation<'a> {
    pub ctx: &'a Context,
    pub key: RedisString,
    pub args: Args<'a>,
    pub reply: Reply<'a>,
    /// The raw arguments, command name first (for a command that keeps one
    /// alive past the call, see [`crate::blocking::Retained`]).
    pub argv: &'a [*mut raw::RedisModuleString],
}

/// One command's metadata and handler.
#[derive(Debug)]
pub struct CommandSpec {
    /// Command name as registered (lower case).
    pub name: &'static str,
    /// Redis command flags ("readonly", "write deny-oom", …).
    pub flags: &'static str,
    /// ACL categories besides `bandit` ("read", "write", "fast"), where the
    /// server lets modules set them (Redis 7.2+, Valkey 8).
    pub acl_categories: &'static str,
    /// Key positions for ACL and cluster routing: (first, last, step).
    pub keys: (c_int, c_int, c_int),
    /// Minimum argc, counting the command name.
    pub min_argc: usize,
    /// What `COMMAND DOCS` and `COMMAND INFO` show.
    pub docs: CommandDocs,
    /// Runs the command; on Ok it has written the reply.
    pub handler: fn(&mut Invocation<'_>) -> Result<()>,
}

/// Registers a command under its spec with a dedicated C entry point.
macro_rules! entry_point {
    ($fn_name:ident, $spec:path) => {
        /// # Safety
        /// Called by Redis only, with a command callback's arguments.
        pub unsafe extern "C" fn $fn_name(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::os::raw::c_int,
        ) -> std::os::raw::c_int {
            // SAFETY: these are the arguments Redis passes to a command callback.
            unsafe { $crate::commands::dispatch(&$spec, ctx, argv, argc) }
        }
    };
}
pub(crate) use entry_point;

/// Every command, with its C entry point, for registration at load.
pub fn all() -> [(&'static CommandSpec, raw::RedisModuleCmdFunc); 5] {
    [
        (&create::SPEC, Some(create::entry)),
        (&load::SPEC, Some(load::entry)),
        (&rank::SPEC, Some(rank::entry)),
        (&stats::SPEC, Some(stats::entry)),
        (&export::SPEC, Some(export::entry)),
    ]
}

/// Runs a command for Redis.
///
/// # Safety
/// `ctx`, `argv` and `argc` must be those Redis passed to a command callback.
pub unsafe fn dispatch(
    spec: &CommandSpec,
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    let context = Context::new(ctx);
    let reply = Reply::new(&context);
    let argc = usize::try_from(argc).unwrap_or(0);
    if argc < spec.min_argc || argv.is_null() {
        reply.error(&CommandError::WrongArity(spec.name).to_string());
        return raw::Status::Ok as c_int;
    }
    // SAFETY: Redis passes argc valid string pointers for the command's duration.
    let raw_args = unsafe { std::slice::from_raw_parts(argv, argc) };
    // SAFETY: each pointer is a live argument of this command, and the slices
    // are dropped before the command returns.
    let bytes: Vec<&[u8]> = raw_args.iter().map(|&arg| unsafe { string_bytes(arg) }).collect();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let key_ptr = raw_args.get(1).copied().ok_or(CommandError::WrongArity(spec.name))?;
        let mut invocation = Invocation {
            ctx: &context,
            key: RedisString::new(std::ptr::NonNull::new(ctx), key_ptr),
            args: Args::new(bytes.get(2..).unwrap_or_default()),
            reply,
            argv: raw_args,
        };
        (spec.handler)(&mut invocation)
    }));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => reply.error(&error.to_string()),
        Err(_) => {
            context.log_warning(&format!("bandit: internal error in {}", spec.name));
            reply.error(&format!("ERR internal error in '{}', see the server log", spec.name));
        }
    }
    raw::Status::Ok as c_int
}

/// The bytes of a module string.
///
/// # Safety
/// `arg` must be a live RedisModuleString, and the returned slice must not be
/// used after the string is freed or changed (for command arguments: after
/// the command returns); the lifetime is the caller's promise.
unsafe fn string_bytes<'a>(arg: *mut raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0;
    let ptr: *const c_char = raw::string_ptr_len(arg, &mut len);
    if ptr.is_null() {
        return &[];
    }
    // SAFETY: Redis guarantees ptr points at len bytes while the argument lives.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

/// The model under a key opened for reading.
pub fn read_model(key: &RedisKey) -> Result<&Model> {
    match key.get_value::<Model>(&BANDIT_TYPE) {
        Ok(Some(model)) => Ok(model),
        Ok(None) => Err(CommandError::NoSuchModel),
        Err(_) => Err(CommandError::WrongType),
    }
}

/// The model under a key opened for writing, or None when the key is empty.
pub fn write_model(key: &RedisKeyWritable) -> Result<Option<&mut Model>> {
    key.get_value::<Model>(&BANDIT_TYPE).map_err(|_| CommandError::WrongType)
}

/// Propagates a change to replicas and the AOF, and tells keyspace
/// subscribers; called only after a real change. `stated` is the command's
/// arguments after the key with every value the module filled in written
/// out (defaults, clock readings), so that replicas and an AOF replay hold
/// what this server holds whatever their own settings and clocks; `None`
/// propagates the command as received.
pub fn publish_change(invocation: &Invocation<'_>, command: &str, stated: Option<&[&[u8]]>) {
    match stated {
        None => invocation.ctx.replicate_verbatim(),
        Some(args) => {
            let mut full: Vec<&[u8]> = Vec::with_capacity(args.len() + 1);
            full.push(invocation.key.as_slice());
            full.extend_from_slice(args);
            invocation.ctx.replicate(command, full.as_slice());
        }
    }
    invocation.ctx.notify_keyspace_event(NotifyEvent::MODULE, command, &invocation.key);
}

/// Wall-clock milliseconds, for the model's update times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
