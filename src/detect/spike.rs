//! `rate_spike`: an identity's matching events per time bucket, compared with its own recent
//! history by median and MAD (median absolute deviation). Both ignore a few past bursts, unlike
//! a mean and standard deviation, so one earlier spike does not hide the next. The threshold is
//! `max(floor, median + factor × max(1.4826 × MAD, 1))`; 1.4826 × MAD estimates the standard
//! deviation of normal data, and the `max(…, 1)` keeps a perfectly steady identity from
//! alerting on one extra event.

use super::audit_id::AuditId;
use super::episode::{Clock, EpisodeOptions, Episodes};
use super::key::{evict, state_key, StateKey};
use super::{Cx, Detector, Extract, Observation, Payload};
use crate::alert::Alert;
use crate::event::time::{format_micros, human_duration};
use crate::rules::kind::SpikeSpec;
use foldhash::HashMap;

use std::collections::VecDeque;

/// Audit IDs of a bucket's events kept for the episode a spike opens (the rest are counted).
const MAX_BUCKET_IDS: usize = 1024;

/// Every event counts towards its actor's series.
pub(super) fn extract(x: &mut Extract, rule: u32) {
    let key = x.actor_key();
    x.observe(rule, key, Payload::Spike);
}

/// One identity's counts.
#[derive(serde::Serialize, serde::Deserialize)]
struct Series {
    /// Index of the bucket being counted (event time / bucket length).
    bucket: i64,
    current: u32,
    /// Finished buckets, newest last, at most `history` (quiet buckets count as 0).
    past: VecDeque<u16>,
    /// Buckets since the identity was first seen, capped: its learning progress.
    age: u16,
    fired: bool,
    first_audit_id: AuditId,
    /// The bucket's later events, kept from its second on, so that a spike's episode cites
    /// every request of the bucket. Boxed: one pointer for the many series that never see a
    /// second event in a bucket (an empty Vec would be three).
    #[allow(clippy::box_collection)]
    later_ids: Option<Box<Vec<(i64, AuditId)>>>,
    last_seen: i64,
}

/// The threshold for the next bucket given the past ones, with the median and MAD behind it.
pub fn threshold(past: &VecDeque<u16>, spec: &SpikeSpec) -> (f64, f64, f64) {
    let mut v: Vec<f64> = past.iter().map(|&c| f64::from(c)).collect();
    let median = median_of(&mut v);
    let mut dev: Vec<f64> = v.iter().map(|c| (c - median).abs()).collect();
    let mad = median_of(&mut dev);
    let limit = (median + spec.factor * (1.4826 * mad).max(1.0)).max(f64::from(spec.floor));
    (limit, median, mad)
}

fn median_of(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    series: HashMap<StateKey, Series>,
    /// A spike opens an episode; it lasts while the identity's buckets stay above their
    /// threshold (or, quiet, for a bucket).
    pub(super) episodes: Episodes,
}

/// The object an event read, as an episode lists it: `namespace/name` (or the request URI).
fn object_of(cx: &Cx) -> Option<String> {
    let mut object = None;
    (cx.event)(&mut |view| {
        let o = view.event.object_ref.as_ref();
        let part = |v: Option<&crate::event::JStr>| v.map(|s| s.to_string()).unwrap_or_default();
        let (ns, name) = (
            part(o.and_then(|o| o.namespace.as_ref())),
            part(o.and_then(|o| o.name.as_ref())),
        );
        object = match (ns.is_empty(), name.is_empty()) {
            (_, false) if !ns.is_empty() => Some(format!("{ns}/{name}")),
            (_, false) => Some(name),
            _ => view.event.request_uri.as_deref().map(str::to_owned),
        };
    });
    object
}

impl Detector for State {
    type Spec = SpikeSpec;
    type Payload = ();

    fn observe(&mut self, spec: &SpikeSpec, obs: &Observation, _: (), cx: &Cx) -> Option<Alert> {
        let bucket = obs.time.div_euclid(spec.bucket);
        let key = state_key(&obs.key);
        let cap = cx.episodes.cap;
        let mut new = false;
        let s = self.series.entry(key).or_insert_with(|| {
            new = true;
            Series {
                bucket,
                current: 0,
                // Grows as buckets pass; an identity seen once costs no history.
                past: VecDeque::new(),
                age: 0,
                fired: false,
                first_audit_id: obs.audit_id.clone(),
                later_ids: None,
                last_seen: obs.time,
            }
        });
        s.last_seen = s.last_seen.max(obs.time);
        // Late events (another API server a little behind) count in the current bucket.
        let mut closed = None;
        if bucket > s.bucket {
            // The episode ends with the first bucket back under its threshold.
            let still_high =
                bucket == s.bucket + 1 && f64::from(s.current) >= threshold(&s.past, spec).0;
            if !still_high {
                closed = self.episodes.close(key);
            }
            let gap = (bucket - s.bucket).min(spec.history as i64 + 1);
            for i in 0..gap {
                let count = if i == 0 { s.current } else { 0 };
                if s.past.len() == spec.history {
                    s.past.pop_front();
                }
                s.past.push_back(count.min(u32::from(u16::MAX)) as u16);
            }
            s.age = s.age.saturating_add(gap as u16);
            s.bucket = bucket;
            s.current = 0;
            s.fired = false;
            s.first_audit_id = obs.audit_id.clone();
            s.later_ids = None;
        } else if !new {
            // The bucket's first event is `first_audit_id`; the later ones are listed.
            let ids = s.later_ids.get_or_insert_with(Default::default);
            if ids.len() < MAX_BUCKET_IDS {
                ids.push((obs.time, obs.audit_id.clone()));
            }
        }
        s.current += 1;
        // A bucket's first event never spikes (the floor is above one): it only closes.
        if closed.is_some() {
            return closed;
        }
        if self.episodes.is_open(key) {
            let object = object_of(cx);
            let hash = object.as_deref().map_or(0, |o| state_key(o) as u64);
            let id = obs.audit_id.to_string();
            self.episodes
                .extend(key, obs.time, id, hash, object.as_deref(), cap);
            return None;
        }
        // The threshold is never below the floor: no need to compute it until then.
        if s.fired || usize::from(s.age) < spec.min_history || s.current < spec.floor {
            return None;
        }
        let (limit, median, mad) = threshold(&s.past, spec);
        if f64::from(s.current) < limit {
            return None;
        }
        s.fired = true;
        let start = s.bucket * spec.bucket;
        let mut alert = (cx.alert)(&[
            ("count", s.current.to_string()),
            ("bucket", human_duration(spec.bucket)),
            ("bucket_start", format_micros(start)),
            ("median", median.to_string()),
            ("mad", mad.to_string()),
            ("threshold", limit.ceil().to_string()),
            ("buckets", s.past.len().to_string()),
        ]);
        let ids = [s.first_audit_id.to_string(), obs.audit_id.to_string()];
        alert.id = crate::alert::alert_id(cx.rule_id(), &obs.key, &[&ids[0], &ids[1]]);
        alert.evidence.audit_ids = ids.to_vec();
        alert.evidence.count = u64::from(s.current);
        alert.evidence.first_time = Some(format_micros(start));
        alert.evidence.window_seconds = Some(spec.bucket / 1_000_000);
        alert.evidence.detail = Some(serde_json::json!({
            "baseline": {"buckets": s.past.len(), "median": median, "mad": mad, "threshold": limit.ceil()},
        }));
        // The bucket's requests are cited (what they read is named from the spike on).
        let object = object_of(cx);
        let hash = object.as_deref().map_or(0, |o| state_key(o) as u64);
        let earlier = s.later_ids.take().map(|b| *b).unwrap_or_default();
        let first = std::iter::once((start, ids[0].clone(), 0, None));
        let earlier = earlier
            .into_iter()
            .filter(|(_, id)| *id != obs.audit_id)
            .map(|(t, id)| (t, id.to_string(), 0, None));
        let events = first.chain(earlier).chain(std::iter::once((
            obs.time,
            ids[1].clone(),
            hash,
            object.as_deref(),
        )));
        let gap = cx.episode_gap(spec.bucket);
        let count = u64::from(s.current);
        self.episodes.open(key, &mut alert, gap, events, count, cap);
        Some(alert)
    }

    fn tick(&mut self, _: &SpikeSpec, clock: Clock, opts: &EpisodeOptions, out: &mut Vec<Alert>) {
        self.episodes.tick(clock, opts, out);
    }

    fn evict(&mut self, cap: usize) -> u64 {
        evict(&mut self.series, cap, |s| s.last_seen)
    }

    fn len(&self) -> usize {
        self.series.len() + self.episodes.len()
    }
}

impl State {
    /// Later requests listed by all series (tests: what a bucket's later events cost).
    #[cfg(test)]
    pub(super) fn later_ids_held(&self) -> usize {
        self.series
            .values()
            .filter_map(|s| s.later_ids.as_ref())
            .map(|ids| ids.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SpikeSpec {
        SpikeSpec {
            bucket: 600_000_000,
            history: 6,
            min_history: 3,
            factor: 4.0,
            floor: 10,
        }
    }

    #[test]
    fn threshold_is_robust_to_one_past_burst() {
        let past: VecDeque<u16> = [20, 22, 19, 21, 500, 20].into_iter().collect();
        let (limit, median, mad) = threshold(&past, &spec());
        assert_eq!(median, 20.5);
        assert_eq!(mad, 1.0);
        assert!((limit - (20.5 + 4.0 * 1.4826)).abs() < 1e-9, "{limit}");
        // An idle identity falls back to the floor.
        let idle: VecDeque<u16> = [0, 0, 0].into_iter().collect();
        assert_eq!(threshold(&idle, &spec()).0, 10.0);
    }
}
