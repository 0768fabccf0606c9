//! Audit IDs held in detector state. Nearly all are canonical UUIDs, kept as 16 bytes instead of
//! a 36-byte heap string: one allocation less per observation and a smaller state per key.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Debug)]
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
    let mut out = [0u8; 16];
    let mut i = 0;
    for byte in out.iter_mut() {
        if matches!(i, 8 | 13 | 18 | 23) {
            i += 1;
        }
        *byte = nibble(b[i])? << 4 | nibble(b[i + 1])?;
        i += 2;
    }
    Some(out)
}

/// Lowercase hex only, so that printing gives back the same text. A table, not a `match`: the
/// digit-or-letter branch is a coin toss per character, and mispredicting it 32 times per ID
/// cost more than the rest of an observation.
fn nibble(c: u8) -> Option<u8> {
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let v = TABLE[usize::from(c)];
    (v != INVALID).then_some(v)
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
}
