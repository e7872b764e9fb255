//! The module's settings as server configs: `CONFIG GET bandit.*`,
//! `CONFIG SET bandit.alpha 0.5`, and `bandit.<name>` in redis.conf or on the
//! command line (Redis 7.0+ module configs). Every setting goes through
//! [`crate::config::set`], the same path as the load-time arguments, which
//! stay accepted and give the defaults. Values are strings so one parser
//! serves both. `rank-threads` is immutable: RANK's per-thread scratch is
//! sized once. Where the server has no config API the module loads without.

use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int};
use std::sync::{Mutex, PoisonError};

use redis_module::{raw, Context};

use crate::config;

/// The one setting fixed at load (RANK's per-thread scratch is sized once).
const IMMUTABLE: &str = "RANK-THREADS";

/// Registers every setting as a string config and loads the values the
/// server was given. Ok(false) where the server has no config API.
///
/// # Errors
/// When the server has the API but refuses a config or a value given for it
/// (a bad `bandit.<name>` in redis.conf): the module must not load then.
pub fn register(ctx: &Context) -> Result<bool, String> {
    // SAFETY: reading function pointers Redis filled in at module init.
    let (Some(register), Some(load)) = (unsafe { raw::RedisModule_RegisterStringConfig }, unsafe { raw::RedisModule_LoadConfigs })
    else {
        return Ok(false);
    };
    // Every module argument, named in lower case (the server shows
    // `bandit.<name>`).
    for (index, argument) in config::NAMES.iter().enumerate() {
        let lower = argument.to_ascii_lowercase();
        let name = CString::new(lower.as_str()).map_err(|_| format!("config name {lower:?}"))?;
        let current = config::value_of(argument).unwrap_or_default();
        let default = CString::new(current).map_err(|_| format!("config {lower:?} has no text value"))?;
        let flags = if *argument == IMMUTABLE { raw::REDISMODULE_CONFIG_IMMUTABLE } else { 0 };
        // SAFETY: OnLoad context; NUL-terminated strings Redis copies; the
        // callbacks match the string-config signatures; privdata is the
        // index into config::NAMES, never dereferenced.
        let status = unsafe {
            register(
                ctx.ctx,
                name.as_ptr(),
                default.as_ptr(),
                flags,
                Some(get_config),
                Some(set_config),
                None,
                index as *mut c_void,
            )
        };
        if status != raw::Status::Ok as c_int {
            return Err(format!("the server refused the config bandit.{lower}"));
        }
    }
    // SAFETY: OnLoad context, after every config is registered.
    if unsafe { load(ctx.ctx) } == raw::Status::Ok as c_int {
        Ok(true)
    } else {
        Err("a bandit.* config value was refused (see the lines above)".into())
    }
}

/// The string the server last read from `get_config`, kept alive until the
/// next read (the server copies it at once).
struct LastValue(*mut raw::RedisModuleString);
// SAFETY: only touched from the server's main thread, inside config calls.
unsafe impl Send for LastValue {}

static LAST: Mutex<LastValue> = Mutex::new(LastValue(std::ptr::null_mut()));

fn name_of(privdata: *mut c_void) -> Option<&'static str> {
    config::NAMES.get(privdata as usize).copied()
}

unsafe extern "C" fn get_config(_name: *const c_char, privdata: *mut c_void) -> *mut raw::RedisModuleString {
    let text = name_of(privdata).and_then(config::value_of).unwrap_or_default();
    // SAFETY: reading a function pointer Redis filled in at module init; a
    // NULL context makes an unmanaged string, freed on the next read.
    let value = unsafe { raw::RedisModule_CreateString }
        .map_or(std::ptr::null_mut(), |create| unsafe { create(std::ptr::null_mut(), text.as_ptr().cast(), text.len()) });
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    if let (false, Some(free)) = (last.0.is_null(), unsafe { raw::RedisModule_FreeString }) {
        // SAFETY: the previous value, created above and no longer used.
        unsafe { free(std::ptr::null_mut(), last.0) };
    }
    last.0 = value;
    value
}

unsafe extern "C" fn set_config(
    _name: *const c_char,
    value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    let mut len = 0;
    let ptr = raw::string_ptr_len(value, &mut len);
    let text = if ptr.is_null() {
        ""
    } else {
        // SAFETY: the server's string holds len bytes for this call.
        std::str::from_utf8(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }).unwrap_or("")
    };
    let outcome = match name_of(privdata) {
        Some(name) => config::set(name, text),
        None => Err("unknown bandit config".to_owned()),
    };
    match outcome {
        Ok(()) => raw::Status::Ok as c_int,
        Err(message) => {
            if !err.is_null() {
                if let Some(create) = unsafe { raw::RedisModule_CreateString } {
                    // SAFETY: the server takes the error string it asked for.
                    unsafe { *err = create(std::ptr::null_mut(), message.as_ptr().cast(), message.len()) };
                }
            }
            raw::Status::Err as c_int
        }
    }
}
