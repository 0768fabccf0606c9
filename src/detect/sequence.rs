//! sequence: ordered steps by the same key within a span. A step may need several matching
//! events before the next one counts, and may name its own key when the steps are done by
//! different identities (a service account deleted, then its token used).

use super::audit_id::AuditId;
use super::key::{evict, identity_key, state_key, StateKey};
use super::{Check, Cx, Detector, Extract, Observation, Payload};
use crate::alert::Alert;
use crate::event::time::{format_micros, human_duration};
use crate::rules::kind::SequenceSpec;
use crate::rules::Matched;
use foldhash::HashMap;
use std::sync::Arc;

/// Whose progress a step advances: the actor (most sequences), or a key written out.
enum GroupKey {
    Actor,
    Text(Arc<str>),
}

impl GroupKey {
    /// Whether two keys name the same state; `actor` is (cluster, username).
    fn same(&self, other: &GroupKey, actor: (&str, &str)) -> bool {
        let is_actor = |text: &str| {
            text.strip_prefix(actor.0)
                .and_then(|t| t.strip_prefix('\u{1f}'))
                == Some(actor.1)
        };
        match (self, other) {
            (GroupKey::Actor, GroupKey::Actor) => true,
            (GroupKey::Text(a), GroupKey::Text(b)) => a == b,
            (GroupKey::Actor, GroupKey::Text(t)) | (GroupKey::Text(t), GroupKey::Actor) => {
                is_actor(t)
            }
        }
    }
}

/// What a worker extracts: per key the event advances, the steps that hold on it (bit i for
/// step i). A group without the first step only advances progress already made: a follow-up.
pub(super) fn extract(x: &mut Extract, rule: u32, spec: &SequenceSpec, matched: &Matched) {
    let view = x.view;
    // Steps that hold are grouped by the key they advance (usually one key).
    let mut groups: smallvec::SmallVec<[(GroupKey, u32); 2]> = Default::default();
    let actor_text = (x.cluster, view.event.username());
    let context = x.context();
    // From a context copy, only steps keyed by someone else than the actor.
    let steps = spec.steps.iter().enumerate();
    let steps = steps.filter(|(b, _)| !context || spec.step_keys[*b].is_some());
    for (b, _) in steps.filter(|(b, c)| matched.step_holds(rule, *b, c, view)) {
        let k = match &spec.step_keys[b] {
            // The actor, as in most sequences: its key is made once per event.
            Some(t) if t.is("{user.username}") => {
                if context {
                    continue;
                }
                GroupKey::Actor
            }
            Some(t) => {
                let whom = t.render(view, &[]);
                if context && whom == view.event.username() {
                    continue;
                }
                GroupKey::Text(identity_key(x.cluster, &whom))
            }
            None => GroupKey::Text(x.key(&spec.by)),
        };
        match groups.iter_mut().find(|g| g.0.same(&k, actor_text)) {
            Some(g) => g.1 |= 1 << b,
            None => groups.push((k, 1 << b)),
        }
    }
    for (key, steps) in groups {
        if steps & 1 == 0 {
            let hash = match &key {
                GroupKey::Actor => x.actor_hash(),
                GroupKey::Text(text) => state_key(text),
            };
            if x.follow(rule, steps, hash) {
                continue;
            }
        }
        let key = match key {
            GroupKey::Actor => x.actor_key(),
            GroupKey::Text(text) => text,
        };
        x.observe(rule, key, Payload::Sequence(steps));
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    next_step: usize,
    /// Matching events of `next_step` so far, for steps that need several.
    hits: u32,
    start: i64,
    audit_ids: Vec<AuditId>,
    last_seen: i64,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    keys: HashMap<StateKey, Progress>,
}

impl State {
    /// Forgets `key`'s progress if it started more than `max_span` before `time`.
    fn drop_outlived(&mut self, key: StateKey, time: i64, max_span: i64) {
        if self
            .keys
            .get(&key)
            .is_some_and(|p| time - p.start > max_span)
        {
            self.keys.remove(&key);
        }
    }
}

impl Detector for State {
    type Spec = SequenceSpec;
    type Payload = u32;

    fn observe(
        &mut self,
        spec: &SequenceSpec,
        obs: &Observation,
        steps: u32,
        cx: &Cx,
    ) -> Option<Alert> {
        let needed = |step: usize| spec.step_counts.get(step).copied().unwrap_or(1);
        let key = state_key(&obs.key);
        self.drop_outlived(key, obs.time, spec.max_span);
        let progress = match self.keys.get_mut(&key) {
            Some(p) if steps & (1 << p.next_step) != 0 => p,
            Some(_) => return None,
            None if steps & 1 != 0 => self.keys.entry(key).or_insert(Progress {
                next_step: 0,
                hits: 0,
                start: obs.time,
                audit_ids: Vec::new(),
                last_seen: obs.time,
            }),
            None => return None,
        };
        progress.hits += 1;
        progress.last_seen = obs.time;
        progress.audit_ids.push(obs.audit_id.clone());
        if progress.hits >= needed(progress.next_step) {
            progress.next_step += 1;
            progress.hits = 0;
        }
        if progress.next_step < spec.steps.len() {
            return None;
        }
        let p = self.keys.remove(&key)?;
        let mut alert = (cx.alert)(&[
            ("count", p.audit_ids.len().to_string()),
            ("first_time", format_micros(p.start)),
            ("span", human_duration(spec.max_span)),
        ]);
        alert.evidence.count = p.audit_ids.len() as u64;
        alert.evidence.first_time = Some(format_micros(p.start));
        alert.evidence.window_seconds = Some(spec.max_span / 1_000_000);
        let ids: Vec<String> = p.audit_ids.iter().map(AuditId::to_string).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        alert.id = crate::alert::alert_id(cx.rule_id(), &obs.key, &refs);
        alert.evidence.audit_ids = ids;
        Some(alert)
    }

    /// A later step awaits progress at that step. Progress that has outlived its span is
    /// dropped here, as observing the step would.
    fn awaits(&mut self, spec: &SequenceSpec, check: &Check, time: i64) -> bool {
        self.drop_outlived(check.key(), time, spec.max_span);
        self.keys
            .get(&check.key())
            .is_some_and(|p| check.steps & (1 << p.next_step) != 0)
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.keys, cap, |p| p.last_seen)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}
