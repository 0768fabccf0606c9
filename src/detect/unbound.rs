//! `unbound_identity`: the stream shows every (Cluster)RoleBinding naming a user or service
//! account being removed, yet the identity keeps succeeding. Offboarding removed its access on
//! paper; the successes show it still has some (a group binding, another credential, a binding
//! the stream never showed) and that someone is still using it.
//!
//! Only bindings whose subjects the stream carried (create/update at Request level or above) are
//! known; an identity none of whose bindings was ever seen is never "unbound".

use super::rbac::{self, BindingChange};
use super::{state_key, AuditId, Classified, Observation, StateKey, Terms};
use crate::alert::Alert;
use crate::event::time::format_micros;
use crate::event::EventView;
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

/// When and by which event an identity lost its last known binding.
struct Unbound {
    time: i64,
    audit_id: AuditId,
    binding: Box<str>,
}

#[derive(Default)]
pub struct State {
    /// `cluster\x1fbinding` → its subjects and when it was last written.
    bindings: HashMap<Box<str>, (Terms, i64)>,
    /// `cluster\x1fidentity` → how many known bindings name it, and when that last changed.
    counts: HashMap<Box<str>, (u32, i64)>,
    /// By the hash of `cluster\x1fidentity`, which is all a request's follow-up carries.
    unbound: HashMap<StateKey, Unbound>,
}

impl State {
    /// Whether a success of the identity keyed `key` at `time` comes after it lost its last
    /// known binding. (Nearly every request succeeds; almost none is such a use.)
    pub fn awaits_use(&self, key: StateKey, time: i64) -> bool {
        self.unbound.get(&key).is_some_and(|u| time > u.time)
    }

    pub fn key_count(&self) -> usize {
        self.bindings.len() + self.counts.len() + self.unbound.len()
    }

    /// Drops the oldest entries of each map over `cap`; returns how many.
    pub fn evict(&mut self, cap: usize) -> u64 {
        super::evict(&mut self.bindings, cap, |b| b.1)
            + super::evict(&mut self.counts, cap, |c| c.1)
            + super::evict(&mut self.unbound, cap, |u| u.time)
    }
}

pub fn observe(
    state: &mut State,
    window: i64,
    obs: &Observation,
    rule_id: &str,
    alert: &dyn Fn() -> Alert,
) -> Option<Alert> {
    let cluster = || obs.key.split('\u{1f}').next().unwrap_or("");
    let id = |name: &str| -> Box<str> { format!("{}\u{1f}{name}", cluster()).into() };
    match obs.steps {
        BIND | UNBIND => {
            let binding = id(obs.value.as_deref().unwrap_or(""));
            let old = match obs.steps {
                BIND => state
                    .bindings
                    .insert(binding.clone(), (obs.terms.clone(), obs.time)),
                _ => state.bindings.remove(&binding),
            };
            for s in obs.terms.iter() {
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
                        binding: obs.value.clone().unwrap_or_default(),
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
            if obs.time - u.time > window {
                return None;
            }
            let mut alert = alert();
            let ids = [u.audit_id.to_string(), obs.audit_id.to_string()];
            alert.id = crate::alert::alert_id(rule_id, &obs.key, &[&ids[0], &ids[1]]);
            alert.evidence.audit_ids = ids.to_vec();
            alert.evidence.count = 2;
            alert.evidence.first_time = Some(format_micros(u.time));
            alert.evidence.window_seconds = Some(window / 1_000_000);
            alert.evidence.detail = Some(serde_json::json!({
                "last_binding_removed": {"binding": &*u.binding, "time": format_micros(u.time), "audit_id": u.audit_id.to_string()},
            }));
            let t = &alert.target;
            alert.summary =
                format!(
                "{} lost its last known binding ({}) at {} but still succeeded: {} {} {} at {}.",
                alert.actor.username,
                u.binding,
                format_micros(u.time),
                t.verb,
                t.resource,
                if t.name.is_empty() { &t.namespace } else { &t.name },
                alert.time
            );
            Some(alert)
        }
        _ => None,
    }
}
