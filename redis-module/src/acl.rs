//! ACL categories: every BANDIT command in a `bandit` category (so
//! `+@bandit` grants them all), and in `read` or `write` (and `fast` for
//! RANK) like the server's own commands. Redis 7.0 has neither API, so there
//! the commands belong to no category and users name them one by one (see
//! the README); the module loads either way.

use std::ffi::CString;
use std::os::raw::c_int;

use redis_module::{raw, Context};

use crate::commands::CommandSpec;

/// Adds the `bandit` category; returns whether the server has it now.
/// Must run during OnLoad, before the commands are given categories.
pub fn add_category(ctx: &Context) -> bool {
    // SAFETY: reading a function pointer Redis filled in at module init.
    let Some(add) = (unsafe { raw::RedisModule_AddACLCategory }) else { return false };
    // SAFETY: OnLoad context and a NUL-terminated name.
    let added = unsafe { add(ctx.ctx, c"bandit".as_ptr()) } == raw::Status::Ok as c_int;
    if !added {
        ctx.log_warning("bandit: the server refused the ACL category 'bandit'");
    }
    added
}

/// Puts the registered command `name` in its categories.
pub fn set_categories(ctx: &Context, name: &CString, spec: &CommandSpec, with_bandit: bool) {
    // SAFETY: reading function pointers Redis filled in at module init.
    let (Some(get_command), Some(set)) =
        (unsafe { raw::RedisModule_GetCommand }, unsafe { raw::RedisModule_SetCommandACLCategories })
    else {
        return;
    };
    let categories = if with_bandit { format!("bandit {}", spec.acl_categories) } else { spec.acl_categories.to_owned() };
    let Ok(categories) = CString::new(categories) else { return };
    // SAFETY: OnLoad context, a command this module created, NUL-terminated
    // strings that outlive the calls.
    let status = unsafe {
        let command = get_command(ctx.ctx, name.as_ptr());
        if command.is_null() {
            return;
        }
        set(command, categories.as_ptr())
    };
    if status != raw::Status::Ok as c_int {
        ctx.log_warning(&format!("bandit: cannot set the ACL categories of {}", spec.name));
    }
}
