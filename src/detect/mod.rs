//! Stateful detection on event time: threshold (count or distinct count in a window), new_terms
//! (first time a combination is seen, after a learning period) and sequence (ordered steps by the
//! same key within a span), plus per-rule suppression.
//!
//! Workers turn each event that passes a stateful rule's filter into an `Observation`; the
//! collector feeds them here in input order, so state sees every key's events in order and the
//! alerts are the same for any thread count. State is bounded per rule; evictions are counted.

pub mod audit_id;
pub mod chain;
pub mod rbac;
pub mod spike;
pub mod unbound;
mod window;

use crate::alert::Alert;
use crate::event::EventView;
use crate::revocation::{Revocation, RevocationList, Role};
use crate::rules::field::Field;
use crate::rules::{Kind, RuleSet};
use audit_id::AuditId;
// foldhash: seeded per process (no hash flooding by crafted usernames), much faster than SipHash.
use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

/// Keys kept per rule before the least recently seen are evicted: a million identities fit in
/// about 320 MiB with the shipped library, 430 MiB all active within a minute (`cargo bench
/// --bench detectors`).
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Audit IDs carried as evidence per alert.
const MAX_EVIDENCE_IDS: usize = 10;

/// Strings a built-in carries with an observation (groups, binding subjects).
pub type Terms = Box<[Box<str>]>;
/// How a built-in classifies an event: (step bit, value, terms).
pub type Classified = (u32, Box<str>, Terms);

/// One event as a stateful rule sees it, extracted by a worker.
#[derive(Debug, Clone)]
pub struct Observation {
    pub rule: u32,
    pub time: i64,
    /// new_terms: the latest time the same term was seen in the batch (see `worker`); `time`
    /// otherwise.
    pub last: i64,
    /// Cluster and the rule's `by` values: whose state this is. Shared: an event's observations
    /// of several rules are usually all keyed by its actor.
    pub key: Arc<str>,
    /// Built-ins: the refused action, the grant, the binding.
    pub value: Option<Box<str>>,
    /// sequence: bit i set when step i's condition holds; built-ins: which kind of event this is.
    pub steps: u32,
    /// Built-ins: the actor's groups, or the subjects a binding names. Usually empty (no allocation).
    pub terms: Terms,
    /// revoked: the revocation-list entry the event matched.
    pub revocation: Option<Arc<Revocation>>,
    pub audit_id: AuditId,
    /// new_terms: hashes of the combination and of its `known` part (0 without one), which is
    /// all the state needs of them: no text is built for the collector. escalation_chain: the
    /// hash of a refused or successful request's action. threshold: `[0, hash of the distinct
    /// field's value]`.
    pub hashes: [u128; 2],
    /// What the alert is built from if the rule fires.
    pub seed: Seed,
}

/// The event behind an observation. Most observations never fire, so the alert is not built up
/// front: the event's JSON is found again (and decoded again) only when one does.
#[derive(Debug, Clone)]
pub enum Seed {
    /// The event's JSON lies in the batch it was read from, which the collector holds while it
    /// applies that batch's observations: no copy at all.
    InBatch {
        start: u32,
        len: u32,
        cluster: Arc<str>,
    },
    /// The record the event came from (an envelope, a mapped provider format, a batch of
    /// events), decoded again if needed: the `index`-th event it yields.
    Record {
        start: u32,
        len: u32,
        index: u32,
        cluster: Arc<str>,
    },
    /// The event's JSON when it does not lie in the batch as is (unescaped from an envelope
    /// string, mapped from GKE or ACK, rule tests): made once per event, shared by its
    /// observations.
    Event { json: Arc<str>, cluster: Arc<str> },
}

/// What an event's steps that can only advance state already held leave for the collector:
/// a chain's success, a use by an identity that may have lost its bindings, a sequence's later
/// step. Nearly every request is such a step for some rule, and nearly always nobody's state
/// awaits it; one small record per event, checked by key hash, replaces an observation per
/// rule. The rare check that finds state waiting decodes the event again (as an alert does)
/// and makes the rule's observation in full, so the state sees exactly what it saw before.
#[derive(Debug, Clone)]
pub struct FollowUp {
    pub time: i64,
    pub checks: smallvec::SmallVec<[Check; 4]>,
    pub seed: Seed,
}

/// One rule's step on one key, in a `FollowUp`.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub rule: u32,
    pub steps: u32,
    pub key: StateKey,
}

impl Seed {
    /// The alert `rule` raises on this event; `batch` is the data of the batch it came from.
    fn alert(&self, rule: &crate::rules::Rule, time: i64, batch: &[u8]) -> Alert {
        self.with_view(time, batch, |view| Alert::from_match(rule, view))
    }

    /// Calls `f` with the event decoded again (an empty one if it no longer decodes).
    fn with_view<R>(&self, time: i64, batch: &[u8], mut f: impl FnMut(&EventView) -> R) -> R {
        let slice = |start: &u32, len: &u32| {
            let start = *start as usize;
            batch.get(start..start + *len as usize).unwrap_or_default()
        };
        let (json, cluster) = match self {
            Seed::Event { json, cluster } => (&**json, cluster),
            Seed::InBatch {
                start,
                len,
                cluster,
            } => (
                std::str::from_utf8(slice(start, len)).unwrap_or_default(),
                cluster,
            ),
            Seed::Record {
                start,
                len,
                index,
                cluster,
            } => {
                let (mut n, mut answer) = (0, None);
                let opts = crate::event::DecodeOptions::default();
                crate::event::decode_record(slice(start, len), &opts, cluster, &mut |item| {
                    if let crate::event::Item::Event(ev, _) = item {
                        if n == *index {
                            answer = Some(f(&EventView::new(ev, time)));
                        }
                        n += 1;
                    }
                });
                return answer.unwrap_or_else(|| f(&EventView::new(&Default::default(), time)));
            }
        };
        let mut ev: crate::event::AuditEvent = serde_json::from_str(json).unwrap_or_default();
        ev.cluster = Some(crate::event::JStr::borrowed(cluster));
        f(&EventView::new(&ev, time))
    }
}

/// Where an event was read from, so that an observation can find it again without a copy.
#[derive(Default, Clone, Copy)]
pub struct Origin<'b> {
    /// The batch's data; empty when the event did not come from a batch (rule tests).
    pub batch: &'b [u8],
    /// The record's byte range in the batch, and which of its events this is.
    pub record_start: usize,
    pub record_len: usize,
    pub index: u32,
    /// A context copy (`audithound route`): an event another identity's partition also
    /// needs, a binding change or a service account's deletion. Only the state it changes for
    /// identities other than its actor is kept; the actor's own partition has the original.
    pub context: bool,
    /// The event's seed, when it is being decoded again from one (a follow-up that found
    /// state waiting): its observations keep it.
    pub seed: Option<&'b Seed>,
}

/// Builds an event's observations' seeds, sharing one cluster string (and, for events not read
/// from a batch, one JSON text) across them.
struct Seeder<'b> {
    origin: Origin<'b>,
    cluster: Option<Arc<str>>,
    json: Option<Arc<str>>,
}

impl Seeder<'_> {
    fn seed(&mut self, view: &EventView, cluster: &str) -> Seed {
        if let Some(seed) = self.origin.seed {
            return seed.clone();
        }
        let cluster = self
            .cluster
            .get_or_insert_with(|| shared_cluster(cluster))
            .clone();
        let batch = self.origin.batch;
        // The event's own JSON inside the batch: decoded again directly.
        if let Some(json) = view.event.source {
            let base = batch.as_ptr() as usize;
            let at = json.as_ptr() as usize;
            let inside = at >= base && at + json.len() <= base + batch.len();
            if let (true, Ok(start), Ok(len)) = (
                inside,
                u32::try_from(at.wrapping_sub(base)),
                u32::try_from(json.len()),
            ) {
                return Seed::InBatch {
                    start,
                    len,
                    cluster,
                };
            }
        }
        // Otherwise the record it came from, if there is one.
        let o = self.origin;
        if o.record_start + o.record_len <= batch.len() && o.record_len > 0 {
            if let (Ok(start), Ok(len)) =
                (u32::try_from(o.record_start), u32::try_from(o.record_len))
            {
                return Seed::Record {
                    start,
                    len,
                    index: o.index,
                    cluster,
                };
            }
        }
        let json = self
            .json
            .get_or_insert_with(|| match view.event.source {
                Some(text) => Arc::from(text),
                None => serde_json::to_string(view.event).unwrap_or_default().into(),
            })
            .clone();
        Seed::Event { json, cluster }
    }
}

/// The cluster's name as a shared string, made again only when it changes: a worker's events
/// nearly always share one, and an allocation per event was a tenth of the detectors' cost.
fn shared_cluster(name: &str) -> Arc<str> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some(shared) if **shared == *name => shared.clone(),
        _ => last.insert(Arc::from(name)).clone(),
    })
}

struct Progress {
    next_step: usize,
    /// Matching events of `next_step` so far, for steps that need several.
    hits: u32,
    start: i64,
    audit_ids: Vec<AuditId>,
    last_seen: i64,
}

/// Forgets `key`'s progress if it started more than `max_span` before `time`.
fn drop_outlived(keys: &mut HashMap<StateKey, Progress>, key: StateKey, time: i64, max_span: i64) {
    if keys.get(&key).is_some_and(|p| time - p.start > max_span) {
        keys.remove(&key);
    }
}

enum State {
    Threshold(window::Windows),
    NewTerms {
        /// Each combination's last time seen; with `known`, also each known part's.
        seen: HashMap<StateKey, i64>,
        known: HashMap<StateKey, i64>,
    },
    Sequence(HashMap<StateKey, Progress>),
    /// Per revoked entry and cluster: (quiet until, uses since the last alert, last seen).
    Revoked(HashMap<StateKey, (i64, u64, i64)>),
    Chain(HashMap<StateKey, chain::Pending>),
    Unbound(unbound::State),
    Spike(HashMap<StateKey, spike::Series>),
    None,
}

fn fresh_state(kind: &Kind) -> State {
    match kind {
        Kind::Threshold(_) => State::Threshold(window::Windows::default()),
        Kind::NewTerms(_) => State::NewTerms {
            seen: HashMap::new(),
            known: HashMap::new(),
        },
        Kind::Sequence(_) => State::Sequence(HashMap::new()),
        Kind::Revoked(_) => State::Revoked(HashMap::new()),
        Kind::Chain(_) => State::Chain(HashMap::new()),
        Kind::Unbound(_) => State::Unbound(unbound::State::default()),
        Kind::Spike(_) => State::Spike(HashMap::new()),
        Kind::Match => State::None,
    }
}

/// Whether state built for a rule of kind `was` means the same for kind `now`.
fn compatible(was: &Kind, now: &Kind) -> bool {
    match (was, now) {
        // Progress counts steps: a sequence that gained or lost one starts over.
        (Kind::Sequence(a), Kind::Sequence(b)) => a.steps.len() == b.steps.len(),
        _ => std::mem::discriminant(was) == std::mem::discriminant(now),
    }
}

/// What per-key state is stored under: a 128-bit hash of the key text, with a seed drawn per
/// process so that nobody can craft colliding usernames. 16 bytes instead of a heap string per
/// key and rule; the text itself still names alerts (their ids stay stable across runs).
pub type StateKey = u128;

pub fn state_key(text: &str) -> StateKey {
    crate::keyed::hash128(text.as_bytes())
}

/// Counters reported in the run summary.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct StateStats {
    pub evictions: u64,
}

/// `suppress:` — at most one alert per rule, cluster and actor per period; the next alert that
/// gets through carries how many were held back.
#[derive(Default)]
pub struct Suppressor {
    quiet: HashMap<(String, String, String), (i64, u64)>,
    pub suppressed: u64,
}

impl Suppressor {
    /// Whether `alert` goes out; updates its evidence with the count suppressed before it.
    pub fn admit(&mut self, alert: &mut Alert, period: Option<i64>) -> bool {
        let Some(period) = period else { return true };
        let key = (
            alert.rule.id.clone(),
            alert.cluster.clone(),
            alert.actor.username.clone(),
        );
        let now = alert.time_micros;
        match self.quiet.get_mut(&key) {
            Some((until, held)) if now < *until => {
                *held += 1;
                self.suppressed += 1;
                false
            }
            Some(entry) => {
                alert.evidence.suppressed = (entry.1 > 0).then_some(entry.1);
                *entry = (now + period, 0);
                true
            }
            None => {
                if self.quiet.len() >= DEFAULT_MAX_KEYS {
                    self.quiet.retain(|_, (until, _)| *until > now);
                }
                self.quiet.insert(key, (now + period, 0));
                true
            }
        }
    }
}

/// Runs every rule that can match `view`: single-event matches become alerts, stateful rules'
/// events become observations for the collector. Shared by the workers and `rules test`.
pub fn evaluate(
    rules: &RuleSet,
    revocations: &RevocationList,
    origin: Origin,
    view: &EventView,
    matched: &mut crate::rules::Matched,
    alerts: &mut Vec<Alert>,
    observations: &mut Vec<Observation>,
) {
    let every = &mut |_: &Sighting| true;
    evaluate_with(
        rules,
        revocations,
        origin,
        view,
        matched,
        alerts,
        observations,
        None,
        every,
    );
}

/// A new_terms rule's term on an event, offered to `evaluate_with`'s caller before an
/// observation is made of it.
pub struct Sighting {
    pub rule: u32,
    pub hashes: [u128; 2],
    pub time: i64,
    /// Where the observation would go among this event's observations.
    pub position: usize,
}

/// `evaluate`, asking `first_sighting` whether a new_terms term deserves an observation (a
/// worker folds a term's repeats within a batch into its first, before anything is built),
/// and, given `follow_ups`, leaving there the steps that can only advance state already held
/// instead of observing them (see `FollowUp`).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    rules: &RuleSet,
    revocations: &RevocationList,
    origin: Origin,
    view: &EventView,
    matched: &mut crate::rules::Matched,
    alerts: &mut Vec<Alert>,
    observations: &mut Vec<Observation>,
    follow_ups: Option<&mut Vec<FollowUp>>,
    first_sighting: &mut dyn FnMut(&Sighting) -> bool,
) {
    rules.matching(view, matched);
    let mut seeder = Seeder {
        origin,
        cluster: None,
        json: None,
    };
    // Shared by the event's observations (usually one per built-in watching every request).
    let cluster = view.event.cluster.as_deref().unwrap_or("");
    let (id, actor) = (std::cell::OnceCell::new(), std::cell::OnceCell::new());
    let audit_id = || {
        id.get_or_init(|| AuditId::new(view.event.audit_id.as_deref().unwrap_or("")))
            .clone()
    };
    let actor_key = || {
        actor
            .get_or_init(|| identity_key(cluster, view.event.username()))
            .clone()
    };
    let actor_hash = std::cell::OnceCell::new();
    let actor_hash = || *actor_hash.get_or_init(|| identity_hash(cluster, view.event.username()));
    // Follow-ups come from the event's own partition only: a context copy carries no step of
    // its actor's.
    let follow = follow_ups.is_some() && !origin.context;
    let mut checks: smallvec::SmallVec<[Check; 4]> = Default::default();
    // Key text is written into one buffer per thread: no allocation per event.
    thread_local!(static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    let mut scratch = SCRATCH.with_borrow_mut(std::mem::take);
    for &i in matched.rules.iter() {
        let rule = &rules.rules[i as usize];
        let mut key = |by: &[Field]| -> Arc<str> {
            key_text(&mut scratch, cluster, view, by);
            Arc::from(scratch.as_str())
        };
        if origin.context && !reads_context(&rule.kind) {
            continue;
        }
        let (key, steps, hashes) = match &rule.kind {
            Kind::Match => {
                alerts.push(Alert::from_match(rule, view));
                continue;
            }
            Kind::Threshold(t) => {
                let key = key(&t.by);
                let distinct = t.distinct.as_ref().map_or(0, |f| {
                    scratch.clear();
                    f.any(view, |v| {
                        v.write_text(&mut scratch);
                        true
                    });
                    state_key(&scratch)
                });
                (key, 0, [0, distinct])
            }
            Kind::NewTerms(n) => {
                let (term, part) = if n.known.is_empty() {
                    key_text(&mut scratch, cluster, view, &n.fields);
                    (state_key(&scratch), 0)
                } else if n.known_is_prefix {
                    // The known part's text, then the rest of the combination's after it.
                    key_text(&mut scratch, cluster, view, &n.known);
                    let part = state_key(&scratch);
                    append_fields(&mut scratch, view, &n.fields[n.known.len()..]);
                    (state_key(&scratch), part)
                } else {
                    key_text(&mut scratch, cluster, view, &n.known);
                    let part = state_key(&scratch);
                    key_text(&mut scratch, cluster, view, &n.fields);
                    (state_key(&scratch), part)
                };
                let sighting = Sighting {
                    rule: i,
                    hashes: [term, part],
                    time: view.time,
                    position: observations.len(),
                };
                if !first_sighting(&sighting) {
                    continue;
                }
                observations.push(Observation {
                    rule: i,
                    time: view.time,
                    last: view.time,
                    key: no_key(),
                    value: None,
                    steps: 0,
                    terms: Box::default(),
                    revocation: None,
                    audit_id: audit_id(),
                    hashes: [term, part],
                    seed: seeder.seed(view, cluster),
                });
                continue;
            }
            Kind::Revoked(_) => {
                let mut hits = Vec::new();
                revocations.matches(view, &mut hits);
                let allowed = rbac::is_allowed(view);
                for (entry, role) in hits {
                    let steps = u32::from(allowed) | if role == Role::Impersonated { 2 } else { 0 };
                    observations.push(Observation {
                        rule: i,
                        time: view.time,
                        last: view.time,
                        key: revocation_key(cluster, &entry, steps),
                        value: None,
                        steps,
                        terms: Box::default(),
                        revocation: Some(entry),
                        audit_id: audit_id(),
                        hashes: [0; 2],
                        seed: seeder.seed(view, cluster),
                    });
                }
                continue;
            }
            Kind::Chain(_) | Kind::Unbound(_) => {
                let classified = match &rule.kind {
                    Kind::Chain(_) => chain::classify(view),
                    _ => unbound::classify(view),
                };
                // From a context copy, only what concerns the identities a binding names.
                let concerns_others = |steps: u32| match &rule.kind {
                    Kind::Chain(_) => steps == chain::GRANT,
                    _ => steps & (unbound::BIND | unbound::UNBIND) != 0,
                };
                let classified =
                    classified.filter(|(steps, ..)| !origin.context || concerns_others(*steps));
                if let Some((steps, value, terms)) = classified {
                    let follows = match &rule.kind {
                        Kind::Chain(_) => steps == chain::SUCCESS,
                        _ => steps == unbound::USE,
                    };
                    if follow && follows {
                        checks.push(Check {
                            rule: i,
                            steps,
                            key: actor_hash(),
                        });
                        continue;
                    }
                    let action = matches!(&rule.kind, Kind::Chain(_))
                        && steps & (chain::DENIED | chain::SUCCESS) != 0;
                    observations.push(Observation {
                        rule: i,
                        time: view.time,
                        last: view.time,
                        key: actor_key(),
                        value: Some(value),
                        steps,
                        terms,
                        revocation: None,
                        audit_id: audit_id(),
                        hashes: [if action { chain::action_hash(view) } else { 0 }, 0],
                        seed: seeder.seed(view, cluster),
                    });
                }
                continue;
            }
            Kind::Spike(_) => (actor_key(), 0, [0; 2]),
            Kind::Sequence(s) => {
                // Steps that hold are grouped by the key they advance (usually one key).
                let mut groups: smallvec::SmallVec<[(GroupKey, u32); 2]> = Default::default();
                let actor_text = (cluster, view.event.username());
                let steps = s.steps.iter().enumerate();
                // From a context copy, only steps keyed by someone else than the actor.
                let steps = steps.filter(|(b, _)| !origin.context || s.step_keys[*b].is_some());
                for (b, _) in steps.filter(|(b, c)| matched.step_holds(i, *b, c, view)) {
                    let k = match &s.step_keys[b] {
                        // The actor, as in most sequences: its key is made once per event.
                        Some(t) if t.is("{user.username}") => {
                            if origin.context {
                                continue;
                            }
                            GroupKey::Actor
                        }
                        Some(t) => {
                            let whom = t.render(view);
                            if origin.context && whom == view.event.username() {
                                continue;
                            }
                            GroupKey::Text(identity_key(cluster, &whom))
                        }
                        None => GroupKey::Text(key(&s.by)),
                    };
                    match groups.iter_mut().find(|g| g.0.same(&k, actor_text)) {
                        Some(g) => g.1 |= 1 << b,
                        None => groups.push((k, 1 << b)),
                    }
                }
                for (key, steps) in groups {
                    // A group without the first step only advances progress already made.
                    if follow && steps & 1 == 0 {
                        let key = match &key {
                            GroupKey::Actor => actor_hash(),
                            GroupKey::Text(text) => state_key(text),
                        };
                        checks.push(Check {
                            rule: i,
                            steps,
                            key,
                        });
                        continue;
                    }
                    let key = match key {
                        GroupKey::Actor => actor_key(),
                        GroupKey::Text(text) => text,
                    };
                    observations.push(Observation {
                        rule: i,
                        time: view.time,
                        last: view.time,
                        key,
                        value: None,
                        steps,
                        terms: Box::default(),
                        revocation: None,
                        audit_id: audit_id(),
                        hashes: [0; 2],
                        seed: seeder.seed(view, cluster),
                    });
                }
                continue;
            }
        };
        observations.push(Observation {
            rule: i,
            time: view.time,
            last: view.time,
            key,
            value: None,
            steps,
            terms: Box::default(),
            revocation: None,
            audit_id: audit_id(),
            hashes,
            seed: seeder.seed(view, cluster),
        });
    }
    SCRATCH.with_borrow_mut(|buffer| *buffer = scratch);
    if let (Some(follow_ups), false) = (follow_ups, checks.is_empty()) {
        follow_ups.push(FollowUp {
            time: view.time,
            checks,
            seed: seeder.seed(view, cluster),
        });
    }
}

/// Whose progress a sequence step advances: the actor (most sequences), or a key written out.
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

/// `cluster\x1fvalue\x1fvalue…`: the text state is keyed by, written into `out`.
fn key_text(out: &mut String, cluster: &str, view: &EventView, fields: &[Field]) {
    out.clear();
    out.push_str(cluster);
    append_fields(out, view, fields);
}

/// `\x1fvalue…` for each of `fields`, appended to a key text.
fn append_fields(out: &mut String, view: &EventView, fields: &[Field]) {
    for f in fields {
        out.push('\u{1f}');
        f.any(view, |v| {
            v.write_text(out);
            true
        });
    }
}

/// The key of observations whose state needs none (new_terms): one shared empty string.
fn no_key() -> Arc<str> {
    thread_local!(static EMPTY: Arc<str> = Arc::from(""));
    EMPTY.with(Arc::clone)
}

/// Whether a rule of this kind reads context copies (state keyed by whom an event concerns,
/// not by its actor).
fn reads_context(kind: &Kind) -> bool {
    matches!(kind, Kind::Chain(_) | Kind::Unbound(_) | Kind::Sequence(_))
}

/// `state_key(identity_key(cluster, who))`, without making the key.
fn identity_hash(cluster: &str, who: &str) -> StateKey {
    with_identity_text(cluster, who, state_key)
}

/// `cluster\x1fwho`: whose state an observation belongs to.
fn identity_key(cluster: &str, who: &str) -> Arc<str> {
    with_identity_text(cluster, who, |text| Arc::from(text))
}

/// Calls `f` with `cluster\x1fwho`, written into a reused buffer (no allocation of its own).
fn with_identity_text<R>(cluster: &str, who: &str, f: impl FnOnce(&str) -> R) -> R {
    thread_local!(static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    KEY.with_borrow_mut(|key| {
        key.clear();
        key.push_str(cluster);
        key.push('\u{1f}');
        key.push_str(who);
        f(key)
    })
}

pub struct Stateful {
    states: Vec<State>,
    max_keys: usize,
    /// The earliest event time of the stream: learning periods run from here.
    started: Option<i64>,
    pub stats: StateStats,
}

impl Stateful {
    pub fn new(rules: &RuleSet, max_keys: usize) -> Self {
        Stateful {
            states: rules.rules.iter().map(|r| fresh_state(&r.kind)).collect(),
            max_keys: max_keys.max(1),
            started: None,
            stats: StateStats::default(),
        }
    }

    /// Switches from rule set `old` to `new` (a reload): a rule that keeps its id and kind
    /// keeps its state, a new one starts empty, a removed one's state is dropped.
    pub fn adopt(&mut self, old: &RuleSet, new: &RuleSet) {
        let mut kept: HashMap<&str, (&Kind, State)> = old
            .rules
            .iter()
            .map(|r| (r.id.as_str(), &r.kind))
            .zip(self.states.drain(..))
            .map(|((id, kind), state)| (id, (kind, state)))
            .collect();
        self.states = new
            .rules
            .iter()
            .map(|r| match kept.remove(r.id.as_str()) {
                Some((was, state)) if compatible(was, &r.kind) => state,
                _ => fresh_state(&r.kind),
            })
            .collect();
    }

    /// Notes that the stream holds an event at `time` (learning periods start at the first).
    pub fn saw(&mut self, time: i64) {
        if self.started.is_none_or(|s| time < s) {
            self.started = Some(time);
        }
    }

    /// Applies one observation; pushes the alert it completes, if any.
    /// `batch` is the data of the batch `obs` came from (seeds point into it).
    pub fn observe(
        &mut self,
        rules: &RuleSet,
        obs: Observation,
        batch: &[u8],
        out: &mut Vec<Alert>,
    ) {
        let rule = &rules.rules[obs.rule as usize];
        let alert = || obs.seed.alert(rule, obs.time, batch);
        let fired = match (&rule.kind, &mut self.states[obs.rule as usize]) {
            (Kind::Threshold(spec), State::Threshold(windows)) => {
                let spec = window::Spec {
                    count: spec.count,
                    window: spec.window,
                    distinct: spec.distinct.is_some(),
                };
                let fired = windows.observe(&spec, &obs, &alert);
                self.stats.evictions += windows.evict(self.max_keys);
                fired
            }
            (Kind::NewTerms(spec), State::NewTerms { seen, known }) => {
                let start = *self.started.get_or_insert(obs.time);
                let fired = new_terms(start, seen, known, spec, &obs, &alert);
                self.stats.evictions += evict(seen, self.max_keys, |t| *t);
                self.stats.evictions += evict(known, self.max_keys, |t| *t);
                fired
            }
            (Kind::Sequence(spec), State::Sequence(keys)) => {
                let fired = sequence(keys, spec, &obs, &rule.id, &alert);
                self.stats.evictions += evict(keys, self.max_keys, |p| p.last_seen);
                fired
            }
            (Kind::Revoked(spec), State::Revoked(keys)) => {
                let fired = revoked_use(keys, spec.window, &obs, &rule.id, &alert);
                self.stats.evictions += evict(keys, self.max_keys, |k| k.2);
                fired
            }
            (Kind::Chain(spec), State::Chain(keys)) => {
                let fired = chain::observe(keys, spec.window, &obs, &rule.id, &alert);
                self.stats.evictions += evict(keys, self.max_keys, |p| p.last_seen);
                fired
            }
            (Kind::Unbound(spec), State::Unbound(state)) => {
                let fired = unbound::observe(state, spec.window, &obs, &rule.id, &alert);
                self.stats.evictions += state.evict(self.max_keys);
                fired
            }
            (Kind::Spike(spec), State::Spike(keys)) => {
                let fired = spike::observe(keys, spec, &obs, &rule.id, &alert);
                self.stats.evictions += evict(keys, self.max_keys, |s| s.last_seen);
                fired
            }
            _ => None,
        };
        out.extend(fired);
    }

    /// Applies an event's follow-up: each check that finds state awaiting it has the event
    /// decoded again and its observation applied in full; the others change nothing.
    pub fn follow_up(
        &mut self,
        rules: &RuleSet,
        follow_up: FollowUp,
        batch: &[u8],
        out: &mut Vec<Alert>,
    ) {
        for check in &follow_up.checks {
            if !self.awaits(rules, check, follow_up.time) {
                continue;
            }
            let observation = follow_up.seed.with_view(follow_up.time, batch, |view| {
                let origin = Origin {
                    seed: Some(&follow_up.seed),
                    ..Origin::default()
                };
                let mut observations = Vec::new();
                evaluate_with(
                    rules,
                    &RevocationList::default(),
                    origin,
                    view,
                    &mut Default::default(),
                    &mut Vec::new(),
                    &mut observations,
                    None,
                    &mut |_| false,
                );
                observations.into_iter().find(|o| {
                    (o.rule, o.steps) == (check.rule, check.steps) && state_key(&o.key) == check.key
                })
            });
            if let Some(observation) = observation {
                self.observe(rules, observation, batch, out);
            }
        }
    }

    /// Whether the state of `check`'s rule awaits its step at `time`. A sequence's progress
    /// that has outlived its span is dropped here, as observing the step would.
    fn awaits(&mut self, rules: &RuleSet, check: &Check, time: i64) -> bool {
        let Some(rule) = rules.rules.get(check.rule as usize) else {
            return false;
        };
        match (&rule.kind, self.states.get_mut(check.rule as usize)) {
            (Kind::Chain(_), Some(State::Chain(pending))) => {
                chain::awaits_success(pending, check.key, time)
            }
            (Kind::Unbound(_), Some(State::Unbound(state))) => state.awaits_use(check.key, time),
            (Kind::Sequence(spec), Some(State::Sequence(keys))) => {
                drop_outlived(keys, check.key, time, spec.max_span);
                keys.get(&check.key)
                    .is_some_and(|p| check.steps & (1 << p.next_step) != 0)
            }
            _ => false,
        }
    }

    pub fn key_count(&self) -> u64 {
        self.states
            .iter()
            .map(|s| match s {
                State::Threshold(w) => w.len(),
                State::NewTerms { seen, known, .. } => seen.len() + known.len(),
                State::Sequence(m) => m.len(),
                State::Revoked(m) => m.len(),
                State::Chain(m) => m.len(),
                State::Unbound(s) => s.key_count(),
                State::Spike(m) => m.len(),
                State::None => 0,
            } as u64)
            .sum()
    }
}

/// One state per entry, cluster, role and outcome. The entry is named by its selectors and
/// time, so a reloaded list that keeps an entry keeps its state.
fn revocation_key(cluster: &str, entry: &Revocation, steps: u32) -> Arc<str> {
    let sel = |s: &Option<String>| s.as_deref().unwrap_or("").to_owned();
    format!(
        "{cluster}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{steps}",
        sel(&entry.username),
        sel(&entry.uid),
        sel(&entry.group),
        sel(&entry.credential_id),
        entry.revoked_at_micros
    )
    .into()
}

/// One alert per revoked entry (and cluster, role, outcome) per window; the uses in between are
/// counted into the next alert.
fn revoked_use(
    keys: &mut HashMap<StateKey, (i64, u64, i64)>,
    window: i64,
    obs: &Observation,
    rule_id: &str,
    alert: &dyn Fn() -> Alert,
) -> Option<Alert> {
    let state = keys
        .entry(state_key(&obs.key))
        .or_insert((i64::MIN, 0, obs.time));
    state.1 += 1;
    state.2 = obs.time;
    if obs.time < state.0 {
        return None;
    }
    let uses = std::mem::take(&mut state.1);
    state.0 = obs.time.saturating_add(window);
    let entry = obs.revocation.as_deref()?;
    let allowed = obs.steps & 1 != 0;
    let impersonated = obs.steps & 2 != 0;
    let mut alert = alert();
    alert.rule.severity = if allowed {
        crate::rules::Severity::Critical
    } else {
        crate::rules::Severity::High
    };
    alert.evidence.count = uses;
    alert.evidence.window_seconds = Some(window / 1_000_000);
    alert.evidence.revocation = Some(serde_json::json!({
        "entry": entry, "role": if impersonated { "impersonated" } else { "actor" },
    }));
    let who = if impersonated {
        format!(
            "{} impersonating revoked {}",
            alert.actor.username,
            alert.actor.impersonated_user.as_deref().unwrap_or("?")
        )
    } else {
        alert.actor.username.clone()
    };
    let outcome = if allowed {
        "the API server ALLOWED it"
    } else {
        "it was denied"
    };
    let t = &alert.target;
    let mut target = format!("{} {}", t.verb, t.resource);
    if !t.name.is_empty() {
        target.push_str(&format!(" {}", t.name));
    }
    if !t.namespace.is_empty() {
        target.push_str(&format!(" in {}", t.namespace));
    }
    let why = match (entry.reason.is_empty(), entry.ticket.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" ({})", entry.reason),
        (true, false) => format!(" (ticket {})", entry.ticket),
        (false, false) => format!(" ({}, ticket {})", entry.reason, entry.ticket),
    };
    let since = if uses > 1 {
        format!("; {uses} uses since the previous alert")
    } else {
        String::new()
    };
    alert.summary = format!(
        "{who} used a credential revoked at {}{why} to {target}, and {outcome}{since}.",
        entry.revoked_at
    );
    alert.id = crate::alert::alert_id(rule_id, &obs.key, &[&obs.audit_id.to_string()]);
    Some(alert)
}

/// Drops the least recently seen tenth of the keys when over the cap; returns how many.
fn evict<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    last_seen: impl Fn(&V) -> i64,
) -> u64 {
    if map.len() <= cap {
        return 0;
    }
    let mut times: Vec<i64> = map.values().map(&last_seen).collect();
    let drop = (cap / 10).max(map.len() - cap);
    let nth = drop.min(times.len() - 1);
    let (_, cut, _) = times.select_nth_unstable(nth);
    let cut = *cut;
    let before = map.len();
    map.retain(|_, v| last_seen(v) > cut);
    (before - map.len()) as u64
}

fn new_terms(
    start: i64,
    seen: &mut HashMap<StateKey, i64>,
    known_parts: &mut HashMap<StateKey, i64>,
    spec: &crate::rules::kind::NewTermsSpec,
    obs: &Observation,
    alert: &dyn Fn() -> Alert,
) -> Option<Alert> {
    // Last seen is kept as the newest time: a late event does not move it back.
    let remember = |map: &mut HashMap<StateKey, i64>, key: StateKey| {
        let last = map.get(&key).copied();
        map.insert(key, last.map_or(obs.last, |t| t.max(obs.last)));
        last.is_some_and(|t| spec.history.is_none_or(|h| obs.time - t <= h))
    };
    let known = remember(seen, obs.hashes[0]);
    let part_known = spec.known.is_empty() || remember(known_parts, obs.hashes[1]);
    if known || !part_known || obs.time < start + spec.learning {
        return None;
    }
    let mut alert = alert();
    alert.evidence.first_time = Some(crate::event::time::format_micros(start));
    Some(alert)
}

fn sequence(
    keys: &mut HashMap<StateKey, Progress>,
    spec: &crate::rules::kind::SequenceSpec,
    obs: &Observation,
    rule_id: &str,
    alert: &dyn Fn() -> Alert,
) -> Option<Alert> {
    let (steps, max_span) = (spec.steps.len(), spec.max_span);
    let needed = |step: usize| spec.step_counts.get(step).copied().unwrap_or(1);
    let audit_id = obs.audit_id.clone();
    let key = state_key(&obs.key);
    drop_outlived(keys, key, obs.time, max_span);
    let progress = match keys.get_mut(&key) {
        Some(p) if obs.steps & (1 << p.next_step) != 0 => p,
        Some(_) => return None,
        None if obs.steps & 1 != 0 => keys.entry(key).or_insert(Progress {
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
    progress.audit_ids.push(audit_id);
    if progress.hits >= needed(progress.next_step) {
        progress.next_step += 1;
        progress.hits = 0;
    }
    if keys.get(&key).is_some_and(|p| p.next_step == steps) {
        let p = keys.remove(&key)?;
        let mut alert = alert();
        alert.evidence.count = p.audit_ids.len() as u64;
        alert.evidence.first_time = Some(crate::event::time::format_micros(p.start));
        alert.evidence.window_seconds = Some(max_span / 1_000_000);
        let ids: Vec<String> = p.audit_ids.iter().map(AuditId::to_string).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        alert.id = crate::alert::alert_id(rule_id, &obs.key, &refs);
        alert.evidence.audit_ids = ids;
        return Some(alert);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
        RuleSet::load(&[dir.path().to_path_buf()]).unwrap()
    }

    const THRESHOLD: &str = r#"
rules:
  - id: t
    title: t
    severity: low
    kind: threshold
    threshold: {by: [user.username], distinct: objectRef.name, count: 3, window: 60s}
    condition: {objectRef.resource: secrets}
    summary: s
"#;

    /// The alerts and observations `evaluate` makes of one event given as JSON.
    fn evaluate_json(set: &RuleSet, json: &str, origin: Origin) -> (Vec<Alert>, Vec<Observation>) {
        let (mut m, mut a, mut o) = (Default::default(), Vec::new(), Vec::new());
        crate::rules::field::on_event(json, |view| {
            let revocations = RevocationList::default();
            evaluate(set, &revocations, origin, view, &mut m, &mut a, &mut o);
        });
        (a, o)
    }

    /// Feeds (user, name, second) events through evaluate + observe; returns the seconds that fired.
    fn run(set: &RuleSet, state: &mut Stateful, events: &[(&str, &str, i64)]) -> Vec<i64> {
        let mut fired_at = Vec::new();
        for (user, name, sec) in events {
            let json = format!(
                r#"{{"auditID":"{user}-{name}-{sec}","stage":"ResponseComplete","verb":"get","user":{{"username":"{user}"}},"objectRef":{{"resource":"secrets","name":"{name}"}},"stageTimestamp":"{}"}}"#,
                crate::event::time::format_micros(sec * 1_000_000)
            );
            fired_at.extend((0..feed(set, state, &json)).map(|_| *sec));
        }
        fired_at
    }

    /// Evaluates one event and applies its observations; how many alerts they completed.
    fn feed(set: &RuleSet, state: &mut Stateful, json: &str) -> usize {
        let (_, o) = evaluate_json(set, json, Origin::default());
        let mut out = Vec::new();
        for obs in o {
            state.observe(set, obs, &[], &mut out);
        }
        out.len()
    }

    #[test]
    fn threshold_counts_distinct_values_inside_the_window_only() {
        let set = rules(THRESHOLD);
        let mut s = Stateful::new(&set, 100);
        // a, b at 0 and 10; c at 60 is exactly one window after a: a has left, so only 2 distinct.
        assert!(run(
            &set,
            &mut s,
            &[("u", "a", 0), ("u", "b", 10), ("u", "c", 60)]
        )
        .is_empty());
        // d at 61: b, c, d in (1, 61] → fires once; e right after stays quiet (one per window).
        assert_eq!(
            run(&set, &mut s, &[("u", "d", 61), ("u", "e", 62)]),
            vec![61]
        );
        // Repeats of one value never count twice; another user has its own state.
        assert!(run(
            &set,
            &mut s,
            &[("v", "x", 70), ("v", "x", 71), ("v", "x", 72)]
        )
        .is_empty());
    }

    #[test]
    fn threshold_accepts_slightly_late_events() {
        let set = rules(THRESHOLD);
        let mut s = Stateful::new(&set, 100);
        // Out of order by a few seconds (two API servers): still counted in the window.
        assert_eq!(
            run(
                &set,
                &mut s,
                &[("u", "a", 10), ("u", "b", 8), ("u", "c", 12)]
            ),
            vec![12]
        );
    }

    #[test]
    fn state_is_capped_and_evictions_counted() {
        let set = rules(THRESHOLD);
        let mut s = Stateful::new(&set, 50);
        let users: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
        let events: Vec<(&str, &str, i64)> = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.as_str(), "a", i as i64))
            .collect();
        run(&set, &mut s, &events);
        assert!(s.key_count() <= 50, "{}", s.key_count());
        assert!(s.stats.evictions >= 150);
        // The most recent users survive eviction.
        assert_eq!(
            run(
                &set,
                &mut s,
                &[("user199", "b", 200), ("user199", "c", 201)]
            ),
            vec![201]
        );
    }

    #[test]
    fn new_terms_learns_then_alerts_once_per_term() {
        let set = rules(
            r#"
rules:
  - id: n
    title: n
    severity: low
    kind: new_terms
    new_terms: {fields: [user.username, objectRef.name], learning: 100s}
    condition: {objectRef.resource: secrets}
    summary: s
"#,
        );
        let mut s = Stateful::new(&set, 100);
        assert!(
            run(&set, &mut s, &[("u", "a", 0), ("u", "b", 99)]).is_empty(),
            "learning"
        );
        assert!(
            run(&set, &mut s, &[("u", "a", 150), ("u", "b", 151)]).is_empty(),
            "known terms"
        );
        assert_eq!(
            run(
                &set,
                &mut s,
                &[("u", "c", 152), ("u", "c", 153), ("w", "a", 154)]
            ),
            vec![152, 154]
        );
    }

    /// Feeds events (user, user agent, verb, status, second) to every rule of `set`; the
    /// seconds at which something fired.
    fn run_events(
        set: &RuleSet,
        state: &mut Stateful,
        events: &[(&str, &str, &str, u16, i64)],
    ) -> Vec<i64> {
        let mut fired_at = Vec::new();
        for (i, (user, agent, verb, code, sec)) in events.iter().enumerate() {
            let json = format!(
                r#"{{"auditID":"e{i}","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"{user}"}},"userAgent":"{agent}","objectRef":{{"resource":"pods"}},"responseStatus":{{"code":{code}}},"stageTimestamp":"{}"}}"#,
                crate::event::time::format_micros(sec * 1_000_000)
            );
            state.saw(sec * 1_000_000);
            fired_at.extend((0..feed(set, state, &json)).map(|_| *sec));
        }
        fired_at
    }

    #[test]
    fn new_terms_learn_from_the_stream_start_and_forget_after_the_history() {
        let set = rules(
            r#"
rules:
  - id: n
    title: n
    severity: low
    kind: new_terms
    new_terms: {fields: [user.username, userAgent], learning: 100s, history: 1000s}
    condition: {verb: get}
    summary: s
"#,
        );
        let mut s = Stateful::new(&set, 100);
        // The stream starts at 0 with events the rule does not see; learning runs from there,
        // not from the rule's first event at 90.
        let fired = run_events(
            &set,
            &mut s,
            &[
                ("u", "a/1", "list", 200, 0),
                ("u", "a/1", "get", 200, 90), // learning: remembered, no alert
                ("u", "b/1", "get", 200, 101), // new after learning
                ("u", "a/1", "get", 200, 1050), // seen 960 s ago: known
                ("u", "a/1", "get", 200, 2100), // 1050 s since: forgotten, new again
                ("u", "a/1", "get", 200, 2101),
            ],
        );
        assert_eq!(fired, [101, 2100]);
    }

    #[test]
    fn new_terms_with_a_known_part_leave_newcomers_alone() {
        let set = rules(
            r#"
rules:
  - id: n
    title: n
    severity: low
    kind: new_terms
    new_terms: {fields: [user.username, responseStatus.code], known: [user.username], learning: 10s}
    condition: {verb: get}
    summary: s
"#,
        );
        let mut s = Stateful::new(&set, 100);
        let fired = run_events(
            &set,
            &mut s,
            &[
                ("u", "a", "get", 200, 0),
                ("u", "a", "get", 403, 20), // u is known; 403 is new for it
                ("v", "a", "get", 403, 30), // v is a newcomer: not this rule's business
                ("v", "a", "get", 200, 40), // v is known now; 200 is new for it
            ],
        );
        assert_eq!(fired, [20, 40]);
    }

    #[test]
    fn sequences_need_their_steps_in_order_within_the_span_and_counted_steps_in_full() {
        let set = rules(
            r#"
rules:
  - id: q
    title: q
    severity: low
    kind: sequence
    sequence:
      by: [user.username]
      max_span: 60s
      steps:
        - when: {responseStatus.code: 403}
          count: 3
        - {verb: create}
    condition: {verb: [get, create]}
    summary: s
"#,
        );
        let step = |user, verb, code, sec| (user, "a", verb, code, sec);
        let mut s = Stateful::new(&set, 100);
        // Three refusals, then a create at exactly the span's end: fires.
        let fired = run_events(
            &set,
            &mut s,
            &[
                step("u", "get", 403, 0),
                step("u", "get", 403, 10),
                step("u", "create", 201, 15), // too early: only two refusals so far
                step("u", "get", 403, 20),
                step("u", "create", 201, 60),
            ],
        );
        assert_eq!(fired, [60]);
        let mut s = Stateful::new(&set, 100);
        // Past the span: the first refusals no longer count, the sequence starts again.
        let fired = run_events(
            &set,
            &mut s,
            &[
                step("v", "get", 403, 0),
                step("v", "get", 403, 10),
                step("v", "get", 403, 20),
                step("v", "create", 201, 61),
                step("v", "get", 403, 62),
                step("v", "get", 403, 63),
                step("v", "create", 201, 64),
            ],
        );
        assert!(fired.is_empty(), "{fired:?}");
    }

    #[test]
    fn suppression_holds_back_and_counts() {
        let mut sup = Suppressor::default();
        let alert = crate::alert::test_alert;
        let period = Some(100);
        let admitted: Vec<bool> = [0, 50, 99, 100, 150]
            .iter()
            .map(|t| sup.admit(&mut alert(*t), period))
            .collect();
        assert_eq!(admitted, [true, false, false, true, false]);
        let mut later = alert(300);
        assert!(sup.admit(&mut later, period));
        assert_eq!(later.evidence.suppressed, Some(1));
        assert_eq!(sup.suppressed, 3);
    }

    #[test]
    fn a_context_copy_feeds_only_other_identities_state() {
        let set =
            RuleSet::load(
                &[std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("detectors")],
            )
            .unwrap();
        // A service account binds cluster-admin to mallory: alerts of its own (as the original),
        // a grant for mallory's escalation chain and a binding for unbound identities.
        let json = r#"{"auditID":"b1","stage":"ResponseComplete","verb":"create","user":{"username":"system:serviceaccount:ci:deployer"},"objectRef":{"resource":"clusterrolebindings","name":"x","apiGroup":"rbac.authorization.k8s.io"},"requestObject":{"roleRef":{"kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"User","name":"mallory"}]},"responseStatus":{"code":201},"stageTimestamp":"2025-03-04T00:00:00Z"}"#;
        let outputs = |context: bool| {
            let origin = Origin {
                context,
                ..Origin::default()
            };
            let (a, o) = evaluate_json(&set, json, origin);
            let kinds: Vec<&str> = o
                .iter()
                .map(|obs| set.rules[obs.rule as usize].id.as_str())
                .collect();
            (
                a.len(),
                kinds.join(" "),
                o.iter().map(|obs| obs.steps).collect::<Vec<_>>(),
            )
        };
        let (alerts, original, _) = outputs(false);
        assert!(alerts > 0, "the binding itself raises alerts at home");
        assert!(
            original.contains("k8s.rbac.denied_granted_used"),
            "{original}"
        );
        let (alerts, copy, steps) = outputs(true);
        assert_eq!(alerts, 0, "a copy raises nothing of its own");
        assert_eq!(
            copy, "k8s.rbac.denied_granted_used k8s.credentials.unbound_still_used",
            "only the binding's meaning for others"
        );
        assert_eq!(steps, [chain::GRANT, unbound::BIND]);
    }

    #[test]
    fn a_reload_keeps_the_state_of_rules_that_stay() {
        let before = rules(THRESHOLD);
        let mut state = Stateful::new(&before, 100);
        // Two of the three reads the threshold needs, then a reload that adds a rule first.
        assert!(run(&before, &mut state, &[("u", "a", 0), ("u", "b", 1)]).is_empty());
        let after = rules(&THRESHOLD.replacen(
            "rules:\n",
            "rules:\n  - id: t.extra\n    title: extra\n    severity: low\n    condition: {verb: delete}\n    summary: x\n",
            1,
        ));
        assert_eq!(after.rules[1].id, "t", "the threshold rule moved");
        assert_eq!(after.rules.len(), before.rules.len() + 1);
        state.adopt(&before, &after);
        assert_eq!(
            run(&after, &mut state, &[("u", "c", 2)]),
            vec![2],
            "the count went on"
        );
    }
}
