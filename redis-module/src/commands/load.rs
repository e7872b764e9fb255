//! `BANDIT.LOAD key payload` → integer: arms written
//!
//! Applies a payload (binary from `bandit_core::codec`, or JSON when it starts
//! with `{`) atomically: every arm and offset, or nothing. Offsets fence
//! writers: a payload behind the model on any partition is refused with
//! `STALE`. A missing key is created with the payload's dim and the module's
//! default ALPHA and LAMBDA. Replicated only when something changed.

use bandit_core::{codec, Model, ModelSettings};

use super::{entry_point, now_ms, publish_change, write_model, CommandSpec, Invocation};
use crate::config;
use crate::datatype::BANDIT_TYPE;
use crate::error::{CommandError, Result};

pub const SPEC: CommandSpec = CommandSpec {
    name: "bandit.load",
    flags: "write deny-oom",
    keys: (1, 1, 1),
    min_argc: 3,
    handler,
};
entry_point!(entry, SPEC);

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    let bytes = call.args.next_arg()?;
    if !call.args.is_empty() {
        return Err(CommandError::WrongArity(SPEC.name));
    }
    let config = config::get();
    let payload = codec::decode(bytes, &config.limits)?;
    let key = call.ctx.open_key_writable(&call.key);
    let now = now_ms();
    let applied = match write_model(&key)? {
        Some(model) => model.apply(&payload, now, &config.limits)?,
        None => {
            let settings = ModelSettings {
                dim: payload.dim,
                alpha: config.default_alpha,
                lambda: config.default_lambda,
            };
            let mut model = Model::new(settings);
            let mut applied = model.apply(&payload, now, &config.limits)?;
            key.set_value(&BANDIT_TYPE, model).map_err(|_| CommandError::WrongType)?;
            applied.created = true;
            applied
        }
    };
    if applied.changed() {
        publish_change(call, "bandit.load");
    }
    call.reply.unsigned(applied.arms_changed as u64);
    Ok(())
}
