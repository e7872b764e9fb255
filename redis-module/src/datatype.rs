//! The `BanditUCB` module data type: one [`Model`] per key, with its
//! persistence and lifecycle callbacks.
//!
//! - RDB: the model's snapshot bytes from `bandit_core::snapshot`, one string,
//!   written at the snapshot encoding version; load matches on that version.
//! - AOF rewrite: `BANDIT.CREATE` with the model's settings, then
//!   `BANDIT.LOAD` in chunks that each fit the payload limit (each chunk an
//!   export: it restates every offset and sequence fence).
//! - COPY, MEMORY USAGE, lazy free effort, and free.
//!
//! Callbacks are `extern "C"` entry points from Redis: each catches panics so
//! that a bug here can never unwind into (and abort) the server.

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use bandit_core::{codec, packed, snapshot, Model};
use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::commands::create::StatedSettings;
use crate::config;

/// Type name as Redis stores it in RDB files: exactly nine characters.
pub const TYPE_NAME: &str = "BanditUCB";

pub static BANDIT_TYPE: RedisType = RedisType::new(
    TYPE_NAME,
    snapshot::VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: None,
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save_triggers: 0,
        free_effort: Some(free_effort),
        unlink: None,
        copy: Some(copy),
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: None,
    },
);

/// Payload bytes one AOF `BANDIT.LOAD` may carry (further bounded by the
/// configured payload limit).
const AOF_CHUNK_BYTES: usize = 16 * 1024 * 1024;

fn log_warning(message: &str) {
    redis_module::logging::log_warning(message);
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    let loaded = catch_unwind(AssertUnwindSafe(|| -> Result<Model, String> {
        let buffer = raw::load_string_buffer(rdb).map_err(|e| format!("read failed: {e}"))?;
        snapshot::decode(encver, buffer.as_ref(), &config::get().limits).map_err(|e| e.to_string())
    }));
    match loaded {
        Ok(Ok(model)) => Box::into_raw(Box::new(model)).cast::<c_void>(),
        Ok(Err(message)) => {
            log_warning(&format!("bandit: cannot load model from RDB: {message}"));
            ptr::null_mut()
        }
        Err(_) => {
            log_warning("bandit: internal error while loading a model from RDB");
            ptr::null_mut()
        }
    }
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    // SAFETY: Redis hands back a pointer this module created from a Box<Model>.
    let Some(model) = (unsafe { value.cast::<Model>().as_ref() }) else { return };
    let saved = catch_unwind(AssertUnwindSafe(|| snapshot::encode(model)));
    match saved {
        Ok(Ok(bytes)) => raw::save_slice(rdb, &bytes),
        // Saving something keeps the RDB stream well-formed; the load side
        // rejects it with a logged reason instead of misreading the next key.
        _ => {
            log_warning("bandit: cannot encode a model for RDB");
            raw::save_slice(rdb, b"");
        }
    }
}

unsafe extern "C" fn aof_rewrite(aof: *mut raw::RedisModuleIO, key: *mut raw::RedisModuleString, value: *mut c_void) {
    // SAFETY: as in rdb_save.
    let Some(model) = (unsafe { value.cast::<Model>().as_ref() }) else { return };
    let _ = catch_unwind(AssertUnwindSafe(|| emit_model(aof, key, model)));
}

fn emit_model(aof: *mut raw::RedisModuleIO, key: *mut raw::RedisModuleString, model: &Model) {
    let settings = model.settings();
    let create = StatedSettings::new(settings);
    emit(aof, "BANDIT.CREATE", key, &create.arguments());

    let limit = config::get().limits.max_payload_bytes.min(AOF_CHUNK_BYTES);
    let per_arm = (2 * packed::len(settings.dim) + settings.dim) * 8 + 128;
    let arms_per_chunk = (limit / per_arm.max(1)).max(1);
    let rows: Vec<usize> = (0..model.len()).collect();
    let mut chunks: Vec<&[usize]> = rows.chunks(arms_per_chunk).collect();
    if chunks.is_empty() && (!model.offsets().is_empty() || model.version() > 0) {
        chunks.push(&[]);
    }
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut payload = model.export(Some(chunk));
        // The last chunk restates the version, which the chunks themselves
        // would count up from zero.
        if i == last {
            payload.version = Some(model.version());
        }
        match codec::encode_binary(&payload) {
            Ok(bytes) => emit(aof, "BANDIT.LOAD", key, &[&bytes]),
            Err(e) => log_warning(&format!("bandit: cannot encode a model for AOF: {e}")),
        }
    }
}

/// Emits `command key arg…` into the AOF, each argument a binary-safe buffer.
fn emit(aof: *mut raw::RedisModuleIO, command: &str, key: *mut raw::RedisModuleString, args: &[&[u8]]) {
    let Ok(name) = CString::new(command) else { return };
    let Some(emit_aof) = (unsafe { raw::RedisModule_EmitAOF }) else { return };
    let p = |i: usize| args.get(i).map_or(ptr::null(), |a| a.as_ptr().cast::<c_char>());
    let l = |i: usize| args.get(i).map_or(0, |a| a.len());
    // SAFETY: the format string names exactly the arguments passed after it:
    // one RedisModuleString and a (pointer, length) pair per buffer.
    unsafe {
        match args.len() {
            1 => emit_aof(aof, name.as_ptr(), c"sb".as_ptr(), key, p(0), l(0)),
            8 => emit_aof(
                aof,
                name.as_ptr(),
                c"sbbbbbbbb".as_ptr(),
                key,
                p(0),
                l(0),
                p(1),
                l(1),
                p(2),
                l(2),
                p(3),
                l(3),
                p(4),
                l(4),
                p(5),
                l(5),
                p(6),
                l(6),
                p(7),
                l(7),
            ),
            _ => log_warning("bandit: unexpected AOF argument count"),
        }
    }
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    // SAFETY: as in rdb_save.
    unsafe { value.cast::<Model>().as_ref() }.map_or(0, Model::memory_bytes)
}

unsafe extern "C" fn free_effort(_key: *mut raw::RedisModuleString, value: *const c_void) -> usize {
    // Redis frees values above its lazyfree threshold in a background thread;
    // the effort is roughly one allocation per arm id.
    unsafe { value.cast::<Model>().as_ref() }.map_or(1, |model| model.len().max(1))
}

unsafe extern "C" fn free(value: *mut c_void) {
    if !value.is_null() {
        // SAFETY: created by Box::into_raw in this module, freed once by Redis.
        drop(unsafe { Box::from_raw(value.cast::<Model>()) });
    }
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    // SAFETY: as in rdb_save.
    let Some(model) = (unsafe { value.cast::<Model>().as_ref() }) else { return ptr::null_mut() };
    match catch_unwind(AssertUnwindSafe(|| model.clone())) {
        Ok(copied) => Box::into_raw(Box::new(copied)).cast::<c_void>(),
        Err(_) => ptr::null_mut(),
    }
}
