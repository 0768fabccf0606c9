//! Threshold state: for each key, its recent events in an event-time window, and whether it
//! fired lately.
//!
//! A key keeps at most `count` events (the newest `count` decide whether `count` fall inside
//! the window) and, for a distinct count, one per value (its newest). Most keys only ever see
//! one event: it is held inline, with no allocation, in 40 bytes. Windows that ended are swept
//! away as event time moves on, so the state holds the identities active within the window,
//! not every identity ever seen.

use super::audit_id::AuditId;
use super::key::{evict, state_key, StateKey};
use super::{Cx, Detector, Extract, Observation, Payload, MAX_EVIDENCE_IDS};
use crate::alert::Alert;
use crate::event::time::{format_micros, human_duration};
use crate::rules::kind::ThresholdSpec;
use foldhash::{HashMap, HashMapExt};

/// What a worker extracts: the key, and the hash of the distinct field's value (0 without one).
pub(super) fn extract(x: &mut Extract, rule: u32, spec: &ThresholdSpec) {
    let key = x.key(&spec.by);
    let distinct = spec.distinct.as_ref().map_or(0, |f| {
        x.scratch.clear();
        f.any(x.view, |v| {
            v.write_text(&mut x.scratch);
            true
        });
        state_key(&x.scratch) as u64
    });
    x.observe(rule, key, Payload::Threshold(distinct));
}

/// (time, hash of the distinct value or 0, audit ID).
type Entry = (i64, u64, AuditId);

/// A key's events, oldest first.
enum Recent {
    One(Entry),
    Many(Vec<Entry>),
}

impl Recent {
    fn entries(&self) -> &[Entry] {
        match self {
            Recent::One(e) => std::slice::from_ref(e),
            Recent::Many(v) => v,
        }
    }

    /// The newest event's time (a key is removed before it has none).
    fn newest(&self) -> i64 {
        self.entries().last().map_or(i64::MIN, |e| e.0)
    }

    /// The events as a list that can grow: a second event is what allocates.
    fn as_vec(&mut self) -> &mut Vec<Entry> {
        if let Recent::One(e) = self {
            let e = std::mem::take(e);
            *self = Recent::Many(vec![e]);
        }
        match self {
            Recent::Many(v) => v,
            Recent::One(_) => unreachable!("turned into a list just above"),
        }
    }

    /// Back to the inline form once a single event is left.
    fn settle(&mut self) {
        if let Recent::Many(v) = self {
            if v.len() == 1 {
                if let Some(e) = v.pop() {
                    *self = Recent::One(e);
                }
            }
        }
    }
}

pub struct State {
    keys: HashMap<StateKey, Recent>,
    /// Keys that fired, and until when they stay quiet (one alert per key per window).
    quiet: HashMap<StateKey, i64>,
    /// The newest event time seen, and observations left before the next sweep.
    newest: i64,
    until_sweep: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            keys: HashMap::new(),
            quiet: HashMap::new(),
            newest: i64::MIN,
            until_sweep: SWEEP_EVERY,
        }
    }
}

/// Observations between sweeps at least (and at least as many as there are keys, so that a
/// sweep costs O(1) per observation).
const SWEEP_EVERY: usize = 4096;

impl Detector for State {
    type Spec = ThresholdSpec;
    type Payload = u64;

    /// Counts the event in its key's window; the alert if the key reaches `count` and is not
    /// quiet.
    fn observe(
        &mut self,
        spec: &ThresholdSpec,
        obs: &Observation,
        &distinct: &u64,
        cx: &Cx,
    ) -> Option<Alert> {
        self.newest = self.newest.max(obs.time);
        self.sweep(spec.window);
        let key = state_key(&obs.key);
        let entry = (obs.time, distinct, obs.audit_id.clone());
        let recent = match self.keys.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(Recent::One(entry)),
            std::collections::hash_map::Entry::Occupied(slot) => {
                let recent = slot.into_mut();
                if !add(recent, entry, spec) {
                    return None;
                }
                recent
            }
        };
        let n = recent.entries().len() as u64;
        if n < spec.count || self.quiet.get(&key).is_some_and(|t| obs.time < *t) {
            return None;
        }
        self.quiet.insert(key, obs.time + spec.window);
        let entries = recent.entries();
        let first = entries.first().map_or(obs.time, |e| e.0);
        let mut alert = (cx.alert)(&[
            ("count", n.to_string()),
            ("window", human_duration(spec.window)),
            ("first_time", format_micros(first)),
        ]);
        alert.evidence.count = n;
        let skip = entries.len().saturating_sub(MAX_EVIDENCE_IDS);
        alert.evidence.audit_ids = entries.iter().skip(skip).map(|e| e.2.to_string()).collect();
        alert.evidence.window_seconds = Some(spec.window / 1_000_000);
        alert.evidence.first_time = Some(format_micros(first));
        alert.id = crate::alert::alert_id(cx.rule_id, &obs.key, &[&alert.evidence.audit_ids[0]]);
        Some(alert)
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.keys, cap, Recent::newest)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

impl State {
    /// Forgets windows that ended before the newest event, and quiet periods that are over.
    fn sweep(&mut self, window: i64) {
        self.until_sweep = self.until_sweep.saturating_sub(1);
        if self.until_sweep > 0 {
            return;
        }
        let cutoff = self.newest.saturating_sub(window);
        self.keys.retain(|_, r| r.newest() > cutoff);
        let now = self.newest;
        self.quiet.retain(|_, until| *until > now);
        self.until_sweep = SWEEP_EVERY.max(self.keys.len());
    }
}

/// Adds `entry` to a key's events; false when it changes nothing (too late for the window
/// ending at the key's newest event, or an older event of a value already counted).
fn add(recent: &mut Recent, entry: Entry, spec: &ThresholdSpec) -> bool {
    let cutoff = recent.newest().max(entry.0) - spec.window;
    if entry.0 <= cutoff {
        return false;
    }
    // The common case without allocating: one event that left the window, or the same value.
    if let Recent::One(old) = recent {
        if old.0 <= cutoff || (spec.distinct.is_some() && old.1 == entry.1) {
            // An older event of the value counted already changes nothing.
            let newer = entry.0 >= old.0;
            if newer {
                *old = entry;
            }
            return newer;
        }
    }
    let events = recent.as_vec();
    let expired = events.iter().take_while(|e| e.0 <= cutoff).count();
    events.drain(..expired);
    if spec.distinct.is_some() {
        if let Some(i) = events.iter().position(|e| e.1 == entry.1) {
            if events[i].0 >= entry.0 {
                recent.settle();
                return false;
            }
            events.remove(i);
        }
    }
    let at = events.partition_point(|e| e.0 <= entry.0);
    events.insert(at, entry);
    if events.len() as u64 > spec.count {
        events.remove(0);
    }
    recent.settle();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::template::Values;

    /// An observation of `value` for `key` at second `t`.
    fn obs(key: &str, t: i64, id: u64) -> Observation {
        Observation {
            rule: 0,
            time: t * 1_000_000,
            key: key.into(),
            audit_id: AuditId::new(&format!("00000000-0000-4000-8000-{id:012x}")),
            seed: super::super::Seed::Event {
                json: "{}".into(),
                cluster: "c".into(),
            },
            payload: Payload::Spike,
        }
    }

    fn spec(count: u64, window_secs: i64, distinct: bool) -> ThresholdSpec {
        ThresholdSpec {
            by: Vec::new(),
            count,
            distinct: distinct
                .then(|| crate::rules::field::Field::parse("objectRef.name").unwrap()),
            window: window_secs * 1_000_000,
        }
    }

    /// Feeds (key, value, second) in order; the seconds at which an alert fired.
    fn feed(w: &mut State, spec: &ThresholdSpec, events: &[(&str, &str, i64)]) -> Vec<i64> {
        let mut fired = Vec::new();
        for (i, (key, value, t)) in events.iter().enumerate() {
            let o = obs(key, *t, i as u64);
            let alert = |_: Values| crate::alert::test_alert(o.time);
            let cx = Cx {
                rule_id: "r",
                alert: &alert,
                started: 0,
            };
            if w.observe(spec, &o, &(state_key(value) as u64), &cx)
                .is_some()
            {
                fired.push(*t);
            }
        }
        fired
    }

    fn distinct_3_in_60s() -> ThresholdSpec {
        spec(3, 60, true)
    }

    #[test]
    fn a_key_keeps_at_most_count_entries_one_per_value() {
        let mut w = State::default();
        let events: Vec<(&str, String, i64)> = (0..50)
            .map(|i| ("k", format!("v{}", i % 7), i / 10))
            .collect();
        let events: Vec<(&str, &str, i64)> = events
            .iter()
            .map(|(k, v, t)| (*k, v.as_str(), *t))
            .collect();
        assert_eq!(
            feed(&mut w, &distinct_3_in_60s(), &events),
            [0],
            "once per window"
        );
        let entries = w.keys.values().next().unwrap().entries();
        assert_eq!(entries.len(), 3);
        assert!(entries.windows(2).all(|p| p[0].0 <= p[1].0), "oldest first");
    }

    #[test]
    fn a_late_event_counts_inside_the_window_and_not_before_it() {
        let mut w = State::default();
        // a at 0 and b at 50; c arrives late, stamped 20: all three inside (−10, 50].
        assert_eq!(
            feed(
                &mut w,
                &distinct_3_in_60s(),
                &[("k", "a", 0), ("k", "b", 50), ("k", "c", 20)]
            ),
            [20]
        );
        let mut w = State::default();
        // b at 100 ends the window at 100: a late c stamped 30 is before it (cutoff 40).
        assert!(feed(
            &mut w,
            &distinct_3_in_60s(),
            &[("k", "a", 50), ("k", "b", 100), ("k", "c", 30)]
        )
        .is_empty());
        // An older event of a value already counted changes nothing.
        assert!(feed(&mut w, &distinct_3_in_60s(), &[("k", "b", 90)]).is_empty());
        assert_eq!(w.keys.values().next().unwrap().entries().len(), 2);
    }

    #[test]
    fn count_windows_fire_once_per_window_and_again_after_it() {
        let spec = spec(2, 10, false);
        let mut w = State::default();
        let events = [
            ("k", "", 0),
            ("k", "", 5),
            ("k", "", 6),
            ("k", "", 14),
            ("k", "", 16),
        ];
        // 5: two in (−5, 5]; 6 and 14 inside the quiet period; 16: quiet over, 14 and 16 inside.
        assert_eq!(feed(&mut w, &spec, &events), [5, 16]);
    }

    #[test]
    fn ended_windows_are_swept_as_event_time_moves_on() {
        let mut w = State::default();
        let keys: Vec<String> = (0..SWEEP_EVERY + 10).map(|i| format!("id{i}")).collect();
        let events: Vec<(&str, &str, i64)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), "v", (i / 100) as i64))
            .collect();
        feed(&mut w, &distinct_3_in_60s(), &events);
        assert!(w.len() > 1000);
        // An hour later: the next sweep leaves only what is inside the new window.
        let late: Vec<String> = (0..SWEEP_EVERY + 10).map(|i| format!("late{i}")).collect();
        let events: Vec<(&str, &str, i64)> = late.iter().map(|k| (k.as_str(), "v", 3600)).collect();
        feed(&mut w, &distinct_3_in_60s(), &events);
        assert!(keys.iter().all(|k| !w.keys.contains_key(&state_key(k))));
        assert!(w.len() <= late.len(), "{}", w.len());
    }
}
