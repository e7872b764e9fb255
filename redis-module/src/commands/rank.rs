//! `BANDIT.RANK key CONTEXT x1 … xd | CONTEXTBLOB blob [ARMS n id1 … idn]
//! [TOP k] [ALPHA a] [WITHSCORES]` → ids best first (with scores)
//!
//! Scores with disjoint LinUCB, xᵀθ + α·√(xᵀA⁻¹x), every arm of the model or
//! the ARMS candidates (unknown candidates score with the prior; duplicates
//! count once). WITHSCORES replies as ZRANGE … WITHSCORES does: a flat
//! id/score array in RESP2, [id, score] pairs in RESP3.
//!
//! This is the hot path: argument bytes are read in place, working memory
//! comes from a per-thread scratch reused across calls, and the reply is
//! written straight to the client.

use std::cell::RefCell;

use bandit_core::{Error as CoreError, RankRequest, RankScratch, Ranked};

use super::{entry_point, read_model, CommandSpec, Invocation};
use crate::args::{is_keyword, parse_f64};
use crate::config;
use crate::docs::{ArgDoc, ArgKind, CommandDocs, KeyAccess, SINCE};
use crate::error::{CommandError, Result};
use crate::reply::Reply;

pub const SPEC: CommandSpec = CommandSpec {
    name: "bandit.rank",
    flags: "readonly fast",
    acl_categories: "read fast",
    keys: (1, 1, 1),
    min_argc: 4,
    handler,
    docs: CommandDocs {
        summary: c"Ranks a model's arms (or the given candidates) for a context by LinUCB score, best first",
        complexity: c"O(N*d^2) for N candidate arms of dim d",
        since: SINCE,
        key: KeyAccess::Read,
        args: &[
            ArgDoc::new(c"key", ArgKind::Key),
            ArgDoc::new(c"context", ArgKind::OneOf).with(&[
                ArgDoc::new(c"x", ArgKind::Double).token(c"CONTEXT").multiple(),
                ArgDoc::new(c"blob", ArgKind::String).token(c"CONTEXTBLOB"),
            ]),
            ArgDoc::new(c"arms", ArgKind::Block).token(c"ARMS").optional().with(&[
                ArgDoc::new(c"numarms", ArgKind::Integer),
                ArgDoc::new(c"id", ArgKind::String).multiple(),
            ]),
            ArgDoc::new(c"top", ArgKind::Integer).token(c"TOP").optional(),
            ArgDoc::new(c"alpha", ArgKind::Double).token(c"ALPHA").optional(),
            ArgDoc::new(c"withscores", ArgKind::PureToken).token(c"WITHSCORES").optional(),
        ],
    },
};
entry_point!(entry, SPEC);

const KEYWORDS: [&str; 6] = ["CONTEXT", "CONTEXTBLOB", "ARMS", "TOP", "ALPHA", "WITHSCORES"];

struct Scratch {
    context: Vec<f64>,
    rank: RankScratch,
}

thread_local! {
    // Redis runs commands on one thread; this keeps ranking allocation-free
    // after the first calls.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        context: Vec::new(),
        rank: RankScratch::with_threads(config::get().rank_threads),
    });
}

fn handler(call: &mut Invocation<'_>) -> Result<()> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.try_borrow_mut().map_err(|_| CommandError::Other("re-entrant RANK".into()))?;
        rank(call, &mut scratch)
    })
}

fn rank(call: &mut Invocation<'_>, scratch: &mut Scratch) -> Result<()> {
    let key = call.ctx.open_key(&call.key);
    let model = read_model(&key)?;
    let limits = &config::get().limits;
    let Scratch { context, rank: rank_scratch } = scratch;
    context.clear();
    let mut have_context = false;
    let mut candidates: Option<&[&[u8]]> = None;
    let mut top = None;
    let mut alpha = model.settings().alpha;
    let mut with_scores = false;

    while let Some(option) = call.args.peek() {
        call.args.next_arg()?;
        if is_keyword(option, "CONTEXT") {
            if have_context {
                return Err(CommandError::SyntaxDetail("CONTEXT or CONTEXTBLOB given twice".into()));
            }
            have_context = true;
            // Values run until the first argument that is not a number; a
            // non-number before dim values is a bad value, after them an option.
            while let Some(value) = call.args.peek() {
                match parse_f64(value) {
                    Ok(number) => context.push(number),
                    Err(CommandError::NotFinite) => return Err(CommandError::NotFinite),
                    Err(_) if KEYWORDS.iter().any(|k| is_keyword(value, k)) => break,
                    Err(_) if context.len() < model.dim() => return Err(CommandError::NotAFloat),
                    Err(_) => break,
                }
                call.args.next_arg()?;
            }
        } else if is_keyword(option, "CONTEXTBLOB") {
            if have_context {
                return Err(CommandError::SyntaxDetail("CONTEXT or CONTEXTBLOB given twice".into()));
            }
            have_context = true;
            read_blob(call.args.next_arg()?, model.dim(), context)?;
        } else if is_keyword(option, "ARMS") {
            candidates = Some(call.args.next_id_list(limits)?);
        } else if is_keyword(option, "TOP") {
            let k = call.args.next_usize()?;
            if k > limits.max_top {
                return Err(CoreError::TooLarge { what: "TOP", got: k, limit: limits.max_top }.into());
            }
            top = Some(k);
        } else if is_keyword(option, "ALPHA") {
            alpha = call.args.next_f64()?;
            if alpha < 0.0 {
                return Err(CommandError::Other("ALPHA must be a finite number >= 0".into()));
            }
        } else if is_keyword(option, "WITHSCORES") {
            with_scores = true;
        } else {
            return Err(CommandError::unexpected(option));
        }
    }
    if !have_context {
        return Err(CommandError::SyntaxDetail("CONTEXT or CONTEXTBLOB is required".into()));
    }
    let request = RankRequest { context, alpha, top };
    match candidates {
        Some(ids) => {
            let ranked = model.rank_candidates(&request, ids, rank_scratch)?;
            write(call.reply, ranked, with_scores, |i| ids.get(i).copied().unwrap_or_default());
        }
        None => {
            let ranked = model.rank_all(&request, rank_scratch)?;
            write(call.reply, ranked, with_scores, |row| model.id_at(row).as_bytes());
        }
    }
    Ok(())
}

/// Decodes d little-endian float32 (4·d bytes) or float64 (8·d bytes).
fn read_blob(blob: &[u8], dim: usize, out: &mut Vec<f64>) -> Result<()> {
    if blob.len() == 4 * dim {
        let (values, _) = blob.as_chunks::<4>();
        out.extend(values.iter().map(|&bytes| f64::from(f32::from_le_bytes(bytes))));
    } else if blob.len() == 8 * dim {
        let (values, _) = blob.as_chunks::<8>();
        out.extend(values.iter().map(|&bytes| f64::from_le_bytes(bytes)));
    } else {
        return Err(CommandError::Other(format!(
            "CONTEXTBLOB has {} bytes, expected {} (float32) or {} (float64) for dim {dim}",
            blob.len(),
            4 * dim,
            8 * dim
        )));
    }
    if out.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(CommandError::NotFinite)
    }
}

fn write<'m>(reply: Reply<'_>, ranked: &[Ranked], with_scores: bool, id: impl Fn(usize) -> &'m [u8]) {
    match (with_scores, reply.is_resp3()) {
        (false, _) => {
            reply.array(ranked.len());
            for entry in ranked {
                reply.bulk(id(entry.index as usize));
            }
        }
        (true, false) => {
            reply.array(ranked.len() * 2);
            for entry in ranked {
                reply.bulk(id(entry.index as usize));
                reply.double(entry.score);
            }
        }
        (true, true) => {
            reply.array(ranked.len());
            for entry in ranked {
                reply.array(2);
                reply.bulk(id(entry.index as usize));
                reply.double(entry.score);
            }
        }
    }
}
