//! `escalation_chain`: an identity is refused an action, an RBAC binding then names it (directly,
//! as its service account, or through one of its groups), and the same action then succeeds, all
//! within the window. Each step alone is routine; together they are someone acquiring a right
//! they were just refused.

use super::audit_id::AuditId;
use super::key::{cluster_of, evict, state_key, StateKey};
use super::rbac::{self, BindingChange};
use super::{
    Check, Classified, Cx, Detector, Extract, Observation, Payload, Terms, MAX_EVIDENCE_IDS,
};
use crate::alert::Alert;
use crate::event::time::format_micros;
use crate::event::EventView;
use crate::rules::kind::ChainSpec;
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

/// One step of a chain on an event: which (DENIED, GRANT or SUCCESS), the refused action or the
/// grant's description, the actor's groups or the binding's subjects, and the action's hash.
#[derive(Debug, Clone)]
pub struct Step {
    pub step: u32,
    pub value: Box<str>,
    pub terms: Terms,
    pub action: u128,
}

pub(super) fn extract(x: &mut Extract, rule: u32) {
    let Some((step, value, terms)) = classify(x.view) else {
        return;
    };
    // From a context copy, only what concerns the identities a binding names.
    if x.context() && step != GRANT {
        return;
    }
    // A success only completes a chain already waiting for it.
    if step == SUCCESS && x.follow(rule, step, x.actor_hash()) {
        return;
    }
    let action = if step & (DENIED | SUCCESS) != 0 {
        action_hash(x.view)
    } else {
        0
    };
    let key = x.actor_key();
    let found = Step {
        step,
        value,
        terms,
        action,
    };
    x.observe(rule, key, Payload::Chain(found));
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Denial {
    action: Box<str>,
    action_hash: u128,
    time: i64,
    audit_id: AuditId,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Grant {
    time: i64,
    audit_id: AuditId,
    what: Box<str>,
}

/// One identity's refusals and the grant that may follow them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    /// `cluster\x1fusername`: whom a grant's subjects are compared with.
    who: Box<str>,
    groups: Terms,
    denials: Vec<Denial>,
    grant: Option<Grant>,
    last_seen: i64,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    pending: HashMap<StateKey, Pending>,
}

impl Detector for State {
    type Spec = ChainSpec;
    type Payload = Step;

    /// Applies one step to the per-identity state (keyed by `cluster\x1fusername`).
    fn observe(
        &mut self,
        spec: &ChainSpec,
        obs: &Observation,
        step: Step,
        cx: &Cx,
    ) -> Option<Alert> {
        let (pending, window) = (&mut self.pending, spec.window);
        let value = &*step.value;
        match step.step {
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
                p.groups = step.terms.clone();
                p.last_seen = obs.time;
                p.denials.retain(|d| obs.time - d.time <= window);
                if !p.denials.iter().any(|d| d.action_hash == step.action) {
                    if p.denials.len() == MAX_DENIALS {
                        p.denials.remove(0);
                    }
                    p.denials.push(Denial {
                        action: value.into(),
                        action_hash: step.action,
                        time: obs.time,
                        audit_id: obs.audit_id.clone(),
                    });
                }
                None
            }
            GRANT => {
                // A grant may name anyone refused: every pending identity of the cluster is
                // checked.
                let cluster = cluster_of(&obs.key);
                for p in pending.values_mut() {
                    let Some(user) = p
                        .who
                        .strip_prefix(cluster)
                        .and_then(|k| k.strip_prefix('\u{1f}'))
                    else {
                        continue;
                    };
                    let named = step
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
                    d.action_hash == step.action
                        && d.time <= grant.time
                        && obs.time - d.time <= window
                })?;
                let denial = p.denials.remove(at);
                let mut alert = (cx.alert)(&[
                    ("denied_action", denial.action.to_string()),
                    ("denied_at", format_micros(denial.time)),
                    ("granted_by", grant.what.to_string()),
                    ("granted_at", format_micros(grant.time)),
                ]);
                let ids =
                    [&denial.audit_id, &grant.audit_id, &obs.audit_id].map(AuditId::to_string);
                alert.id = crate::alert::alert_id(
                    cx.rule_id(),
                    &obs.key,
                    &ids.each_ref().map(String::as_str),
                );
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
                if p.denials.is_empty() {
                    pending.remove(&key);
                }
                Some(alert)
            }
            _ => None,
        }
    }

    /// A success of the identity keyed `key` at `time` may complete its chain only if it was
    /// granted something since a refusal. (Nearly every request succeeds; almost none may.)
    fn awaits(&mut self, _: &ChainSpec, check: &Check, time: i64) -> bool {
        self.pending
            .get(&check.key())
            .and_then(|p| p.grant.as_ref())
            .is_some_and(|g| time >= g.time)
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.pending, cap, |p| p.last_seen)
    }

    fn len(&self) -> usize {
        self.pending.len()
    }
}
