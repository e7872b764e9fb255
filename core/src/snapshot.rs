//! The persistent encoding of a whole [`Model`], written into RDB files.
//!
//! Redis stores the encoding version next to each value and hands it back at
//! load; [`decode`] matches on it, so a later layout adds a version here and
//! keeps reading the old ones. Version 1 is the model's column vectors in the
//! fixed-width little-endian layout of [`crate::wire`] (what bincode wrote in
//! earlier builds, byte for byte), kept as they are in memory so a reload is
//! exact to the bit (the f32 ranking copy is rebuilt from them):
//! dim, alpha, lambda, ids, params, b, gram, has_gram, n, reward_sum,
//! updated_ms, offsets (partition, offset pairs), loads, last_load_ms.
//! Version 2 adds the model's decay after lambda; version 1 models have none
//! (decay 1). Version 3 adds the trainer's sequence fences at the end, after
//! last_load_ms: a u64 count, then (i32 partition, i32 source partition,
//! u64 seq) per fence; version 1 and 2 models have none.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::model::{ArmView, Model, ModelSettings};
use crate::packed;
use crate::wire::{put_f64, put_f64s, put_fences, put_offsets, put_str, put_u64, Reader};

/// Values without a count (a column written arm by arm after its count).
fn put_values<'v>(out: &mut Vec<u8>, values: impl IntoIterator<Item = &'v f64>) {
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// The version [`encode`] writes.
pub const VERSION: i32 = 3;

/// Encodes a model at [`VERSION`].
///
/// # Errors
/// None today; the signature leaves room for encoders that can fail.
pub fn encode(model: &Model) -> Result<Vec<u8>> {
    let settings = model.settings();
    let dim = settings.dim;
    let (stride, plen) = (model.stride, packed::len(dim));
    let arms = model.ids.len();
    let mut out = Vec::with_capacity(
        64 + 8 * arms * (stride + dim + plen + 3) + model.ids.iter().map(|id| id.len() + 8).sum::<usize>(),
    );
    put_u64(&mut out, settings.dim as u64);
    put_f64(&mut out, settings.alpha);
    put_f64(&mut out, settings.lambda);
    put_f64(&mut out, settings.decay);
    put_u64(&mut out, model.ids.len() as u64);
    for id in &model.ids {
        put_str(&mut out, id);
    }
    // The columns as earlier builds kept them in memory: [θ | A⁻¹] rows, b
    // rows, A rows (zeros for an arm without A), then a has-A flag per arm.
    let views: Vec<ArmView<'_>> = (0..arms).filter_map(|row| model.arm(row)).collect();
    put_u64(&mut out, (views.len() * stride) as u64);
    views.iter().for_each(|view| put_values(&mut out, view.theta.iter().chain(view.a_inv)));
    put_u64(&mut out, (views.len() * dim) as u64);
    views.iter().for_each(|view| put_values(&mut out, view.b));
    put_u64(&mut out, (views.len() * plen) as u64);
    for view in &views {
        match view.a {
            Some(a) => put_values(&mut out, a),
            None => out.resize(out.len() + 8 * plen, 0),
        }
    }
    put_u64(&mut out, views.len() as u64);
    out.extend(views.iter().map(|view| u8::from(view.a.is_some())));
    put_u64(&mut out, model.n.len() as u64);
    model.n.iter().for_each(|&n| put_u64(&mut out, n));
    put_f64s(&mut out, &model.reward_sum);
    put_u64(&mut out, model.updated_ms.len() as u64);
    model.updated_ms.iter().for_each(|ms| out.extend_from_slice(&ms.to_le_bytes()));
    put_offsets(&mut out, model.offsets.iter().map(|(&partition, &offset)| (partition, offset)));
    put_u64(&mut out, model.loads);
    out.extend_from_slice(&model.last_load_ms.to_le_bytes());
    put_fences(&mut out, model.fences.iter().map(|(&(partition, source), &seq)| (partition, source, seq)));
    Ok(out)
}

/// Decodes a model written at `version`, checking that every column agrees
/// with the dim and arm count so a damaged file cannot yield a model that
/// misbehaves later.
///
/// # Errors
/// [`Error::UnsupportedSnapshot`] for an unknown version,
/// [`Error::InvalidPayload`] for damaged bytes.
pub fn decode(version: i32, bytes: &[u8], limits: &Limits) -> Result<Model> {
    match version {
        1 => decode_columns(read_columns(bytes, Layout { decay: false, fences: false })?, limits),
        2 => decode_columns(read_columns(bytes, Layout { decay: true, fences: false })?, limits),
        3 => decode_columns(read_columns(bytes, Layout { decay: true, fences: true })?, limits),
        other => Err(Error::UnsupportedSnapshot(other)),
    }
}

/// What a snapshot version holds beyond version 1.
#[derive(Debug, Clone, Copy)]
struct Layout {
    decay: bool,
    fences: bool,
}

/// The columns of a snapshot, as read.
struct Columns {
    dim: usize,
    alpha: f64,
    lambda: f64,
    decay: f64,
    ids: Vec<Box<str>>,
    params: Vec<f64>,
    b: Vec<f64>,
    gram: Vec<f64>,
    has_gram: Vec<bool>,
    n: Vec<u64>,
    reward_sum: Vec<f64>,
    updated_ms: Vec<i64>,
    offsets: BTreeMap<i32, i64>,
    loads: u64,
    last_load_ms: i64,
    fences: Vec<(i32, i32, u64)>,
}

fn read_columns(bytes: &[u8], layout: Layout) -> Result<Columns> {
    let mut r = Reader::new(bytes, "model snapshot");
    let dim = r.usize()?;
    let alpha = r.f64()?;
    let lambda = r.f64()?;
    let decay = if layout.decay { r.f64()? } else { 1.0 };
    let count = r.len(8)?;
    let ids = (0..count).map(|_| r.str().map(Box::from)).collect::<Result<Vec<Box<str>>>>()?;
    let params = r.f64s()?;
    let b = r.f64s()?;
    let gram = r.f64s()?;
    let count = r.len(1)?;
    let has_gram = (0..count).map(|_| r.flag()).collect::<Result<Vec<bool>>>()?;
    let count = r.len(8)?;
    let n = (0..count).map(|_| r.u64()).collect::<Result<Vec<u64>>>()?;
    let reward_sum = r.f64s()?;
    let count = r.len(8)?;
    let updated_ms = (0..count).map(|_| r.i64()).collect::<Result<Vec<i64>>>()?;
    // Collected into a map as bincode read one: a repeated partition keeps its last offset.
    let offsets: BTreeMap<i32, i64> = r.offsets()?.into_iter().collect();
    let loads = r.u64()?;
    let last_load_ms = r.i64()?;
    let fences = if layout.fences { r.fences()? } else { Vec::new() };
    r.finish()?;
    Ok(Columns { dim, alpha, lambda, decay, ids, params, b, gram, has_gram, n, reward_sum, updated_ms, offsets, loads, last_load_ms, fences })
}

fn decode_columns(columns: Columns, limits: &Limits) -> Result<Model> {
    let settings = ModelSettings { dim: columns.dim, alpha: columns.alpha, lambda: columns.lambda, decay: columns.decay };
    // Persisted models were valid when written; a later, smaller max-dim must
    // not make them unloadable, so only the structural bounds are checked.
    settings.validate(&Limits { max_dim: usize::MAX, ..*limits })?;
    let arms = columns.ids.len();
    let dim = columns.dim;
    let plen = packed::len(dim);
    let damaged = |what: &str| Error::InvalidPayload(format!("model snapshot: {what} does not match {arms} arms of dim {dim}"));
    let stride = dim + plen;
    let lengths_ok = columns.params.len() == arms * stride
        && columns.b.len() == arms * dim
        && columns.gram.len() == arms * plen
        && columns.has_gram.len() == arms
        && columns.n.len() == arms
        && columns.reward_sum.len() == arms
        && columns.updated_ms.len() == arms;
    if !lengths_ok {
        return Err(damaged("column lengths"));
    }
    // Fences as the encoder writes them: ascending pairs, each for a
    // partition with an offset (the model only ever writes them together).
    let mut fences = BTreeMap::new();
    for &(partition, source, seq) in &columns.fences {
        let ascending = fences.last_key_value().is_none_or(|(&last, _)| last < (partition, source));
        if !ascending || !columns.offsets.contains_key(&partition) {
            return Err(Error::InvalidPayload(format!(
                "model snapshot: the fence of partition {partition}, source partition {source} is out of order or has no offset"
            )));
        }
        fences.insert((partition, source), seq);
    }
    let mut index = FxHashMap::default();
    index.reserve(arms);
    for (id, row) in columns.ids.iter().zip(0u32..) {
        if index.insert(id.clone(), row).is_some() {
            return Err(damaged("a repeated id"));
        }
    }
    // Model::new derives the same stride and ranking layout from the dim.
    let mut model = Model::new(settings);
    model.ids = columns.ids;
    model.index = std::sync::Arc::new(index);
    let rows = columns.params.chunks_exact(stride.max(1)).zip(columns.b.chunks_exact(dim.max(1)));
    let grams = columns.gram.chunks_exact(plen.max(1)).zip(&columns.has_gram);
    model.exact = rows
        .zip(grams)
        .map(|((params, b), (gram, &has_gram))| [params, b, if has_gram { gram } else { &[] }].concat().into_boxed_slice())
        .collect();
    // The f32 ranking copy and its bounds are derived, not stored.
    model.rebuild_ranking();
    model.n = columns.n;
    model.reward_sum = columns.reward_sum;
    model.updated_ms = columns.updated_ms;
    model.offsets = columns.offsets;
    model.fences = fences;
    model.loads = columns.loads;
    model.last_load_ms = columns.last_load_ms;
    Ok(model)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::payload::{ArmPayload, Payload};

    #[test]
    fn round_trip_is_exact_and_versions_are_checked() {
        let mut model = Model::new(ModelSettings { dim: 2, alpha: 0.5, lambda: 1.5, decay: 0.75 });
        let arm = |id: &str, scale: f64, gram: bool, updated_ms: Option<i64>| ArmPayload {
            id: id.into(),
            a_inv: vec![0.3 * scale, 0.1, 0.2 * scale],
            b: vec![0.1 * scale, -0.2],
            a: gram.then(|| vec![1.0 * scale, 0.0, 1.0]),
            n: 3,
            reward_sum: 1.5 * scale,
            updated_ms,
        };
        let payload = Payload {
            dim: 2,
            arms: vec![arm("x", 1.0, true, Some(77)), arm("ÿ-2", 2.0, false, None), arm("z", 3.0, true, Some(-5))],
            offsets: vec![(4, 40), (0, 3)],
            settings: None,
            base_offsets: vec![],
            version: None,
            fences: vec![],
        };
        model.apply(&payload, 5, &Limits::default()).unwrap();
        model.apply(&Payload { arms: vec![arm("x", 4.0, false, Some(78))], offsets: vec![], ..payload.clone() }, 6, &Limits::default()).unwrap();
        let bytes = encode(&model).unwrap();
        let decoded = decode(VERSION, &bytes, &Limits::default()).unwrap();
        assert_eq!(decoded, model);
        // The arms come back in their rows with their own values, the
        // ranking copy rebuilt, offsets and counters kept.
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded.export(None), model.export(None));
        assert_eq!(decoded.arm(1).unwrap().id, "ÿ-2");
        assert_eq!(decoded.arm(1).unwrap().updated_ms, 5);
        assert_eq!(decoded.arm(0).unwrap().a, None, "x was replaced by a version without A");
        assert_eq!(decoded.stats().loads, 2);
        assert_eq!(decode(4, &bytes, &Limits::default()).unwrap_err(), Error::UnsupportedSnapshot(4));
        // Version 2 is version 3 without the fence list (here empty: a u64 0).
        let (v2, fences) = bytes.split_at(bytes.len() - 8);
        assert_eq!(fences, 0u64.to_le_bytes());
        let v2_model = decode(2, v2, &Limits::default()).unwrap();
        assert_eq!(v2_model, model);
        assert!(decode(2, &bytes, &Limits::default()).is_err(), "version 2 has no fence list");
        // Version 1 is version 2 without the decay.
        let v1 = [&v2[..24], &v2[32..]].concat();
        let old = decode(1, &v1, &Limits::default()).unwrap();
        assert_eq!(old.settings().decay, 1.0);
        assert_eq!(old.export(None).arms, model.export(None).arms);
        assert!(old.fences().is_empty());
        assert!(decode(VERSION, &bytes[..bytes.len() - 3], &Limits::default()).is_err());
    }

    #[test]
    fn fences_round_trip_at_the_end_of_version_3() {
        let mut model = Model::new(ModelSettings { dim: 1, alpha: 0.5, lambda: 1.5, decay: 1.0 });
        let payload = Payload {
            dim: 1,
            offsets: vec![(0, 3), (2, 9)],
            fences: vec![(0, 1, 196_609), (0, 4, 7), (2, 1, u64::MAX)],
            ..Payload::default()
        };
        model.apply(&payload, 5, &Limits::default()).unwrap();
        let before_fences = encode(&Model::new(*model.settings())).unwrap().len();
        let bytes = encode(&model).unwrap();
        // Written out by hand: the count, then (i32, i32, u64) per fence in
        // (partition, source partition) order, after last_load_ms.
        let mut want = 3u64.to_le_bytes().to_vec();
        for (partition, source, seq) in [(0i32, 1i32, 196_609u64), (0, 4, 7), (2, 1, u64::MAX)] {
            want.extend(partition.to_le_bytes());
            want.extend(source.to_le_bytes());
            want.extend(seq.to_le_bytes());
        }
        assert_eq!(&bytes[bytes.len() - want.len()..], want.as_slice());
        assert!(bytes.len() > before_fences);
        let decoded = decode(VERSION, &bytes, &Limits::default()).unwrap();
        assert_eq!(decoded, model);
        assert_eq!(decoded.fences().iter().map(|(&(p, s), &q)| (p, s, q)).collect::<Vec<_>>(), payload.fences);
        assert_eq!(decoded.export(None).fences, payload.fences);
        for cut in 1..=want.len() {
            assert!(decode(VERSION, &bytes[..bytes.len() - cut], &Limits::default()).is_err(), "cut {cut}");
        }
        // A fence for a partition with no offset cannot come from a model.
        let mut damaged = bytes.clone();
        let at = bytes.len() - want.len() + 8;
        damaged[at..at + 4].copy_from_slice(&1i32.to_le_bytes());
        let error = decode(VERSION, &damaged, &Limits::default()).unwrap_err();
        assert!(error.to_string().contains("fence of partition 1, source partition 1"), "{error}");
    }
}
