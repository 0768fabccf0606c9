//! A parsed JSON object that borrows its text from the record: what rules walk in
//! `requestObject`, `responseObject` and `podSpec`.
//!
//! `serde_json::Value` copies every key and string and keeps objects in B-trees; a pod spec of
//! a few hundred bytes then costs a dozen allocations to build and as many to drop, on every
//! workload write. Here strings without escapes stay slices of the record, an object is one
//! list of its members in document order (the objects rules look into are small), and a key
//! written twice resolves to its last value, as with `Value`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// Every number as `f64`, as rules compare them (`serde_json::Number::as_f64`).
    Num(f64),
    Str(Cow<'a, str>),
    List(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses `text`, borrowing from it. Nesting is limited as `serde_json` limits it.
    pub fn parse(text: &'a str) -> serde_json::Result<Json<'a>> {
        serde_json::from_str(text)
    }

    /// A member of an object (the last, when its key is written twice).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|m| &m.1),
            _ => None,
        }
    }

    /// An element of a list.
    pub fn at(&self, index: usize) -> Option<&Json<'a>> {
        match self {
            Json::List(items) => items.get(index),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A string, or a list's first element when that is a string (`user.extra` values).
    pub fn first_str(&self) -> Option<&str> {
        match self {
            Json::List(items) => items.first().and_then(Json::as_str),
            other => other.as_str(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn is_list(&self) -> bool {
        matches!(self, Json::List(_))
    }

    /// An object's values in document order (a key written twice is visited twice: a rule
    /// sees more, never less) or a list's elements; nothing for a scalar.
    pub fn children(&self) -> impl Iterator<Item = &Json<'a>> {
        let (items, members): (&[Json], &[(Cow<str>, Json)]) = match self {
            Json::List(items) => (items, &[]),
            Json::Object(members) => (&[], members),
            _ => (&[], &[]),
        };
        items.iter().chain(members.iter().map(|m| &m.1))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor(PhantomData))
    }
}

struct JsonVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for JsonVisitor<'a> {
    type Value = Json<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'a>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'a>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'a>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'a>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'a>, E> {
        Ok(Json::Num(n as f64))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'a>, E> {
        Ok(Json::Num(n as f64))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json<'a>, E> {
        Ok(Json::Num(n))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'a>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'a>, E> {
        Ok(Json::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'a>, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'a>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'a>, A::Error> {
        let mut members = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

/// An object's key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Json::deserialize(d)? {
            Json::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("an object key that is not a string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed_and_numbers_are_floats() {
        let text = r#"{"a": "plain", "b": "tab\there", "n": [1, -2, 2.5], "t": true, "z": null}"#;
        let tree = Json::parse(text).unwrap();
        assert!(matches!(
            tree.get("a"),
            Some(Json::Str(Cow::Borrowed("plain")))
        ));
        assert!(matches!(tree.get("b"), Some(Json::Str(Cow::Owned(s))) if s == "tab\there"));
        let n = tree.get("n").unwrap();
        assert_eq!(n.at(0), Some(&Json::Num(1.0)));
        assert_eq!(n.at(1), Some(&Json::Num(-2.0)));
        assert_eq!(n.at(2), Some(&Json::Num(2.5)));
        assert_eq!(n.at(3), None);
        assert_eq!(tree.get("t"), Some(&Json::Bool(true)));
        assert!(tree.get("z").unwrap().is_null());
        assert_eq!(tree.get("missing"), None);
        assert_eq!(n.get("a"), None, "a list has no members");
    }

    #[test]
    fn a_key_written_twice_is_its_last_value_as_with_serde_json() {
        let text = r#"{"k": 1, "other": 2, "k": 3}"#;
        let tree = Json::parse(text).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(tree.get("k"), Some(&Json::Num(3.0)));
        assert_eq!(value["k"], 3);
        let children: Vec<_> = tree.children().collect();
        assert_eq!(
            children,
            [&Json::Num(1.0), &Json::Num(2.0), &Json::Num(3.0)]
        );
    }

    #[test]
    fn bad_text_and_deep_nesting_are_errors_not_crashes() {
        assert!(Json::parse(r#"{"a": "#).is_err());
        assert!(Json::parse(r#"{"a": "\ud800"}"#).is_err());
        let deep = "[".repeat(100_000);
        assert!(Json::parse(&deep).is_err());
    }
}
