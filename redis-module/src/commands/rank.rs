//! `BANDIT.RANK key CONTEXT x1 … xd | CONTEXTBLOB blob [ARMS n id1 … idn]
//! [TOP k] [ALPHA a] [POLICY UCB | EGREEDY ε | SOFTMAX τ | TS] [EVENTID id]
//! [WITHSCORES] [WITHPROBS]` → ids best first (with scores)
//!
//! Scores with disjoint LinUCB, xᵀθ + α·√(xᵀA⁻¹x), every arm of the model or
//! the ARMS candidates (unknown candidates score with the prior; duplicates
//! count once). WITHSCORES replies as ZRANGE … WITHSCORES does: a flat
//! id/score array in RESP2, [id, score] pairs in RESP3.
//!
//! POLICY explores ([`bandit_core::policy`]): UCB (the default) is the plain
//! ranking; the others draw from a seed of (EVENTID, the model's version),
//! or from the module's own randomness without EVENTID. With EVENTID or
//! WITHPROBS the reply is a decision: a map (RESP3; flat name/value pairs
//! in RESP2) of `version` (the model's, an integer) and `items`, an array
//! of [id, score (WITHSCORES), probability (WITHPROBS)] arrays, top first.
//!
//! This is the hot path: argument bytes are read in place, working memory
//! comes from a per-thread scratch reused across calls, and the reply is
//! written straight to the client.

use std::cell::RefCell;

use bandit_core::policy::{self, Candidate, Placed, Policy, PolicyScratch};
use bandit_core::rng::Rng;
use bandit_core::{Error as CoreError, Model, RankRequest, RankScratch, Ranked};

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
            // As SET's `EX seconds`: a token followed by its value.
            ArgDoc::new(c"policy", ArgKind::OneOf).token(c"POLICY").optional().with(&[
                ArgDoc::new(c"ucb", ArgKind::PureToken).token(c"UCB"),
                ArgDoc::new(c"epsilon", ArgKind::Double).token(c"EGREEDY"),
                ArgDoc::new(c"temperature", ArgKind::Double).token(c"SOFTMAX"),
                ArgDoc::new(c"ts", ArgKind::PureToken).token(c"TS"),
            ]),
            ArgDoc::new(c"eventid", ArgKind::String).token(c"EVENTID").optional(),
            ArgDoc::new(c"withscores", ArgKind::PureToken).token(c"WITHSCORES").optional(),
            ArgDoc::new(c"withprobs", ArgKind::PureToken).token(c"WITHPROBS").optional(),
        ],
    },
};
entry_point!(entry, SPEC);

const KEYWORDS: [&str; 9] = ["CONTEXT", "CONTEXTBLOB", "ARMS", "TOP", "ALPHA", "POLICY", "EVENTID", "WITHSCORES", "WITHPROBS"];

struct Scratch {
    context: Vec<f64>,
    rank: RankScratch,
    policy: PolicyWork,
}

/// The decision form's working memory.
struct PolicyWork {
    means: Vec<f64>,
    candidates: Vec<Candidate>,
    scratch: PolicyScratch,
    placed: Vec<Placed>,
    /// Randomness for requests without EVENTID.
    rng: Rng,
}

thread_local! {
    // Redis runs commands on one thread; this keeps ranking allocation-free
    // after the first calls.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        context: Vec::new(),
        rank: RankScratch::with_threads(config::get().rank_threads),
        policy: PolicyWork {
            means: Vec::new(),
            candidates: Vec::new(),
            scratch: PolicyScratch::default(),
            placed: Vec::new(),
            rng: Rng::new(own_seed()),
        },
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
    let Scratch { context, rank: rank_scratch, policy: policy_work } = scratch;
    context.clear();
    let mut have_context = false;
    let mut candidates: Option<&[&[u8]]> = None;
    let mut top = None;
    let mut alpha = model.settings().alpha;
    let mut with_scores = false;
    let mut with_probs = false;
    let mut policy = Policy::Ucb;
    let mut event_id: Option<&[u8]> = None;

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
        } else if is_keyword(option, "POLICY") {
            policy = parse_policy(&mut call.args)?;
        } else if is_keyword(option, "EVENTID") {
            let id = call.args.next_arg().map_err(|_| CommandError::SyntaxDetail("EVENTID needs a value".into()))?;
            if id.is_empty() {
                return Err(CommandError::SyntaxDetail("EVENTID must not be empty".into()));
            }
            event_id = Some(id);
        } else if is_keyword(option, "WITHSCORES") {
            with_scores = true;
        } else if is_keyword(option, "WITHPROBS") {
            with_probs = true;
        } else {
            return Err(CommandError::unexpected(option));
        }
    }
    if !have_context {
        return Err(CommandError::SyntaxDetail("CONTEXT or CONTEXTBLOB is required".into()));
    }
    let request = RankRequest { context, alpha, top };
    if policy != Policy::Ucb || event_id.is_some() || with_probs {
        let decision = Decision { policy, event_id, with_scores, with_probs };
        return decide(call, model, &request, candidates, &decision, rank_scratch, policy_work);
    }
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

/// `POLICY UCB | EGREEDY ε | SOFTMAX τ | TS`.
fn parse_policy(args: &mut crate::args::Args<'_>) -> Result<Policy> {
    let name = args.next_arg().map_err(|_| CommandError::SyntaxDetail("POLICY needs UCB, EGREEDY ε, SOFTMAX τ or TS".into()))?;
    let policy = if is_keyword(name, "UCB") {
        Policy::Ucb
    } else if is_keyword(name, "TS") {
        Policy::Thompson
    } else if is_keyword(name, "EGREEDY") {
        Policy::EpsilonGreedy { epsilon: args.next_f64()? }
    } else if is_keyword(name, "SOFTMAX") {
        Policy::Softmax { temperature: args.next_f64()? }
    } else {
        return Err(CommandError::SyntaxDetail(format!(
            "unknown POLICY '{}', expected UCB, EGREEDY, SOFTMAX or TS",
            String::from_utf8_lossy(name)
        )));
    };
    policy.validate()?;
    Ok(policy)
}

/// What a decision-form RANK asked for.
struct Decision<'a> {
    policy: Policy,
    event_id: Option<&'a [u8]>,
    with_scores: bool,
    with_probs: bool,
}

/// RANK with a policy, an event id or probabilities: every candidate is
/// scored (TS needs each one's mean and width: a second pass at α = 0), the
/// policy places the top, and the reply carries the model's version.
fn decide(
    call: &mut Invocation<'_>,
    model: &Model,
    request: &RankRequest<'_>,
    ids: Option<&[&[u8]]>,
    decision: &Decision<'_>,
    rank_scratch: &mut RankScratch,
    work: &mut PolicyWork,
) -> Result<()> {
    let PolicyWork { means, candidates, scratch: policy_scratch, placed, rng } = work;
    let every = RankRequest { top: if decision.policy == Policy::Ucb { request.top } else { None }, ..*request };
    if decision.policy == Policy::Thompson && request.alpha > 0.0 {
        means.clear();
        for entry in rank_with(model, ids, &RankRequest { alpha: 0.0, ..every }, rank_scratch)? {
            let at = entry.index as usize;
            if means.len() <= at {
                means.resize(at + 1, 0.0);
            }
            if let Some(mean) = means.get_mut(at) {
                *mean = entry.score;
            }
        }
    }
    candidates.clear();
    for entry in rank_with(model, ids, &every, rank_scratch)? {
        let candidate = match (decision.policy, means.get(entry.index as usize)) {
            (Policy::Thompson, Some(&mean)) if request.alpha > 0.0 => {
                Candidate { index: entry.index, mean, width: ((entry.score - mean) / request.alpha).max(0.0) }
            }
            _ => Candidate { index: entry.index, mean: entry.score, width: 0.0 },
        };
        candidates.push(candidate);
    }
    let top = request.top.unwrap_or(candidates.len());
    if decision.policy == Policy::Thompson && decision.with_probs && candidates.len().saturating_mul(top.min(candidates.len())) > policy::TS_PROBABILITY_BUDGET {
        return Err(CommandError::Other(format!(
            "TS WITHPROBS integrates over every candidate for each of the TOP places: {} candidates x TOP {} is above {}; pass ARMS or a smaller TOP",
            candidates.len(),
            top.min(candidates.len()),
            policy::TS_PROBABILITY_BUDGET
        )));
    }
    let mut seeded;
    let rng = match decision.event_id {
        Some(event_id) => {
            seeded = Rng::new(policy::seed(event_id, model.version()));
            &mut seeded
        }
        None => rng,
    };
    policy::place(decision.policy, request.alpha, candidates, top, rng, policy_scratch, placed, decision.with_probs);
    let id = |index: u32| match ids {
        Some(ids) => ids.get(index as usize).copied().unwrap_or_default(),
        None => model.id_at(index as usize).as_bytes(),
    };
    write_decision(call.reply, model.version(), placed, decision, id);
    Ok(())
}

/// Ranks the candidates, or every arm.
fn rank_with<'s>(model: &Model, ids: Option<&[&[u8]]>, request: &RankRequest<'_>, scratch: &'s mut RankScratch) -> Result<&'s [Ranked]> {
    Ok(match ids {
        Some(ids) => model.rank_candidates(request, ids, scratch)?,
        None => model.rank_all(request, scratch)?,
    })
}

/// The decision reply: {version, items: [[id, score?, probability?], …]}.
fn write_decision<'m>(reply: Reply<'_>, version: u64, placed: &[Placed], decision: &Decision<'_>, id: impl Fn(u32) -> &'m [u8]) {
    if reply.is_resp3() {
        reply.map(2);
    } else {
        reply.array(4);
    }
    reply.bulk(b"version");
    reply.unsigned(version);
    reply.bulk(b"items");
    reply.array(placed.len());
    let fields = 1 + usize::from(decision.with_scores) + usize::from(decision.with_probs);
    for item in placed {
        reply.array(fields);
        reply.bulk(id(item.index));
        if decision.with_scores {
            reply.double(item.score);
        }
        if decision.with_probs {
            reply.double(item.probability);
        }
    }
}

/// A seed for requests without EVENTID: the clock and the thread, mixed.
fn own_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (std::process::id() as u64).rotate_left(32)
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
