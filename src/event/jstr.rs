//! `JStr`: a JSON string that borrows from the input unless escapes force a copy.

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

/// serde only borrows a bare `Cow<str>` field; wrapping it lets `Option<JStr>` borrow too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct JStr<'a>(pub Cow<'a, str>);

impl<'a> JStr<'a> {
    pub fn borrowed(s: &'a str) -> Self {
        JStr(Cow::Borrowed(s))
    }
}

impl Deref for JStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for JStr<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for JStr<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Calls `f` on each string of a raw JSON array (or on the raw value itself when it is a
/// single string) without collecting them; stops early when `f` returns true.
/// Returns whether `f` ever returned true. Non-string elements are skipped.
pub fn for_each_str(raw: &RawValue, f: &mut dyn FnMut(&str) -> bool) -> bool {
    struct Seed<'f>(&'f mut dyn FnMut(&str) -> bool);
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E>(self, v: &str) -> Result<bool, E> {
            Ok((self.0)(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut hit = false;
            // Elements are visited in place: no Value or String per element.
            while seq
                .next_element_seed(Element(&mut *self.0, &mut hit))?
                .is_some()
            {}
            Ok(hit)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(false)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Seed(f).deserialize(&mut de).unwrap_or(false)
}

/// One element of a list for `for_each_str`: strings go to the callback (until it has said
/// yes), anything else is skipped.
struct Element<'f, 'h>(&'f mut dyn FnMut(&str) -> bool, &'h mut bool);

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if !*self.1 {
            *self.1 = (self.0)(v);
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
}

/// The text of a JSON string literal (`raw` includes its quotes), unescaped; None if `raw` is not
/// a valid string literal. Written for the JSON-in-a-string payloads CloudWatch, AKS and SLS ship,
/// where every quote is escaped: a plain byte loop beats serde's per-escape scratch path there.
pub fn unescape_literal(raw: &str) -> Option<Cow<'_, str>> {
    let body = raw.strip_prefix('"')?;
    let (text, used) = unescape_to_quote(body)?;
    (used == body.len()).then_some(text)
}

/// Unescapes a JSON string from just after its opening quote up to its closing quote, which it
/// finds on the way (one pass instead of a scan to find the end and a second to unescape).
/// Returns the text and the bytes consumed, closing quote included; None if no valid string
/// literal starts there.
pub fn unescape_to_quote(body: &str) -> Option<(Cow<'_, str>, usize)> {
    let b = body.as_bytes();
    let first = memchr::memchr2(b'"', b'\\', b)?;
    if b[first] == b'"' {
        return Some((Cow::Borrowed(&body[..first]), first + 1));
    }
    let mut out = Vec::with_capacity(body.len().min(1 << 16));
    out.extend_from_slice(&b[..first]);
    let mut i = first;
    loop {
        let at = copy_plain(b, i, &mut out)?;
        if b[at] == b'"' {
            return Some((Cow::Owned(String::from_utf8(out).ok()?), at + 1));
        }
        let simple = match *b.get(at + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => 0,
            _ => return None,
        };
        i = at + 2;
        if simple != 0 {
            out.push(simple);
            continue;
        }
        let hex = |at: usize| {
            body.get(at..at + 4)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        let hi = hex(i)?;
        i += 4;
        let ch = if (0xD800..0xDC00).contains(&hi) {
            // A surrogate pair: \uD83D\uDE00
            if body.get(i..i + 2) != Some("\\u") {
                return None;
            }
            let lo = hex(i + 2)?;
            i += 6;
            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + lo.checked_sub(0xDC00)?)?
        } else {
            char::from_u32(hi)?
        };
        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

/// Appends `b[i..]` up to the next `"` or `\` to `out` and returns that byte's index. Runs
/// between escapes in encoded JSON are a few bytes long, too short for a memchr call and a
/// memcpy each to pay off: eight bytes are copied and tested at a time, the excess cut off.
fn copy_plain(b: &[u8], mut i: usize, out: &mut Vec<u8>) -> Option<usize> {
    while let Some(word) = b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        out.extend_from_slice(&word);
        let hits = quote_or_backslash(u64::from_le_bytes(word));
        if hits != 0 {
            let k = hits.trailing_zeros() as usize / 8;
            out.truncate(out.len() - (8 - k));
            return Some(i + k);
        }
        i += 8;
    }
    let k = b[i..].iter().position(|&c| c == b'"' || c == b'\\')?;
    out.extend_from_slice(&b[i..i + k]);
    Some(i + k)
}

/// Bit 7 of a byte is set where `word` holds `"` or `\` (exact for the lowest such byte: the
/// zero-byte test can only misfire above a true hit).
fn quote_or_backslash(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (zero_bytes(quote) | zero_bytes(backslash)) & (ONES << 7)
}

/// The raw value under `key` in a raw JSON object, found without building the object: other
/// entries are skipped in place. None when `raw` is not an object or lacks the key.
pub fn raw_entry<'a>(raw: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    struct Find<'k>(&'k str);
    impl<'de, 'k> Visitor<'de> for Find<'k> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                if found.is_none() && k == self.0 {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(Find(key)).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_like_serde() {
        for s in [
            "plain",
            "{\"a\":\"b\\\\c\"}\n\t",
            "caf\u{e9} \u{1F600} \u{8}\u{c}/",
            "",
        ] {
            let literal = serde_json::to_string(s).unwrap();
            assert_eq!(unescape_literal(&literal).as_deref(), Some(s), "{literal}");
        }
        assert_eq!(
            unescape_literal(r#""\ud83d\ude00 \/""#).as_deref(),
            Some("\u{1F600} /")
        );
        for bad in [
            r#""\x""#,
            r#""\u12""#,
            r#""\ud83d""#,
            "no quotes",
            r#""trailing\""#,
        ] {
            assert_eq!(unescape_literal(bad), None, "{bad}");
        }
    }

    #[test]
    fn unescape_to_quote_finds_the_end_across_word_boundaries() {
        let pieces = [
            "a",
            "\"",
            "\\",
            "\u{e9}",
            "\u{1F600}",
            "\n",
            "xyzxyzxyz",
            "/",
        ];
        for n in 0..200usize {
            // Every mix of pieces at every offset modulo the 8-byte word.
            let s: String = (0..n % 23)
                .map(|k| pieces[(n * 7 + k * 3) % pieces.len()])
                .collect();
            let literal = serde_json::to_string(&s).unwrap();
            let rest = format!("{},\"next\":1}}", &literal[1..]);
            let (text, used) = unescape_to_quote(&rest).unwrap();
            assert_eq!(text, s);
            assert_eq!(&rest[used..], ",\"next\":1}");
        }
        assert_eq!(unescape_to_quote(r#"no closing \" quote"#), None);
    }

    #[test]
    fn borrows_plain_strings_and_owns_escaped_ones() {
        let v: Vec<JStr> = serde_json::from_str(r#"["plain","with \"escape\""]"#).unwrap();
        assert!(matches!(v[0].0, Cow::Borrowed("plain")));
        assert!(matches!(&v[1].0, Cow::Owned(s) if s == "with \"escape\""));
    }

    #[test]
    fn visits_each_string_and_stops_on_hit() {
        let raw: Box<RawValue> = serde_json::from_str(r#"["a", 3, "b", "c"]"#).unwrap();
        let mut seen = Vec::new();
        let hit = for_each_str(&raw, &mut |s| {
            seen.push(s.to_owned());
            s == "b"
        });
        assert!(hit);
        assert_eq!(seen, ["a", "b"]);
    }

    #[test]
    fn finds_one_entry_without_building_the_object() {
        let raw: &RawValue =
            serde_json::from_str(r#"{"a":[1,{"b":2}],"k\u0065y":["x"],"z":true}"#).unwrap();
        assert_eq!(raw_entry(raw, "key").map(RawValue::get), Some(r#"["x"]"#));
        assert_eq!(
            raw_entry(raw, "a").map(RawValue::get),
            Some(r#"[1,{"b":2}]"#)
        );
        assert!(raw_entry(raw, "b").is_none());
        let list: &RawValue = serde_json::from_str("[1]").unwrap();
        assert!(raw_entry(list, "a").is_none());
    }
}
