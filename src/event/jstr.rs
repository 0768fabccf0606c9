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
            while let Some(item) = seq.next_element::<serde_json::Value>()? {
                if !hit {
                    if let Some(s) = item.as_str() {
                        hit = (self.0)(s);
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
