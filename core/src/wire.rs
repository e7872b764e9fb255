//! The binary payload body written and read by hand, byte for byte in
//! bincode's fixed-width little-endian layout (the format [`crate::codec`]
//! defines with serde + bincode). bincode moves f64 vectors one value at a
//! time; here they are bulk copies, which matters for flushes of tens of
//! megabytes. Tests check that both produce and accept the same bytes.
//!
//! Layout: `dim` u64; arms: u64 count, then per arm `id` (u64 length +
//! UTF-8), `a_inv`, `b` (u64 length + f64s), `a` (u8 0/1 + vector), `n` u64,
//! `reward_sum` f64, `updated_ms` (u8 0/1 + i64); offsets: u64 count, then
//! (i32, i64) pairs.

use crate::error::{Error, Result};
use crate::payload::{ArmPayload, Payload};

/// Smallest encoded arm: empty id and vectors, both options absent.
const MIN_ARM_BYTES: usize = 8 + 8 + 8 + 1 + 8 + 8 + 1;

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_f64s(out: &mut Vec<u8>, values: &[f64]) {
    put_u64(out, values.len() as u64);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Appends the body of `payload` to `out`.
pub fn encode_body(payload: &Payload, out: &mut Vec<u8>) {
    let floats: usize = payload.arms.iter().map(|a| a.a_inv.len() + a.b.len() + a.a.as_ref().map_or(0, Vec::len)).sum();
    out.reserve(16 + floats * 8 + payload.arms.len() * 80 + payload.offsets.len() * 12);
    put_u64(out, payload.dim as u64);
    put_u64(out, payload.arms.len() as u64);
    for arm in &payload.arms {
        put_u64(out, arm.id.len() as u64);
        out.extend_from_slice(arm.id.as_bytes());
        put_f64s(out, &arm.a_inv);
        put_f64s(out, &arm.b);
        match &arm.a {
            Some(a) => {
                out.push(1);
                put_f64s(out, a);
            }
            None => out.push(0),
        }
        put_u64(out, arm.n);
        out.extend_from_slice(&arm.reward_sum.to_le_bytes());
        match arm.updated_ms {
            Some(ms) => {
                out.push(1);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            None => out.push(0),
        }
    }
    put_u64(out, payload.offsets.len() as u64);
    for &(partition, offset) in &payload.offsets {
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
}

/// A cursor over the body that never reads past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

fn truncated() -> Error {
    Error::InvalidPayload("binary payload: truncated".into())
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(len).ok_or_else(truncated)?;
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| truncated())
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length whose items need at least `item_bytes` each, checked against
    /// what is left before anything is allocated.
    fn len(&mut self, item_bytes: usize) -> Result<usize> {
        let len = usize::try_from(self.u64()?).map_err(|_| truncated())?;
        if len.checked_mul(item_bytes).is_none_or(|need| need > self.rest.len()) {
            return Err(truncated());
        }
        Ok(len)
    }

    fn f64s(&mut self) -> Result<Vec<f64>> {
        let len = self.len(8)?;
        let bytes = self.take(len * 8)?;
        let (values, _) = bytes.as_chunks::<8>();
        Ok(values.iter().map(|&v| f64::from_le_bytes(v)).collect())
    }

    fn flag(&mut self) -> Result<bool> {
        match self.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [other] => Err(Error::InvalidPayload(format!("binary payload: invalid option tag {other}"))),
        }
    }
}

/// Reads a body written by [`encode_body`] or by bincode.
///
/// # Errors
/// [`Error::InvalidPayload`] for truncated or malformed bytes (nothing is
/// allocated beyond what the bytes can hold).
pub fn decode_body(bytes: &[u8]) -> Result<Payload> {
    let mut reader = Reader { rest: bytes };
    let dim = usize::try_from(reader.u64()?).map_err(|_| truncated())?;
    let count = reader.len(MIN_ARM_BYTES)?;
    let mut arms = Vec::with_capacity(count);
    for _ in 0..count {
        let id_len = reader.len(1)?;
        let id = std::str::from_utf8(reader.take(id_len)?)
            .map_err(|_| Error::InvalidPayload("binary payload: an arm id is not UTF-8".into()))?
            .to_owned();
        let a_inv = reader.f64s()?;
        let b = reader.f64s()?;
        let a = if reader.flag()? { Some(reader.f64s()?) } else { None };
        let n = reader.u64()?;
        let reward_sum = f64::from_le_bytes(reader.array()?);
        let updated_ms = if reader.flag()? { Some(i64::from_le_bytes(reader.array()?)) } else { None };
        arms.push(ArmPayload { id, a_inv, b, a, n, reward_sum, updated_ms });
    }
    let count = reader.len(12)?;
    let mut offsets = Vec::with_capacity(count);
    for _ in 0..count {
        offsets.push((i32::from_le_bytes(reader.array()?), i64::from_le_bytes(reader.array()?)));
    }
    if !reader.rest.is_empty() {
        return Err(Error::InvalidPayload(format!("binary payload: {} trailing bytes", reader.rest.len())));
    }
    Ok(Payload { dim, arms, offsets, settings: None })
}
