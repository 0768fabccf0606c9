//! Episodes: an alert about activity that goes on (a threshold crossed, a rate spike) opens the
//! moment it fires and then grows while the activity continues. Every later event of the same
//! key joins it; once a gap passes without one (event time), it closes, and an update of the
//! same alert id carries the whole extent: count, first and last time, every distinct value and
//! every audit ID, each list capped with the true total beside it. A live run also sends
//! `updated` alerts while it is open, at most one per `update_every` of event time per episode.

use super::key::StateKey;
use crate::alert::{Alert, Capped, Episode, Status};
use crate::event::time::format_micros;
use foldhash::{HashMap, HashSet};

/// Items kept per list of an episode (the true totals are counted beyond it).
pub const DEFAULT_EPISODE_CAP: usize = 1000;
/// Distinct values remembered per episode to count them truly; beyond it new values are
/// counted as new.
const DISTINCT_MEMORY: usize = 100_000;

/// How episodes are cut and reported.
#[derive(Debug, Clone, Copy)]
pub struct EpisodeOptions {
    pub cap: usize,
    /// Live runs: an `updated` alert at most this often per episode (event time); None in a
    /// replay, which reports each episode when it opens and when it closes.
    pub update_every: Option<i64>,
}

impl Default for EpisodeOptions {
    fn default() -> Self {
        EpisodeOptions {
            cap: DEFAULT_EPISODE_CAP,
            update_every: None,
        }
    }
}

/// Where episodes stand after the clock moved on.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Event time that is final: nothing older is waited for any more.
    pub now: i64,
    /// The input has ended: every open episode closes.
    pub end: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Open {
    alert: Alert,
    first: i64,
    last: i64,
    count: u64,
    values: Vec<String>,
    distinct: HashSet<u64>,
    values_total: u64,
    audit_ids: Vec<String>,
    /// Quiet time (event time) after the last event that closes the episode.
    gap: i64,
    /// Count and time of the last report (open or update).
    reported: (u64, i64),
}

/// One rule's open episodes, by key.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Episodes {
    open: HashMap<StateKey, Open>,
}

impl Episodes {
    pub fn is_open(&self, key: StateKey) -> bool {
        self.open.contains_key(&key)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// After a snapshot is read back: the alerts' times, which their JSON does not carry.
    pub fn restored(&mut self) {
        for open in self.open.values_mut() {
            open.alert.restore_time();
        }
    }

    /// Opens an episode with `alert` (just fired) and the events that made it: (time, audit
    /// ID, value hash, value); `count` events in all when not every one is known.
    pub fn open<'v>(
        &mut self,
        key: StateKey,
        alert: &mut Alert,
        gap: i64,
        events: impl Iterator<Item = (i64, String, u64, Option<&'v str>)>,
        count: u64,
        cap: usize,
    ) {
        alert.status = Some(Status::Open);
        let mut open = Open {
            alert: alert.clone(),
            first: alert.time_micros,
            last: alert.time_micros,
            count: 0,
            values: Vec::new(),
            distinct: HashSet::default(),
            values_total: 0,
            audit_ids: Vec::new(),
            gap,
            reported: (0, alert.time_micros),
        };
        for (time, audit_id, hash, value) in events {
            open.add(time, audit_id, hash, value, cap);
        }
        open.count = open.count.max(count);
        open.reported = (open.count, alert.time_micros);
        alert.episode = Some(open.extent());
        self.open.insert(key, open);
    }

    /// Adds an event to `key`'s open episode; false when none is open.
    pub fn extend(
        &mut self,
        key: StateKey,
        time: i64,
        audit_id: String,
        hash: u64,
        value: Option<&str>,
        cap: usize,
    ) -> bool {
        match self.open.get_mut(&key) {
            Some(open) => {
                open.add(time, audit_id, hash, value, cap);
                true
            }
            None => false,
        }
    }

    /// Closes `key`'s episode now, if one is open.
    pub fn close(&mut self, key: StateKey) -> Option<Alert> {
        self.open
            .remove(&key)
            .map(|open| open.report(Status::Closed))
    }

    /// Closes the episodes a gap has passed since (all of them at the end of input) and, live,
    /// reports those that grew since their last report; in key order, so that the output does
    /// not depend on a hash map's order.
    pub fn tick(&mut self, clock: Clock, opts: &EpisodeOptions, out: &mut Vec<Alert>) {
        let mut closing: Vec<(i64, StateKey)> = Vec::new();
        let mut updating: Vec<(i64, StateKey)> = Vec::new();
        for (key, open) in &self.open {
            if clock.end || clock.now > open.last.saturating_add(open.gap) {
                closing.push((open.last, *key));
            } else if let Some(every) = opts.update_every {
                if open.count > open.reported.0 && clock.now >= open.reported.1 + every {
                    updating.push((open.last, *key));
                }
            }
        }
        closing.sort_unstable();
        updating.sort_unstable();
        for (_, key) in updating {
            if let Some(open) = self.open.get_mut(&key) {
                open.reported = (open.count, clock.now);
                out.push(open.report(Status::Updated));
            }
        }
        for (_, key) in closing {
            if let Some(open) = self.open.remove(&key) {
                out.push(open.report(Status::Closed));
            }
        }
    }
}

impl Open {
    fn add(&mut self, time: i64, audit_id: String, hash: u64, value: Option<&str>, cap: usize) {
        self.count += 1;
        self.first = self.first.min(time);
        self.last = self.last.max(time);
        if self.audit_ids.len() < cap {
            self.audit_ids.push(audit_id);
        }
        let Some(value) = value else { return };
        let new = if self.distinct.len() < DISTINCT_MEMORY {
            self.distinct.insert(hash)
        } else {
            !self.distinct.contains(&hash)
        };
        if new {
            self.values_total += 1;
            if self.values.len() < cap {
                self.values.push(value.to_owned());
            }
        }
    }

    fn extent(&self) -> Episode {
        Episode {
            first_time: format_micros(self.first),
            last_time: format_micros(self.last),
            count: self.count,
            values: Capped {
                total: self.values_total,
                items: self.values.clone(),
            },
            audit_ids: Capped {
                total: self.count,
                items: self.audit_ids.clone(),
            },
        }
    }

    fn report(&self, status: Status) -> Alert {
        let mut alert = self.alert.clone();
        alert.status = Some(status);
        // The opening's sentence, then what the episode has grown to.
        let values = match self.values_total {
            0 => String::new(),
            1 => " of 1 distinct value".to_owned(),
            n => format!(" of {n} distinct values"),
        };
        let when = if status == Status::Closed {
            "In all"
        } else {
            "So far"
        };
        alert.summary = format!(
            "{} {when}: {} events{values} from {} to {}.",
            alert.summary,
            self.count,
            format_micros(self.first),
            format_micros(self.last)
        );
        alert.episode = Some(self.extent());
        alert.evidence.count = self.count;
        alert
    }
}
