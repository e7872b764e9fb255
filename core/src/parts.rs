//! A payload sent in parts: `BANDIT.LOAD … PART token index count` lets a
//! writer cut a flush of tens of megabytes into commands of a few megabytes
//! each, because Redis spends its main thread receiving (and later freeing)
//! every byte of one command at once: an 88 MB LOAD stalled a GET loop for
//! 5–12 ms before the module saw it. The parts are decoded and derived one
//! by one as they come, then joined here into exactly the payload (and
//! derived values) a single LOAD of the same arms would have, which is
//! applied in one step: the flush stays atomic and fenced as a whole.
//!
//! Each part states the same header (dim, settings, offsets, fences, base
//! offsets, version) and its own share of the arms; a part that states
//! another header, or an arm another part has, refuses the whole payload.

use rustc_hash::FxHashSet;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::payload::Payload;
use crate::prepare::Prepared;

/// Most parts one payload may be cut into (4 GiB at the sink's smallest
/// part, 64 KiB).
pub const MAX_PARTS: usize = 65_536;

/// The share of a flush's arms a writer puts in one part unless configured
/// otherwise, in bytes: Redis receives an 8 MB argument in about a
/// millisecond (an 88 MB one in 5–12 ms, during which it serves no one).
pub const DEFAULT_PART_BYTES: usize = 8 << 20;

/// Joins the parts of one payload, in order, each with the values derived
/// from it, into the payload a single LOAD of all their arms would carry.
///
/// # Errors
/// [`Error::InvalidPayload`] for no parts, parts with different headers, or
/// an arm in two parts; [`Error::TooLarge`] when the arms together pass
/// `limits.max_arms`.
pub fn join(parts: Vec<(Payload, Prepared)>, limits: &Limits) -> Result<(Payload, Prepared)> {
    let total: usize = parts.iter().map(|(payload, _)| payload.arms.len()).sum();
    if total > limits.max_arms {
        return Err(Error::TooLarge { what: "number of arms", got: total, limit: limits.max_arms });
    }
    let mut parts = parts.into_iter().enumerate();
    let Some((_, (mut payload, mut prepared))) = parts.next() else {
        return Err(Error::InvalidPayload("a payload in parts has no parts".into()));
    };
    if !prepared.fits(&payload) {
        return Err(Error::InvalidPayload("prepared values belong to another payload".into()));
    }
    payload.arms.reserve(total.saturating_sub(payload.arms.len()));
    prepared.reserve(total.saturating_sub(payload.arms.len()));
    let mut ids: FxHashSet<String> = FxHashSet::default();
    ids.reserve(total);
    ids.extend(payload.arms.iter().map(|arm| arm.id.clone()));
    for (index, (part, derived)) in parts {
        if !same_header(&payload, &part) {
            return Err(Error::InvalidPayload(format!(
                "part {index} states another header (dim, settings, offsets, fences, base offsets or version) than part 0"
            )));
        }
        if !derived.fits(&part) {
            return Err(Error::InvalidPayload("prepared values belong to another payload".into()));
        }
        if let Some(arm) = part.arms.iter().find(|arm| !ids.insert(arm.id.clone())) {
            return Err(Error::InvalidPayload(format!("arm '{}' appears twice (again in part {index})", arm.id)));
        }
        payload.arms.extend(part.arms);
        prepared.append(derived);
    }
    Ok((payload, prepared))
}

/// Everything but the arms is equal.
fn same_header(first: &Payload, other: &Payload) -> bool {
    first.dim == other.dim
        && first.settings == other.settings
        && first.offsets == other.offsets
        && first.base_offsets == other.base_offsets
        && first.version == other.version
        && first.fences == other.fences
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::packed;
    use crate::payload::{ArmPayload, PayloadSettings};

    fn arm(id: &str, scale: f64) -> ArmPayload {
        let dim = 3;
        // A hand-made positive definite A⁻¹ (diagonal) and b, distinct per arm.
        let mut a_inv = vec![0.0; packed::len(dim)];
        for (i, slot) in [0, 3, 5].into_iter().enumerate() {
            a_inv[slot] = scale / (i as f64 + 2.0);
        }
        ArmPayload {
            id: id.into(),
            a_inv,
            b: vec![scale, -0.5 * scale, 0.25],
            a: None,
            n: 3,
            reward_sum: scale,
            updated_ms: Some(17),
        }
    }

    fn header(arms: Vec<ArmPayload>) -> Payload {
        Payload {
            dim: 3,
            arms,
            offsets: vec![(0, 40), (2, 7)],
            settings: Some(PayloadSettings { alpha: 0.7, lambda: 2.0, decay: 1.0 }),
            base_offsets: vec![(0, 12), (2, -1)],
            version: None,
            fences: vec![(0, 1, 9)],
        }
    }

    fn prepared(payload: Payload) -> (Payload, Prepared) {
        let derived = Prepared::new(&payload);
        (payload, derived)
    }

    #[test]
    fn joined_parts_equal_the_whole_payload_and_its_derived_values() {
        let arms = [arm("a", 1.0), arm("b", 2.5), arm("c", 0.3), arm("d", 4.0), arm("e", 1.7)];
        let whole = header(arms.to_vec());
        let parts =
            vec![prepared(header(arms[..2].to_vec())), prepared(header(arms[2..3].to_vec())), prepared(header(arms[3..].to_vec()))];
        let (payload, derived) = join(parts, &Limits::default()).unwrap();
        assert_eq!(payload, whole);
        assert_eq!(derived, Prepared::new(&whole));
    }

    #[test]
    fn one_part_is_the_payload() {
        let whole = header(vec![arm("a", 1.0)]);
        let (payload, derived) = join(vec![prepared(whole.clone())], &Limits::default()).unwrap();
        assert_eq!(payload, whole);
        assert_eq!(derived, Prepared::new(&whole));
    }

    #[test]
    fn parts_that_disagree_are_refused() {
        let limits = Limits::default();
        let other_offsets = {
            let mut part = header(vec![arm("b", 1.0)]);
            part.offsets = vec![(0, 41), (2, 7)];
            part
        };
        let other_fences = {
            let mut part = header(vec![arm("b", 1.0)]);
            part.fences = vec![(0, 1, 8)];
            part
        };
        let no_settings = {
            let mut part = header(vec![arm("b", 1.0)]);
            part.settings = None;
            part
        };
        for part in [other_offsets, other_fences, no_settings] {
            let error = join(vec![prepared(header(vec![arm("a", 1.0)])), prepared(part)], &limits).unwrap_err();
            assert!(error.to_string().contains("part 1 states another header"), "{error}");
        }
        let twice = join(vec![prepared(header(vec![arm("a", 1.0)])), prepared(header(vec![arm("a", 2.0)]))], &limits);
        assert!(twice.unwrap_err().to_string().contains("arm 'a' appears twice"));
        assert!(join(Vec::new(), &limits).is_err());
        let small = Limits { max_arms: 2, ..Limits::default() };
        let three = vec![prepared(header(vec![arm("a", 1.0), arm("b", 1.0)])), prepared(header(vec![arm("c", 1.0)]))];
        assert!(matches!(join(three, &small), Err(Error::TooLarge { got: 3, .. })));
    }

    #[test]
    fn values_derived_from_another_payload_are_refused() {
        let first = header(vec![arm("a", 1.0)]);
        let second = header(vec![arm("b", 1.0), arm("c", 1.0)]);
        let mismatched = (second, Prepared::new(&first));
        assert!(join(vec![prepared(first.clone()), mismatched], &Limits::default()).is_err());
    }
}
