//! Confluent's wire format: magic byte 0, the schema id as 4 bytes
//! big-endian, then the Avro binary body.

use crate::error::{Error, Result};

const MAGIC: u8 = 0;
/// Magic byte and schema id.
pub const HEADER_LEN: usize = 5;

/// The schema id and the Avro body of a framed record.
///
/// # Errors
/// [`Error::NotFramed`] when the magic byte is not 0 or the header is cut.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8])> {
    match bytes {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [MAGIC, ..] => Err(Error::NotFramed(format!("{} bytes, shorter than the 5-byte header", bytes.len()))),
        [first, ..] => Err(Error::NotFramed(format!("magic byte is 0x{first:02x}, not 0"))),
        [] => Err(Error::NotFramed("no bytes".into())),
    }
}

/// Starts a framed record for schema `id` in `out` (cleared); the body is
/// appended after.
pub fn frame_header(id: u32, out: &mut Vec<u8>) {
    out.clear();
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_is_magic_zero_then_big_endian_id() {
        let mut out = Vec::new();
        frame_header(0x0102_0304, &mut out);
        out.push(42);
        // Written out by hand from Confluent's documented layout.
        assert_eq!(out, [0, 1, 2, 3, 4, 42]);
        assert_eq!(unframe(&out).unwrap(), (0x0102_0304, &[42u8][..]));
        assert_eq!(unframe(&[0, 0, 0, 0, 7]).unwrap(), (7, &[][..]));
    }

    #[test]
    fn refuses_what_is_not_framed() {
        assert!(matches!(unframe(b"{\"event_id\": 1}"), Err(Error::NotFramed(m)) if m.contains("0x7b")));
        assert!(matches!(unframe(&[0, 0, 1]), Err(Error::NotFramed(m)) if m.contains("shorter")));
        assert!(matches!(unframe(&[]), Err(Error::NotFramed(_))));
    }
}
