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

/// Where encoded bytes go: a growing vector, or a [`Cursor`] over a slice
/// sized beforehand (so that threads can encode disjoint parts of one
/// buffer).
pub(crate) trait Out {
    fn put(&mut self, bytes: &[u8]);
    /// `values` as little-endian f64s.
    fn put_f64_values(&mut self, values: &[f64]);
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_f64_values(&mut self, values: &[f64]) {
        // Sized once, then filled in place: the compiler turns this into a
        // plain copy, where pushing value by value checks the capacity each
        // time (a flush writes tens of megabytes of these).
        let start = self.len();
        self.resize(start + values.len() * 8, 0);
        if let Some(slots) = self.get_mut(start..) {
            fill_f64s(slots, values);
        }
    }
}

/// A slice being filled from the front. Writing past its end drops the
/// bytes and marks it overflowed, rather than panic: the caller sized it
/// and checks [`Cursor::filled_exactly`].
pub(crate) struct Cursor<'a> {
    rest: &'a mut [u8],
    overflowed: bool,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(slice: &'a mut [u8]) -> Self {
        Self { rest: slice, overflowed: false }
    }

    /// Every byte written, none dropped.
    pub(crate) fn filled_exactly(&self) -> bool {
        self.rest.is_empty() && !self.overflowed
    }

    fn take(&mut self, len: usize) -> Option<&'a mut [u8]> {
        if len > self.rest.len() {
            self.overflowed = true;
            return None;
        }
        let (head, rest) = std::mem::take(&mut self.rest).split_at_mut(len);
        self.rest = rest;
        Some(head)
    }
}

impl Out for Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(slots) = self.take(bytes.len()) {
            slots.copy_from_slice(bytes);
        }
    }

    fn put_f64_values(&mut self, values: &[f64]) {
        if let Some(slots) = self.take(values.len() * 8) {
            fill_f64s(slots, values);
        }
    }
}

fn fill_f64s(slots: &mut [u8], values: &[f64]) {
    for (slot, value) in slots.chunks_exact_mut(8).zip(values) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

pub(crate) fn put_u64(out: &mut (impl Out + ?Sized), value: u64) {
    out.put(&value.to_le_bytes());
}

pub(crate) fn put_f64(out: &mut (impl Out + ?Sized), value: f64) {
    out.put(&value.to_le_bytes());
}

pub(crate) fn put_f64s(out: &mut (impl Out + ?Sized), values: &[f64]) {
    put_u64(out, values.len() as u64);
    out.put_f64_values(values);
}

/// A (partition, offset) list: u64 count, then i32 partition and i64 offset
/// per entry (payload offsets and base offsets, snapshot offsets).
pub(crate) fn put_offsets(out: &mut (impl Out + ?Sized), offsets: impl ExactSizeIterator<Item = (i32, i64)>) {
    put_u64(out, offsets.len() as u64);
    for (partition, offset) in offsets {
        out.put(&partition.to_le_bytes());
        out.put(&offset.to_le_bytes());
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

pub(crate) fn put_str(out: &mut (impl Out + ?Sized), text: &str) {
    put_u64(out, text.len() as u64);
    out.put(text.as_bytes());
}

/// Arms per encoding thread below which a body is encoded on one thread.
const PARALLEL_ARMS: usize = 1024;

/// Appends the body of `payload` to `out`.
pub fn encode_body(payload: &Payload, out: &mut Vec<u8>) {
    // Writing an arm cannot fail.
    let _ = encode_body_with(payload.dim, &payload.offsets, payload.arms.len(), out, |out| {
        put_items(&payload.arms, PARALLEL_ARMS, out, arm_len, |out, arm, (): &mut ()| {
            put_arm(out, arm);
            Ok(())
        })
    });
}

/// Appends a body whose `count` arms `put_arms` writes (a trainer writes
/// them straight from its accumulators, with no payload in between).
///
/// # Errors
/// What `put_arms` returns; `out` then holds a partial body.
pub(crate) fn encode_body_with(
    dim: usize,
    offsets: &[(i32, i64)],
    count: usize,
    out: &mut Vec<u8>,
    put_arms: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    put_u64(out, dim as u64);
    put_u64(out, count as u64);
    put_arms(out)?;
    put_offsets(out, offsets.iter().copied());
    Ok(())
}

/// Appends `items`, each written by `put` (given scratch space `S`, one per
/// thread) in `len(item)` bytes. Many items (a flush of thousands of arms,
/// tens of megabytes) are written by several threads, each into its own part
/// of `out`, sized beforehand from the fixed-width layout.
///
/// # Errors
/// The first error of `put`; `out` then holds a partial encoding.
pub(crate) fn put_items<T: Sync, S: Default>(
    items: &[T],
    per_thread: usize,
    out: &mut Vec<u8>,
    len: impl Fn(&T) -> usize + Sync,
    put: impl Fn(&mut dyn Out, &T, &mut S) -> Result<()> + Sync,
) -> Result<()> {
    let threads = crate::parallel::threads_for(items.len(), per_thread);
    if threads > 1 {
        let start = out.len();
        if put_parts(items, threads, out, &len, &put)? {
            return Ok(());
        }
        out.truncate(start);
    }
    let mut scratch = S::default();
    items.iter().try_for_each(|item| put(out, item, &mut scratch))
}

/// [`put_items`] on `threads` threads; false, with `out` to be truncated,
/// if a part did not come out at the size computed for it (they always do).
fn put_parts<T: Sync, S: Default>(
    items: &[T],
    threads: usize,
    out: &mut Vec<u8>,
    len: &(impl Fn(&T) -> usize + Sync),
    put: &(impl Fn(&mut dyn Out, &T, &mut S) -> Result<()> + Sync),
) -> Result<bool> {
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    let sizes: Vec<usize> = items.chunks(chunk).map(|items| items.iter().map(len).sum()).collect();
    let start = out.len();
    out.resize(start + sizes.iter().sum::<usize>(), 0);
    let mut rest = out.get_mut(start..).unwrap_or_default();
    let mut parts = Vec::with_capacity(sizes.len());
    for (items, size) in items.chunks(chunk).zip(sizes) {
        let size = size.min(rest.len());
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(size);
        rest = tail;
        parts.push((items, part));
    }
    let count = parts.len();
    let results = crate::parallel::run_parts(parts, |(items, part)| -> Result<bool> {
        let mut cursor = Cursor::new(part);
        let mut scratch = S::default();
        for item in items {
            put(&mut cursor, item, &mut scratch)?;
        }
        Ok(cursor.filled_exactly())
    });
    let mut exact = results.len() == count;
    for result in results {
        exact &= result?;
    }
    Ok(exact)
}

/// The encoded size of one arm: an id of `id_bytes`, A⁻¹, b and A (when
/// present) of the given numbers of values, an update time when `with_time`.
pub(crate) fn arm_len_parts(id_bytes: usize, a_inv: usize, b: usize, a: Option<usize>, with_time: bool) -> usize {
    let vector = |values: usize| 8 + values * 8;
    let optional = |present: Option<usize>| 1 + present.unwrap_or(0);
    8 + id_bytes + vector(a_inv) + vector(b) + optional(a.map(vector)) + 8 + 8 + optional(with_time.then_some(8))
}

fn arm_len(arm: &ArmPayload) -> usize {
    arm_len_parts(arm.id.len(), arm.a_inv.len(), arm.b.len(), arm.a.as_ref().map(Vec::len), arm.updated_ms.is_some())
}

/// One arm's fields, in the layout's order.
pub(crate) struct ArmParts<'a> {
    pub id: &'a str,
    pub a_inv: &'a [f64],
    pub b: &'a [f64],
    pub a: Option<&'a [f64]>,
    pub n: u64,
    pub reward_sum: f64,
    pub updated_ms: Option<i64>,
}

fn put_arm(out: &mut (impl Out + ?Sized), arm: &ArmPayload) {
    put_arm_parts(
        out,
        &ArmParts {
            id: &arm.id,
            a_inv: &arm.a_inv,
            b: &arm.b,
            a: arm.a.as_deref(),
            n: arm.n,
            reward_sum: arm.reward_sum,
            updated_ms: arm.updated_ms,
        },
    );
}

pub(crate) fn put_arm_parts(out: &mut (impl Out + ?Sized), arm: &ArmParts<'_>) {
    put_str(out, arm.id);
    put_f64s(out, arm.a_inv);
    put_f64s(out, arm.b);
    match arm.a {
        Some(a) => {
            out.put(&[1]);
            put_f64s(out, a);
        }
        None => out.put(&[0]),
    }
    put_u64(out, arm.n);
    put_f64(out, arm.reward_sum);
    match arm.updated_ms {
        Some(ms) => {
            out.put(&[1]);
            out.put(&ms.to_le_bytes());
        }
        None => out.put(&[0]),
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A body large enough to be encoded on several threads is the
    /// sequential encodings of its arms, one after the other, and decodes
    /// to the payload: ids of every length, arms with and without A and an
    /// update time.
    #[test]
    fn a_large_body_encodes_as_its_arms_one_by_one() {
        let arms: Vec<ArmPayload> = (0..5000u32)
            .map(|k| ArmPayload {
                id: "x".repeat(1 + (k as usize * 7) % 23),
                a_inv: vec![f64::from(k), 0.5, -1.0],
                b: vec![1.0, f64::from(k) / 3.0],
                a: (k % 3 != 0).then(|| vec![2.0, 0.25, f64::from(k)]),
                n: u64::from(k),
                reward_sum: f64::from(k) * 0.1,
                updated_ms: (k % 5 == 0).then_some(i64::from(k) * 1000),
            })
            .collect();
        let payload = Payload { dim: 2, arms, offsets: vec![(3, 77)], ..Payload::default() };
        let mut body = Vec::new();
        encode_body(&payload, &mut body);
        // Each arm alone (one thread): 16 bytes of dim and count, the arm,
        // 8 bytes of an empty offset list.
        let mut expected = Vec::new();
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&5000u64.to_le_bytes());
        for arm in &payload.arms {
            let mut one = Vec::new();
            encode_body(&Payload { dim: 2, arms: vec![arm.clone()], ..Payload::default() }, &mut one);
            expected.extend_from_slice(&one[16..one.len() - 8]);
        }
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&3i32.to_le_bytes());
        expected.extend_from_slice(&77i64.to_le_bytes());
        assert_eq!(body, expected);
        assert_eq!(decode_body(&body).unwrap(), payload);
        // The threaded path itself (whatever the cores here), on three
        // threads: it must not have fallen back.
        let mut threaded = vec![7u8; 3];
        let put = |out: &mut dyn Out, arm: &ArmPayload, (): &mut ()| {
            put_arm(out, arm);
            Ok(())
        };
        assert!(put_parts(&payload.arms, 3, &mut threaded, &arm_len, &put).unwrap());
        assert_eq!(&threaded[..3], &[7, 7, 7]);
        assert_eq!(&threaded[3..], &expected[16..expected.len() - 20]);
    }
}
