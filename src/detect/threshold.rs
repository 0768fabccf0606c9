//! Threshold state: for each key, its recent events in an event-time window, and whether it
//! fired lately.
//!
//! A key keeps at most `count` events (the newest `count` decide whether `count` fall inside
//! the window) and, for a distinct count, one per value (its newest, with its text, so that
//! the alert can name every value). Most keys only ever see one event: it is held inline, with
//! no allocation of its own. Windows that ended are swept away as event time moves on, so the
//! state holds the identities active within the window, not every identity ever seen.
//!
//! Crossing the threshold opens an episode (`episode`): the key's later events join it until
//! a window passes without one, and its final update names every value and audit ID.

use super::audit_id::AuditId;
use super::episode::{Clock, EpisodeOptions, Episodes};
use super::key::{evict, state_key, StateKey};
use super::{Cx, Detector, Extract, Observation, Payload, MAX_EVIDENCE_IDS};
use crate::alert::Alert;
use crate::event::time::{format_micros, human_duration};
use crate::rules::kind::ThresholdSpec;
use foldhash::{HashMap, HashMapExt};

/// An event a threshold counts: for a distinct count, the value (and its hash, all the window
/// compares).
#[derive(Debug, Clone, Default)]
pub struct Counted {
    pub hash: u64,
    pub value: Option<Box<str>>,
}

/// What a worker extracts: the key, and the distinct field's value.
pub(super) fn extract(x: &mut Extract, rule: u32, spec: &ThresholdSpec) {
    let key = x.key(&spec.by);
    let counted = match &spec.distinct {
        Some(f) => {
            x.scratch.clear();
            f.any(x.view, |v| {
                v.write_text(&mut x.scratch);
                true
            });
            Counted {
                hash: state_key(&x.scratch) as u64,
                value: Some(Box::from(x.scratch.as_str())),
            }
        }
        None => Counted::default(),
    };
    x.observe(rule, key, Payload::Threshold(counted));
}

/// (time, hash of the distinct value or 0, audit ID, the value).
type Entry = (i64, u64, AuditId, Option<Box<str>>);

/// A key's events, oldest first.
#[derive(serde::Serialize, serde::Deserialize)]
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

#[derive(serde::Serialize, serde::Deserialize)]
pub struct State {
    keys: HashMap<StateKey, Recent>,
    pub(super) episodes: Episodes,
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
            episodes: Episodes::default(),
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
    type Payload = Counted;

    /// Counts the event in its key's window; the alert if the key reaches `count` and is not
    /// quiet.
    fn observe(
        &mut self,
        spec: &ThresholdSpec,
        obs: &Observation,
        counted: Counted,
        cx: &Cx,
    ) -> Option<Alert> {
        self.newest = self.newest.max(obs.time);
        self.sweep(spec.window);
        let key = state_key(&obs.key);
        // An open episode takes every event of its key, counted in the window or not.
        let cap = cx.episodes.cap;
        let in_episode = self.episodes.is_open(key);
        if in_episode {
            let value = counted.value.as_deref();
            let id = obs.audit_id.to_string();
            self.episodes
                .extend(key, obs.time, id, counted.hash, value, cap);
        }
        let entry = (obs.time, counted.hash, obs.audit_id.clone(), counted.value);
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
        let quiet = self.quiet.get(&key).is_some_and(|t| obs.time < *t);
        if in_episode || n < spec.count || quiet {
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
        alert.id = crate::alert::alert_id(cx.rule_id(), &obs.key, &[&alert.evidence.audit_ids[0]]);
        let events = entries
            .iter()
            .map(|e| (e.0, e.2.to_string(), e.1, e.3.as_deref()));
        let gap = cx.episode_gap(spec.window);
        self.episodes.open(key, &mut alert, gap, events, n, cap);
        Some(alert)
    }

    fn tick(
        &mut self,
        _: &ThresholdSpec,
        clock: Clock,
        opts: &EpisodeOptions,
        out: &mut Vec<Alert>,
    ) {
        self.episodes.tick(clock, opts, out);
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.keys, cap, Recent::newest)
    }

    fn len(&self) -> usize {
        self.keys.len() + self.episodes.len()
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

    /// A threshold rule counting `count` (distinct names) within `window_secs`.
    fn rule(count: u64, window_secs: i64, distinct: bool) -> crate::rules::RuleSet {
        let dir = tempfile::tempdir().unwrap();
        let distinct = if distinct {
            ", distinct: objectRef.name"
        } else {
            ""
        };
        let yaml = format!(
            "rules:\n  - {{id: t, title: t, severity: low, kind: threshold, threshold: {{by: [user.username], count: {count}, window: {window_secs}s{distinct}}}, condition: {{verb: get}}, summary: s}}\n"
        );
        std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
        crate::rules::RuleSet::load(&[dir.path().to_path_buf()]).unwrap()
    }

    fn spec_of(set: &crate::rules::RuleSet) -> &ThresholdSpec {
        spec(set)
    }

    fn spec(set: &crate::rules::RuleSet) -> &ThresholdSpec {
        match &set.rules[0].kind {
            crate::rules::Kind::Threshold(spec) => spec,
            _ => unreachable!("a threshold rule"),
        }
    }

    /// Feeds (key, value, second) in order; the seconds at which an alert fired.
    fn feed(w: &mut State, set: &crate::rules::RuleSet, events: &[(&str, &str, i64)]) -> Vec<i64> {
        feed_with(w, set, events, &EpisodeOptions::default())
    }

    fn feed_with(
        w: &mut State,
        set: &crate::rules::RuleSet,
        events: &[(&str, &str, i64)],
        opts: &EpisodeOptions,
    ) -> Vec<i64> {
        let mut fired = Vec::new();
        for (i, (key, value, t)) in events.iter().enumerate() {
            let o = obs(key, *t, i as u64);
            let alert = |_: Values| crate::alert::test_alert(o.time);
            let cx = Cx {
                rule: &set.rules[0],
                alert: &alert,
                event: &|_| {},
                started: 0,
                episodes: opts,
            };
            let counted = Counted {
                hash: state_key(value) as u64,
                value: Some(Box::from(*value)),
            };
            if w.observe(spec(set), &o, counted, &cx).is_some() {
                fired.push(*t);
            }
        }
        fired
    }

    fn distinct_3_in_60s() -> crate::rules::RuleSet {
        rule(3, 60, true)
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
    fn an_episode_takes_the_activity_that_goes_on_and_closes_after_a_quiet_window() {
        let spec = rule(2, 10, true);
        let mut w = State::default();
        let events = [
            ("k", "a", 0),
            ("k", "b", 5),
            ("k", "c", 6),
            ("k", "c", 14),
            ("k", "d", 16),
        ];
        // 5: two in (−5, 5] open the episode; the rest joins it instead of alerting again.
        assert_eq!(feed(&mut w, &spec, &events), [5]);
        let (opts, mut out) = (EpisodeOptions::default(), Vec::new());
        // 26 is exactly one window after the last event: still open.
        w.tick(
            spec_of(&spec),
            Clock {
                now: 26_000_000,
                end: false,
            },
            &opts,
            &mut out,
        );
        assert!(out.is_empty());
        w.tick(
            spec_of(&spec),
            Clock {
                now: 27_000_000,
                end: false,
            },
            &opts,
            &mut out,
        );
        let closed = out.pop().expect("closed after a quiet window");
        assert_eq!(closed.status, Some(crate::alert::Status::Closed));
        let episode = closed.episode.expect("its extent");
        assert_eq!(episode.count, 5, "every event, repeats included");
        assert_eq!(episode.values.items, ["a", "b", "c", "d"]);
        assert_eq!(episode.audit_ids.total, 5);
        assert_eq!(episode.audit_ids.items.len(), 5);
        // A new burst after it opens a new episode.
        assert_eq!(feed(&mut w, &spec, &[("k", "e", 40), ("k", "f", 41)]), [41]);
    }

    #[test]
    fn episode_lists_are_capped_with_the_true_totals_beside_them() {
        let spec = rule(2, 60, true);
        let mut w = State::default();
        let names: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
        let events: Vec<(&str, &str, i64)> = names.iter().map(|n| ("k", n.as_str(), 1)).collect();
        let opts = EpisodeOptions {
            cap: 10,
            update_every: None,
        };
        feed_with(&mut w, &spec, &events, &opts);
        let mut out = Vec::new();
        w.tick(spec_of(&spec), Clock { now: 0, end: true }, &opts, &mut out);
        let episode = out[0].episode.clone().expect("extent");
        assert_eq!((episode.values.total, episode.values.items.len()), (50, 10));
        assert_eq!(
            (episode.audit_ids.total, episode.audit_ids.items.len()),
            (50, 10)
        );
        assert_eq!(episode.count, 50);
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
