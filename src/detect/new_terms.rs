//! new_terms: the first time a combination of fields is seen, once the learning period (from
//! the stream's first event) has passed. With `history`, a combination not seen for that long is
//! forgotten and new again; with `known`, only combinations whose known part was seen before
//! count (a known client getting a new decision), never newcomers.

use super::key::{append_fields, evict, key_text, no_key, state_key, StateKey};
use super::{Cx, Detector, Extract, Observation, Payload};
use crate::alert::Alert;
use crate::event::time::format_micros;
use crate::rules::kind::NewTermsSpec;
use foldhash::HashMap;

/// A sighting of a term: the hashes of the combination and of its `known` part (0 without
/// one), which is all the state needs of them (no text is built for the collector), and the
/// latest time the same term was seen in the batch (see `engine::worker`).
#[derive(Debug, Clone, Copy)]
pub struct Sighting {
    pub term: u128,
    pub part: u128,
    pub last: i64,
}

/// A new_terms rule's term on an event, offered to `evaluate`'s caller before an observation
/// is made of it (a worker folds a term's repeats within a batch into its first).
pub struct Offer {
    pub rule: u32,
    pub term: u128,
    pub part: u128,
    pub time: i64,
    /// Where the observation would go among this event's observations.
    pub position: usize,
}

pub(super) fn extract(x: &mut Extract, rule: u32, spec: &NewTermsSpec) {
    let (view, cluster, scratch) = (x.view, x.cluster, &mut x.scratch);
    let (term, part) = if spec.known.is_empty() {
        key_text(scratch, cluster, view, &spec.fields);
        (state_key(scratch), 0)
    } else if spec.known_is_prefix {
        // The known part's text, then the rest of the combination's after it.
        key_text(scratch, cluster, view, &spec.known);
        let part = state_key(scratch);
        append_fields(scratch, view, &spec.fields[spec.known.len()..]);
        (state_key(scratch), part)
    } else {
        key_text(scratch, cluster, view, &spec.known);
        let part = state_key(scratch);
        key_text(scratch, cluster, view, &spec.fields);
        (state_key(scratch), part)
    };
    let offer = Offer {
        rule,
        term,
        part,
        time: view.time,
        position: x.observations.len(),
    };
    if !(x.first_sighting)(&offer) {
        return;
    }
    let sighting = Sighting {
        term,
        part,
        last: view.time,
    };
    x.observe(rule, no_key(), Payload::NewTerms(sighting));
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Each combination's last time seen; with `known`, also each known part's.
    seen: HashMap<StateKey, i64>,
    known: HashMap<StateKey, i64>,
}

impl Detector for State {
    type Spec = NewTermsSpec;
    type Payload = Sighting;

    fn observe(
        &mut self,
        spec: &NewTermsSpec,
        obs: &Observation,
        sighting: Sighting,
        cx: &Cx,
    ) -> Option<Alert> {
        // Last seen is kept as the newest time: a late event does not move it back.
        let remember = |map: &mut HashMap<StateKey, i64>, key: StateKey| {
            let last = map.get(&key).copied();
            map.insert(key, last.map_or(sighting.last, |t| t.max(sighting.last)));
            last.is_some_and(|t| spec.history.is_none_or(|h| obs.time - t <= h))
        };
        let known = remember(&mut self.seen, sighting.term);
        let part_known = spec.known.is_empty() || remember(&mut self.known, sighting.part);
        if known || !part_known || obs.time < cx.started + spec.learning {
            return None;
        }
        let mut alert = (cx.alert)(&[("learning_since", format_micros(cx.started))]);
        alert.evidence.first_time = Some(format_micros(cx.started));
        Some(alert)
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.seen, cap, |t| *t) + evict(&mut self.known, cap, |t| *t)
    }

    fn len(&self) -> usize {
        self.seen.len() + self.known.len()
    }
}
