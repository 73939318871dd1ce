//! The Confluent wire format: `0x00`, the schema id as 4 bytes big-endian, then the datum.

use herald_bus::codec::DecodeError;

/// The magic byte that starts a Confluent-framed payload.
pub const MAGIC: u8 = 0x00;

/// Length of the frame header: magic byte + schema id.
pub const HEADER_LEN: usize = 5;

/// Appends the header for schema `id` to `out`.
///
/// ```
/// let mut out = Vec::new();
/// herald_registry::wire::write_header(258, &mut out);
/// assert_eq!(out, [0x00, 0, 0, 1, 2]);
/// ```
pub fn write_header(id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Splits a Confluent-framed payload into its schema id and datum.
///
/// ```
/// use herald_registry::wire::split;
/// assert_eq!(split(&[0x00, 0, 0, 0, 7, 0x02]).unwrap(), (7, &[0x02][..]));
/// assert!(split(&[0xC3, 0x01]).is_err());
/// ```
pub fn split(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match payload {
        [] => Err(DecodeError::Empty),
        [MAGIC, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [MAGIC, ..] => Err(DecodeError::TruncatedFrame { len: payload.len() }),
        _ => Err(DecodeError::BadMagic { found: hex_prefix(payload) }),
    }
}

/// The first four bytes of `payload` in hex, for error messages.
pub(crate) fn hex_prefix(payload: &[u8]) -> String {
    payload.iter().take(4).map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_frames() {
        let mut out = Vec::new();
        write_header(u32::MAX, &mut out);
        out.push(9);
        assert!(matches!(split(&out), Ok((u32::MAX, [9]))));
        assert!(matches!(split(&[]), Err(DecodeError::Empty)));
        assert!(matches!(split(&[0, 0, 1]), Err(DecodeError::TruncatedFrame { len: 3 })));
        assert!(matches!(split(&[0, 0, 0, 0, 1]), Ok((1, []))));
        match split(b"{\"json\":1}") {
            Err(DecodeError::BadMagic { found }) => assert_eq!(found, "7B 22 6A 73"),
            other => panic!("expected BadMagic, got {other:?}"),
        }
    }
}
