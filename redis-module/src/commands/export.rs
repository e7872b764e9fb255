//! `BANDIT.EXPORT key [ARMS n id1 … idn] [FORMAT BINARY|JSON]` → payload
//!
//! The payload that `BANDIT.LOAD` takes, with A⁻¹, b, A (when stored), n,
//! reward_sum, update times and every stored offset, so that LOAD(EXPORT(m))
//! restores m exactly. ARMS limits it to the listed ids; ids the model does
//! not hold are left out. BINARY (the default) is compact; JSON is readable.

use bandit_core::codec::{self, Format};

use super::{entry_point, read_model, CommandSpec, Invocation};
use crate::args::is_keyword;
use crate::config;
use crate::docs::{ArgDoc, ArgKind, CommandDocs, KeyAccess, SINCE};
use crate::error::{CommandError, Result};

pub const SPEC: CommandSpec = CommandSpec {
    name: "bandit.export",
    flags: "readonly",
    acl_categories: "read",
    keys: (1, 1, 1),
    min_argc: 2,
    handler,
    docs: CommandDocs {
        summary: c"The payload BANDIT.LOAD takes: the model's settings, arms and offsets, for backups and trainers",
        complexity: c"O(N*d^2) for N arms of dim d",
        since: SINCE,
        key: KeyAccess::Read,
        args: &[
            ArgDoc::new(c"key", ArgKind::Key),
            ArgDoc::new(c"arms", ArgKind::Block).token(c"ARMS").optional().with(&[
                ArgDoc::new(c"numarms", ArgKind::Integer),
                ArgDoc::new(c"id", ArgKind::String).multiple(),
            ]),
            ArgDoc::new(c"format", ArgKind::OneOf).token(c"FORMAT").optional().with(&[
                ArgDoc::new(c"binary", ArgKind::PureToken).token(c"BINARY"),
                ArgDoc::new(c"json", ArgKind::PureToken).token(c"JSON"),
            ]),
        ],
    },
};
entry_point!(entry, SPEC);

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    let limits = &config::get().limits;
    let mut ids: Option<&[&[u8]]> = None;
    let mut format = Format::Binary;
    while !call.args.is_empty() {
        let option = call.args.next_arg()?;
        if is_keyword(option, "ARMS") {
            ids = Some(call.args.next_id_list(limits)?);
        } else if is_keyword(option, "FORMAT") {
            let name = call.args.next_arg()?;
            format = if is_keyword(name, "BINARY") {
                Format::Binary
            } else if is_keyword(name, "JSON") {
                Format::Json
            } else {
                return Err(CommandError::SyntaxDetail("FORMAT is BINARY or JSON".into()));
            };
        } else {
            return Err(CommandError::unexpected(option));
        }
    }
    let key = call.ctx.open_key(&call.key);
    let model = read_model(&key)?;
    let payload = match ids {
        None => model.export(None),
        Some(ids) => {
            let mut taken = vec![false; model.len()];
            let rows: Vec<usize> = ids
                .iter()
                .filter_map(|id| model.row_of(id))
                .filter(|&row| taken.get_mut(row).is_some_and(|t| !std::mem::replace(t, true)))
                .collect();
            model.export(Some(&rows))
        }
    };
    let bytes = codec::encode(&payload, format)?;
    call.reply.bulk(&bytes);
    Ok(())
}
