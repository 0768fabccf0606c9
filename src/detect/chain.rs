//! `escalation_chain`: an identity is refused an action, an RBAC binding then names it (directly,
//! as its service account, or through one of its groups), and the same action then succeeds, all
//! within the window. Each step alone is routine; together they are someone acquiring a right
//! they were just refused.

use super::rbac::{self, BindingChange};
use super::{state_key, AuditId, Classified, Observation, StateKey, Terms, MAX_EVIDENCE_IDS};
use crate::alert::Alert;
use crate::event::time::format_micros;
use crate::event::EventView;
use foldhash::HashMap;

pub const DENIED: u32 = 1;
pub const GRANT: u32 = 2;
pub const SUCCESS: u32 = 4;

/// Refused actions remembered per identity.
const MAX_DENIALS: usize = 8;

/// How a worker classifies one event: (step, value, terms) for the observation.
/// Denied: the action and the actor's groups. Grant: who bound what, and the subjects. Success:
/// nothing (the observation carries the action's hash, `action_hash`: most requests succeed,
/// and their action text would be made only to be compared).
pub fn classify(view: &EventView) -> Option<Classified> {
    if matches!(rbac::binding_change(view), Some(BindingChange::Write)) && rbac::is_allowed(view) {
        let subjects = rbac::binding_subjects(view)?;
        let what = format!("{} via {}", view.event.username(), rbac::binding_id(view));
        return Some((GRANT, what.into(), subjects.into()));
    }
    if rbac::is_denied(view) {
        let groups = rbac::actor_groups(view);
        return Some((DENIED, rbac::action(view), groups.into()));
    }
    if rbac::is_allowed(view) {
        return Some((SUCCESS, Box::default(), Box::default()));
    }
    None
}

/// The hash of the event's action (`rbac::action`), by which a success finds its denial.
pub fn action_hash(view: &EventView) -> u128 {
    thread_local!(static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    TEXT.with_borrow_mut(|text| {
        text.clear();
        rbac::write_action(view, text);
        crate::keyed::hash128(text.as_bytes())
    })
}

struct Denial {
    action: Box<str>,
    action_hash: u128,
    time: i64,
    audit_id: AuditId,
}

struct Grant {
    time: i64,
    audit_id: AuditId,
    what: Box<str>,
}

/// One identity's refusals and the grant that may follow them.
pub struct Pending {
    /// `cluster\x1fusername`: whom a grant's subjects are compared with.
    who: Box<str>,
    groups: Terms,
    denials: Vec<Denial>,
    grant: Option<Grant>,
    pub last_seen: i64,
}

/// Whether a success of the identity keyed `key` at `time` may complete its chain: it was
/// granted something since a refusal. (Nearly every request succeeds; almost none may.)
pub fn awaits_success(pending: &HashMap<StateKey, Pending>, key: StateKey, time: i64) -> bool {
    pending
        .get(&key)
        .and_then(|p| p.grant.as_ref())
        .is_some_and(|g| time >= g.time)
}

/// Applies one observation to the per-identity state (keyed by `cluster\x1fusername`).
pub fn observe(
    pending: &mut HashMap<StateKey, Pending>,
    window: i64,
    obs: &Observation,
    rule_id: &str,
    alert: &dyn Fn() -> Alert,
) -> Option<Alert> {
    let value = obs.value.as_deref().unwrap_or("");
    match obs.steps {
        DENIED => {
            let p = pending
                .entry(state_key(&obs.key))
                .or_insert_with(|| Pending {
                    who: Box::from(&*obs.key),
                    groups: Box::default(),
                    denials: Vec::new(),
                    grant: None,
                    last_seen: obs.time,
                });
            p.groups = obs.terms.clone();
            p.last_seen = obs.time;
            p.denials.retain(|d| obs.time - d.time <= window);
            let action_hash = obs.hashes[0];
            if !p.denials.iter().any(|d| d.action_hash == action_hash) {
                if p.denials.len() == MAX_DENIALS {
                    p.denials.remove(0);
                }
                p.denials.push(Denial {
                    action: value.into(),
                    action_hash,
                    time: obs.time,
                    audit_id: obs.audit_id.clone(),
                });
            }
            None
        }
        GRANT => {
            let cluster = obs.key.split('\u{1f}').next().unwrap_or("");
            for p in pending.values_mut() {
                let Some(user) = p
                    .who
                    .strip_prefix(cluster)
                    .and_then(|k| k.strip_prefix('\u{1f}'))
                else {
                    continue;
                };
                let named = obs
                    .terms
                    .iter()
                    .any(|s| &**s == user || p.groups.contains(s));
                if named && p.denials.iter().any(|d| d.time <= obs.time) {
                    p.grant = Some(Grant {
                        time: obs.time,
                        audit_id: obs.audit_id.clone(),
                        what: value.into(),
                    });
                }
            }
            None
        }
        SUCCESS => {
            let key = state_key(&obs.key);
            let p = pending.get_mut(&key)?;
            let grant = p.grant.as_ref()?;
            if obs.time < grant.time {
                return None;
            }
            let at = p.denials.iter().position(|d| {
                d.action_hash == obs.hashes[0]
                    && d.time <= grant.time
                    && obs.time - d.time <= window
            })?;
            let denial = p.denials.remove(at);
            let mut alert = alert();
            let ids = [&denial.audit_id, &grant.audit_id, &obs.audit_id].map(AuditId::to_string);
            alert.id =
                crate::alert::alert_id(rule_id, &obs.key, &ids.each_ref().map(String::as_str));
            alert.evidence.audit_ids = ids.to_vec();
            alert.evidence.audit_ids.truncate(MAX_EVIDENCE_IDS);
            alert.evidence.count = 3;
            alert.evidence.first_time = Some(format_micros(denial.time));
            alert.evidence.window_seconds = Some(window / 1_000_000);
            alert.evidence.detail = Some(serde_json::json!({
                "denied": {"action": &*denial.action, "time": format_micros(denial.time), "audit_id": denial.audit_id.to_string()},
                "granted": {"by": &*grant.what, "time": format_micros(grant.time), "audit_id": grant.audit_id.to_string()},
                "used": {"time": format_micros(obs.time), "audit_id": obs.audit_id.to_string()},
            }));
            alert.summary = format!(
                "{} was refused {:?} at {}, was then granted access ({}) at {}, and the same action succeeded at {}.",
                alert.actor.username,
                &*denial.action,
                format_micros(denial.time),
                grant.what,
                format_micros(grant.time),
                alert.time
            );
            if p.denials.is_empty() {
                pending.remove(&key);
            }
            Some(alert)
        }
        _ => None,
    }
}
