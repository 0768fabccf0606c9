//! Field paths: how a rule names a value in an event, compiled once into a direct accessor.
//!
//! `verb`, `user.username`, `objectRef.namespace` read the parsed struct; `user.extra."key"`,
//! `annotations."key"` look into lazily parsed maps; `requestObject.…`, `responseObject.…` and
//! `podSpec.…` walk the raw JSON (parsed at most once per event, only when a rule gets that far).
//! `[*]` visits every element of a list, `(a|b)` tries several keys.

use super::derived::{self, Derived};
use crate::event::tree::Json;
use crate::event::view::JsonRoot;
use crate::event::view::Plain;
use crate::event::EventView;
use crate::event::{for_each_str, AuditEvent, JStr};
use serde_json::value::RawValue;

/// One value a field resolves to.
#[derive(Debug, Clone, Copy)]
pub enum Val<'v> {
    Str(&'v str),
    Num(f64),
    Bool(bool),
}

impl Val<'_> {
    pub fn to_text(self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }

    /// Appends the value as text (a whole number without a fraction).
    pub fn write_text(self, out: &mut String) {
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = match self {
            Val::Str(s) => out.write_str(s),
            Val::Num(n) if n.fract() == 0.0 => write!(out, "{}", n as i64),
            Val::Num(n) => write!(out, "{n}"),
            Val::Bool(b) => write!(out, "{b}"),
        };
    }
}

type StrGetter = for<'e, 'a> fn(&'e AuditEvent<'a>) -> Option<&'e str>;
type ListGetter = for<'e, 'a> fn(&'e AuditEvent<'a>) -> Option<&'e RawValue>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    AnyKey(Vec<String>),
    Each,
    Index(usize),
}

#[derive(Clone)]
pub enum Field {
    Str(StrGetter),
    List(ListGetter),
    StatusCode,
    Extra(String, Needles),
    Annotation(String, Needles),
    Json(JsonRoot, Vec<Seg>, Needles),
    /// Decoded from an encoded part of the event (`execCommand`, `csr.organizations`…).
    Derived(Derived),
}

/// The keys a field's path needs, as literal searchers built once: an object whose text has
/// none of a group's keys (and no escapes) cannot hold the field, and is not parsed at all.
#[derive(Clone, Debug)]
pub struct Needles(Vec<Vec<memchr::memmem::Finder<'static>>>, u64);

impl Needles {
    fn of(path: &[Seg]) -> Needles {
        let finder = |k: &String| memchr::memmem::Finder::new(k.as_bytes()).into_owned();
        // A fingerprint of the path's keys: copies of one field in different rules share it.
        let id = path
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, seg| match seg {
                Seg::Key(k) => k.bytes().fold(h ^ 0xff, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                }),
                _ => h.rotate_left(7),
            });
        Needles(
            path.iter()
                .filter_map(|seg| match seg {
                    Seg::Key(k) => Some(vec![finder(k)]),
                    Seg::AnyKey(keys) => Some(keys.iter().map(finder).collect()),
                    Seg::Each | Seg::Index(_) => None,
                })
                .collect(),
            id,
        )
    }

    fn key(key: &str) -> Needles {
        Needles::of(&[Seg::Key(key.to_owned())])
    }

    /// For a one-key path: the key's value in the raw object's text when it is a string with no
    /// escapes and the key is certainly a key (not text inside another string).
    fn plain_string<'t>(&self, text: &'t str) -> Plain<'t> {
        let Some(finder) = self.0.first().and_then(|g| g.first()) else {
            return Plain::Unsure;
        };
        let bytes = text.as_bytes();
        let key_len = finder.needle().len();
        // The API server writes annotations sorted by key, the decision often first: looked at
        // before searching (which costs more on such short texts than the rest of this).
        let first = bytes.starts_with(b"{\"") && bytes.get(2..2 + key_len) == Some(finder.needle());
        let first = first.then_some(2).into_iter();
        for at in first.chain(finder.find_iter(bytes)) {
            // `"key"`: quoted on both sides…
            let (Some(b'"'), Some(b'"')) =
                (at.checked_sub(1).map(|i| bytes[i]), bytes.get(at + key_len))
            else {
                continue;
            };
            // …and a key: what comes before the quote is `{` or `,` (a quote inside a string
            // is escaped, so a backslash would come first).
            let before = text[..at - 1].trim_end();
            if !matches!(before.as_bytes().last(), Some(b'{' | b',')) {
                if before.ends_with('\\') {
                    continue;
                }
                return Plain::Unsure;
            }
            let rest = text[at + key_len + 1..].trim_start();
            let Some(value) = rest.strip_prefix(':').map(str::trim_start) else {
                return Plain::Unsure;
            };
            let Some(value) = value.strip_prefix('"') else {
                return Plain::Unsure; // not a string: the general path decides
            };
            return match memchr::memchr2(b'"', b'\\', value.as_bytes()) {
                Some(end) if value.as_bytes()[end] == b'"' => Plain::Value(&value[..end]),
                _ => Plain::Unsure,
            };
        }
        // No occurrence as a key; an escaped key (`\u0061`) would hold a backslash.
        if text.contains('\\') {
            Plain::Unsure
        } else {
            Plain::Absent
        }
    }

    /// Whether the event's object at `root` may hold the path: true without a look once it is
    /// parsed (another rule read it), else `may_be_in` its text.
    fn may_hold(&self, ev: &EventView, root: JsonRoot) -> bool {
        ev.root_parsed(root) || self.may_be_in(ev.raw_root(root))
    }

    /// Whether the raw object may hold the path: every group has a key in its text.
    fn may_be_in(&self, raw: Option<&RawValue>) -> bool {
        let Some(raw) = raw else { return false };
        let text = raw.get().as_bytes();
        memchr::memchr(b'\\', text).is_some()
            || self
                .0
                .iter()
                .all(|group| group.iter().any(|f| f.find(text).is_some()))
    }
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Str(_) => f.write_str("Field::Str"),
            Field::List(_) => f.write_str("Field::List"),
            Field::StatusCode => f.write_str("Field::StatusCode"),
            Field::Extra(k, _) => write!(f, "Field::Extra({k})"),
            Field::Annotation(k, _) => write!(f, "Field::Annotation({k})"),
            Field::Json(r, p, _) => write!(f, "Field::Json({r:?}, {p:?})"),
            Field::Derived(d) => write!(f, "Field::Derived({d:?})"),
        }
    }
}

fn opt<'e>(s: &'e Option<JStr<'_>>) -> Option<&'e str> {
    s.as_deref()
}

fn service_account(username: &str) -> Option<(&str, &str)> {
    username
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')
}

/// Every field path a rule may use, by its fixed name.
const STR_FIELDS: &[(&str, StrGetter)] = &[
    ("verb", |e| opt(&e.verb)),
    ("stage", |e| opt(&e.stage)),
    ("level", |e| opt(&e.level)),
    ("auditID", |e| opt(&e.audit_id)),
    ("requestURI", |e| opt(&e.request_uri)),
    ("userAgent", |e| opt(&e.user_agent)),
    ("cluster", |e| opt(&e.cluster)),
    // The managed service whose export the record came in: aks, gke, eks, ack.
    ("provider", |e| e.provider),
    ("apiVersion", |e| opt(&e.api_version)),
    ("user.username", |e| opt(&e.user.username)),
    ("user.uid", |e| opt(&e.user.uid)),
    // Parts of a service account's username, `system:serviceaccount:<namespace>:<name>`.
    ("serviceAccount.namespace", |e| {
        service_account(e.username()).map(|(ns, _)| ns)
    }),
    ("serviceAccount.name", |e| {
        service_account(e.username()).map(|(_, name)| name)
    }),
    ("impersonatedUser.username", |e| {
        e.impersonated_user.as_ref().and_then(|u| opt(&u.username))
    }),
    ("impersonatedUser.uid", |e| {
        e.impersonated_user.as_ref().and_then(|u| opt(&u.uid))
    }),
    ("objectRef.resource", |e| {
        e.object_ref.as_ref().and_then(|o| opt(&o.resource))
    }),
    ("objectRef.subresource", |e| {
        e.object_ref.as_ref().and_then(|o| opt(&o.subresource))
    }),
    ("objectRef.namespace", |e| {
        e.object_ref.as_ref().and_then(|o| opt(&o.namespace))
    }),
    ("objectRef.name", |e| {
        e.object_ref.as_ref().and_then(|o| opt(&o.name))
    }),
    ("objectRef.apiGroup", |e| {
        e.object_ref.as_ref().and_then(|o| opt(&o.api_group))
    }),
    ("objectRef.apiVersion", |e| {
        e.object_ref.as_ref().and_then(|o| opt(&o.api_version))
    }),
    ("responseStatus.reason", |e| {
        e.response_status.as_ref().and_then(|s| opt(&s.reason))
    }),
    ("responseStatus.message", |e| {
        e.response_status.as_ref().and_then(|s| opt(&s.message))
    }),
];

const LIST_FIELDS: &[(&str, ListGetter)] = &[
    ("user.groups", |e| e.user.groups),
    ("impersonatedUser.groups", |e| {
        e.impersonated_user.as_ref().and_then(|u| u.groups)
    }),
    ("sourceIPs", |e| e.source_ips),
];

/// Short names for paths analysts type all day.
const ALIASES: &[(&str, &str)] = &[
    ("decision", "annotations.\"authorization.k8s.io/decision\""),
    (
        "authorizationReason",
        "annotations.\"authorization.k8s.io/reason\"",
    ),
    (
        "credentialID",
        "user.extra.\"authentication.kubernetes.io/credential-id\"",
    ),
];

pub fn known_field_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = STR_FIELDS.iter().map(|(n, _)| *n).collect();
    names.extend(LIST_FIELDS.iter().map(|(n, _)| *n));
    names.extend(ALIASES.iter().map(|(n, _)| *n));
    names.extend(derived::NAMES.iter().map(|(n, _)| *n));
    names.extend([
        "responseStatus.code",
        "user.extra.<key>",
        "annotations.<key>",
        "requestObject.<path>",
        "responseObject.<path>",
        "podSpec.<path>",
    ]);
    names
}

impl Field {
    pub fn parse(path: &str) -> Result<Field, String> {
        let path = ALIASES
            .iter()
            .find(|(a, _)| *a == path)
            .map_or(path, |(_, full)| full);
        if let Some((_, g)) = STR_FIELDS.iter().find(|(n, _)| *n == path) {
            return Ok(Field::Str(*g));
        }
        if let Some((_, g)) = LIST_FIELDS.iter().find(|(n, _)| *n == path) {
            return Ok(Field::List(*g));
        }
        if path == "responseStatus.code" {
            return Ok(Field::StatusCode);
        }
        if let Some((_, d)) = derived::NAMES.iter().find(|(n, _)| *n == path) {
            return Ok(Field::Derived(*d));
        }
        // `requestObject.a.b`, or `requestObject[*].value` when the object is a list (a JSON patch).
        let (root, rest) = match path.find(['.', '[']) {
            Some(i) if path.as_bytes()[i] == b'[' => (&path[..i], &path[i..]),
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (path, ""),
        };
        let json_root = match root {
            "requestObject" => Some(JsonRoot::Request),
            "responseObject" => Some(JsonRoot::Response),
            "podSpec" => Some(JsonRoot::PodSpec),
            _ => None,
        };
        if let Some(r) = json_root {
            let path = parse_segments(rest)?;
            let needles = Needles::of(&path);
            return Ok(Field::Json(r, path, needles));
        }
        let single_key = |prefix: &str| -> Result<String, String> {
            match parse_segments(&path[prefix.len()..])?.as_slice() {
                [Seg::Key(k)] => Ok(k.clone()),
                _ => Err(format!(
                    "{path:?}: expected one key after {prefix:?}, quoted if it has dots"
                )),
            }
        };
        if path.starts_with("user.extra.") {
            let key = single_key("user.extra.")?;
            let needles = Needles::key(&key);
            return Ok(Field::Extra(key, needles));
        }
        if path.starts_with("annotations.") {
            let key = single_key("annotations.")?;
            let needles = Needles::key(&key);
            return Ok(Field::Annotation(key, needles));
        }
        let known = known_field_names();
        match closest(path, &known) {
            Some(near) => Err(format!("unknown field {path:?}; did you mean {near:?}?")),
            None => Err(format!(
                "unknown field {path:?}; known fields: {}",
                known.join(", ")
            )),
        }
    }

    /// Calls `f` on each value of the field until it returns true; returns whether it did.
    pub fn any(&self, ev: &EventView, mut f: impl FnMut(Val) -> bool) -> bool {
        // Generic so that the common case, one top-level string, is a direct call.
        let f = &mut f;
        match self {
            Field::Str(g) => g(ev.event).is_some_and(|s| f(Val::Str(s))),
            Field::List(g) => {
                g(ev.event).is_some_and(|raw| for_each_str(raw, &mut |s| f(Val::Str(s))))
            }
            Field::StatusCode => ev
                .event
                .status_code()
                .is_some_and(|c| f(Val::Num(c as f64))),
            Field::Extra(key, needles) => {
                needles.may_be_in(ev.event.user.extra)
                    && ev
                        .extra()
                        .get(key.as_str())
                        .is_some_and(|v| visit_json(v, &[], f))
            }
            Field::Annotation(key, needles) => {
                let Some(raw) = ev.event.annotations else {
                    return false;
                };
                // Annotation values are plain strings: most are read straight from the text,
                // once per event and key however many rules ask.
                match ev.plain_annotation(needles.1, || needles.plain_string(raw.get())) {
                    Plain::Value(v) => f(Val::Str(v)),
                    Plain::Absent => false,
                    Plain::Unsure => ev
                        .annotations()
                        .get(key.as_str())
                        .is_some_and(|v| visit_json(v, &[], f)),
                }
            }
            Field::Json(root, path, needles) => {
                needles.may_hold(ev, *root)
                    && ev.json_root(*root).is_some_and(|v| visit_json(v, path, f))
            }
            Field::Derived(Derived::ExecCommand) => {
                ev.exec_command().is_some_and(|c| f(Val::Str(c)))
            }
            Field::Derived(Derived::CsrCommonName) => ev
                .csr_subject()
                .is_some_and(|s| s.common_names.iter().any(|v| f(Val::Str(v)))),
            Field::Derived(Derived::CsrOrganizations) => ev
                .csr_subject()
                .is_some_and(|s| s.organizations.iter().any(|v| f(Val::Str(v)))),
            Field::Derived(Derived::SourceLists) => ev
                .sources()
                .iter()
                .any(|s| s.lists.iter().any(|l| f(Val::Str(l)))),
            Field::Derived(Derived::SourceAsn) => ev
                .sources()
                .iter()
                .filter_map(|s| s.geo?.asn)
                .any(|n| f(Val::Num(f64::from(n)))),
            Field::Derived(Derived::SourceAsOrg) => ev
                .sources()
                .iter()
                .filter_map(|s| s.geo?.as_org)
                .any(|o| f(Val::Str(o))),
            Field::Derived(Derived::SourceCountry) => ev
                .sources()
                .iter()
                .filter_map(|s| s.geo?.country)
                .any(|c| f(Val::Str(c))),
        }
    }

    /// The field's whole text when it is one top-level string or list (the key of a memo).
    pub fn raw_text<'e>(&self, ev: &'e EventView) -> Option<&'e str> {
        match self {
            Field::Str(g) => g(ev.event),
            Field::List(g) => g(ev.event).map(RawValue::get),
            _ => None,
        }
    }

    /// The first value, as text (for summaries and alert keys).
    pub fn first_text(&self, ev: &EventView) -> Option<String> {
        let mut out = None;
        self.any(ev, |v: Val| {
            out = Some(v.to_text());
            true
        });
        out
    }

    /// Every value, as text.
    pub fn all_text(&self, ev: &EventView) -> Vec<String> {
        let mut out = Vec::new();
        self.any(ev, |v: Val| {
            out.push(v.to_text());
            false
        });
        out
    }

    /// For a JSON path ending in a key, a searcher for that key as JSON writes it (`"privileged"`).
    pub fn last_key_searcher(&self) -> Option<memchr::memmem::Finder<'static>> {
        match self {
            Field::Json(_, path, _) => match path.last() {
                Some(Seg::Key(k)) => {
                    Some(memchr::memmem::Finder::new(format!("\"{k}\"").as_bytes()).into_owned())
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the bare literal `lit` (`true`, `false`) may be this JSON field's value: some
    /// occurrence of its last key (found by `key`) in the raw object is followed by it, or by a
    /// string or list that the full test must look at. No escapes anywhere, no parse at all.
    pub fn literal_may_follow(
        &self,
        ev: &EventView,
        key: &memchr::memmem::Finder,
        lit: &str,
    ) -> bool {
        let Field::Json(root, ..) = self else {
            return true;
        };
        let Some(raw) = ev.raw_root(*root) else {
            return false;
        };
        let text = raw.get();
        if memchr::memchr(b'\\', text.as_bytes()).is_some() {
            return true;
        }
        key.find_iter(text.as_bytes()).any(|at| {
            let after = text[at + key.needle().len()..].trim_start();
            after.strip_prefix(':').is_some_and(|v| {
                let v = v.trim_start();
                v.starts_with(lit) || v.starts_with('"') || v.starts_with('[')
            })
        })
    }

    /// Whether the field has any non-null value (objects and lists count).
    pub fn exists(&self, ev: &EventView) -> bool {
        match self {
            Field::Str(g) => g(ev.event).is_some(),
            Field::Json(root, path, needles) => {
                needles.may_hold(ev, *root)
                    && ev.json_root(*root).is_some_and(|v| json_exists(v, path))
            }
            _ => self.any(ev, |_: Val| true),
        }
    }
}

fn visit_json(v: &Json, path: &[Seg], f: &mut dyn FnMut(Val) -> bool) -> bool {
    let Some((seg, rest)) = path.split_first() else {
        return match v {
            Json::Str(s) => f(Val::Str(s)),
            Json::Num(n) => f(Val::Num(*n)),
            Json::Bool(b) => f(Val::Bool(*b)),
            // A list at the end of a path: its scalar elements are the values.
            Json::List(items) => items.iter().any(|i| !i.is_list() && visit_json(i, &[], f)),
            Json::Null | Json::Object(_) => false,
        };
    };
    match seg {
        Seg::Key(k) => v.get(k).is_some_and(|c| visit_json(c, rest, f)),
        Seg::AnyKey(keys) => keys
            .iter()
            .any(|k| v.get(k).is_some_and(|c| visit_json(c, rest, f))),
        Seg::Index(i) => v.at(*i).is_some_and(|c| visit_json(c, rest, f)),
        Seg::Each => v.children().any(|c| visit_json(c, rest, f)),
    }
}

fn json_exists(v: &Json, path: &[Seg]) -> bool {
    let Some((seg, rest)) = path.split_first() else {
        return !v.is_null();
    };
    match seg {
        Seg::Key(k) => v.get(k).is_some_and(|c| json_exists(c, rest)),
        Seg::AnyKey(keys) => keys
            .iter()
            .any(|k| v.get(k).is_some_and(|c| json_exists(c, rest))),
        Seg::Index(i) => v.at(*i).is_some_and(|c| json_exists(c, rest)),
        Seg::Each => v.children().any(|c| json_exists(c, rest)),
    }
}

/// Parses `a.b[*].c`, `"dotted.key".x`, `spec.(containers|initContainers)[0]`.
pub fn parse_segments(s: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let err = |msg: &str, at: usize| Err(format!("bad path {s:?} at byte {at}: {msg}"));
    while i < b.len() {
        match b[i] {
            b'.' if !segs.is_empty() => i += 1,
            b'"' => {
                let Some(len) = s[i + 1..].find('"') else {
                    return err("unterminated quote", i);
                };
                segs.push(Seg::Key(s[i + 1..i + 1 + len].to_owned()));
                i += len + 2;
            }
            b'(' => {
                let Some(len) = s[i + 1..].find(')') else {
                    return err("unterminated '('", i);
                };
                let keys: Vec<String> = s[i + 1..i + 1 + len]
                    .split('|')
                    .map(|k| k.trim().to_owned())
                    .collect();
                if keys.iter().any(String::is_empty) {
                    return err("empty alternative", i);
                }
                segs.push(Seg::AnyKey(keys));
                i += len + 2;
            }
            b'[' => {
                let Some(len) = s[i + 1..].find(']') else {
                    return err("unterminated '['", i);
                };
                let inner = &s[i + 1..i + 1 + len];
                if inner == "*" {
                    segs.push(Seg::Each);
                } else {
                    match inner.parse() {
                        Ok(n) => segs.push(Seg::Index(n)),
                        Err(_) => return err("expected [*] or [number]", i),
                    }
                }
                i += len + 2;
            }
            _ => {
                let len = s[i..].find(['.', '[', '(', '"']).unwrap_or(s.len() - i);
                if len == 0 {
                    return err("empty key", i);
                }
                segs.push(Seg::Key(s[i..i + len].to_owned()));
                i += len;
            }
        }
    }
    Ok(segs)
}

/// For tests: calls `f` on a view of the event a native JSON line holds, at the event's time.
#[cfg(test)]
pub(crate) fn on_event(json: &str, mut f: impl FnMut(&EventView)) {
    use crate::event::{decode_record, DecodeOptions, Item};
    decode_record(
        json.as_bytes(),
        &DecodeOptions::default(),
        "c",
        &mut |item| {
            if let Item::Event(ev, _) = item {
                f(&EventView::new(ev, ev.event_time().unwrap_or(0)));
            }
        },
    );
}

/// The known name a typo most likely meant: within two edits (a third for long names).
fn closest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = if typed.len() > 12 { 3 } else { 2 };
    known
        .iter()
        .map(|k| (edits(typed, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mistyped_field_is_answered_with_the_one_meant() {
        let e = super::Field::parse("objectRef.resourc").err().unwrap();
        assert!(e.contains("did you mean \"objectRef.resource\"?"), "{e}");
        let e = super::Field::parse("usr.username").err().unwrap();
        assert!(e.contains("\"user.username\""), "{e}");
        // Nothing close: the list of fields instead.
        let e = super::Field::parse("colour").err().unwrap();
        assert!(e.contains("known fields: verb"), "{e}");
    }

    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_segments(r#"spec.(containers|initContainers)[*]."a.b"[2]"#).unwrap(),
            vec![
                Seg::Key("spec".into()),
                Seg::AnyKey(vec!["containers".into(), "initContainers".into()]),
                Seg::Each,
                Seg::Key("a.b".into()),
                Seg::Index(2)
            ]
        );
        assert!(parse_segments("a[x]").is_err());
        assert!(parse_segments("a.\"b").is_err());
        assert!(Field::parse("user.nope").is_err());
        assert!(Field::parse("credentialID").is_ok());
    }

    #[test]
    fn resolves_nested_and_lazy_fields() {
        let json = r#"{"auditID":"1","verb":"create","user":{"username":"u","groups":["g1","g2"],"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=ab"]}},
            "annotations":{"authorization.k8s.io/decision":"allow"},"responseStatus":{"code":201},
            "requestObject":{"kind":"Deployment","spec":{"template":{"spec":{"initContainers":[{"securityContext":{"privileged":true}}],"containers":[{"name":"a"}]}}}}}"#;
        let ev: AuditEvent = serde_json::from_str(json).unwrap();
        let view = EventView::new(&ev, 0);
        let text = |p: &str| Field::parse(p).unwrap().all_text(&view);
        assert_eq!(text("user.groups"), ["g1", "g2"]);
        assert_eq!(text("credentialID"), ["X509SHA256=ab"]);
        assert_eq!(text("decision"), ["allow"]);
        assert_eq!(text("responseStatus.code"), ["201"]);
        assert_eq!(
            text("podSpec.(containers|initContainers)[*].securityContext.privileged"),
            ["true"]
        );
        assert_eq!(text("podSpec.containers[*].name"), ["a"]);
        assert!(text("requestObject.spec.nothing").is_empty());
    }

    #[test]
    fn the_literal_prefilter_never_hides_a_value() {
        let field = Field::parse("requestObject.spec.(hostPID|hostIPC)").unwrap();
        let values = |json: &str| {
            let ev: AuditEvent = serde_json::from_str(json).unwrap();
            field.all_text(&EventView::new(&ev, 0))
        };
        assert_eq!(
            values(r#"{"requestObject":{"spec":{"hostIPC":true}}}"#),
            ["true"]
        );
        // An escaped key is not found literally; the object is parsed all the same.
        assert_eq!(
            values(r#"{"requestObject":{"spec":{"host\u0050ID":true}}}"#),
            ["true"]
        );
        assert!(values(r#"{"requestObject":{"spec":{"hostNetwork":true}}}"#).is_empty());
        assert!(values(r#"{"requestObject":{"hostPID":true}}"#).is_empty());
    }
}
