//! Audit IDs held in detector state. Nearly all are canonical UUIDs, kept as 16 bytes instead of
//! a 36-byte heap string: one allocation less per observation and a smaller state per key.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum AuditId {
    /// A lowercase, hyphenated UUID, printed back exactly as it came.
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl AuditId {
    pub fn new(s: &str) -> AuditId {
        parse_uuid(s).map_or_else(|| AuditId::Text(s.into()), AuditId::Uuid)
    }
}

impl Default for AuditId {
    fn default() -> Self {
        AuditId::Text(Box::default())
    }
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    // The 32 digits without hyphens, then eight at a time: a table lookup per character cost
    // more than the rest of an observation.
    let mut digits = [0u8; 32];
    digits[..8].copy_from_slice(&b[..8]);
    digits[8..12].copy_from_slice(&b[9..13]);
    digits[12..16].copy_from_slice(&b[14..18]);
    digits[16..20].copy_from_slice(&b[19..23]);
    digits[20..].copy_from_slice(&b[24..]);
    let mut out = [0u8; 16];
    for (chunk, bytes) in digits.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        bytes.copy_from_slice(&hex8(u64::from_le_bytes(eight))?);
    }
    Some(out)
}

/// Eight lowercase hex digits (little-endian bytes of `x`, first digit lowest) as four bytes.
/// Lowercase only, so that printing gives back the same text.
fn hex8(x: u64) -> Option<[u8; 4]> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if x & HIGH != 0 {
        return None;
    }
    // Bytes below 0x80 add without carrying into their neighbours: the high bit of each sum
    // says whether the byte is at least `lo`, and of the other whether it is above `hi`.
    let within = |lo: u64, hi: u64| (x + (0x80 - lo) * ONES) & !(x + (0x7f - hi) * ONES) & HIGH;
    let (digit, letter) = (within(0x30, 0x39), within(0x61, 0x66));
    if digit | letter != HIGH {
        return None;
    }
    let nibbles = (x & (0x0f * ONES)) + (letter >> 7) * 9;
    // Each 16-bit lane: first digit << 4 | second digit, in its low byte.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    Some([0, 16, 32, 48].map(|shift| (pairs >> shift) as u8))
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditId::Text(t) => f.write_str(t),
            AuditId::Uuid(b) => {
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        for s in [
            "3fdabe86-cbbe-4001-8000-977d54227fb4",
            "3FDABE86-cbbe-4001-8000-977d54227fb4",
            "not-a-uuid",
            "",
            "3fdabe86-cbbe-4001-8000-977d54227fbz",
        ] {
            assert_eq!(AuditId::new(s).to_string(), s);
        }
        assert!(matches!(
            AuditId::new("3fdabe86-cbbe-4001-8000-977d54227fb4"),
            AuditId::Uuid(_)
        ));
        assert!(std::mem::size_of::<AuditId>() <= 24);
    }

    #[test]
    fn every_character_is_checked_in_every_position() {
        let good = "0123abcd-ef45-6789-a0b1-c2d3e4f56789";
        assert!(matches!(AuditId::new(good), AuditId::Uuid(_)));
        assert_eq!(AuditId::new(good).to_string(), good);
        for at in (0..36).filter(|i| ![8, 13, 18, 23].contains(i)) {
            for c in (0u8..=255).filter(|c| !c.is_ascii_digit() && !(b'a'..=b'f').contains(c)) {
                let mut bytes = good.as_bytes().to_vec();
                bytes[at] = c;
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    assert!(matches!(AuditId::new(text), AuditId::Text(_)), "{text:?}");
                }
            }
        }
    }
}
