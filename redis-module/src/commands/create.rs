//! `BANDIT.CREATE key DIM d [ALPHA a] [LAMBDA l] [DECAY γ]` → OK
//!
//! Creates an empty model. Creating a model that already exists with the same
//! settings (ALPHA and LAMBDA left out count at the module's defaults, DECAY
//! at 1: no forgetting) is a
//! no-op that still answers OK, so set-up scripts can rerun; other settings
//! are an `EXISTS` error, a key of another type `WRONGTYPE`.

use bandit_core::number::Shortest;
use bandit_core::{Model, ModelSettings, PayloadSettings};

use super::{entry_point, publish_change, write_model, CommandSpec, Invocation};
use crate::args::is_keyword;
use crate::config;
use crate::docs::{ArgDoc, ArgKind, CommandDocs, KeyAccess, SINCE};
use crate::datatype::BANDIT_TYPE;
use crate::error::{CommandError, Result};

pub const SPEC: CommandSpec = CommandSpec {
    name: "bandit.create",
    flags: "write deny-oom",
    acl_categories: "write",
    keys: (1, 1, 1),
    min_argc: 4,
    handler,
    docs: CommandDocs {
        summary: c"Creates an empty model with its dim, exploration ALPHA, ridge prior LAMBDA and forgetting DECAY",
        complexity: c"O(1)",
        since: SINCE,
        key: KeyAccess::Create,
        args: &[
            ArgDoc::new(c"key", ArgKind::Key),
            ArgDoc::new(c"dim", ArgKind::Integer).token(c"DIM"),
            ArgDoc::new(c"alpha", ArgKind::Double).token(c"ALPHA").optional(),
            ArgDoc::new(c"lambda", ArgKind::Double).token(c"LAMBDA").optional(),
            ArgDoc::new(c"decay", ArgKind::Double).token(c"DECAY").optional(),
        ],
    },
};
entry_point!(entry, SPEC);

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    let defaults = config::get();
    let (mut dim, mut alpha, mut lambda, mut decay) = (None, None, None, None);
    while !call.args.is_empty() {
        let option = call.args.next_arg()?;
        if is_keyword(option, "DIM") {
            dim = Some(call.args.next_usize()?);
        } else if is_keyword(option, "ALPHA") {
            alpha = Some(call.args.next_f64()?);
        } else if is_keyword(option, "LAMBDA") {
            lambda = Some(call.args.next_f64()?);
        } else if is_keyword(option, "DECAY") {
            decay = Some(call.args.next_f64()?);
        } else {
            return Err(CommandError::unexpected(option));
        }
    }
    let dim = dim.ok_or_else(|| CommandError::SyntaxDetail("DIM is required".into()))?;
    let settings = ModelSettings {
        dim,
        alpha: alpha.unwrap_or(defaults.default_alpha),
        lambda: lambda.unwrap_or(defaults.default_lambda),
        decay: decay.unwrap_or(1.0),
    };
    settings.validate(&defaults.limits)?;

    let key = call.ctx.open_key_writable(&call.key);
    if let Some(existing) = write_model(&key)? {
        // Settings left out count at the module's defaults, as they would for
        // a new model: rerunning a set-up script is a no-op, asking for other
        // settings is an error.
        let have = *existing.settings();
        if have != settings {
            return Err(CommandError::Exists(format!(
                "the model exists with {}; this CREATE asks for {}",
                describe(&have),
                describe(&settings)
            )));
        }
        call.reply.simple(c"OK");
        return Ok(());
    }
    key.set_value(&BANDIT_TYPE, Model::new(settings)).map_err(|_| CommandError::WrongType)?;
    // Stated in full: a replica's module defaults may differ from ours.
    let stated = StatedSettings::new(&settings);
    publish_change(call, SPEC.name, Some(&stated.arguments()));
    call.reply.simple(c"OK");
    Ok(())
}

/// `DIM d ALPHA a LAMBDA l DECAY γ` with every value written out (numbers at
/// their shortest round-trip text), for replication and the AOF rewrite.
#[derive(Debug)]
pub struct StatedSettings {
    dim: String,
    alpha: String,
    lambda: String,
    decay: String,
}

impl StatedSettings {
    pub fn new(settings: &ModelSettings) -> Self {
        Self {
            dim: settings.dim.to_string(),
            alpha: Shortest(settings.alpha).to_string(),
            lambda: Shortest(settings.lambda).to_string(),
            decay: Shortest(settings.decay).to_string(),
        }
    }

    /// The arguments after the key.
    pub fn arguments(&self) -> [&[u8]; 8] {
        [
            b"DIM",
            self.dim.as_bytes(),
            b"ALPHA",
            self.alpha.as_bytes(),
            b"LAMBDA",
            self.lambda.as_bytes(),
            b"DECAY",
            self.decay.as_bytes(),
        ]
    }
}

fn describe(settings: &ModelSettings) -> String {
    format!("DIM {} {}", settings.dim, PayloadSettings::of(settings))
}
