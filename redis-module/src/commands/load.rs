//! `BANDIT.LOAD key payload` → integer: arms changed
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

use bandit_core::codec::{self, Format};
use bandit_core::{Limits, Model, PayloadSettings};

use super::{entry_point, now_ms, publish_change, write_model, CommandSpec, Invocation};
use crate::config;
use crate::docs::{ArgDoc, ArgKind, CommandDocs, KeyAccess, SINCE};
use crate::datatype::BANDIT_TYPE;
use crate::error::{CommandError, Result};

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
        args: &[ArgDoc::new(c"key", ArgKind::Key), ArgDoc::new(c"payload", ArgKind::String)],
    },
};
entry_point!(entry, SPEC);

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    let bytes = call.args.next_arg()?;
    if !call.args.is_empty() {
        return Err(CommandError::WrongArity(SPEC.name));
    }
    let config = config::get();
    // What the primary accepted, or what the AOF recorded, is applied
    // whatever this server's limits are now: a replica or a restart with a
    // smaller MAX-PAYLOAD-BYTES (or a stated payload a little larger than
    // the command received) must not silently lose arms. Validation stays.
    let limits = if call.reply.from_primary_or_aof() { Limits::unbounded() } else { config.limits };
    let mut payload = codec::decode(bytes, &limits)?;
    let key = call.ctx.open_key_writable(&call.key);
    let now = now_ms();
    let (applied, filled_in) = match write_model(&key)? {
        Some(model) => {
            let applied = model.apply(&payload, now, &limits)?;
            (applied, model.stamp(&mut payload))
        }
        None => {
            let stated = payload.settings;
            let settings = stated.unwrap_or(PayloadSettings {
                alpha: config.default_alpha,
                lambda: config.default_lambda,
                decay: 1.0,
            });
            payload.settings = Some(settings);
            let mut model = Model::new(settings.for_dim(payload.dim));
            let mut applied = model.apply(&payload, now, &limits)?;
            let stamped = model.stamp(&mut payload);
            key.set_value(&BANDIT_TYPE, model).map_err(|_| CommandError::WrongType)?;
            applied.created = true;
            (applied, stamped || stated.is_none())
        }
    };
    if applied.changed() {
        if filled_in {
            let stated = codec::encode(&payload, Format::Binary)?;
            publish_change(call, SPEC.name, Some(&[stated.as_slice()]));
        } else {
            publish_change(call, SPEC.name, None);
        }
    }
    call.reply.unsigned(applied.arms_changed as u64);
    Ok(())
}
