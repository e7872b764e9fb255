//! The fixed-width little-endian layout of the binary payload body and of
//! model snapshots, written and read by hand: integers and floats in 8 bytes
//! (i32 in 4), a vector or string as its u64 length then its items, an
//! option as a 0/1 byte then the value. It is the layout earlier builds
//! wrote through bincode (fixint, little endian), kept byte for byte so old
//! payloads and RDB files still load; vectors are bulk copies, which matters
//! for flushes of tens of megabytes. [`Reader`] never reads past the end and
//! allocates nothing a length prefix promises beyond the bytes present.
//!
//! Layout: `dim` u64; arms: u64 count, then per arm `id` (u64 length +
//! UTF-8), `a_inv`, `b` (u64 length + f64s), `a` (u8 0/1 + vector), `n` u64,
//! `reward_sum` f64, `updated_ms` (u8 0/1 + i64); offsets: u64 count, then
//! (i32, i64) pairs.

use crate::error::{Error, Result};
use crate::payload::{ArmPayload, Payload};

/// Smallest encoded arm: empty id and vectors, both options absent.
const MIN_ARM_BYTES: usize = 8 + 8 + 8 + 1 + 8 + 8 + 1;

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_f64(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_f64s(out: &mut Vec<u8>, values: &[f64]) {
    put_u64(out, values.len() as u64);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A (partition, offset) list: u64 count, then i32 partition and i64 offset
/// per entry (payload offsets and base offsets, snapshot offsets).
pub(crate) fn put_offsets(out: &mut Vec<u8>, offsets: impl ExactSizeIterator<Item = (i32, i64)>) {
    put_u64(out, offsets.len() as u64);
    for (partition, offset) in offsets {
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
}

/// A fence list: u64 count, then i32 partition, i32 source partition and
/// u64 seq per entry (payload header and snapshot).
pub(crate) fn put_fences(out: &mut Vec<u8>, fences: impl ExactSizeIterator<Item = (i32, i32, u64)>) {
    put_u64(out, fences.len() as u64);
    for (partition, source, seq) in fences {
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&source.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u64(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Appends the body of `payload` to `out`.
pub fn encode_body(payload: &Payload, out: &mut Vec<u8>) {
    let floats: usize = payload.arms.iter().map(|a| a.a_inv.len() + a.b.len() + a.a.as_ref().map_or(0, Vec::len)).sum();
    out.reserve(16 + floats * 8 + payload.arms.len() * 80 + payload.offsets.len() * 12);
    put_u64(out, payload.dim as u64);
    put_u64(out, payload.arms.len() as u64);
    for arm in &payload.arms {
        put_str(out, &arm.id);
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
    put_offsets(out, payload.offsets.iter().copied());
}

/// A cursor that never reads past the end; errors name `what` is read.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { rest: bytes, what }
    }

    fn truncated(&self) -> Error {
        Error::InvalidPayload(format!("{}: truncated", self.what))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(len).ok_or_else(|| self.truncated())?;
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.truncated())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    pub(crate) fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| self.truncated())
    }

    /// A length whose items need at least `item_bytes` each, checked against
    /// what is left before anything is allocated.
    pub(crate) fn len(&mut self, item_bytes: usize) -> Result<usize> {
        let len = self.usize()?;
        if len.checked_mul(item_bytes).is_none_or(|need| need > self.rest.len()) {
            return Err(self.truncated());
        }
        Ok(len)
    }

    pub(crate) fn f64s(&mut self) -> Result<Vec<f64>> {
        let len = self.len(8)?;
        let bytes = self.take(len * 8)?;
        let (values, _) = bytes.as_chunks::<8>();
        Ok(values.iter().map(|&v| f64::from_le_bytes(v)).collect())
    }

    pub(crate) fn str(&mut self) -> Result<&'a str> {
        let len = self.len(1)?;
        let what = self.what;
        std::str::from_utf8(self.take(len)?).map_err(|_| Error::InvalidPayload(format!("{what}: a string is not UTF-8")))
    }

    /// A bool, or an option's tag: one byte, 0 or 1.
    pub(crate) fn flag(&mut self) -> Result<bool> {
        match self.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [other] => Err(Error::InvalidPayload(format!("{}: invalid tag {other}", self.what))),
        }
    }

    /// A list written by [`put_offsets`].
    pub(crate) fn offsets(&mut self) -> Result<Vec<(i32, i64)>> {
        let count = self.len(12)?;
        (0..count).map(|_| Ok((self.i32()?, self.i64()?))).collect()
    }

    /// A list written by [`put_fences`].
    pub(crate) fn fences(&mut self) -> Result<Vec<(i32, i32, u64)>> {
        let count = self.len(16)?;
        (0..count).map(|_| Ok((self.i32()?, self.i32()?, self.u64()?))).collect()
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Everything was read.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidPayload(format!("{}: {} trailing bytes", self.what, self.rest.len())))
        }
    }
}

/// Reads a body written by [`encode_body`] (or by earlier builds' bincode).
///
/// # Errors
/// [`Error::InvalidPayload`] for truncated or malformed bytes (nothing is
/// allocated beyond what the bytes can hold).
pub fn decode_body(bytes: &[u8]) -> Result<Payload> {
    let mut reader = Reader::new(bytes, "binary payload");
    let dim = reader.usize()?;
    let count = reader.len(MIN_ARM_BYTES)?;
    let mut arms = Vec::with_capacity(count);
    for _ in 0..count {
        let id = reader.str()?.to_owned();
        let a_inv = reader.f64s()?;
        let b = reader.f64s()?;
        let a = if reader.flag()? { Some(reader.f64s()?) } else { None };
        let n = reader.u64()?;
        let reward_sum = reader.f64()?;
        let updated_ms = if reader.flag()? { Some(reader.i64()?) } else { None };
        arms.push(ArmPayload { id, a_inv, b, a, n, reward_sum, updated_ms });
    }
    let offsets = reader.offsets()?;
    reader.finish()?;
    Ok(Payload { dim, arms, offsets, ..Payload::default() })
}
