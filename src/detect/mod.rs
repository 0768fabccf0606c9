//! Stateful detection on event time, plus single-event matches.
//!
//! Workers run every rule that can match an event (`evaluate`): a single-event match becomes an
//! alert at once, and a stateful rule's event becomes an `Observation` for the collector, which
//! feeds them to `Stateful` in input order, so state sees every key's events in order and the
//! alerts are the same for any thread count. State is bounded per rule; evictions are counted.
//!
//! Each stateful kind is one module with the same parts: what a worker extracts from an event
//! (`extract`, leaving an observation with the kind's own `Payload` variant, or a follow-up),
//! and a state that implements `Detector` (observe, what it awaits, eviction, key count).
//! `State` dispatches on the kind with a `match`, no `dyn` on the hot path. A new kind is a
//! module here, a variant of `State` and `Payload`, and its spec in `rules::kind`.

mod audit_id;
mod chain;
pub mod episode;
mod key;
mod new_terms;
pub mod rbac;
mod revoked;
mod seed;
mod sequence;
mod spike;
mod suppress;
mod threshold;
mod unbound;

pub use audit_id::AuditId;
pub use key::{state_key, StateKey};
pub use new_terms::Offer;
pub use seed::{Origin, Seed};
pub use suppress::Suppressor;

use crate::alert::{Alert, RuleInfo};
use crate::event::EventView;
use crate::revocation::RevocationList;
use crate::rules::field::Field;
use crate::rules::template::Values;
use crate::rules::{Kind, Matched, Rule, RuleSet};
use episode::{Clock, EpisodeOptions};
use foldhash::{HashMap, HashMapExt};
use seed::Seeder;
use std::cell::OnceCell;
use std::sync::Arc;

/// Keys kept per rule before the least recently seen are evicted: a million identities fit in
/// the memory cap with the shipped library (`cargo bench --bench detectors` measures it).
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Audit IDs carried as evidence per alert.
const MAX_EVIDENCE_IDS: usize = 10;

/// Strings a built-in carries with an observation (groups, binding subjects).
pub type Terms = Box<[Box<str>]>;
/// How a built-in classifies an event: (step bit, value, terms).
type Classified = (u32, Box<str>, Terms);

/// One event as a stateful rule sees it, extracted by a worker.
#[derive(Debug, Clone)]
pub struct Observation {
    pub rule: u32,
    pub time: i64,
    /// Cluster and the rule's `by` values: whose state this is. Shared: an event's observations
    /// of several rules are usually all keyed by its actor. Empty for new_terms, whose state
    /// is keyed by the term's hash.
    pub key: Arc<str>,
    pub audit_id: AuditId,
    /// What the alert is built from if the rule fires.
    pub seed: Seed,
    pub payload: Payload,
}

/// What each kind extracts from an event beside its key.
#[derive(Debug, Clone)]
pub enum Payload {
    Threshold(threshold::Counted),
    NewTerms(new_terms::Sighting),
    /// The steps that hold on the event, a bit per step.
    Sequence(u32),
    Revoked(revoked::Use),
    Chain(chain::Step),
    Unbound(unbound::Step),
    Spike,
}

impl Payload {
    /// The steps a follow-up's check names (see `FollowUp`).
    fn steps(&self) -> Option<u32> {
        match self {
            Payload::Sequence(steps) => Some(*steps),
            Payload::Chain(step) => Some(step.step),
            Payload::Unbound(step) => Some(step.step),
            _ => None,
        }
    }

    /// new_terms: the sighting a worker may fold a later one into.
    pub fn sighting_mut(&mut self) -> Option<&mut new_terms::Sighting> {
        match self {
            Payload::NewTerms(s) => Some(s),
            _ => None,
        }
    }
}

/// What an event's steps that can only advance state already held leave for the collector:
/// a chain's success, a use by an identity that may have lost its bindings, a sequence's later
/// step. Nearly every request is such a step for some rule, and nearly always nobody's state
/// awaits it; one small record per event, checked by key hash, replaces an observation per
/// rule. The rare check that finds state waiting decodes the event again (as an alert does)
/// and makes the rule's observation in full, so the state sees exactly what it saw before.
///
/// With `Outputs::all_actors`, every event leaves one (checks or not): its actor is how the
/// collector records the requests of identities with an open incident.
#[derive(Debug, Clone)]
pub struct FollowUp {
    pub time: i64,
    /// Boxed (no allocation when empty, as nearly always): a follow-up lives in every event's
    /// output, so it is kept small.
    pub checks: Box<[Check]>,
    /// `state_key(cluster\x1fusername)` of the event's actor.
    pub actor: StateKey,
    pub seed: Seed,
}

/// One rule's step on one key, in a `FollowUp`. The key is kept as two halves: 24 bytes, not
/// the 32 a `u128`'s alignment would make it, in every follow-up's inline room for four.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub rule: u32,
    pub steps: u32,
    key: [u64; 2],
}

impl Check {
    pub fn new(rule: u32, steps: u32, key: StateKey) -> Check {
        Check {
            rule,
            steps,
            key: [key as u64, (key >> 64) as u64],
        }
    }

    pub fn key(&self) -> StateKey {
        u128::from(self.key[0]) | (u128::from(self.key[1]) << 64)
    }
}

/// Calls its argument with an event.
type WithEvent<'c> = dyn Fn(&mut dyn FnMut(&EventView)) + 'c;

/// What the collector hands a kind's state with an observation.
struct Cx<'c> {
    rule: &'c Rule,
    /// Builds the alert (decoding the event again), its summary filled with the kind's values.
    alert: &'c dyn Fn(Values) -> Alert,
    /// Calls `f` with the observation's event, decoded again (episodes name what they count).
    event: &'c WithEvent<'c>,
    /// The earliest event time of the stream: learning periods run from here.
    started: i64,
    episodes: &'c EpisodeOptions,
}

impl Cx<'_> {
    fn rule_id(&self) -> &str {
        &self.rule.id
    }

    /// How long an episode of this rule stays open without activity: `window`, or the rule's
    /// suppress period if longer (what suppression held back joins the episode instead).
    fn episode_gap(&self, window: i64) -> i64 {
        window.max(self.rule.suppress.unwrap_or(0))
    }
}

/// The parts every stateful kind has; `State` dispatches to them.
trait Detector: Default {
    type Spec;
    type Payload;
    /// Applies one observation; the alert it completes, if any.
    fn observe(
        &mut self,
        spec: &Self::Spec,
        obs: &Observation,
        payload: Self::Payload,
        cx: &Cx,
    ) -> Option<Alert>;
    /// Whether a follow-up step (`check`) at `time` would change anything. Only kinds that
    /// leave follow-ups answer yes.
    fn awaits(&mut self, _spec: &Self::Spec, _check: &Check, _time: i64) -> bool {
        false
    }
    /// The clock moved on (or the input ended): episodes that are over close, live ones report.
    fn tick(
        &mut self,
        _spec: &Self::Spec,
        _clock: Clock,
        _opts: &EpisodeOptions,
        _out: &mut Vec<Alert>,
    ) {
    }
    /// Drops the least recently seen keys over `cap`; how many.
    fn evict(&mut self, cap: usize) -> u64;
    /// Keys held.
    fn len(&self) -> usize;
}

/// What evaluating events leaves, reused from event to event (nothing allocated per event).
#[derive(Default)]
pub struct Outputs {
    pub matched: Matched,
    /// Single-event alerts.
    pub alerts: Vec<Alert>,
    /// Stateful rules' observations, for the collector.
    pub observations: Vec<Observation>,
    /// Steps that only advance held state (see `FollowUp`); None: they are observed in full.
    pub follow_ups: Option<Vec<FollowUp>>,
    /// Leave a follow-up for every event, to name its actor (incidents record requests).
    pub all_actors: bool,
}

impl Outputs {
    /// Outputs that leave follow-ups, as workers do.
    pub fn with_follow_ups() -> Outputs {
        Outputs {
            follow_ups: Some(Vec::new()),
            ..Outputs::default()
        }
    }
}

/// A worker's view of one event while the stateful kinds extract from it: the key text, audit
/// ID, actor and seed are made at most once per event, whichever rules need them.
struct Extract<'x, 'e, 'a> {
    view: &'x EventView<'e, 'a>,
    cluster: &'x str,
    /// Key text is written here: one buffer per thread, no allocation per event.
    scratch: String,
    origin: Origin<'x>,
    seeder: Seeder<'x>,
    audit_id: OnceCell<AuditId>,
    actor: OnceCell<Arc<str>>,
    actor_hash: OnceCell<StateKey>,
    /// Whether steps that only advance held state become follow-up checks.
    follow: bool,
    checks: smallvec::SmallVec<[Check; 4]>,
    observations: &'x mut Vec<Observation>,
    first_sighting: &'x mut dyn FnMut(&Offer) -> bool,
}

impl Extract<'_, '_, '_> {
    /// A context copy (see `Origin::context`).
    fn context(&self) -> bool {
        self.origin.context
    }

    fn audit_id(&self) -> AuditId {
        self.audit_id
            .get_or_init(|| AuditId::new(self.view.event.audit_id.as_deref().unwrap_or("")))
            .clone()
    }

    /// `cluster\x1fusername`: the actor's key.
    fn actor_key(&self) -> Arc<str> {
        self.actor
            .get_or_init(|| key::identity_key(self.cluster, self.view.event.username()))
            .clone()
    }

    fn actor_hash(&self) -> StateKey {
        *self
            .actor_hash
            .get_or_init(|| key::identity_hash(self.cluster, self.view.event.username()))
    }

    /// The key made of the cluster and `by`'s values.
    fn key(&mut self, by: &[Field]) -> Arc<str> {
        key::key_text(&mut self.scratch, self.cluster, self.view, by);
        Arc::from(self.scratch.as_str())
    }

    /// Leaves a step that only advances held state as a follow-up check, when follow-ups are
    /// wanted; false when it is to be observed in full instead.
    fn follow(&mut self, rule: u32, steps: u32, key: StateKey) -> bool {
        if self.follow {
            self.checks.push(Check::new(rule, steps, key));
        }
        self.follow
    }

    fn observe(&mut self, rule: u32, key: Arc<str>, payload: Payload) {
        let observation = Observation {
            rule,
            time: self.view.time,
            key,
            audit_id: self.audit_id(),
            seed: self.seeder.seed(self.view, self.cluster),
            payload,
        };
        self.observations.push(observation);
    }
}

/// Runs every rule that can match `view`: single-event matches become alerts, stateful rules'
/// events become observations (and follow-ups) in `out`. `first_sighting` is asked whether a
/// new_terms term deserves an observation (a worker folds a term's repeats within a batch into
/// its first). Shared by the workers and the rule self-tests.
pub fn evaluate(
    rules: &RuleSet,
    revocations: &RevocationList,
    origin: Origin,
    view: &EventView,
    out: &mut Outputs,
    first_sighting: &mut dyn FnMut(&Offer) -> bool,
) {
    let Outputs {
        matched,
        alerts,
        observations,
        follow_ups,
        all_actors,
    } = out;
    rules.matching(view, matched);
    thread_local!(static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    let mut x = Extract {
        view,
        cluster: view.event.cluster.as_deref().unwrap_or(""),
        scratch: SCRATCH.with_borrow_mut(std::mem::take),
        origin,
        seeder: Seeder::new(origin),
        audit_id: OnceCell::new(),
        actor: OnceCell::new(),
        actor_hash: OnceCell::new(),
        // Follow-ups come from the event's own partition only: a context copy carries no step
        // of its actor's.
        follow: follow_ups.is_some() && !origin.context,
        checks: Default::default(),
        observations,
        first_sighting,
    };
    for &i in matched.rules.iter() {
        let rule = &rules.rules[i as usize];
        if origin.context && !reads_context(&rule.kind) {
            continue;
        }
        match &rule.kind {
            Kind::Match => alerts.push(alert_for(rule, view, &[])),
            Kind::Threshold(spec) => threshold::extract(&mut x, i, spec),
            Kind::NewTerms(spec) => new_terms::extract(&mut x, i, spec),
            Kind::Sequence(spec) => sequence::extract(&mut x, i, spec, matched),
            Kind::Revoked(_) => revoked::extract(&mut x, i, revocations),
            Kind::Chain(_) => chain::extract(&mut x, i),
            Kind::Unbound(_) => unbound::extract(&mut x, i),
            Kind::Spike(_) => spike::extract(&mut x, i),
        }
    }
    if let Some(follow_ups) = follow_ups {
        if !x.checks.is_empty() || (*all_actors && !origin.context) {
            follow_ups.push(FollowUp {
                time: view.time,
                checks: x.checks.as_slice().into(),
                actor: x.actor_hash(),
                seed: x.seeder.seed(view, x.cluster),
            });
        }
    }
    SCRATCH.with_borrow_mut(|buffer| *buffer = x.scratch);
}

/// Whether a rule of this kind reads context copies (state keyed by whom an event concerns,
/// not by its actor).
fn reads_context(kind: &Kind) -> bool {
    matches!(kind, Kind::Chain(_) | Kind::Unbound(_) | Kind::Sequence(_))
}

/// The alert `rule` raises on `view`, its summary filled from the event and `values`.
fn alert_for(rule: &Rule, view: &EventView, values: Values) -> Alert {
    let info = RuleInfo {
        id: rule.id.clone(),
        title: rule.title.clone(),
        severity: rule.severity,
        mitre: rule.mitre.clone(),
    };
    let mut alert = Alert::from_event(info, view);
    alert.summary = rule.summary.render(view, values);
    if let Some(proxy) = &alert.actor.proxy {
        alert.summary = format!(
            "{} (Through the impersonation proxy {proxy}, acting for {}.)",
            alert.summary, alert.actor.username
        );
    }
    alert.remediation = rule.remediation.clone();
    alert
}

/// One rule's state, of its kind.
#[derive(serde::Serialize, serde::Deserialize)]
enum State {
    Threshold(threshold::State),
    NewTerms(new_terms::State),
    Sequence(sequence::State),
    Revoked(revoked::State),
    Chain(chain::State),
    Unbound(unbound::State),
    Spike(spike::State),
    None,
}

/// `$body` with `$s` bound to whichever kind's state `$state` holds; `$none` without one.
macro_rules! each_kind {
    ($state:expr, $s:ident => $body:expr, $none:expr) => {
        match $state {
            State::Threshold($s) => $body,
            State::NewTerms($s) => $body,
            State::Sequence($s) => $body,
            State::Revoked($s) => $body,
            State::Chain($s) => $body,
            State::Unbound($s) => $body,
            State::Spike($s) => $body,
            State::None => $none,
        }
    };
}

impl State {
    fn new(kind: &Kind) -> State {
        match kind {
            Kind::Threshold(_) => State::Threshold(Default::default()),
            Kind::NewTerms(_) => State::NewTerms(Default::default()),
            Kind::Sequence(_) => State::Sequence(Default::default()),
            Kind::Revoked(_) => State::Revoked(Default::default()),
            Kind::Chain(_) => State::Chain(Default::default()),
            Kind::Unbound(_) => State::Unbound(Default::default()),
            Kind::Spike(_) => State::Spike(Default::default()),
            Kind::Match => State::None,
        }
    }

    fn observe(
        &mut self,
        kind: &Kind,
        obs: &Observation,
        payload: Payload,
        cx: &Cx,
    ) -> Option<Alert> {
        match (self, kind, payload) {
            (State::Threshold(s), Kind::Threshold(spec), Payload::Threshold(p)) => {
                s.observe(spec, obs, p, cx)
            }
            (State::NewTerms(s), Kind::NewTerms(spec), Payload::NewTerms(p)) => {
                s.observe(spec, obs, p, cx)
            }
            (State::Sequence(s), Kind::Sequence(spec), Payload::Sequence(p)) => {
                s.observe(spec, obs, p, cx)
            }
            (State::Revoked(s), Kind::Revoked(spec), Payload::Revoked(p)) => {
                s.observe(spec, obs, p, cx)
            }
            (State::Chain(s), Kind::Chain(spec), Payload::Chain(p)) => s.observe(spec, obs, p, cx),
            (State::Unbound(s), Kind::Unbound(spec), Payload::Unbound(p)) => {
                s.observe(spec, obs, p, cx)
            }
            (State::Spike(s), Kind::Spike(spec), Payload::Spike) => s.observe(spec, obs, (), cx),
            _ => None,
        }
    }

    fn awaits(&mut self, kind: &Kind, check: &Check, time: i64) -> bool {
        match (self, kind) {
            (State::Threshold(s), Kind::Threshold(spec)) => s.awaits(spec, check, time),
            (State::NewTerms(s), Kind::NewTerms(spec)) => s.awaits(spec, check, time),
            (State::Sequence(s), Kind::Sequence(spec)) => s.awaits(spec, check, time),
            (State::Revoked(s), Kind::Revoked(spec)) => s.awaits(spec, check, time),
            (State::Chain(s), Kind::Chain(spec)) => s.awaits(spec, check, time),
            (State::Unbound(s), Kind::Unbound(spec)) => s.awaits(spec, check, time),
            (State::Spike(s), Kind::Spike(spec)) => s.awaits(spec, check, time),
            _ => false,
        }
    }

    fn tick(&mut self, kind: &Kind, clock: Clock, opts: &EpisodeOptions, out: &mut Vec<Alert>) {
        match (self, kind) {
            (State::Threshold(s), Kind::Threshold(spec)) => s.tick(spec, clock, opts, out),
            (State::NewTerms(s), Kind::NewTerms(spec)) => s.tick(spec, clock, opts, out),
            (State::Sequence(s), Kind::Sequence(spec)) => s.tick(spec, clock, opts, out),
            (State::Revoked(s), Kind::Revoked(spec)) => s.tick(spec, clock, opts, out),
            (State::Chain(s), Kind::Chain(spec)) => s.tick(spec, clock, opts, out),
            (State::Unbound(s), Kind::Unbound(spec)) => s.tick(spec, clock, opts, out),
            (State::Spike(s), Kind::Spike(spec)) => s.tick(spec, clock, opts, out),
            _ => {}
        }
    }

    fn evict(&mut self, cap: usize) -> u64 {
        each_kind!(self, s => s.evict(cap), 0)
    }

    /// Fixes up what a snapshot does not carry (alert times held by episodes).
    fn restored(&mut self) {
        match self {
            State::Threshold(s) => s.episodes.restored(),
            State::Spike(s) => s.episodes.restored(),
            _ => {}
        }
    }

    fn len(&self) -> usize {
        each_kind!(self, s => s.len(), 0)
    }
}

/// What a rule's state must be read as: its kind, and a sequence's number of steps.
fn shape(kind: &Kind) -> String {
    match kind {
        Kind::Sequence(s) => format!("sequence/{}", s.steps.len()),
        k => k.name().to_owned(),
    }
}

/// Stateful rules' state by rule id, as a snapshot holds it (written by reference, read back
/// owned).
#[derive(serde::Serialize)]
pub struct SnapshotOf<'a> {
    rules: Vec<(&'a str, String, &'a State)>,
    started: Option<i64>,
    stats: StateStats,
}

#[derive(serde::Deserialize)]
pub struct StatefulSnapshot {
    rules: Vec<(String, String, State)>,
    started: Option<i64>,
    stats: StateStats,
}

/// Whether state built for a rule of kind `was` means the same for kind `now`.
fn compatible(was: &Kind, now: &Kind) -> bool {
    match (was, now) {
        // Progress counts steps: a sequence that gained or lost one starts over.
        (Kind::Sequence(a), Kind::Sequence(b)) => a.steps.len() == b.steps.len(),
        _ => std::mem::discriminant(was) == std::mem::discriminant(now),
    }
}

/// Counters reported in the run summary.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct StateStats {
    pub evictions: u64,
}

/// Every stateful rule's state, fed observations in input order by the collector.
pub struct Stateful {
    states: Vec<State>,
    max_keys: usize,
    pub episodes: EpisodeOptions,
    /// The earliest event time of the stream: learning periods run from here.
    started: Option<i64>,
    pub stats: StateStats,
    /// How events decoded again are seen (enrichment, impersonation proxies): the lens of the
    /// batch being applied.
    pub lens: crate::event::Lens,
}

impl Stateful {
    pub fn new(rules: &RuleSet, max_keys: usize) -> Self {
        Stateful {
            states: rules.rules.iter().map(|r| State::new(&r.kind)).collect(),
            max_keys: max_keys.max(1),
            episodes: EpisodeOptions::default(),
            started: None,
            stats: StateStats::default(),
            lens: Default::default(),
        }
    }

    pub fn with_episodes(mut self, episodes: EpisodeOptions) -> Self {
        self.episodes = episodes;
        self
    }

    /// Switches from rule set `old` to `new` (a reload): a rule that keeps its id and kind
    /// keeps its state, a new one starts empty, a removed one's state is dropped.
    pub fn adopt(&mut self, old: &RuleSet, new: &RuleSet) {
        let mut kept: HashMap<&str, (&Kind, State)> = HashMap::new();
        for (rule, state) in old.rules.iter().zip(self.states.drain(..)) {
            kept.insert(rule.id.as_str(), (&rule.kind, state));
        }
        self.states = new
            .rules
            .iter()
            .map(|r| match kept.remove(r.id.as_str()) {
                Some((was, state)) if compatible(was, &r.kind) => state,
                _ => State::new(&r.kind),
            })
            .collect();
    }

    /// What a snapshot keeps of this state.
    pub fn snapshot<'a>(&'a self, rules: &'a RuleSet) -> SnapshotOf<'a> {
        SnapshotOf {
            rules: rules
                .rules
                .iter()
                .zip(&self.states)
                .filter(|(_, state)| !matches!(state, State::None))
                .map(|(r, state)| (r.id.as_str(), shape(&r.kind), state))
                .collect(),
            started: self.started,
            stats: self.stats,
        }
    }

    /// State read back from a snapshot: each rule that kept its id and shape takes its state
    /// again; (rules restored, rules that start empty).
    pub fn restore(&mut self, rules: &RuleSet, snapshot: StatefulSnapshot) -> (usize, usize) {
        let mut saved: HashMap<String, (String, State)> = HashMap::new();
        for (id, shape, state) in snapshot.rules {
            saved.insert(id, (shape, state));
        }
        let (mut kept, mut fresh) = (0, 0);
        for (rule, slot) in rules.rules.iter().zip(&mut self.states) {
            if matches!(slot, State::None) {
                continue;
            }
            match saved.remove(rule.id.as_str()) {
                Some((was, mut state)) if was == shape(&rule.kind) => {
                    state.restored();
                    *slot = state;
                    kept += 1;
                }
                _ => fresh += 1,
            }
        }
        self.started = snapshot.started;
        self.stats = snapshot.stats;
        (kept, fresh)
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
        mut obs: Observation,
        batch: &[u8],
        out: &mut Vec<Alert>,
    ) {
        let (Some(rule), Some(state)) = (
            rules.rules.get(obs.rule as usize),
            self.states.get_mut(obs.rule as usize),
        ) else {
            return;
        };
        let lens = &self.lens;
        let alert = |values: Values| obs.seed.alert(lens, rule, obs.time, batch, values);
        let event = |f: &mut dyn FnMut(&EventView)| obs.seed.with_view(lens, obs.time, batch, f);
        let cx = Cx {
            rule,
            alert: &alert,
            event: &event,
            started: *self.started.get_or_insert(obs.time),
            episodes: &self.episodes,
        };
        let payload = std::mem::replace(&mut obs.payload, Payload::Spike);
        out.extend(state.observe(&rule.kind, &obs, payload, &cx));
        self.stats.evictions += state.evict(self.max_keys);
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
        for check in follow_up.checks.iter() {
            let (Some(rule), Some(state)) = (
                rules.rules.get(check.rule as usize),
                self.states.get_mut(check.rule as usize),
            ) else {
                continue;
            };
            if !state.awaits(&rule.kind, check, follow_up.time) {
                continue;
            }
            let observation = follow_up
                .seed
                .with_view(&self.lens, follow_up.time, batch, |view| {
                    let origin = Origin {
                        seed: Some(&follow_up.seed),
                        ..Origin::default()
                    };
                    let mut outputs = Outputs::default();
                    evaluate(
                        rules,
                        &RevocationList::default(),
                        origin,
                        view,
                        &mut outputs,
                        &mut |_| false,
                    );
                    outputs.observations.into_iter().find(|o| {
                        o.rule == check.rule
                            && o.payload.steps() == Some(check.steps)
                            && state_key(&o.key) == check.key()
                    })
                });
            if let Some(observation) = observation {
                self.observe(rules, observation, batch, out);
            }
        }
    }

    /// Event time has reached `clock.now` (or the input ended): episodes that are over close and
    /// push their final alert; live, those still open report how they grew.
    pub fn tick(&mut self, rules: &RuleSet, clock: Clock, out: &mut Vec<Alert>) {
        for (rule, state) in rules.rules.iter().zip(&mut self.states) {
            state.tick(&rule.kind, clock, &self.episodes, out);
        }
    }

    pub fn key_count(&self) -> u64 {
        self.states.iter().map(|s| s.len() as u64).sum()
    }

    /// Keys held by each rule's state, in the rule set's order.
    pub fn keys_by_rule(&self) -> impl Iterator<Item = usize> + '_ {
        self.states.iter().map(State::len)
    }
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
        let mut out = Outputs::default();
        crate::rules::field::on_event(json, |view| {
            let revocations = RevocationList::default();
            evaluate(set, &revocations, origin, view, &mut out, &mut |_| true);
        });
        (out.alerts, out.observations)
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
    fn a_spike_cites_each_request_of_its_bucket_once() {
        let set = rules(
            r#"
rules:
  - id: s
    title: s
    severity: low
    kind: builtin
    builtin: {name: rate_spike, bucket: 60s, history: 6, min_history: 2, factor: 2, floor: 3}
    condition: {objectRef.resource: secrets}
    summary: s
"#,
        );
        let mut s = Stateful::new(&set, 100);
        let mut fired = Vec::new();
        // One read a minute for four minutes, then three in one minute.
        for sec in [0, 60, 120, 180, 240, 250, 260] {
            let json = format!(
                r#"{{"auditID":"id-{sec}","stage":"ResponseComplete","verb":"get","user":{{"username":"u"}},"objectRef":{{"resource":"secrets","name":"x"}},"stageTimestamp":"{}"}}"#,
                crate::event::time::format_micros(sec * 1_000_000)
            );
            let (_, observations) = evaluate_json(&set, &json, Origin::default());
            for obs in observations {
                s.observe(&set, obs, &[], &mut fired);
            }
        }
        assert_eq!(fired.len(), 1, "one spike");
        let cited = &fired[0]
            .episode
            .as_ref()
            .expect("an episode")
            .audit_ids
            .items;
        assert_eq!(cited, &["id-240", "id-250", "id-260"]);
        // An identity seen once holds no list of later requests (a million of them would).
        let json = r#"{"auditID":"other","stage":"ResponseComplete","verb":"get","user":{"username":"v"},"objectRef":{"resource":"secrets","name":"x"},"stageTimestamp":"1970-01-01T00:04:30Z"}"#;
        let (_, observations) = evaluate_json(&set, json, Origin::default());
        for obs in observations {
            s.observe(&set, obs, &[], &mut fired);
        }
        let State::Spike(spike) = &s.states[0] else {
            panic!("a spike rule's state")
        };
        assert_eq!(spike.later_ids_held(), 0);
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
                o.iter().map(|obs| obs.payload.steps()).collect::<Vec<_>>(),
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
        assert_eq!(steps, [Some(chain::GRANT), Some(unbound::BIND)]);
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
