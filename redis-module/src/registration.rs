//! Registration with Redis: the `redis_module!` entry point, load-time
//! set-up of arguments and commands, and the INFO section.

use std::ffi::CString;
use std::os::raw::c_int;

use redis_module::{raw, redis_module, Context, InfoContext, RedisResult, RedisString, Status};
use redis_module_macros::info_command_handler;

use crate::datatype::BANDIT_TYPE;
use crate::{acl, commands, config, docs, runtime_config};

/// Module version reported by MODULE LIST: major·10000 + minor·100 + patch.
const MODULE_VERSION: i32 = 100;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let bytes: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    if let Err(message) = config::install(&bytes) {
        ctx.log_warning(&format!("bandit: {message}"));
        return Status::Err;
    }
    // rdb_load reports read errors instead of Redis aborting on them.
    ctx.set_module_options(raw::ModuleOptions::HANDLE_IO_ERRORS);
    let category = acl::add_category(ctx);
    for (spec, entry) in commands::all() {
        let (Ok(name), Ok(flags)) = (CString::new(spec.name), CString::new(spec.flags)) else {
            return Status::Err;
        };
        let (first, last, step) = spec.keys;
        // SAFETY: called during OnLoad with the module's context; the strings
        // outlive the call (Redis copies them).
        let status = unsafe {
            raw::RedisModule_CreateCommand.map_or(raw::Status::Err as c_int, |create| {
                create(ctx.ctx, name.as_ptr(), entry, flags.as_ptr(), first, last, step)
            })
        };
        if status != raw::Status::Ok as c_int {
            ctx.log_warning(&format!("bandit: cannot register {}", spec.name));
            return Status::Err;
        }
        acl::set_categories(ctx, &name, spec, category);
        // Every command takes at least min_argc arguments, some take more.
        let arity = -c_int::try_from(spec.min_argc).unwrap_or(c_int::MAX);
        if !docs::attach(ctx, &name, arity, &spec.docs) {
            ctx.log_notice(&format!("bandit: this server takes no command docs for {}", spec.name));
        }
    }
    match runtime_config::register(ctx) {
        Ok(true) => {}
        Ok(false) => ctx.log_notice("bandit: this server has no module configs; the settings are load-time arguments only"),
        Err(message) => {
            ctx.log_warning(&format!("bandit: {message}"));
            return Status::Err;
        }
    }
    commands::load_parts::purge_idle_periodically(ctx);
    ctx.log_notice(&format!("bandit: loaded with {:?}", config::get()));
    Status::Ok
}

#[info_command_handler]
fn info(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    let config = config::get();
    let limits = &config.limits;
    ctx.builder()
        .add_section("config")
        .field("alpha", config.default_alpha.to_string())?
        .field("lambda", config.default_lambda.to_string())?
        .field("max_dim", limits.max_dim.to_string())?
        .field("max_arms", limits.max_arms.to_string())?
        .field("max_payload_bytes", limits.max_payload_bytes.to_string())?
        .field("max_id_bytes", limits.max_id_bytes.to_string())?
        .field("max_top", limits.max_top.to_string())?
        .field("rank_threads", config.rank_threads.to_string())?
        .field("parts_idle_seconds", config.parts_idle_seconds.to_string())?
        .build_section()?
        .add_section("loads")
        .field("loads_preparing", crate::commands::load::preparing().to_string())?
        .field("loads_receiving", crate::commands::load_parts::receiving().to_string())?
        .field("loads_apply_last_usec", crate::commands::load::main_thread_holds().0.to_string())?
        .field("loads_apply_max_usec", crate::commands::load::main_thread_holds().1.to_string())?
        .build_section()?
        .build_info()?;
    Ok(())
}

redis_module! {
    name: "bandit",
    version: MODULE_VERSION,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [BANDIT_TYPE],
    init: init,
}
