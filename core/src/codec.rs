//! The two encodings of a [`Payload`], each encoder beside its decoder.
//!
//! Binary: the 4-byte magic `BNDT`, a little-endian u16 format version, then
//! the body. Version 1 is the payload in the fixed-width little-endian
//! layout of [`crate::wire`] (what earlier builds wrote through bincode); version 2 is the model's
//! settings (ALPHA, LAMBDA, DECAY as three little-endian f64) followed by the version-1
//! body. The encoder writes version 1 when the payload states no settings
//! (what the trainer sends, byte for byte what earlier builds wrote) and
//! version 2 when it does (exports). Version 3 is for payloads with base
//! offsets (the trainer's compare-and-set, see [`Payload::base_offsets`]): a
//! flags byte (1: settings follow, 2: base offsets follow, 4: the model
//! version follows), the settings as in version 2 when flagged, the base
//! offsets as a u64 count of (i32 partition, i64 offset) pairs when flagged,
//! the version as a u64 when flagged, then the version-1 body. Version 3 is
//! also what a payload with a model version (an AOF rewrite's, see
//! [`Payload::version`]) is written as, and one with sequence fences
//! ([`Payload::fences`]): flag 8, after the version, a u64 count of
//! (i32 partition, i32 source partition, u64 seq) entries. Builds that
//! predate a flag refuse a payload that sets it (unknown flags) rather than
//! drop what it carries.
//! Compact and exact.
//!
//! JSON: `{"dim": 3, "alpha": 0.5, "lambda": 2, "arms": [{"id": "42",
//! "a_inv": [[..],..], "b": [..], "a": [[..],..], "n": 10, "reward_sum": 3.0,
//! "updated_ms": ..}], "offsets": {"0": 1234}, "fences": {"0": {"2": 196608}}}`,
//! with full matrices for readability; `alpha` and `lambda` are optional
//! and go together; `fences` (partition → source partition → seq) is
//! optional and left out when empty, as are `base_offsets` and `version`. Floats are
//! written in their shortest round-tripping form, so JSON is exact too.
//!
//! [`decode`] tells the two apart by the first byte (`{` is JSON) and always
//! validates what it returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::packed;
use crate::payload::{ArmPayload, Payload, PayloadSettings};
use crate::wire::Reader;

/// First bytes of every binary payload.
pub const MAGIC: &[u8; 4] = b"BNDT";
/// The binary layout without settings (what the trainer writes).
pub const BINARY_VERSION: u16 = 1;
/// The binary layout with the model's settings before the version-1 body.
pub const BINARY_VERSION_WITH_SETTINGS: u16 = 2;
/// The binary layout with flags, optional settings and optional base offsets.
pub const BINARY_VERSION_WITH_BASE: u16 = 3;
const FLAG_SETTINGS: u8 = 1;
const FLAG_BASE: u8 = 2;
const FLAG_VERSION: u8 = 4;
const FLAG_FENCES: u8 = 8;
#[cfg(test)]
const HEADER_LEN: usize = MAGIC.len() + 2;

/// Relative tolerance for a JSON matrix to count as symmetric; writers that
/// invert with a general routine produce tiny asymmetries.
const SYMMETRY_TOLERANCE: f64 = 1e-9;

/// The encodings a payload can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary,
    Json,
}

/// Decodes and validates a payload in either format.
///
/// # Errors
/// [`Error::TooLarge`] past `limits.max_payload_bytes`, [`Error::InvalidPayload`]
/// for anything malformed, or the validation error of [`Payload::validate`].
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Payload> {
    if bytes.len() > limits.max_payload_bytes {
        return Err(Error::TooLarge {
            what: "payload size",
            got: bytes.len(),
            limit: limits.max_payload_bytes,
        });
    }
    let payload = match bytes.first() {
        Some(b'{') => decode_json(bytes)?,
        _ => decode_binary(bytes)?,
    };
    payload.validate(limits)?;
    Ok(payload)
}

/// Encodes a payload in the requested format.
///
/// # Errors
/// Only if serialization itself fails, which valid payloads never do.
pub fn encode(payload: &Payload, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Binary => encode_binary(payload),
        Format::Json => encode_json(payload),
    }
}

/// Magic, version, settings (version 2 only), body.
///
/// # Errors
/// None today; the signature leaves room for encoders that can fail.
pub fn encode_binary(payload: &Payload) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_binary_into(payload, &mut out);
    Ok(out)
}

/// [`encode_binary`] into `out` (cleared first). A writer that publishes
/// every few seconds keeps one buffer: a flush of 10,000 arms at d = 32 is
/// 87 MB, and writing it into fresh memory costs a page fault per 4 KB
/// (about as long as the encoding itself); a buffer kept from the last
/// flush has its pages already.
pub fn encode_binary_into(payload: &Payload, out: &mut Vec<u8>) {
    encode_header(payload, out);
    // The fixed-width layout, written with bulk copies (see `wire`).
    crate::wire::encode_body(payload, out);
}

/// [`encode_binary_into`] for a payload whose `count` arms `put_arms`
/// writes (`payload.arms` is not read): a trainer encodes its arms straight
/// from its accumulators.
///
/// # Errors
/// What `put_arms` returns.
pub(crate) fn encode_binary_with(
    payload: &Payload,
    count: usize,
    out: &mut Vec<u8>,
    put_arms: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    encode_header(payload, out);
    crate::wire::encode_body_with(payload.dim, &payload.offsets, count, out, put_arms)
}

/// Magic, version and what the version puts before the body, into `out`
/// (cleared first).
fn encode_header(payload: &Payload, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(MAGIC);
    let put_settings = |out: &mut Vec<u8>, settings: PayloadSettings| {
        for value in [settings.alpha, settings.lambda, settings.decay] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    };
    let plain = payload.base_offsets.is_empty() && payload.version.is_none() && payload.fences.is_empty();
    match (payload.settings, plain) {
        (None, true) => out.extend_from_slice(&BINARY_VERSION.to_le_bytes()),
        (Some(settings), true) => {
            out.extend_from_slice(&BINARY_VERSION_WITH_SETTINGS.to_le_bytes());
            put_settings(out, settings);
        }
        (settings, false) => {
            out.extend_from_slice(&BINARY_VERSION_WITH_BASE.to_le_bytes());
            let flag = |present: bool, flag: u8| if present { flag } else { 0 };
            out.push(
                flag(settings.is_some(), FLAG_SETTINGS)
                    | flag(!payload.base_offsets.is_empty(), FLAG_BASE)
                    | flag(payload.version.is_some(), FLAG_VERSION)
                    | flag(!payload.fences.is_empty(), FLAG_FENCES),
            );
            if let Some(settings) = settings {
                put_settings(out, settings);
            }
            if !payload.base_offsets.is_empty() {
                crate::wire::put_offsets(out, payload.base_offsets.iter().copied());
            }
            if let Some(version) = payload.version {
                out.extend_from_slice(&version.to_le_bytes());
            }
            if !payload.fences.is_empty() {
                crate::wire::put_fences(out, payload.fences.iter().copied());
            }
        }
    }
}

fn decode_binary(bytes: &[u8]) -> Result<Payload> {
    let (magic, rest) = bytes.split_at_checked(MAGIC.len()).ok_or_else(not_a_payload)?;
    if magic != MAGIC {
        return Err(not_a_payload());
    }
    let (version, body) = rest.split_at_checked(2).ok_or_else(not_a_payload)?;
    let version = u16::from_le_bytes([
        version.first().copied().unwrap_or(0),
        version.get(1).copied().unwrap_or(0),
    ]);
    match version {
        BINARY_VERSION => crate::wire::decode_body(body),
        BINARY_VERSION_WITH_SETTINGS => {
            let mut header = Reader::new(body, "binary payload settings");
            let settings = read_settings(&mut header)?;
            let mut payload = crate::wire::decode_body(header.rest())?;
            payload.settings = Some(settings);
            Ok(payload)
        }
        BINARY_VERSION_WITH_BASE => {
            let mut header = Reader::new(body, "binary payload header");
            let flags = header.u8()?;
            if flags & !(FLAG_SETTINGS | FLAG_BASE | FLAG_VERSION | FLAG_FENCES) != 0 {
                return Err(Error::InvalidPayload(format!("binary payload: unknown flags {flags:#04x}")));
            }
            let settings = if flags & FLAG_SETTINGS != 0 { Some(read_settings(&mut header)?) } else { None };
            let base_offsets = if flags & FLAG_BASE != 0 { header.offsets()? } else { Vec::new() };
            let version = if flags & FLAG_VERSION != 0 { Some(header.u64()?) } else { None };
            let fences = if flags & FLAG_FENCES != 0 { header.fences()? } else { Vec::new() };
            let mut payload = crate::wire::decode_body(header.rest())?;
            payload.settings = settings;
            payload.base_offsets = base_offsets;
            payload.version = version;
            payload.fences = fences;
            Ok(payload)
        }
        other => Err(Error::InvalidPayload(format!(
            "binary payload version {other} is not supported (this build reads versions \
             {BINARY_VERSION} to {BINARY_VERSION_WITH_BASE})"
        ))),
    }
}

fn read_settings(header: &mut Reader<'_>) -> Result<PayloadSettings> {
    Ok(PayloadSettings { alpha: header.f64()?, lambda: header.f64()?, decay: header.f64()? })
}

fn not_a_payload() -> Error {
    Error::InvalidPayload("expected JSON (starting with '{') or a binary payload starting with BNDT".into())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPayload {
    dim: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decay: Option<f64>,
    #[serde(default)]
    arms: Vec<JsonArm>,
    #[serde(default)]
    offsets: BTreeMap<i32, i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    base_offsets: BTreeMap<i32, i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    /// Partition → source partition → seq.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    fences: BTreeMap<i32, BTreeMap<i32, u64>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonArm {
    id: String,
    a_inv: Vec<Vec<f64>>,
    b: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    n: u64,
    #[serde(default)]
    reward_sum: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_ms: Option<i64>,
}

/// Pretty-free JSON with full matrices.
///
/// # Errors
/// Only if serde_json fails, which it does not for finite values.
pub fn encode_json(payload: &Payload) -> Result<Vec<u8>> {
    let dim = payload.dim;
    let json = JsonPayload {
        dim,
        alpha: payload.settings.map(|s| s.alpha),
        lambda: payload.settings.map(|s| s.lambda),
        decay: payload.settings.map(|s| s.decay),
        arms: payload
            .arms
            .iter()
            .map(|arm| JsonArm {
                id: arm.id.clone(),
                a_inv: packed::to_rows(dim, &arm.a_inv),
                b: arm.b.clone(),
                a: arm.a.as_ref().map(|a| packed::to_rows(dim, a)),
                n: arm.n,
                reward_sum: arm.reward_sum,
                updated_ms: arm.updated_ms,
            })
            .collect(),
        offsets: payload.offsets.iter().copied().collect(),
        base_offsets: payload.base_offsets.iter().copied().collect(),
        version: payload.version,
        fences: payload.fences.iter().fold(BTreeMap::new(), |mut fences, &(partition, source, seq)| {
            fences.entry(partition).or_insert_with(BTreeMap::new).insert(source, seq);
            fences
        }),
    };
    serde_json::to_vec(&json).map_err(|e| Error::InvalidPayload(format!("cannot encode: {e}")))
}

fn decode_json(bytes: &[u8]) -> Result<Payload> {
    let json: JsonPayload = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidPayload(format!("JSON: {e}")))?;
    let dim = json.dim;
    let settings = match (json.alpha, json.lambda, json.decay) {
        // Decay is optional: payloads written before it existed had none.
        (Some(alpha), Some(lambda), decay) => Some(PayloadSettings { alpha, lambda, decay: decay.unwrap_or(1.0) }),
        (None, None, None) => None,
        _ => return Err(Error::InvalidPayload("alpha and lambda go together (decay is optional with them): give both or neither".into())),
    };
    let arms = json
        .arms
        .into_iter()
        .map(|arm| {
            let a_inv = pack_symmetric(dim, &arm.a_inv, "a_inv", &arm.id)?;
            let a = match &arm.a {
                Some(rows) => Some(pack_symmetric(dim, rows, "a", &arm.id)?),
                None => None,
            };
            Ok(ArmPayload {
                id: arm.id,
                a_inv,
                b: arm.b,
                a,
                n: arm.n,
                reward_sum: arm.reward_sum,
                updated_ms: arm.updated_ms,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Payload {
        dim,
        arms,
        offsets: json.offsets.into_iter().collect(),
        settings,
        base_offsets: json.base_offsets.into_iter().collect(),
        version: json.version,
        fences: json
            .fences
            .into_iter()
            .flat_map(|(partition, sources)| sources.into_iter().map(move |(source, seq)| (partition, source, seq)))
            .collect(),
    })
}

/// Packs a full matrix, checking its shape and symmetry. The packed value is
/// the mean of the two mirrored entries, which is exact when they are equal.
fn pack_symmetric(dim: usize, rows: &[Vec<f64>], field: &str, id: &str) -> Result<Vec<f64>> {
    let shape_error = || {
        Error::InvalidPayload(format!("{field} of arm '{id}' must be a {dim}x{dim} matrix"))
    };
    if rows.len() != dim || rows.iter().any(|row| row.len() != dim) {
        return Err(shape_error());
    }
    let at = |i: usize, j: usize| rows.get(i).and_then(|row| row.get(j)).copied();
    packed::positions(dim)
        .map(|(i, j)| {
            let (upper, lower) = at(i, j).zip(at(j, i)).ok_or_else(shape_error)?;
            let scale = upper.abs().max(lower.abs()).max(1.0);
            if (upper - lower).abs() > SYMMETRY_TOLERANCE * scale {
                return Err(Error::InvalidPayload(format!(
                    "{field} of arm '{id}' is not symmetric at ({i},{j})"
                )));
            }
            Ok(if upper == lower { upper } else { (upper + lower) / 2.0 })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::needless_range_loop)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload {
            dim: 2,
            arms: vec![ArmPayload {
                id: "42".into(),
                a_inv: vec![0.375, -0.25, 0.5],
                b: vec![1.0, 0.1 + 0.2],
                a: Some(vec![4.0, 2.0, 3.0]),
                n: 3,
                reward_sum: 2.0,
                updated_ms: Some(1_767_225_600_000),
            }],
            offsets: vec![(0, 10), (3, 99)],
            settings: None,
            base_offsets: vec![],
            version: None,
            fences: vec![],
        }
    }

    fn with_settings() -> Payload {
        Payload { settings: Some(PayloadSettings { alpha: 0.3, lambda: 2.5, decay: 0.875 }), ..sample() }
    }

    #[test]
    fn settings_round_trip_in_both_formats() {
        let payload = with_settings();
        let binary = encode_binary(&payload).unwrap();
        // Version 2: the settings, then exactly the version-1 body.
        assert_eq!(&binary[4..6], &2u16.to_le_bytes());
        assert_eq!(&binary[6..14], &0.3f64.to_le_bytes());
        assert_eq!(&binary[14..22], &2.5f64.to_le_bytes());
        assert_eq!(&binary[22..30], &0.875f64.to_le_bytes());
        assert_eq!(&binary[30..], &encode_binary(&sample()).unwrap()[HEADER_LEN..]);
        assert_eq!(decode(&binary, &Limits::default()).unwrap(), payload);
        let json = encode_json(&payload).unwrap();
        assert!(String::from_utf8_lossy(&json).starts_with(r#"{"dim":2,"alpha":0.3,"lambda":2.5,"decay":0.875,"#));
        assert_eq!(decode(&json, &Limits::default()).unwrap(), payload);
        // Without settings, version 1 as before.
        assert_eq!(&encode_binary(&sample()).unwrap()[4..6], &1u16.to_le_bytes());
        for cut in 0..binary.len() {
            assert!(decode(&binary[..cut], &Limits::default()).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_model_version_round_trips_in_both_formats() {
        let payload = Payload { version: Some(41), settings: Some(PayloadSettings { alpha: 0.3, lambda: 2.5, decay: 1.0 }), ..sample() };
        let binary = encode_binary(&payload).unwrap();
        // Version 3, flags: settings (1) and version (4), no base offsets.
        assert_eq!(&binary[4..7], &[3, 0, 5]);
        assert_eq!(decode(&binary, &Limits::default()).unwrap(), payload);
        let json = encode(&payload, Format::Json).unwrap();
        assert!(String::from_utf8_lossy(&json).contains(r#""version":41"#));
        assert_eq!(decode(&json, &Limits::default()).unwrap(), payload);
        // Without a version nothing changes: version 2 as before.
        assert_eq!(&encode_binary(&Payload { version: None, ..payload }).unwrap()[4..6], &[2, 0]);
    }

    #[test]
    fn base_offsets_round_trip_in_both_formats() {
        for settings in [None, with_settings().settings] {
            let payload = Payload { settings, base_offsets: vec![(0, 9), (3, -1)], ..sample() };
            let binary = encode_binary(&payload).unwrap();
            // Version 3: flags, the settings when present, the base offsets, the body.
            assert_eq!(&binary[4..6], &3u16.to_le_bytes());
            assert_eq!(binary[6], if settings.is_some() { 3 } else { 2 });
            let base_at = if settings.is_some() { 7 + 24 } else { 7 };
            assert_eq!(&binary[base_at..base_at + 8], &2u64.to_le_bytes());
            assert_eq!(&binary[base_at + 8..base_at + 12], &0i32.to_le_bytes());
            assert_eq!(&binary[base_at + 12..base_at + 20], &9i64.to_le_bytes());
            assert_eq!(&binary[base_at + 32..], &encode_binary(&sample()).unwrap()[HEADER_LEN..]);
            assert_eq!(decode(&binary, &Limits::default()).unwrap(), payload);
            let json = encode_json(&payload).unwrap();
            assert!(String::from_utf8_lossy(&json).contains(r#""base_offsets":{"0":9,"3":-1}"#));
            assert_eq!(decode(&json, &Limits::default()).unwrap(), payload);
            for cut in 0..binary.len() {
                assert!(decode(&binary[..cut], &Limits::default()).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn fences_round_trip_in_both_formats() {
        let payload = Payload { fences: vec![(0, 1, 196_608), (0, 7, 2), (3, 0, u64::MAX)], ..sample() };
        let binary = encode_binary(&payload).unwrap();
        // Version 3, flags: fences (8) only; then the count and one
        // (i32 partition, i32 source partition, u64 seq) per fence; then
        // exactly the version-1 body.
        assert_eq!(&binary[4..7], &[3, 0, 8]);
        let mut fences = 3u64.to_le_bytes().to_vec();
        for (partition, source, seq) in [(0i32, 1i32, 196_608u64), (0, 7, 2), (3, 0, u64::MAX)] {
            fences.extend(partition.to_le_bytes());
            fences.extend(source.to_le_bytes());
            fences.extend(seq.to_le_bytes());
        }
        assert_eq!(&binary[7..7 + fences.len()], fences.as_slice());
        assert_eq!(&binary[7 + fences.len()..], &encode_binary(&sample()).unwrap()[HEADER_LEN..]);
        assert_eq!(decode(&binary, &Limits::default()).unwrap(), payload);
        for cut in 0..binary.len() {
            assert!(decode(&binary[..cut], &Limits::default()).is_err(), "cut at {cut}");
        }
        let json = encode_json(&payload).unwrap();
        assert!(
            String::from_utf8_lossy(&json).ends_with(r#""offsets":{"0":10,"3":99},"fences":{"0":{"1":196608,"7":2},"3":{"0":18446744073709551615}}}"#),
            "{}",
            String::from_utf8_lossy(&json)
        );
        assert_eq!(decode(&json, &Limits::default()).unwrap(), payload);
        // With everything else the header holds: settings, base offsets,
        // version, then the fences, in that order (flags 1 | 2 | 4 | 8).
        let full = Payload { base_offsets: vec![(0, 4)], version: Some(12), ..Payload { settings: with_settings().settings, ..payload } };
        let binary = encode_binary(&full).unwrap();
        assert_eq!(&binary[4..7], &[3, 0, 15]);
        let fences_at = 7 + 24 + (8 + 12) + 8;
        assert_eq!(&binary[fences_at - 8..fences_at], &12u64.to_le_bytes());
        assert_eq!(&binary[fences_at..fences_at + fences.len()], fences.as_slice());
        assert_eq!(decode(&binary, &Limits::default()).unwrap(), full);
        assert_eq!(decode(&encode_json(&full).unwrap(), &Limits::default()).unwrap(), full);
        // Payloads without fences are written as before (and old ones read).
        assert_eq!(&encode_binary(&sample()).unwrap()[4..6], &[1, 0]);
        assert!(!String::from_utf8_lossy(&encode_json(&sample()).unwrap()).contains("fences"));
        assert_eq!(decode(&encode_binary(&sample()).unwrap(), &Limits::default()).unwrap().fences, vec![]);
        // Bounded.
        let limits = Limits { max_fences: 2, ..Limits::default() };
        let error = decode(&encode_binary(&full).unwrap(), &limits).unwrap_err();
        assert!(matches!(error, Error::TooLarge { what: "number of fences", got: 3, limit: 2 }), "{error:?}");
    }

    #[test]
    fn settings_are_validated() {
        let limits = Limits::default();
        let cases: &[(&[u8], &str)] = &[
            (br#"{"dim": 1, "alpha": 0.5}"#, "go together"),
            (br#"{"dim": 1, "lambda": 0.5}"#, "go together"),
            (br#"{"dim": 1, "alpha": -1, "lambda": 1}"#, "ALPHA"),
            (br#"{"dim": 1, "alpha": 1, "lambda": 0}"#, "LAMBDA"),
            (br#"{"dim": 1, "alpha": 1, "lambda": 1, "decay": 0}"#, "DECAY"),
            (br#"{"dim": 1, "alpha": 1, "lambda": 1, "decay": 1.5}"#, "DECAY"),
            (br#"{"dim": 1, "decay": 0.5}"#, "go together"),
        ];
        for (bytes, expected) in cases {
            let error = decode(bytes, &limits).unwrap_err().to_string();
            assert!(error.contains(expected), "{:?}: {error}", String::from_utf8_lossy(bytes));
        }
        let mut payload = with_settings();
        payload.settings = Some(PayloadSettings { alpha: 1.0, lambda: f64::NAN, decay: 1.0 });
        assert!(decode(&encode_binary(&payload).unwrap(), &limits).unwrap_err().to_string().contains("LAMBDA"));
        // JSON without decay (written before it existed) means none.
        let old = decode(br#"{"dim": 1, "alpha": 0.5, "lambda": 2}"#, &limits).unwrap();
        assert_eq!(old.settings, Some(PayloadSettings { alpha: 0.5, lambda: 2.0, decay: 1.0 }));
    }

    #[test]
    fn the_binary_layout_byte_by_byte() {
        // Spelled out by hand from the layout (what bincode wrote in earlier
        // builds): u64 lengths, f64/i64 in 8 bytes, i32 in 4, option tags.
        let payload = Payload {
            dim: 1,
            arms: vec![ArmPayload { id: "é".into(), a_inv: vec![0.5], b: vec![2.0], a: None, n: 3, reward_sum: 1.5, updated_ms: Some(-2) }],
            offsets: vec![(7, 9)],
            settings: None,
            base_offsets: vec![],
            version: None,
            fences: vec![],
        };
        let mut want: Vec<u8> = b"BNDT".to_vec();
        want.extend([1, 0]);
        want.extend(1u64.to_le_bytes()); // dim
        want.extend(1u64.to_le_bytes()); // arms
        want.extend(2u64.to_le_bytes());
        want.extend("é".as_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(0.5f64.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(2.0f64.to_le_bytes());
        want.push(0); // no A
        want.extend(3u64.to_le_bytes());
        want.extend(1.5f64.to_le_bytes());
        want.push(1);
        want.extend((-2i64).to_le_bytes());
        want.extend(1u64.to_le_bytes()); // offsets
        want.extend(7i32.to_le_bytes());
        want.extend(9i64.to_le_bytes());
        let bytes = encode_binary(&payload).unwrap();
        assert_eq!(bytes, want);
        assert_eq!(decode(&want, &Limits::default()).unwrap(), payload);
        // Truncated anywhere: an error, never a panic or a huge allocation.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &Limits::default()).is_err(), "cut at {cut}");
        }
        let mut huge = bytes[..HEADER_LEN + 8].to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge, &Limits::default()).unwrap_err().to_string().contains("truncated"));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(&trailing, &Limits::default()).unwrap_err().to_string().contains("1 trailing bytes"));
    }

    #[test]
    fn binary_round_trip_is_exact() {
        let payload = sample();
        let bytes = encode_binary(&payload).unwrap();
        assert_eq!(&bytes[..4], MAGIC);
        assert_eq!(decode(&bytes, &Limits::default()).unwrap(), payload);
    }

    #[test]
    fn json_round_trip_is_exact() {
        let payload = sample();
        let bytes = encode_json(&payload).unwrap();
        assert_eq!(bytes[0], b'{');
        assert_eq!(decode(&bytes, &Limits::default()).unwrap(), payload);
    }

    #[test]
    fn json_in_the_documented_shape_decodes() {
        let text = br#"{"dim": 2, "arms": [{"id": "7", "a_inv": [[1, 0], [0, 1]], "b": [0.5, 0]}],
                        "offsets": {"0": 12}}"#;
        let payload = decode(text, &Limits::default()).unwrap();
        assert_eq!(payload.arms[0].a_inv, vec![1.0, 0.0, 1.0]);
        assert_eq!(payload.arms[0].n, 0);
        assert_eq!(payload.offsets, vec![(0, 12)]);
    }

    #[test]
    fn rejects_malformed_payloads() {
        let limits = Limits::default();
        let cases: &[(&[u8], &str)] = &[
            (b"", "expected JSON"),
            (b"BNDT\x09\x00", "version 9"),
            (b"BNDT\x02\x00\x00", "binary payload settings: truncated"),
            (b"BNDT\x03\x00\x10", "unknown flags 0x10"),
            (b"BNDT\x03\x00\x08", "binary payload header: truncated"),
            (br#"{"dim": 2, "arms": [], "offsets": {"0": 3}, "fences": {"1": {"0": 4}}}"#, "fences: partition 1 has a fence (source partition 0 at seq 4) but no offset"),
            (br#"{"dim": 2, "arms": [], "offsets": {"0": 3}, "fences": {"0": {"-1": 4}}}"#, "fences: partition 0, source partition -1 is out of range"),
            (br#"{"dim": 2, "arms": [], "offsets": {"0": 3}, "fences": {"0": {"1": -4}}}"#, "JSON"),
            (b"BNDT\x03\x00\x04", "binary payload header: truncated"),
            (b"XXXX\x01\x00", "expected JSON"),
            (br#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[1, 2], [0, 1]], "b": [0, 0]}]}"#, "not symmetric"),
            (br#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[1, 0]], "b": [0, 0]}]}"#, "2x2 matrix"),
            (br#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[1, 0], [0, 1]], "b": [0]}]}"#, "b of arm 'a' has 1 values"),
            (br#"{"dim": 2, "arms": [{"id": "a", "a_inv": [[-1, 0], [0, 1]], "b": [0, 0]}]}"#, "non-positive diagonal"),
            (br#"{"dim": 2, "arms": [{"id": "", "a_inv": [[1, 0], [0, 1]], "b": [0, 0]}]}"#, "id is empty"),
            (br#"{"dim": 0, "arms": []}"#, "dim must be"),
            (br#"{"dim": 2, "arms": [], "bogus": 1}"#, "unknown field"),
            (br#"{"dim": 2, "arms": [], "offsets": {"-1": 3}}"#, "offsets: partition -1 at 3 is out of range"),
            (br#"{"dim": 2, "arms": [], "base_offsets": {"0": -2}}"#, "base_offsets: partition 0 at -2 is out of range"),
            (br#"{"dim": 1, "arms": [{"id": "a", "a_inv": [[1]], "b": [0]}, {"id": "a", "a_inv": [[1]], "b": [0]}]}"#, "appears twice"),
            (br#"{"dim": 1, "arms": [{"id": "a", "a_inv": [[1]], "b": [1e999]}]}"#, "JSON"),
        ];
        for (bytes, expected) in cases {
            let error = decode(bytes, &limits).unwrap_err().to_string();
            assert!(error.contains(expected), "{:?}: {error}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn enforces_limits_before_decoding() {
        let limits = Limits { max_payload_bytes: 10, ..Limits::default() };
        let error = decode(&encode_binary(&sample()).unwrap(), &limits).unwrap_err();
        assert!(matches!(error, Error::TooLarge { what: "payload size", .. }));
        let limits = Limits { max_dim: 1, ..Limits::default() };
        let error = decode(&encode_binary(&sample()).unwrap(), &limits).unwrap_err();
        assert!(matches!(error, Error::TooLarge { what: "dim", .. }));
    }

    #[test]
    fn binary_rejects_non_finite_values() {
        let mut payload = sample();
        payload.arms[0].b[0] = f64::NAN;
        let bytes = encode_binary(&payload).unwrap();
        let error = decode(&bytes, &Limits::default()).unwrap_err();
        assert_eq!(error.to_string(), "value is not a finite number (b of arm '42')");
    }
}
