//! `BANDIT.STATS key [ARM id]` → field/value map
//!
//! Model: dim, alpha, lambda, decay, arms, updates (Σn), reward_sum, loads,
//! last_load_ms, memory_bytes, offsets (partition → next offset).
//! Arm: n, reward_sum, mean_reward, theta, updated_ms.
//! A RESP3 map, or a flat field/value array in RESP2.

use super::{entry_point, read_model, CommandSpec, Invocation};
use crate::args::is_keyword;
use crate::docs::{ArgDoc, ArgKind, CommandDocs, KeyAccess, SINCE};
use crate::error::{CommandError, Result};

pub const SPEC: CommandSpec = CommandSpec {
    name: "bandit.stats",
    flags: "readonly",
    acl_categories: "read",
    keys: (1, 1, 1),
    min_argc: 2,
    handler,
    docs: CommandDocs {
        summary: c"Settings and figures of a model, or of one of its arms",
        complexity: c"O(N) for a model of N arms, O(d) for one arm",
        since: SINCE,
        key: KeyAccess::Read,
        args: &[ArgDoc::new(c"key", ArgKind::Key), ArgDoc::new(c"id", ArgKind::String).token(c"ARM").optional()],
    },
};
entry_point!(entry, SPEC);

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    let arm_id = match call.args.peek() {
        None => None,
        Some(option) if is_keyword(option, "ARM") => {
            call.args.next_arg()?;
            let id = call.args.next_arg()?;
            if let Some(extra) = call.args.peek() {
                return Err(CommandError::unexpected(extra));
            }
            Some(id)
        }
        Some(other) => return Err(CommandError::unexpected(other)),
    };
    let key = call.ctx.open_key(&call.key);
    let model = read_model(&key)?;
    let reply = call.reply;
    match arm_id {
        Some(id) => {
            let arm = model.row_of(id).and_then(|row| model.arm(row)).ok_or(CommandError::NoSuchArm)?;
            reply.map(5);
            reply.field("n");
            reply.unsigned(arm.n);
            reply.field("reward_sum");
            reply.double(arm.reward_sum);
            reply.field("mean_reward");
            reply.double(if arm.n == 0 { 0.0 } else { arm.reward_sum / arm.n as f64 });
            reply.field("theta");
            reply.doubles(arm.theta);
            reply.field("updated_ms");
            reply.integer(arm.updated_ms);
        }
        None => {
            let settings = model.settings();
            let stats = model.stats();
            reply.map(11);
            reply.field("dim");
            reply.unsigned(settings.dim as u64);
            reply.field("alpha");
            reply.double(settings.alpha);
            reply.field("lambda");
            reply.double(settings.lambda);
            reply.field("decay");
            reply.double(settings.decay);
            reply.field("arms");
            reply.unsigned(stats.arms as u64);
            reply.field("updates");
            reply.unsigned(stats.updates);
            reply.field("reward_sum");
            reply.double(stats.reward_sum);
            reply.field("loads");
            reply.unsigned(stats.loads);
            reply.field("last_load_ms");
            reply.integer(stats.last_load_ms);
            reply.field("memory_bytes");
            reply.unsigned(stats.memory_bytes as u64);
            reply.field("offsets");
            reply.map(model.offsets().len());
            for (&partition, &offset) in model.offsets() {
                reply.integer(i64::from(partition));
                reply.integer(offset);
            }
        }
    }
    Ok(())
}
