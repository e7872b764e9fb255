//! `BANDIT.CREATE key DIM d [ALPHA a] [LAMBDA l]` → OK
//!
//! Creates an empty model. Creating a model that already exists with the same
//! settings is a no-op that still answers OK (so set-up scripts can rerun);
//! other dims or settings are an error, as is a key of another type.

use bandit_core::{Model, ModelSettings};

use super::{entry_point, publish_change, write_model, CommandSpec, Invocation};
use crate::args::is_keyword;
use crate::config;
use crate::datatype::BANDIT_TYPE;
use crate::error::{CommandError, Result};

pub const SPEC: CommandSpec = CommandSpec {
    name: "bandit.create",
    flags: "write deny-oom",
    keys: (1, 1, 1),
    min_argc: 4,
    handler,
};
entry_point!(entry, SPEC);

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    let defaults = config::get();
    let (mut dim, mut alpha, mut lambda) = (None, None, None);
    while !call.args.is_empty() {
        let option = call.args.next_arg()?;
        if is_keyword(option, "DIM") {
            dim = Some(call.args.next_usize()?);
        } else if is_keyword(option, "ALPHA") {
            alpha = Some(call.args.next_f64()?);
        } else if is_keyword(option, "LAMBDA") {
            lambda = Some(call.args.next_f64()?);
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let dim = dim.ok_or_else(|| CommandError::SyntaxDetail("DIM is required".into()))?;
    let settings = ModelSettings {
        dim,
        alpha: alpha.unwrap_or(defaults.default_alpha),
        lambda: lambda.unwrap_or(defaults.default_lambda),
    };
    settings.validate(&defaults.limits)?;

    let key = call.ctx.open_key_writable(&call.key);
    if let Some(existing) = write_model(&key)? {
        let have = existing.settings();
        if have.dim != dim {
            return Err(CommandError::Other(format!("model exists with dim {}", have.dim)));
        }
        if alpha.is_some_and(|a| a != have.alpha) || lambda.is_some_and(|l| l != have.lambda) {
            return Err(CommandError::Other(format!(
                "model exists with ALPHA {} LAMBDA {}",
                have.alpha, have.lambda
            )));
        }
        call.reply.simple(c"OK");
        return Ok(());
    }
    key.set_value(&BANDIT_TYPE, Model::new(settings)).map_err(|_| CommandError::WrongType)?;
    publish_change(call, "bandit.create");
    call.reply.simple(c"OK");
    Ok(())
}
