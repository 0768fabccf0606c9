//! Uses of revoked credentials: an event whose actor or impersonated user matches an entry of
//! the revocation list (`crate::revocation`) after its `revoked_at`. One alert per entry,
//! cluster, role and outcome per window; the uses in between are counted into the next alert.

use super::key::{evict, state_key, StateKey};
use super::{Cx, Detector, Extract, Observation, Payload};
use crate::alert::Alert;
use crate::revocation::{Revocation, RevocationList, Role};
use crate::rules::kind::RevokedSpec;
use crate::rules::Severity;
use foldhash::HashMap;
use std::sync::Arc;

/// The entry an event matched, and how.
#[derive(Debug, Clone)]
pub struct Use {
    pub entry: Arc<Revocation>,
    /// The API server let the request through.
    pub allowed: bool,
    /// The revoked identity was impersonated, not the actor.
    pub impersonated: bool,
}

pub(super) fn extract(x: &mut Extract, rule: u32, revocations: &RevocationList) {
    let mut hits = Vec::new();
    revocations.matches(x.view, &mut hits);
    let allowed = super::rbac::is_allowed(x.view);
    for (entry, role) in hits {
        let impersonated = role == Role::Impersonated;
        let key = revocation_key(x.cluster, &entry, allowed, impersonated);
        let found = Use {
            entry,
            allowed,
            impersonated,
        };
        x.observe(rule, key, Payload::Revoked(found));
    }
}

/// One state per entry, cluster, role and outcome. The entry is named by its selectors and
/// time, so a reloaded list that keeps an entry keeps its state.
fn revocation_key(
    cluster: &str,
    entry: &Revocation,
    allowed: bool,
    impersonated: bool,
) -> Arc<str> {
    let sel = |s: &Option<String>| s.as_deref().unwrap_or("").to_owned();
    let steps = u32::from(allowed) | if impersonated { 2 } else { 0 };
    format!(
        "{cluster}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{steps}",
        sel(&entry.username),
        sel(&entry.uid),
        sel(&entry.group),
        sel(&entry.credential_id),
        entry.revoked_at_micros
    )
    .into()
}

/// The entry's selectors as a reader says them: `user dave, credential JTI=…`.
fn describe(entry: &Revocation) -> String {
    let selectors = [
        ("user", &entry.username),
        ("uid", &entry.uid),
        ("group", &entry.group),
        ("credential", &entry.credential_id),
    ];
    let named: Vec<String> = selectors
        .iter()
        .filter_map(|(what, v)| v.as_deref().map(|v| format!("{what} {v}")))
        .collect();
    named.join(", ")
}

/// Per key: (quiet until, uses since the last alert, last seen).
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    keys: HashMap<StateKey, (i64, u64, i64)>,
}

impl Detector for State {
    type Spec = RevokedSpec;
    type Payload = Use;

    fn observe(
        &mut self,
        spec: &RevokedSpec,
        obs: &Observation,
        found: Use,
        cx: &Cx,
    ) -> Option<Alert> {
        let state = self
            .keys
            .entry(state_key(&obs.key))
            .or_insert((i64::MIN, 0, obs.time));
        state.1 += 1;
        state.2 = obs.time;
        if obs.time < state.0 {
            return None;
        }
        let uses = std::mem::take(&mut state.1);
        state.0 = obs.time.saturating_add(spec.window);
        let entry = &found.entry;
        let mut values = vec![
            ("revoked_at", entry.revoked_at.clone()),
            ("reason", entry.reason.clone()),
            ("ticket", entry.ticket.clone()),
            (
                "outcome",
                if found.allowed {
                    "the API server allowed it"
                } else {
                    "it was denied"
                }
                .to_owned(),
            ),
            ("uses", uses.to_string()),
        ];
        if uses > 1 {
            values.push(("uses_since", uses.to_string()));
        }
        values.push(("revoked", describe(entry)));
        let mut alert = (cx.alert)(&values);
        alert.rule.severity = if found.allowed {
            Severity::Critical
        } else {
            Severity::High
        };
        alert.evidence.count = uses;
        alert.evidence.window_seconds = Some(spec.window / 1_000_000);
        alert.evidence.revocation = Some(serde_json::json!({
            "entry": &**entry, "role": if found.impersonated { "impersonated" } else { "actor" },
        }));
        alert.id = crate::alert::alert_id(cx.rule_id(), &obs.key, &[&obs.audit_id.to_string()]);
        Some(alert)
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.keys, cap, |k| k.2)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}
