//! Incidents: the alerts of one attacker joined into one story.
//!
//! Alerts are grouped by who did them: a username, a credential id (which joins a user's alerts
//! across renamed usernames) or an impersonated identity that two alerts share, within a gap of
//! event time (an hour by default) of the incident's last alert, across rule families. From its
//! first alert on, every request of the incident's usernames is recorded (the collector hands
//! each event's actor here; a decode worker describes the request of an actor that may have an
//! open incident as it evaluates the event, see `Watched`, and the collector decodes it again
//! only when the worker ran ahead of the incident), read-only requests folded into counts, and what they read, changed and from where
//! make the blast radius. An incident is reported once it has two alerts or a high one, updated
//! like an episode (live, at most once a minute of event time), and closed when the gap passes
//! or the replay ends. Everything is capped, with true totals beside each list, and so is the
//! number of incidents open at once: past it, the least recently active close early (counted).

use crate::alert::incident::{AlertRef, BlastRadius, Identities, Step, Timeline};
use crate::alert::{Alert, Capped, Incident, Status};
use crate::detect::{state_key, StateKey};
use crate::event::time::format_micros;
use crate::event::{EventView, CREDENTIAL_ID_KEY};
use crate::rules::Severity;
use foldhash::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Default gap of event time after an incident's last alert before it closes.
pub const DEFAULT_GAP: i64 = 3600 * 1_000_000;

/// Default number of incidents open at once (under 3 KB each at their largest: about 27 MiB).
pub const DEFAULT_MAX_OPEN: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct IncidentOptions {
    /// Event time after the last alert that closes an incident (microseconds).
    pub gap: i64,
    /// Items kept per list (timeline steps, blast-radius lists, alerts).
    pub cap: usize,
    /// Live: an `updated` report at most this often (event time); None in a replay.
    pub update_every: Option<i64>,
    /// Incidents open at once; past it, the least recently active tenth close early.
    pub max_open: usize,
}

impl Default for IncidentOptions {
    fn default() -> Self {
        IncidentOptions {
            gap: DEFAULT_GAP,
            cap: crate::detect::episode::DEFAULT_EPISODE_CAP,
            update_every: None,
            max_open: DEFAULT_MAX_OPEN,
        }
    }
}

/// Pushes onto a list that mostly stays short: its first few items take no more room than
/// they need (a plain push reserves four at once), then it grows as usual.
fn push_small<T>(list: &mut Vec<T>, item: T) {
    if list.len() == list.capacity() && list.len() < 4 {
        list.reserve_exact(1);
    }
    list.push(item);
}

/// A deterministic 128-bit hash (the same in every process: it may be kept in a snapshot).
fn hash(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// Up to this many items a `Set` is searched in order; beyond, through an index of hashes.
const SCAN: usize = 8;

/// A capped list of distinct strings with its true total. Small (most hold one to a few
/// items): the items alone, searched in order. Only a list that outgrows `SCAN` items or its
/// cap has more: the true total and an index of the items' hashes. What was seen stays
/// bounded by the cap like the items.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Set {
    items: Vec<Box<str>>,
    more: Option<Box<More>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct More {
    total: u64,
    /// Hashes of `items` (made again after a snapshot is read).
    #[serde(skip)]
    index: Option<HashSet<u128>>,
}

impl Set {
    fn total(&self) -> u64 {
        self.more
            .as_ref()
            .map_or(self.items.len() as u64, |m| m.total)
    }

    fn contains(&mut self, value: &str) -> bool {
        if self.items.len() <= SCAN {
            return self.items.iter().any(|i| **i == *value);
        }
        let items = &self.items;
        let more = self.more.get_or_insert_with(|| {
            Box::new(More {
                total: items.len() as u64,
                index: None,
            })
        });
        more.index
            .get_or_insert_with(|| items.iter().map(|i| hash(i)).collect())
            .contains(&hash(value))
    }

    /// `add` of the pieces' concatenation, made only when it is new to a short list.
    fn add_joined(&mut self, pieces: &[&str], cap: usize) {
        let is = |item: &str| {
            let mut rest = item;
            pieces.iter().all(|p| match rest.strip_prefix(p) {
                Some(after) => {
                    rest = after;
                    true
                }
                None => false,
            }) && rest.is_empty()
        };
        if self.items.len() <= SCAN && self.items.iter().any(|i| is(i)) {
            return;
        }
        self.add(&pieces.concat(), cap);
    }

    fn add(&mut self, value: &str, cap: usize) {
        if value.is_empty() || self.contains(value) {
            return;
        }
        let kept = self.items.len();
        // Beyond the cap only the count grows; what was seen stays bounded too.
        let keep = kept < cap;
        if keep {
            push_small(&mut self.items, value.into());
        }
        if self.more.is_none() && (!keep || self.items.len() > SCAN) {
            self.more = Some(Box::new(More {
                total: kept as u64,
                index: None,
            }));
        } else if let Some(more) = self.more.as_mut() {
            if keep {
                if let Some(index) = more.index.as_mut() {
                    index.insert(hash(value));
                }
            }
            more.total += 1;
            return;
        }
        if let Some(more) = self.more.as_mut() {
            more.total += 1;
        }
    }

    fn capped(&self) -> Capped {
        Capped {
            total: self.total(),
            items: self.items.iter().map(|i| i.to_string()).collect(),
        }
    }
}

/// A map keyed by hashes that mostly holds one or a few entries: a list searched in order,
/// a hash map once there are more than `SCAN`.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Few<V> {
    list: Vec<(u128, V)>,
    map: Option<Box<HashMap<u128, V>>>,
}

impl<V: Copy> Few<V> {
    fn get(&self, key: u128) -> Option<V> {
        match &self.map {
            Some(map) => map.get(&key).copied(),
            None => self.list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v),
        }
    }

    fn contains(&self, key: u128) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`'s value; whether it is new.
    fn insert(&mut self, key: u128, value: V) -> bool {
        if let Some(map) = self.map.as_mut() {
            return map.insert(key, value).is_none();
        }
        if let Some(entry) = self.list.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = value;
            return false;
        }
        push_small(&mut self.list, (key, value));
        if self.list.len() > SCAN {
            self.map = Some(Box::new(
                std::mem::take(&mut self.list).into_iter().collect(),
            ));
        }
        true
    }

    fn for_each_value(&mut self, mut f: impl FnMut(&mut V)) {
        match self.map.as_mut() {
            Some(map) => map.values_mut().for_each(f),
            None => self.list.iter_mut().for_each(|(_, v)| f(v)),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Open {
    id: String,
    cluster: String,
    first: i64,
    last: i64,
    /// Latest alert time: the gap runs from here.
    last_alert: i64,
    /// The worst alert's severity, and the incident's (see `rate`).
    worst: Severity,
    severity: Severity,
    families: Vec<String>,
    /// Hashes of the identity keys (`user:`, `cred:` + cluster and value) of its alerts.
    keys: Vec<u128>,
    usernames: Set,
    credentials: Set,
    impersonated: Set,
    alerts: Vec<AlertRef>,
    /// Hashes of every alert id joined (an episode's later reports find their incident here).
    alert_ids: Few<()>,
    alerts_total: u64,
    story: Story,
    reported: Option<(u64, u64, i64)>,
}

/// What an identity did: its requests as a timeline (read-only ones folded), the alerts raised
/// on them, and the blast radius. An incident tells one; so does `audithound timeline`.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Story {
    steps: Vec<Rec>,
    steps_total: u64,
    /// Hashes of the audit IDs of recorded steps → step (to mark the alerts raised on them);
    /// made again from the steps after a snapshot is read.
    #[serde(skip)]
    step_at: Few<u32>,
    /// The rules that alerted on requests not recorded yet, by audit ID (rarely any).
    pending_marks: Option<Box<HashMap<String, Vec<String>>>>,
    blast: Blast,
    /// The latest request's time.
    last: i64,
}

/// A timeline step as kept: its texts in one allocation, times as microseconds (written out
/// only in a report).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Rec {
    micros: i64,
    /// The time of the latest request folded into it.
    last_micros: Option<i64>,
    status_code: Option<i64>,
    count: u64,
    /// The texts of `REC_FIELDS`, one after another; `ends` says where each ends.
    text: Box<str>,
    ends: [u32; REC_FIELDS],
    alerts: Vec<String>,
}

const REC_FIELDS: usize = 8;
const VERB: usize = 0;
/// The resource with its subresource (`pods/exec`).
const RESOURCE: usize = 1;
const NAMESPACE: usize = 2;
const NAME: usize = 3;
const USERNAME: usize = 4;
const SOURCE_IP: usize = 5;
const USER_AGENT: usize = 6;
const AUDIT_ID: usize = 7;

/// Texts laid one after another in one string, with where each ends.
fn pack<const N: usize>(parts: [&str; N]) -> (String, [u32; N]) {
    let mut packer = Packer::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        packer.field(&[part]);
    }
    packer.done()
}

/// Lays out the texts `pack` does, a field at a time, each from one or more pieces.
struct Packer<const N: usize> {
    text: String,
    ends: [u32; N],
    fields: usize,
}

impl<const N: usize> Packer<N> {
    fn with_capacity(capacity: usize) -> Self {
        Packer {
            text: String::with_capacity(capacity),
            ends: [0; N],
            fields: 0,
        }
    }

    /// Appends to the field being written.
    fn push(&mut self, piece: &str) {
        self.text.push_str(piece);
    }

    /// Ends the field being written.
    fn end(&mut self) {
        if let Some(end) = self.ends.get_mut(self.fields) {
            *end = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
            self.fields += 1;
        }
    }

    /// Writes one field of `pieces`.
    fn field(&mut self, pieces: &[&str]) {
        for piece in pieces {
            self.push(piece);
        }
        self.end();
    }

    /// The text and where each field ends (fields not written are empty).
    fn done(mut self) -> (String, [u32; N]) {
        while self.fields < N {
            self.end();
        }
        (self.text, self.ends)
    }
}

/// The `i`-th of the texts `pack` laid out.
fn part<'t>(text: &'t str, ends: &[u32], i: usize) -> &'t str {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    text.get(start..ends[i] as usize).unwrap_or("")
}

impl Rec {
    fn get(&self, i: usize) -> &str {
        part(&self.text, &self.ends, i)
    }

    /// The step as reported.
    fn step(&self) -> Step {
        let mut alerts = self.alerts.clone();
        alerts.sort();
        Step {
            time: format_micros(self.micros),
            last_time: self.last_micros.map(format_micros),
            micros: self.micros,
            verb: self.get(VERB).to_owned(),
            resource: self.get(RESOURCE).to_owned(),
            namespace: self.get(NAMESPACE).to_owned(),
            name: self.get(NAME).to_owned(),
            status_code: self.status_code,
            username: self.get(USERNAME).to_owned(),
            source_ip: self.get(SOURCE_IP).to_owned(),
            user_agent: self.get(USER_AGENT).to_owned(),
            audit_id: self.get(AUDIT_ID).to_owned(),
            count: self.count,
            alerts,
        }
    }

    /// Folded requests of different objects: the step names none.
    fn clear_name(&mut self) {
        let parts: [&str; REC_FIELDS] =
            std::array::from_fn(|i| if i == NAME { "" } else { self.get(i) });
        let (text, ends) = pack(parts);
        self.text = text.into_boxed_str();
        self.ends = ends;
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Blast {
    secrets_read: Set,
    sessions: Set,
    created: Set,
    changed: Set,
    deleted: Set,
    namespaces: Set,
    source_ips: Set,
    user_agents: Set,
    credentials: Set,
}

/// Actors that may have an open incident, shared with the decode workers: a worker describes
/// the request of such an actor as it evaluates the event (`Request::of`), so that the
/// collector need not decode it again. A filter of hash bits, set when an incident takes an
/// actor and cleared when incidents close: a bit set for an actor that has none only costs a
/// description nobody reads, and one not set yet (the worker ran ahead of the collector) only
/// has the collector decode the event again, as it does without the filter. Either way the
/// incident records the same request.
pub struct Watched {
    bits: Box<[AtomicU64]>,
}

/// Bits of the filter (32 KiB).
const WATCH_BITS: usize = 1 << 18;

impl Default for Watched {
    fn default() -> Self {
        Watched {
            bits: (0..WATCH_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Watched {
    fn at(actor: StateKey) -> (usize, u64) {
        let bit = (actor as usize) % WATCH_BITS;
        (bit / 64, 1 << (bit % 64))
    }

    /// Whether `actor` may have an open incident (its requests are described).
    pub fn may_watch(&self, actor: StateKey) -> bool {
        let (word, mask) = Self::at(actor);
        self.bits[word].load(Ordering::Relaxed) & mask != 0
    }

    fn set(&self, actor: StateKey) {
        let (word, mask) = Self::at(actor);
        self.bits[word].fetch_or(mask, Ordering::Relaxed);
    }

    fn reset(&self, actors: impl Iterator<Item = StateKey>) {
        for word in self.bits.iter() {
            word.store(0, Ordering::Relaxed);
        }
        for actor in actors {
            self.set(actor);
        }
    }
}

/// Open incidents at most whose actors the filter is made again for when some close; with
/// more, bits of closed ones stay set until all close (a little more work, never less).
const WATCH_RESET_MAX: usize = 4096;

/// The incidents being built.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Incidents {
    /// Given again when restored.
    #[serde(skip)]
    opts: IncidentOptions,
    open: Vec<Option<Box<Open>>>,
    /// Slots of `open` that are empty (closed or merged), reused by the next incidents; made
    /// again after a snapshot is read.
    #[serde(skip)]
    free: Vec<u32>,
    /// Identity key (hash of `user:`, `cred:` + cluster and value) → incident; made again from
    /// the incidents' keys after a snapshot is read.
    #[serde(skip)]
    by_key: HashMap<u128, u32>,
    /// Actor (state key of `cluster\x1fusername`) → incident, for recording its requests; made
    /// again from the incidents' usernames after a snapshot is read (state keys differ from
    /// process to process).
    #[serde(skip)]
    by_actor: HashMap<StateKey, u32>,
    #[serde(skip)]
    watched: Arc<Watched>,
    pub stats: IncidentStats,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct IncidentStats {
    pub incidents: u64,
    pub recorded_requests: u64,
    /// Requests recorded that a worker had not described (decoded again here).
    #[serde(default)]
    pub decoded_again: u64,
    /// Incidents closed before their gap passed, because too many were open (`max_open`).
    #[serde(default)]
    pub closed_early: u64,
}

/// The identity keys an alert is known by.
fn keys_of(alert: &Alert) -> Vec<String> {
    let c = &alert.cluster;
    let mut keys = vec![format!("user:{c}\u{1f}{}", alert.actor.username)];
    if let Some(cred) = &alert.actor.credential_id {
        keys.push(format!("cred:{c}\u{1f}{cred}"));
    }
    if let Some(imp) = &alert.actor.impersonated_user {
        keys.push(format!("user:{c}\u{1f}{imp}"));
    }
    keys
}

fn actor_of(cluster: &str, username: &str) -> StateKey {
    state_key(&format!("{cluster}\u{1f}{username}"))
}

/// `1 alert`, `3 alerts`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn bump(severity: Severity, levels: usize) -> Severity {
    let at = Severity::ALL
        .iter()
        .position(|s| *s == severity)
        .unwrap_or(0);
    Severity::ALL[(at + levels).min(Severity::ALL.len() - 1)]
}

impl Incidents {
    pub fn new(opts: IncidentOptions) -> Self {
        Incidents {
            opts,
            ..Incidents::default()
        }
    }

    /// The filter of actors whose requests the workers describe (see `Watched`).
    pub fn watched(&self) -> Arc<Watched> {
        self.watched.clone()
    }

    /// Joins `alert` (delivered, in event-time order) to its identity's incident, or opens one.
    /// Reports go to `out`.
    pub fn alert(&mut self, alert: &Alert, family: &str, out: &mut Vec<Incident>) {
        // An episode's later report updates the incident its opening joined, if that is still
        // open; it never starts one.
        if matches!(alert.status, Some(Status::Updated | Status::Closed)) {
            let cap = self.opts.cap;
            let id = hash(&alert.id);
            let open = self.open.iter_mut().flatten();
            if let Some(open) = open.into_iter().find(|o| o.alert_ids.contains(id)) {
                open.add_alert(alert, family, cap);
            }
            return;
        }
        let keys = keys_of(alert);
        let gap = self.opts.gap;
        let mut found: Vec<usize> = keys
            .iter()
            .filter_map(|k| self.by_key.get(&hash(k)).map(|&i| i as usize))
            .filter(|&i| {
                self.open[i]
                    .as_ref()
                    .is_some_and(|o| alert.time_micros - o.last_alert <= gap)
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        // The oldest takes the others in, whichever slots they hold.
        if found.len() > 1 {
            found.sort_by_cached_key(|&i| {
                self.open[i]
                    .as_ref()
                    .map(|o| (o.first, o.id.clone()))
                    .unwrap_or_default()
            });
        }
        let at = match found.first() {
            Some(&first) => {
                // An alert naming identities of several incidents joins them into the first.
                for &other in &found[1..] {
                    self.merge(first, other);
                }
                first
            }
            None => {
                if self.open_count() >= self.opts.max_open {
                    self.close_least_recent(out);
                }
                self.start(alert)
            }
        };
        for key in &keys {
            self.by_key.insert(hash(key), at as u32);
        }
        let actor = actor_of(&alert.cluster, &alert.actor.username);
        self.by_actor.insert(actor, at as u32);
        self.watched.set(actor);
        let cap = self.opts.cap;
        let Some(open) = self.open[at].as_mut() else {
            return;
        };
        open.add_alert(alert, family, cap);
        if open.reported.is_none() && open.worth_reporting() {
            open.reported = Some((open.alerts_total, open.story.steps_total, alert.time_micros));
            out.push(open.report(Status::Open));
        }
    }

    fn start(&mut self, alert: &Alert) -> usize {
        // Named by who and when it began, not by which of the alerts raised at that moment
        // arrived first: live and replay may deliver those in either order.
        let id = crate::alert::alert_id(
            "incident",
            &alert.cluster,
            &[&alert.actor.username, &alert.time_micros.to_string()],
        );
        self.stats.incidents += 1;
        let open = Some(Box::new(Open {
            id,
            cluster: alert.cluster.clone(),
            first: alert.time_micros,
            last: alert.time_micros,
            last_alert: alert.time_micros,
            worst: alert.rule.severity,
            severity: alert.rule.severity,
            families: Vec::new(),
            keys: keys_of(alert).iter().map(|k| hash(k)).collect(),
            usernames: Set::default(),
            credentials: Set::default(),
            impersonated: Set::default(),
            alerts: Vec::new(),
            alert_ids: Few::default(),
            alerts_total: 0,
            story: Story::default(),
            reported: None,
        }));
        match self.free.pop() {
            Some(slot) => {
                self.open[slot as usize] = open;
                slot as usize
            }
            None => {
                self.open.push(open);
                self.open.len() - 1
            }
        }
    }

    /// Closes the least recently active tenth of the open incidents (at least one), their
    /// closing reports to `out`: what holds the number open under `max_open`.
    fn close_least_recent(&mut self, out: &mut Vec<Incident>) {
        let mut active: Vec<(i64, u32)> = self
            .open
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (o.last.max(o.last_alert), i as u32)))
            .collect();
        let n = (self.opts.max_open / 10).clamp(1, active.len().max(1));
        if active.len() > n {
            active.select_nth_unstable(n - 1);
        }
        let mut closed = HashSet::default();
        let reported = out.len();
        for &(_, i) in active.iter().take(n) {
            let Some(open) = self.open[i as usize].take() else {
                continue;
            };
            if open.reported.is_some() {
                let mut report = open.report(Status::Closed);
                report.summary.push_str(&format!(
                    " Closed early: more than {} incidents were open at once; a later alert of this identity opens a new one.",
                    self.opts.max_open
                ));
                out.push(report);
            }
            closed.insert(i);
        }
        out[reported..].sort_by(|a, b| (a.first_micros, &a.id).cmp(&(b.first_micros, &b.id)));
        self.stats.closed_early += closed.len() as u64;
        self.forget(&closed);
    }

    /// Forgets the keys and actors of incidents that closed, whose slots are free again.
    fn forget(&mut self, closed: &HashSet<u32>) {
        if closed.is_empty() {
            return;
        }
        self.by_key.retain(|_, i| !closed.contains(i));
        self.by_actor.retain(|_, i| !closed.contains(i));
        // Lowest slot first, whatever the set's order.
        let mut freed: Vec<u32> = closed.iter().copied().collect();
        freed.sort_unstable_by(|a, b| b.cmp(a));
        self.free.extend(freed);
        if self.by_actor.len() <= WATCH_RESET_MAX {
            self.watched.reset(self.by_actor.keys().copied());
        }
    }

    /// Moves incident `other` into `into`.
    fn merge(&mut self, into: usize, other: usize) {
        let Some(moved) = self.open[other].take() else {
            return;
        };
        let (into32, other32) = (into as u32, other as u32);
        for i in self.by_key.values_mut().chain(self.by_actor.values_mut()) {
            if *i == other32 {
                *i = into32;
            }
        }
        self.free.push(other32);
        let cap = self.opts.cap;
        if let Some(target) = self.open[into].as_mut() {
            target.absorb(*moved, cap);
        }
    }

    /// Whether requests of `actor` are recorded (an incident of theirs is open).
    pub fn watches(&self, actor: StateKey) -> bool {
        // The filter's bits are set for every actor here: most answers need no lookup.
        self.watched.may_watch(actor) && self.by_actor.contains_key(&actor)
    }

    /// Records one request of a watched actor (see `watches`), unless its incident's gap has
    /// passed by then (the incident is over, only not closed yet).
    pub fn request(&mut self, actor: StateKey, view: &EventView) {
        let cap = self.opts.cap;
        if let Some(open) = self.recording(actor, view.time) {
            open.story.record(Request::of(view), cap);
            open.last = open.last.max(view.time);
            self.stats.recorded_requests += 1;
            self.stats.decoded_again += 1;
        }
    }

    /// `request`, with the request described already (by a worker: see `Watched`).
    pub fn described(&mut self, actor: StateKey, request: Request) {
        let (time, cap) = (request.time, self.opts.cap);
        if let Some(open) = self.recording(actor, time) {
            open.story.record(request, cap);
            open.last = open.last.max(time);
            self.stats.recorded_requests += 1;
        }
    }

    /// The open incident a request of `actor` at `time` is recorded in.
    fn recording(&mut self, actor: StateKey, time: i64) -> Option<&mut Open> {
        let &at = self.by_actor.get(&actor)?;
        let gap = self.opts.gap;
        let open = self.open.get_mut(at as usize)?.as_deref_mut()?;
        (time <= open.last_alert.saturating_add(gap)).then_some(open)
    }

    /// Event time has reached `now` (or the input ended): incidents whose gap has passed close;
    /// live, reported ones that grew report again.
    pub fn tick(&mut self, now: i64, end: bool, out: &mut Vec<Incident>) {
        let gap = self.opts.gap;
        let mut closed = HashSet::default();
        let reported = out.len();
        for (i, slot) in self.open.iter_mut().enumerate() {
            let Some(open) = slot else { continue };
            if end || now > open.last_alert.saturating_add(gap) {
                if open.reported.is_some() {
                    out.push(open.report(Status::Closed));
                }
                closed.insert(i as u32);
                *slot = None;
            } else if let (Some(every), Some(reported)) = (self.opts.update_every, open.reported) {
                let grew = (open.alerts_total, open.story.steps_total) != (reported.0, reported.1);
                if grew && now >= reported.2 + every {
                    open.reported = Some((open.alerts_total, open.story.steps_total, now));
                    out.push(open.report(Status::Updated));
                }
            }
        }
        // In the order the incidents began, not the order of the slots they held.
        out[reported..].sort_by(|a, b| (a.first_micros, &a.id).cmp(&(b.first_micros, &b.id)));
        self.forget(&closed);
    }

    /// Incidents read back from a snapshot, with this run's options.
    pub fn restored(mut self, opts: IncidentOptions) -> Self {
        self.opts = opts;
        for (i, open) in self.open.iter_mut().enumerate() {
            let Some(open) = open else {
                self.free.push(i as u32);
                continue;
            };
            open.story.restored();
            for &key in &open.keys {
                self.by_key.insert(key, i as u32);
            }
            for username in &open.usernames.items {
                let actor = actor_of(&open.cluster, username);
                self.by_actor.insert(actor, i as u32);
                self.watched.set(actor);
            }
        }
        self
    }

    pub fn open_count(&self) -> usize {
        self.open.len() - self.free.len()
    }
}

/// One request, from its event or from the alert raised on it: its texts in one allocation.
#[derive(Debug, Clone)]
pub struct Request {
    time: i64,
    code: Option<i64>,
    text: String,
    ends: [u32; REQUEST_FIELDS],
    has_credential: bool,
}

const REQUEST_FIELDS: usize = 10;
const R_VERB: usize = 0;
const R_RESOURCE: usize = 1;
const R_SUBRESOURCE: usize = 2;
const R_NAMESPACE: usize = 3;
const R_NAME: usize = 4;
const R_USERNAME: usize = 5;
const R_SOURCE_IP: usize = 6;
const R_USER_AGENT: usize = 7;
const R_AUDIT_ID: usize = 8;
const R_CREDENTIAL: usize = 9;

impl Request {
    /// The request `view` is, in one allocation.
    pub fn of(view: &EventView) -> Request {
        let ev = view.event;
        fn text<'t>(s: Option<&'t crate::event::JStr>) -> &'t str {
            s.map_or("", |s| s)
        }
        let o = ev.object_ref.as_ref();
        let created;
        let name = match o.and_then(|o| o.name.as_ref()) {
            Some(name) => &**name,
            None => {
                created = created_name(view).unwrap_or_default();
                &*created
            }
        };
        let credential = credential_id(view);
        let mut p = Packer::with_capacity(256);
        p.field(&[text(ev.verb.as_ref())]);
        p.field(&[text(o.and_then(|o| o.resource.as_ref()))]);
        p.field(&[text(o.and_then(|o| o.subresource.as_ref()))]);
        p.field(&[text(o.and_then(|o| o.namespace.as_ref()))]);
        p.field(&[name]);
        p.field(&[ev.username()]);
        // The first source address, read in place.
        if let Some(ips) = ev.source_ips {
            crate::event::for_each_str(ips, &mut |ip| {
                p.push(ip);
                true
            });
        }
        p.end();
        p.field(&[text(ev.user_agent.as_ref())]);
        p.field(&[text(ev.audit_id.as_ref())]);
        p.field(&[credential.as_deref().unwrap_or("")]);
        let (text, ends) = p.done();
        Request {
            time: view.time,
            code: ev.status_code(),
            text,
            ends,
            has_credential: credential.is_some(),
        }
    }

    /// The request `alert` was raised on (its target, actor and outcome).
    fn of_alert(alert: &Alert) -> Request {
        let t = &alert.target;
        let (text, ends) = pack([
            &t.verb,
            &t.resource,
            &t.subresource,
            &t.namespace,
            &t.name,
            &alert.actor.username,
            alert.actor.source_ips.first().map_or("", String::as_str),
            alert.actor.user_agent.as_deref().unwrap_or(""),
            alert.evidence.audit_ids.last().map_or("", String::as_str),
            alert.actor.credential_id.as_deref().unwrap_or(""),
        ]);
        Request {
            time: alert.time_micros,
            code: alert.outcome.status_code,
            text,
            ends,
            has_credential: alert.actor.credential_id.is_some(),
        }
    }

    fn get(&self, i: usize) -> &str {
        part(&self.text, &self.ends, i)
    }

    fn credential(&self) -> Option<&str> {
        self.has_credential.then(|| self.get(R_CREDENTIAL))
    }
}

/// The name a create gives its object (`requestObject.metadata.name`; `objectRef` names none
/// yet), found in the raw object: a pod's whole spec is skipped over, not parsed.
fn created_name<'a>(view: &EventView<'_, 'a>) -> Option<std::borrow::Cow<'a, str>> {
    let metadata = crate::event::raw_entry(view.event.request_object?, "metadata")?;
    let name = crate::event::raw_entry(metadata, "name")?;
    serde_json::from_str(name.get()).ok()
}

/// The credential id in `user.extra` (its first value): from the parsed map when an earlier
/// reader parsed it, else found by its key's text (`event::credential_id`).
fn credential_id<'v>(view: &'v EventView) -> Option<std::borrow::Cow<'v, str>> {
    if view.extra_parsed() {
        let id = view.extra().get(CREDENTIAL_ID_KEY)?.first_str()?;
        return Some(std::borrow::Cow::Borrowed(id));
    }
    crate::event::credential_id(view.event.user.extra?)
}

/// Read-only requests that are folded into counts in a timeline (Secret reads never are).
fn foldable(verb: &str, resource: &str, subresource: &str, code: Option<i64>) -> bool {
    matches!(verb, "get" | "list" | "watch")
        && (resource != "secrets" || !subresource.is_empty())
        && code.is_none_or(|c| c < 400)
}

/// Whether `joined` is `resource`, or `resource/subresource` when there is a subresource.
fn is_joined(joined: &str, resource: &str, subresource: &str) -> bool {
    if subresource.is_empty() {
        return joined == resource;
    }
    joined.len() == resource.len() + 1 + subresource.len()
        && joined.starts_with(resource)
        && joined.as_bytes()[resource.len()] == b'/'
        && joined.ends_with(subresource)
}

impl Open {
    /// An incident is reported once it is more than routine: a high alert, or several alerts
    /// with one at least medium. (Two low execs of a developer's stay alerts.)
    fn worth_reporting(&self) -> bool {
        self.severity >= Severity::High
            || (self.alerts_total >= 2 && self.severity >= Severity::Medium)
    }

    /// The incident's severity: its worst alert's, raised a level when its alerts span two of
    /// the mission families (escalation, revoked, secrets) and to critical when they span all
    /// three: refused, then granted, then reading Secrets is worse than any one of them.
    fn rate(&mut self, worst: Severity) {
        let mission = self.families.iter().filter(|f| *f != "other").count();
        self.severity = match mission {
            0 | 1 => worst,
            2 => bump(worst, 1),
            _ => Severity::Critical,
        };
    }

    fn add_alert(&mut self, alert: &Alert, family: &str, cap: usize) {
        self.last = self.last.max(alert.time_micros);
        self.first = self.first.min(alert.time_micros);
        self.last_alert = self.last_alert.max(alert.time_micros);
        if !self.families.iter().any(|f| f == family) {
            push_small(&mut self.families, family.to_owned());
            self.families.sort();
        }
        self.usernames.add(&alert.actor.username, cap);
        if let Some(c) = &alert.actor.credential_id {
            self.credentials.add(c, cap);
        }
        if let Some(i) = &alert.actor.impersonated_user {
            self.impersonated.add(i, cap);
        }
        for key in keys_of(alert) {
            let key = hash(&key);
            if !self.keys.contains(&key) {
                push_small(&mut self.keys, key);
            }
        }
        // An episode's later reports are the same alert: its entry keeps the opening summary.
        // Live, interim reports come when the wall clock allows, so taking theirs would make
        // an incident read differently live and in a replay; the episode's own closing record
        // carries the full extent.
        if !self.alert_ids.insert(hash(&alert.id), ()) {
            return;
        }
        self.alerts_total += 1;
        self.worst = self.worst.max(alert.rule.severity);
        self.rate(self.worst);
        if self.alerts.len() < cap {
            push_small(
                &mut self.alerts,
                AlertRef {
                    id: alert.id.clone(),
                    rule: alert.rule.id.clone(),
                    severity: alert.rule.severity,
                    time: alert.time.clone(),
                    summary: alert.summary.clone(),
                },
            );
        }
        if alert.status.is_none_or(|st| st == Status::Open) {
            self.story.alert(alert, cap);
        }
    }
}

impl Story {
    /// Marks the recorded requests among `audit_ids` with `rule`; returns those not recorded
    /// (yet).
    pub fn mark<'a>(&mut self, audit_ids: &'a [String], rule: &str) -> Vec<&'a String> {
        let mut unmarked = Vec::new();
        for id in audit_ids {
            let at = self.step_at.get(hash(id));
            match at.and_then(|i| self.steps.get_mut(i as usize)) {
                Some(step) => {
                    if !step.alerts.iter().any(|r| r == rule) {
                        push_small(&mut step.alerts, rule.to_owned());
                    }
                }
                None => unmarked.push(id),
            }
        }
        unmarked
    }

    /// An alert raised on the story's requests: marked where they are recorded, noted for
    /// when they are. One whose request was not recorded (it came before the story began, or
    /// its record comes later) stands in the timeline as that request, noted once either way.
    pub fn alert(&mut self, alert: &Alert, cap: usize) {
        let mut marked = false;
        for audit_id in &alert.evidence.audit_ids {
            match self.step_at.get(hash(audit_id)) {
                Some(i) => {
                    if let Some(step) = self.steps.get_mut(i as usize) {
                        push_small(&mut step.alerts, alert.rule.id.clone());
                        marked = true;
                    }
                }
                None => self
                    .pending_marks
                    .get_or_insert_with(Default::default)
                    .entry(audit_id.clone())
                    .or_default()
                    .push(alert.rule.id.clone()),
            }
        }
        if marked {
            return;
        }
        let audit_id = alert.evidence.audit_ids.last().cloned().unwrap_or_default();
        if let Some(pending) = self.pending_marks.as_mut() {
            pending.remove(&audit_id);
            if pending.is_empty() {
                self.pending_marks = None;
            }
        }
        self.alert_request(alert, vec![alert.rule.id.clone()], cap);
    }

    /// Notes the request an alert was raised on (its target, actor and outcome), marked with
    /// `marks`.
    pub fn alert_request(&mut self, alert: &Alert, marks: Vec<String>, cap: usize) {
        self.note(&Request::of_alert(alert), marks, cap);
    }

    fn push_step(&mut self, step: Rec, cap: usize) {
        self.steps_total += step.count;
        if self.steps.len() >= cap {
            return;
        }
        // Kept in time order: a request recorded late goes where it belongs.
        let at = self.steps.partition_point(|s| s.micros <= step.micros);
        if at < self.steps.len() {
            self.step_at.for_each_value(|i| {
                if *i as usize >= at {
                    *i += 1;
                }
            });
        }
        let audit_id = step.get(AUDIT_ID);
        if !audit_id.is_empty() {
            self.step_at.insert(hash(audit_id), at as u32);
        }
        if self.steps.len() == self.steps.capacity() && self.steps.len() < 4 {
            self.steps.reserve_exact(1);
        }
        self.steps.insert(at, step);
    }

    /// A request of the story's identities, decoded.
    pub fn request(&mut self, view: &EventView, cap: usize) {
        self.record(Request::of(view), cap);
    }

    /// A request of the story's identities, described.
    fn record(&mut self, request: Request, cap: usize) {
        let audit_id = request.get(R_AUDIT_ID);
        // Already in the timeline as an alert's request.
        if !audit_id.is_empty() && self.step_at.contains(hash(audit_id)) {
            return;
        }
        let marks = match self.pending_marks.as_mut() {
            Some(pending) => {
                let marks = pending.remove(audit_id).unwrap_or_default();
                if pending.is_empty() {
                    self.pending_marks = None;
                }
                marks
            }
            None => Vec::new(),
        };
        self.note(&request, marks, cap);
    }

    /// Adds a request to the timeline (folding repeated reads) and the blast radius.
    fn note(&mut self, r: &Request, alerts: Vec<String>, cap: usize) {
        self.last = self.last.max(r.time);
        let allowed = r.code.is_none_or(|c| c < 400);
        let (verb, resource, subresource) =
            (r.get(R_VERB), r.get(R_RESOURCE), r.get(R_SUBRESOURCE));
        let (namespace, name) = (r.get(R_NAMESPACE), r.get(R_NAME));
        // `pods shop/web-1`, `pods web-1`, `pods in shop`, `nodes`: in pieces, joined only
        // when new to the blast radius.
        let object: &[&str] = match (namespace.is_empty(), name.is_empty()) {
            (false, false) => &[resource, " ", namespace, "/", name],
            (true, false) => &[resource, " ", name],
            (false, true) => &[resource, " in ", namespace],
            (true, true) => &[resource],
        };
        let b = &mut self.blast;
        if allowed {
            match verb {
                "get" | "list" | "watch" if resource == "secrets" => {
                    let what: &[&str] = match (namespace.is_empty(), name.is_empty()) {
                        (false, false) => &[namespace, "/", name],
                        (true, false) => &[name],
                        (false, true) => &[namespace, "/* (", verb, ")"],
                        (true, true) => &["* in every namespace (", verb, ")"],
                    };
                    b.secrets_read.add_joined(what, cap);
                }
                // A session into a pod (exec, attach, port-forward, proxy) writes no object.
                _ if matches!(subresource, "exec" | "attach" | "portforward" | "proxy") => {
                    let mut session = [""; 7];
                    session[..2].copy_from_slice(&[subresource, " "]);
                    session[2..2 + object.len()].copy_from_slice(object);
                    b.sessions.add_joined(&session[..2 + object.len()], cap)
                }
                // Access and token reviews are questions put to the API server, not objects.
                "create" if resource.ends_with("reviews") => {}
                "create" => b.created.add_joined(object, cap),
                "update" | "patch" => b.changed.add_joined(object, cap),
                "delete" | "deletecollection" => b.deleted.add_joined(object, cap),
                _ => {}
            }
            b.namespaces.add(namespace, cap);
        }
        b.source_ips.add(r.get(R_SOURCE_IP), cap);
        b.user_agents.add(r.get(R_USER_AGENT), cap);
        if let Some(c) = r.credential() {
            b.credentials.add(c, cap);
        }
        // A read-only request like the previous step's folds into it.
        if alerts.is_empty() && foldable(verb, resource, subresource, r.code) {
            if let Some(last) = self.steps.last_mut() {
                let same = last.alerts.is_empty()
                    && last.get(VERB) == verb
                    && is_joined(last.get(RESOURCE), resource, subresource)
                    && last.get(NAMESPACE) == namespace
                    && last.micros <= r.time;
                if same {
                    last.count += 1;
                    last.last_micros = Some(r.time);
                    if last.get(NAME) != name {
                        last.clear_name();
                    }
                    self.steps_total += 1;
                    return;
                }
            }
        }
        if self.steps.len() >= cap {
            // The timeline is full: only its total grows.
            self.steps_total += 1;
            return;
        }
        // Exactly the step's length: boxing the text then keeps the allocation as it is.
        let len = r.text.len() - r.get(R_CREDENTIAL).len() + usize::from(!subresource.is_empty());
        let mut p = Packer::with_capacity(len);
        p.field(&[verb]);
        match subresource {
            "" => p.field(&[resource]),
            _ => p.field(&[resource, "/", subresource]),
        }
        for i in [
            R_NAMESPACE,
            R_NAME,
            R_USERNAME,
            R_SOURCE_IP,
            R_USER_AGENT,
            R_AUDIT_ID,
        ] {
            p.field(&[r.get(i)]);
        }
        let (text, ends) = p.done();
        let step = Rec {
            micros: r.time,
            last_micros: None,
            status_code: r.code,
            count: 1,
            text: text.into_boxed_str(),
            ends,
            alerts,
        };
        self.push_step(step, cap);
    }

    /// Read back from a snapshot: the index of the steps' audit IDs is made again.
    fn restored(&mut self) {
        self.step_at = Few::default();
        for (i, step) in self.steps.iter().enumerate() {
            let audit_id = step.get(AUDIT_ID);
            if !audit_id.is_empty() {
                self.step_at.insert(hash(audit_id), i as u32);
            }
        }
    }
}

impl Open {
    fn absorb(&mut self, other: Open, cap: usize) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.last_alert = self.last_alert.max(other.last_alert);
        for f in other.families {
            if !self.families.contains(&f) {
                push_small(&mut self.families, f);
            }
        }
        self.families.sort();
        self.worst = self.worst.max(other.worst);
        self.rate(self.worst);
        for k in other.keys {
            if !self.keys.contains(&k) {
                push_small(&mut self.keys, k);
            }
        }
        for s in other.usernames.items {
            self.usernames.add(&s, cap);
        }
        for s in other.credentials.items {
            self.credentials.add(&s, cap);
        }
        for s in other.impersonated.items {
            self.impersonated.add(&s, cap);
        }
        for a in other.alerts {
            if self.alert_ids.insert(hash(&a.id), ()) {
                self.alerts_total += 1;
                if self.alerts.len() < cap {
                    push_small(&mut self.alerts, a);
                }
            }
        }
        self.alerts.sort_by(|a, b| a.time.cmp(&b.time));
        self.story.absorb(other.story, cap);
        self.reported = self.reported.or(other.reported);
    }

    fn report(&self, status: Status) -> Incident {
        let who = self.usernames.items.first().map_or("", |u| &**u);
        let families = self.families.join(", ");
        let title = format!(
            "{who}: {}, {families}",
            plural(self.alerts_total, "alert", "alerts")
        );
        let b = &self.story.blast;
        let when = if self.first == self.last {
            format!("at {}", format_micros(self.first))
        } else {
            format!(
                "from {} to {}",
                format_micros(self.first),
                format_micros(self.last)
            )
        };
        let mut summary = format!(
            "{who} raised {} ({families}) {when}",
            plural(self.alerts_total, "alert", "alerts")
        );
        let mut parts = Vec::new();
        if b.secrets_read.total() > 0 {
            parts.push(format!(
                "read {}",
                plural(b.secrets_read.total(), "Secret", "Secrets")
            ));
        }
        let writes = b.created.total() + b.changed.total() + b.deleted.total();
        if writes > 0 {
            parts.push(format!(
                "created, changed or deleted {}",
                plural(writes, "object", "objects")
            ));
        }
        if b.sessions.total() > 0 {
            parts.push(format!(
                "opened {} into pods",
                plural(b.sessions.total(), "session", "sessions")
            ));
        }
        if !parts.is_empty() {
            summary.push_str(" and ");
            summary.push_str(&parts.join(" and "));
        }
        if b.source_ips.total() > 0 {
            summary.push_str(&format!(
                ", from {}",
                plural(b.source_ips.total(), "address", "addresses")
            ));
        }
        summary.push('.');
        Incident {
            id: self.id.clone(),
            status,
            severity: self.severity,
            title,
            summary,
            cluster: self.cluster.clone(),
            first_time: format_micros(self.first),
            last_time: format_micros(self.last),
            first_micros: self.first,
            last_micros: self.last,
            identities: Identities {
                usernames: self.usernames.capped().items,
                credential_ids: self.credentials.capped().items,
                impersonated: self.impersonated.capped().items,
            },
            families: self.families.clone(),
            alerts: {
                // Alerts raised at the same moment in one order, whichever arrived first.
                let mut alerts = self.alerts.clone();
                alerts.sort_by(|a, b| (&a.time, &a.rule, &a.id).cmp(&(&b.time, &b.rule, &b.id)));
                alerts
            },
            alerts_total: self.alerts_total,
            timeline: self.story.timeline(),
            blast_radius: self.story.blast_radius(),
        }
    }
}

impl Story {
    /// Another story of the same identities, merged in.
    fn absorb(&mut self, other: Story, cap: usize) {
        self.last = self.last.max(other.last);
        for step in other.steps {
            self.push_step(step, cap);
        }
        let b = &mut self.blast;
        let o = other.blast;
        for (into, from) in [
            (&mut b.secrets_read, o.secrets_read),
            (&mut b.sessions, o.sessions),
            (&mut b.created, o.created),
            (&mut b.changed, o.changed),
            (&mut b.deleted, o.deleted),
            (&mut b.namespaces, o.namespaces),
            (&mut b.source_ips, o.source_ips),
            (&mut b.user_agents, o.user_agents),
            (&mut b.credentials, o.credentials),
        ] {
            for s in from.items {
                into.add(&s, cap);
            }
        }
    }

    pub fn timeline(&self) -> Timeline {
        Timeline {
            total: self.steps_total,
            steps: self.steps.iter().map(Rec::step).collect(),
        }
    }

    pub fn blast_radius(&self) -> BlastRadius {
        let b = &self.blast;
        BlastRadius {
            secrets_read: b.secrets_read.capped(),
            sessions: b.sessions.capped(),
            created: b.created.capped(),
            changed: b.changed.capped(),
            deleted: b.deleted.capped(),
            namespaces: b.namespaces.capped(),
            source_ips: b.source_ips.capped(),
            user_agents: b.user_agents.capped(),
            credentials: b.credentials.capped(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_keeps_distinct_items_to_its_cap_and_counts_every_distinct_value() {
        let mut small = Set::default();
        for v in ["a", "b", "a", "", "c", "d", "c"] {
            small.add(v, 3);
        }
        // Beyond the cap, values not kept are counted each time they come (as always).
        assert_eq!(small.capped().items, ["a", "b", "c"]);
        assert_eq!(small.total(), 4);
        let mut big = Set::default();
        for i in 0..50 {
            big.add(&format!("v{}", i % 20), 1000);
        }
        // Past `SCAN` items the index answers; the same items, the same total.
        assert_eq!(big.items.len(), 20);
        assert_eq!(big.total(), 20);
        let json = serde_json::to_string(&big).unwrap();
        let mut back: Set = serde_json::from_str(&json).unwrap();
        back.add("v3", 1000);
        back.add("new", 1000);
        assert_eq!((back.items.len(), back.total()), (21, 21));
    }

    #[test]
    fn few_is_a_map_small_or_large() {
        let mut few: Few<u32> = Few::default();
        for i in 0..20u32 {
            // New keys until the twelfth, then the same keys again (past `SCAN`: a map).
            assert_eq!(few.insert(u128::from(i % 12), i), i < 12);
        }
        assert!(!few.insert(3, 99));
        assert_eq!(few.get(3), Some(99));
        assert_eq!(few.get(11), Some(11));
        assert_eq!(few.get(0), Some(12));
        assert_eq!(few.get(12), None);
        few.for_each_value(|v| *v += 1);
        assert_eq!(few.get(0), Some(13));
        let mut small: Few<u32> = Few::default();
        small.insert(7, 1);
        small.for_each_value(|v| *v += 1);
        assert_eq!((small.get(7), small.map.is_none()), (Some(2), true));
    }

    #[test]
    fn a_request_is_packed_and_read_back_field_by_field() {
        let (text, ends) = pack(["get", "", "pods", "ns"]);
        assert_eq!(text, "getpodsns");
        assert_eq!(
            (0..4).map(|i| part(&text, &ends, i)).collect::<Vec<_>>(),
            ["get", "", "pods", "ns"]
        );
        assert!(is_joined("pods/exec", "pods", "exec"));
        assert!(is_joined("pods", "pods", ""));
        assert!(!is_joined("pods/log", "pods", "exec"));
        assert!(!is_joined("podsxexec", "pods", "exec"));
    }

    /// A high alert (reported at once) of `user` at second `sec`.
    fn high_alert(user: &str, sec: i64) -> Alert {
        let json = format!(
            r#"{{"auditID":"{user}-{sec}","stage":"ResponseComplete","verb":"get","user":{{"username":"{user}"}},"objectRef":{{"resource":"secrets","name":"x"}},"stageTimestamp":"{}"}}"#,
            format_micros(sec * 1_000_000)
        );
        let mut alert = None;
        crate::rules::field::on_event(&json, |view| {
            let rule = crate::alert::RuleInfo {
                id: "r".into(),
                title: "r".into(),
                severity: Severity::High,
                mitre: Vec::new(),
            };
            alert = Some(Alert::from_event(rule, view));
        });
        alert.expect("an alert")
    }

    #[test]
    fn a_create_is_recorded_under_the_name_its_object_gets() {
        let name_of = |request_object: &str| {
            let json = format!(
                r#"{{"auditID":"a","stage":"ResponseComplete","verb":"create","user":{{"username":"u"}},"objectRef":{{"resource":"pods","namespace":"ns"}},"requestObject":{request_object},"stageTimestamp":"2025-01-01T00:00:00Z"}}"#
            );
            let mut name = None;
            crate::rules::field::on_event(&json, |view| {
                name = Some(Request::of(view).get(R_NAME).to_owned());
            });
            name.expect("an event")
        };
        let spec = r#"{"containers":[{"name":"a","image":"x"}],"metadata":{"name":"decoy"}}"#;
        let pod = format!(
            r#"{{"kind":"Pod","spec":{spec},"metadata":{{"labels":{{"name":"l"}},"name":"web-1"}}}}"#
        );
        assert_eq!(name_of(&pod), "web-1");
        assert_eq!(name_of(r#"{"metadata":{"name":"a\"b"}}"#), "a\"b");
        assert_eq!(name_of(r#"{"metadata":{"generateName":"job-"}}"#), "");
        assert_eq!(name_of("null"), "");
    }

    #[test]
    fn past_the_cap_the_least_recently_active_incidents_close_early() {
        let mut incidents = Incidents::new(IncidentOptions {
            max_open: 10,
            ..IncidentOptions::default()
        });
        let mut out = Vec::new();
        for i in 0..12 {
            incidents.alert(&high_alert(&format!("u{i}"), i), "secrets", &mut out);
        }
        // u0 and u1 were the least recently active when u10 and u11 opened theirs.
        let early: Vec<&Incident> = out.iter().filter(|i| i.status == Status::Closed).collect();
        let names: Vec<&str> = early
            .iter()
            .map(|i| i.identities.usernames[0].as_str())
            .collect();
        assert_eq!(names, ["u0", "u1"]);
        assert!(early.iter().all(|i| i.summary.contains("Closed early")));
        assert_eq!(incidents.stats.closed_early, 2);
        assert_eq!(incidents.open_count(), 10);
        // The slots they held are reused, and u0's next alert opens a new incident.
        assert_eq!(incidents.open.len(), 10);
        incidents.alert(&high_alert("u0", 20), "secrets", &mut out);
        assert_eq!(incidents.stats.incidents, 13);
        assert_eq!((incidents.open_count(), incidents.open.len()), (10, 10));
        // u5's next alert still joins its open incident.
        incidents.alert(&high_alert("u5", 21), "secrets", &mut out);
        assert_eq!(incidents.stats.incidents, 13);
    }

    #[test]
    fn the_filter_holds_every_watched_actor() {
        let w = Watched::default();
        let actors: Vec<StateKey> = (0..100u128).map(|i| i * 0x9e37_79b9_7f4a_7c15).collect();
        for &a in &actors {
            w.set(a);
        }
        assert!(actors.iter().all(|&a| w.may_watch(a)));
        w.reset(actors[..10].iter().copied());
        assert!(actors[..10].iter().all(|&a| w.may_watch(a)));
    }
}
