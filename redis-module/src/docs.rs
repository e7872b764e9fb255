//! Command documentation for `COMMAND DOCS` and key specs for `COMMAND INFO`
//! (RedisModule_SetCommandInfo, Redis 7.0+): each command's [`CommandDocs`]
//! sits in its own file beside its handler; this file turns them into the C
//! structures Redis reads once at load. Where the server lacks the API the
//! module loads without docs.

use std::ffi::CStr;
use std::os::raw::c_int;

use redis_module::{raw, Context};

/// How a command touches its key, for the key spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAccess {
    /// Reads the model.
    Read,
    /// Creates the model when missing.
    Create,
    /// Changes the model, creating it when missing.
    Update,
}

/// The kinds of argument `COMMAND DOCS` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    Key,
    String,
    Integer,
    Double,
    PureToken,
    OneOf,
    Block,
}

/// One argument of a command.
#[derive(Debug, Clone, Copy)]
pub struct ArgDoc {
    pub name: &'static CStr,
    pub kind: ArgKind,
    /// The keyword before the value, if any.
    pub token: Option<&'static CStr>,
    pub optional: bool,
    /// The value may repeat.
    pub multiple: bool,
    pub subargs: &'static [ArgDoc],
}

impl ArgDoc {
    pub const fn new(name: &'static CStr, kind: ArgKind) -> Self {
        Self { name, kind, token: None, optional: false, multiple: false, subargs: &[] }
    }

    pub const fn token(mut self, token: &'static CStr) -> Self {
        self.token = Some(token);
        self
    }

    pub const fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    pub const fn multiple(mut self) -> Self {
        self.multiple = true;
        self
    }

    pub const fn with(mut self, subargs: &'static [ArgDoc]) -> Self {
        self.subargs = subargs;
        self
    }
}

/// What `COMMAND DOCS` shows for a command.
#[derive(Debug, Clone, Copy)]
pub struct CommandDocs {
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
    pub since: &'static CStr,
    pub key: KeyAccess,
    /// The arguments after the command name, the key first.
    pub args: &'static [ArgDoc],
}

/// Version of the module that introduced every command so far.
pub const SINCE: &CStr = c"0.1.0";

/// Attaches `docs` to the registered command `name`. Returns false when the
/// server has no command-info API (then nothing is attached) or refuses.
pub fn attach(ctx: &Context, name: &CStr, arity: c_int, docs: &CommandDocs) -> bool {
    // SAFETY: reading function pointers Redis filled in at module init.
    let (get_command, set_info) = unsafe { (raw::RedisModule_GetCommand, raw::RedisModule_SetCommandInfo) };
    let (Some(get_command), Some(set_info)) = (get_command, set_info) else { return false };
    // SAFETY: called during OnLoad with the module's context, for a command
    // this module just created.
    let command = unsafe { get_command(ctx.ctx, name.as_ptr()) };
    if command.is_null() {
        return false;
    }
    // Built once at load and never freed (Redis copies what it keeps; a few
    // hundred bytes per command is not worth a lifetime to track).
    let version: &'static raw::RedisModuleCommandInfoVersion = Box::leak(Box::new(raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    }));
    let info = raw::RedisModuleCommandInfo {
        version,
        summary: docs.summary.as_ptr(),
        complexity: docs.complexity.as_ptr(),
        since: docs.since.as_ptr(),
        history: std::ptr::null_mut(),
        tips: std::ptr::null(),
        arity,
        key_specs: key_specs(docs.key),
        args: c_args(docs.args),
    };
    // SAFETY: `info` and everything it points to are valid and outlive the
    // call (the arrays are leaked, the strings are 'static).
    unsafe { set_info(command, &info) == raw::Status::Ok as c_int }
}

/// One key spec: the key is argument 1, a range of one key.
fn key_specs(access: KeyAccess) -> *mut raw::RedisModuleCommandKeySpec {
    let flags = match access {
        KeyAccess::Read => raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        KeyAccess::Create => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_INSERT,
        // INSERT and UPDATE are exclusive; a LOAD mostly updates.
        KeyAccess::Update => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE,
    };
    // SAFETY: the key spec is plain old data; all-zero is its terminator.
    let mut spec: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
    spec.flags = u64::from(flags);
    spec.begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
    spec.bs.index.pos = 1;
    spec.find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
    spec.fk.range.lastkey = 0;
    spec.fk.range.keystep = 1;
    spec.fk.range.limit = 0;
    // SAFETY: as above.
    let terminator: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
    Box::leak(vec![spec, terminator].into_boxed_slice()).as_mut_ptr()
}

/// A zero-terminated array of C arguments, built once and leaked.
fn c_args(args: &[ArgDoc]) -> *mut raw::RedisModuleCommandArg {
    if args.is_empty() {
        return std::ptr::null_mut();
    }
    let mut out: Vec<raw::RedisModuleCommandArg> = args.iter().map(c_arg).collect();
    // SAFETY: the argument struct is plain old data; all-zero terminates.
    out.push(unsafe { std::mem::zeroed() });
    Box::leak(out.into_boxed_slice()).as_mut_ptr()
}

fn c_arg(arg: &ArgDoc) -> raw::RedisModuleCommandArg {
    let type_ = match arg.kind {
        ArgKind::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
        ArgKind::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
        ArgKind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
        ArgKind::Double => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_DOUBLE,
        ArgKind::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
        ArgKind::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
        ArgKind::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
    };
    let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
    if arg.optional {
        flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
    }
    if arg.multiple {
        flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
    }
    // SAFETY: plain old data; every pointer left null means "absent".
    let mut out: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
    out.name = arg.name.as_ptr();
    out.type_ = type_;
    out.key_spec_index = if arg.kind == ArgKind::Key { 0 } else { -1 };
    out.token = arg.token.map_or(std::ptr::null(), CStr::as_ptr);
    out.flags = c_int::try_from(flags).unwrap_or(0);
    out.subargs = c_args(arg.subargs);
    out
}
