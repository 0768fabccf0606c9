//! `unbound_identity`: the stream shows every (Cluster)RoleBinding naming a user or service
//! account being removed, yet the identity keeps succeeding. Offboarding removed its access on
//! paper; the successes show it still has some (a group binding, another credential, a binding
//! the stream never showed) and that someone is still using it.
//!
//! Only bindings whose subjects the stream carried (create/update at Request level or above) are
//! known; an identity none of whose bindings was ever seen is never "unbound".

use super::audit_id::AuditId;
use super::key::{cluster_of, evict, state_key, StateKey};
use super::rbac::{self, BindingChange};
use super::{Check, Classified, Cx, Detector, Extract, Observation, Payload, Terms};
use crate::alert::Alert;
use crate::event::time::format_micros;
use crate::event::EventView;
use crate::rules::kind::UnboundSpec;
use foldhash::HashMap;

pub const BIND: u32 = 1;
pub const UNBIND: u32 = 2;
pub const USE: u32 = 4;

/// (step, value, terms): a binding written (its id, its user and service-account subjects), a
/// binding deleted (its id), or a successful request (nothing more needed).
pub fn classify(view: &EventView) -> Option<Classified> {
    if !rbac::is_allowed(view) {
        return None;
    }
    match rbac::binding_change(view) {
        Some(BindingChange::Write) => {
            let mut subjects = rbac::binding_subjects(view)?;
            subjects.retain(|s| !s.starts_with("group:"));
            Some((BIND, rbac::binding_id(view).into(), subjects.into()))
        }
        Some(BindingChange::Delete) => {
            Some((UNBIND, rbac::binding_id(view).into(), Box::default()))
        }
        None => Some((USE, Box::default(), Box::default())),
    }
}

/// One step on an event: which (BIND, UNBIND or USE), the binding's id, and the user and
/// service-account subjects a written binding names.
#[derive(Debug, Clone)]
pub struct Step {
    pub step: u32,
    pub binding: Box<str>,
    pub subjects: Terms,
}

pub(super) fn extract(x: &mut Extract, rule: u32) {
    let Some((step, binding, subjects)) = classify(x.view) else {
        return;
    };
    // From a context copy, only what concerns the identities a binding names.
    if x.context() && step & (BIND | UNBIND) == 0 {
        return;
    }
    // A use only matters to an identity already left without bindings.
    if step == USE && x.follow(rule, step, x.actor_hash()) {
        return;
    }
    let key = x.actor_key();
    let found = Step {
        step,
        binding,
        subjects,
    };
    x.observe(rule, key, Payload::Unbound(found));
}

/// When and by which event an identity lost its last known binding.
#[derive(serde::Serialize, serde::Deserialize)]
struct Unbound {
    time: i64,
    audit_id: AuditId,
    binding: Box<str>,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// `cluster\x1fbinding` → its subjects and when it was last written.
    bindings: HashMap<Box<str>, (Terms, i64)>,
    /// `cluster\x1fidentity` → how many known bindings name it, and when that last changed.
    counts: HashMap<Box<str>, (u32, i64)>,
    /// By the hash of `cluster\x1fidentity`, which is all a request's follow-up carries.
    unbound: HashMap<StateKey, Unbound>,
}

impl Detector for State {
    type Spec = UnboundSpec;
    type Payload = Step;

    fn observe(
        &mut self,
        spec: &UnboundSpec,
        obs: &Observation,
        step: Step,
        cx: &Cx,
    ) -> Option<Alert> {
        let state = self;
        let id =
            |name: &str| -> Box<str> { format!("{}\u{1f}{name}", cluster_of(&obs.key)).into() };
        match step.step {
            BIND | UNBIND => {
                let binding = id(&step.binding);
                let old = match step.step {
                    BIND => state
                        .bindings
                        .insert(binding.clone(), (step.subjects.clone(), obs.time)),
                    _ => state.bindings.remove(&binding),
                };
                for s in step.subjects.iter() {
                    let c = state.counts.entry(id(s)).or_insert((0, obs.time));
                    *c = (c.0 + 1, obs.time);
                    state.unbound.remove(&state_key(&id(s)));
                }
                for s in old.iter().flat_map(|(subjects, _)| subjects.iter()) {
                    let key = id(s);
                    let Some(c) = state.counts.get_mut(&key) else {
                        continue;
                    };
                    *c = (c.0.saturating_sub(1), obs.time);
                    if c.0 == 0 {
                        state.counts.remove(&key);
                        let unbound = Unbound {
                            time: obs.time,
                            audit_id: obs.audit_id.clone(),
                            binding: step.binding.clone(),
                        };
                        state.unbound.insert(state_key(&key), unbound);
                    }
                }
                None
            }
            USE => {
                let key = state_key(&obs.key);
                if !state.awaits_use(key, obs.time) {
                    return None;
                }
                let u = state.unbound.remove(&key)?;
                if obs.time - u.time > spec.window {
                    return None;
                }
                let mut alert = (cx.alert)(&[
                    ("binding", u.binding.to_string()),
                    ("unbound_at", format_micros(u.time)),
                ]);
                let ids = [u.audit_id.to_string(), obs.audit_id.to_string()];
                alert.id = crate::alert::alert_id(cx.rule_id(), &obs.key, &[&ids[0], &ids[1]]);
                alert.evidence.audit_ids = ids.to_vec();
                alert.evidence.count = 2;
                alert.evidence.first_time = Some(format_micros(u.time));
                alert.evidence.window_seconds = Some(spec.window / 1_000_000);
                alert.evidence.detail = Some(serde_json::json!({
                    "last_binding_removed": {"binding": &*u.binding, "time": format_micros(u.time), "audit_id": u.audit_id.to_string()},
                }));
                Some(alert)
            }
            _ => None,
        }
    }

    fn awaits(&mut self, _: &UnboundSpec, check: &Check, time: i64) -> bool {
        self.awaits_use(check.key(), time)
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.bindings, cap, |b| b.1)
            + evict(&mut self.counts, cap, |c| c.1)
            + evict(&mut self.unbound, cap, |u| u.time)
    }

    fn len(&self) -> usize {
        self.bindings.len() + self.counts.len() + self.unbound.len()
    }
}

impl State {
    /// Whether a use of the identity keyed `key` at `time` comes after it lost its bindings.
    fn awaits_use(&self, key: StateKey, time: i64) -> bool {
        self.unbound.get(&key).is_some_and(|u| time > u.time)
    }
}
