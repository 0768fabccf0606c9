//! Revoked-but-used credentials: a revocation list (YAML, JSON or CSV) matched against every
//! event's actor and impersonated user. Deleting a cloud user does not revoke the kubeconfig it
//! was issued, so every use after `revoked_at` (event time) is an alert.

use crate::event::time;
use crate::event::EventView;
use foldhash::HashMap;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

mod live;
pub use live::LiveRevocations;

/// One revoked identity or credential. At least one selector is set; all set selectors must match.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// As in `user.extra["authentication.kubernetes.io/credential-id"]`: `X509SHA256=…`, `JTI=…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// RFC 3339.
    pub revoked_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ticket: String,
    #[serde(skip)]
    pub revoked_at_micros: i64,
}

/// The list, indexed by each selector's value.
#[derive(Debug, Default)]
pub struct RevocationList {
    /// Shared with the observations that matched them, so a reload never changes what an
    /// in-flight observation refers to.
    pub entries: Vec<Arc<Revocation>>,
    by_username: HashMap<String, Vec<u32>>,
    by_uid: HashMap<String, Vec<u32>>,
    by_group: HashMap<String, Vec<u32>>,
    by_credential: HashMap<String, Vec<u32>>,
}

/// How an event touched a revoked entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The authenticated actor is revoked.
    Actor,
    /// The identity being impersonated is revoked.
    Impersonated,
}

impl RevocationList {
    /// Reads `.yaml`/`.yml`, `.json` or `.csv` (by extension). Every problem is reported with its place.
    pub fn load(path: &Path) -> Result<RevocationList, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        RevocationList::parse(&text, &path.display().to_string())
    }

    /// A list's text, read as its `origin` (a file name) says by its extension; errors start
    /// with `origin`, as `load`'s start with the path.
    pub fn parse(text: &str, origin: &str) -> Result<RevocationList, String> {
        let entries: Vec<Revocation> = match Path::new(origin).extension().and_then(|e| e.to_str())
        {
            Some("csv") => parse_csv(text).map_err(|e| format!("{origin}:{e}"))?,
            Some("json") => serde_json::from_str(text)
                .map_err(|e| format!("{origin}:{}:{}: {e}", e.line(), e.column()))?,
            _ => serde_yaml::from_str(text).map_err(|e| match e.location() {
                Some(l) => format!("{origin}:{}:{}: {e}", l.line(), l.column()),
                None => format!("{origin}: {e}"),
            })?,
        };
        RevocationList::new(entries).map_err(|e| format!("{origin}: {e}"))
    }

    pub fn new(mut entries: Vec<Revocation>) -> Result<RevocationList, String> {
        let mut list = RevocationList::default();
        for (i, e) in entries.iter_mut().enumerate() {
            e.revoked_at_micros = time::parse_rfc3339_micros(&e.revoked_at).ok_or_else(|| {
                format!(
                    "entry {}: revoked_at {:?} is not an RFC 3339 time",
                    i + 1,
                    e.revoked_at
                )
            })?;
            let i = i as u32;
            let mut any = false;
            for (sel, map) in [
                (&e.username, &mut list.by_username),
                (&e.uid, &mut list.by_uid),
                (&e.group, &mut list.by_group),
                (&e.credential_id, &mut list.by_credential),
            ] {
                if let Some(v) = sel.as_ref().filter(|v| !v.is_empty()) {
                    map.entry(v.clone()).or_default().push(i);
                    any = true;
                }
            }
            if !any {
                return Err(format!(
                    "entry {}: needs at least one of username, uid, group, credential_id",
                    i + 1
                ));
            }
        }
        list.entries = entries.into_iter().map(Arc::new).collect();
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries revoked before the event that its actor or impersonated user matches.
    pub fn matches(&self, view: &EventView, out: &mut Vec<(Arc<Revocation>, Role)>) {
        out.clear();
        if self.is_empty() {
            return;
        }
        let ev = view.event;
        let mut candidates: Vec<u32> = Vec::new();
        let mut push = |map: &HashMap<String, Vec<u32>>, key: Option<&str>| {
            if let Some(ids) = key.and_then(|k| map.get(k)) {
                candidates.extend(ids);
            }
        };
        push(&self.by_username, ev.user.username.as_deref());
        push(&self.by_uid, ev.user.uid.as_deref());
        // Groups and credential ids are only looked at when some entry names one: no entry can
        // need them otherwise, and most lists have neither.
        let credential = if self.by_credential.is_empty() {
            None
        } else {
            ev.user.extra.and_then(crate::event::credential_id)
        };
        push(&self.by_credential, credential.as_deref());
        // Group names are looked up in place; the lists are copied only for an event that
        // some entry may concern.
        let group_candidates = |raw: Option<&serde_json::value::RawValue>, into: &mut Vec<u32>| {
            if let (false, Some(raw)) = (self.by_group.is_empty(), raw) {
                crate::event::for_each_str(raw, &mut |g| {
                    if let Some(ids) = self.by_group.get(g) {
                        into.extend(ids);
                    }
                    false
                });
            }
        };
        group_candidates(ev.user.groups, &mut candidates);
        let imp = ev.impersonated_user.as_ref();
        let mut imp_candidates: Vec<u32> = Vec::new();
        if let Some(u) = imp {
            for (map, key) in [
                (&self.by_username, u.username.as_deref()),
                (&self.by_uid, u.uid.as_deref()),
            ] {
                if let Some(ids) = key.and_then(|k| map.get(k)) {
                    imp_candidates.extend(ids);
                }
            }
            group_candidates(u.groups, &mut imp_candidates);
        }
        if candidates.is_empty() && imp_candidates.is_empty() {
            return;
        }
        let groups = string_list(ev.user.groups);
        let imp_groups = string_list(imp.and_then(|u| u.groups));
        let actor = Identity {
            username: ev.user.username.as_deref(),
            uid: ev.user.uid.as_deref(),
            groups: &groups,
            credential: credential.as_deref(),
        };
        let impersonated = Identity {
            username: imp.and_then(|u| u.username.as_deref()),
            uid: imp.and_then(|u| u.uid.as_deref()),
            groups: &imp_groups,
            credential: None,
        };
        for (ids, who, role) in [
            (&mut candidates, &actor, Role::Actor),
            (&mut imp_candidates, &impersonated, Role::Impersonated),
        ] {
            ids.sort_unstable();
            ids.dedup();
            for &i in ids.iter() {
                let e = &self.entries[i as usize];
                if view.time > e.revoked_at_micros && who.matches(e) {
                    out.push((e.clone(), role));
                }
            }
        }
    }
}

struct Identity<'a> {
    username: Option<&'a str>,
    uid: Option<&'a str>,
    groups: &'a [String],
    credential: Option<&'a str>,
}

impl Identity<'_> {
    /// Every selector the entry sets must match.
    fn matches(&self, e: &Revocation) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == got)
        };
        eq(&e.username, self.username)
            && eq(&e.uid, self.uid)
            && eq(&e.credential_id, self.credential)
            && e.group
                .as_deref()
                .is_none_or(|g| self.groups.iter().any(|x| x == g))
    }
}

fn string_list(raw: Option<&serde_json::value::RawValue>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(raw) = raw {
        crate::event::for_each_str(raw, &mut |s| {
            out.push(s.to_owned());
            false
        });
    }
    out
}

/// `username,uid,group,credential_id,revoked_at,reason,ticket` with a header naming the columns
/// used (any order, any subset that includes revoked_at). Quoted fields may hold commas.
fn parse_csv(text: &str) -> Result<Vec<Revocation>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<String> = split_csv(header)
        .into_iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    const KNOWN: [&str; 7] = [
        "username",
        "uid",
        "group",
        "credential_id",
        "revoked_at",
        "reason",
        "ticket",
    ];
    if let Some(bad) = columns.iter().find(|c| !KNOWN.contains(&c.as_str())) {
        return Err(format!(
            "1: unknown column {bad:?}; use {}",
            KNOWN.join(", ")
        ));
    }
    lines
        .map(|(n, line)| {
            let cells = split_csv(line);
            if cells.len() != columns.len() {
                return Err(format!(
                    "{}: {} fields, the header has {}",
                    n + 1,
                    cells.len(),
                    columns.len()
                ));
            }
            let mut e = Revocation::default();
            for (col, cell) in columns.iter().zip(cells) {
                let cell = cell.trim().to_owned();
                let opt = (!cell.is_empty()).then(|| cell.clone());
                match col.as_str() {
                    "username" => e.username = opt,
                    "uid" => e.uid = opt,
                    "group" => e.group = opt,
                    "credential_id" => e.credential_id = opt,
                    "revoked_at" => e.revoked_at = cell,
                    "reason" => e.reason = cell,
                    _ => e.ticket = cell,
                }
            }
            Ok(e)
        })
        .collect()
}

fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(s) = cells.last_mut() {
                    s.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => {
                if let Some(s) = cells.last_mut() {
                    s.push(c);
                }
            }
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEvent;

    fn list(entries: &[(&str, &str)]) -> RevocationList {
        let yaml: String = entries
            .iter()
            .map(|(sel, at)| format!("- {{{sel}, revoked_at: \"{at}\"}}\n"))
            .collect();
        RevocationList::new(serde_yaml::from_str(&yaml).unwrap()).unwrap()
    }

    /// (entry index, role) of each hit.
    fn hits(list: &RevocationList, event: &str, time: &str) -> Vec<(u32, Role)> {
        let ev: AuditEvent = serde_json::from_str(event).unwrap();
        let view = EventView::new(&ev, time::parse_rfc3339_micros(time).unwrap());
        let mut out = Vec::new();
        list.matches(&view, &mut out);
        out.iter()
            .map(|(e, role)| {
                let i = list.entries.iter().position(|x| Arc::ptr_eq(x, e)).unwrap();
                (i as u32, *role)
            })
            .collect()
    }

    const EV: &str = r#"{"user":{"username":"dave","uid":"u-1","groups":["devs"],"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=ab"]}},
        "impersonatedUser":{"username":"ops-bot","groups":["ops"]}}"#;

    #[test]
    fn matches_each_selector_only_after_revocation() {
        let l = list(&[
            ("username: dave", "2025-01-01T00:00:00Z"),
            ("uid: u-1", "2025-06-01T00:00:00Z"),
            ("credential_id: X509SHA256=ab", "2025-01-01T00:00:00Z"),
            ("group: devs", "2025-01-01T00:00:00Z"),
            ("credential_id: X509SHA256=other", "2025-01-01T00:00:00Z"),
            (
                "username: dave, credential_id: X509SHA256=zz",
                "2025-01-01T00:00:00Z",
            ),
        ]);
        let got: Vec<u32> = hits(&l, EV, "2025-03-01T00:00:00Z")
            .into_iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(
            got,
            vec![0, 2, 3],
            "uid revoked later; other credential; both selectors must match"
        );
        assert!(hits(&l, EV, "2024-12-31T23:59:59Z").is_empty());
    }

    #[test]
    fn impersonation_counts_both_ways() {
        let l = list(&[
            ("username: ops-bot", "2025-01-01T00:00:00Z"),
            ("group: ops", "2025-01-01T00:00:00Z"),
        ]);
        assert_eq!(
            hits(&l, EV, "2025-02-01T00:00:00Z"),
            vec![(0, Role::Impersonated), (1, Role::Impersonated)]
        );
    }

    #[test]
    fn csv_json_and_errors() {
        let csv = "username,credential_id,revoked_at,reason,ticket\ndave,,2025-01-01T00:00:00Z,\"left, company\",OFF-1\n,JTI=9,2025-01-02T00:00:00Z,lost laptop,OFF-2\n";
        let entries = parse_csv(csv).unwrap();
        assert_eq!(entries[0].reason, "left, company");
        assert_eq!(entries[1].credential_id.as_deref(), Some("JTI=9"));
        assert!(RevocationList::new(entries).is_ok());
        assert!(parse_csv("user,revoked_at\nx,2025")
            .unwrap_err()
            .contains("unknown column"));
        assert!(parse_csv("username,revoked_at\nx")
            .unwrap_err()
            .starts_with("2: 1 fields"));
        let bad = RevocationList::new(vec![Revocation {
            username: Some("x".into()),
            revoked_at: "yesterday".into(),
            ..Default::default()
        }]);
        assert!(bad.unwrap_err().contains("not an RFC 3339 time"));
        let empty = RevocationList::new(vec![Revocation {
            revoked_at: "2025-01-01T00:00:00Z".into(),
            ..Default::default()
        }]);
        assert!(empty.unwrap_err().contains("needs at least one of"));
    }
}
