//! Incidents: the alerts of one attacker joined into one story.
//!
//! Alerts are grouped by who did them: a username, a credential id (which joins a user's alerts
//! across renamed usernames) or an impersonated identity that two alerts share, within a gap of
//! event time (an hour by default) of the incident's last alert, across rule families. From its
//! first alert on, every request of the incident's usernames is recorded (the collector hands
//! each event's actor here; the event is decoded again only for identities with an open
//! incident), read-only requests folded into counts, and what they read, changed and from where
//! make the blast radius. An incident is reported once it has two alerts or a high one, updated
//! like an episode (live, at most once a minute of event time), and closed when the gap passes
//! or the replay ends. Everything is capped, with true totals beside each list.

use crate::alert::incident::{AlertRef, BlastRadius, Identities, Step, Timeline};
use crate::alert::{Alert, Capped, Incident, Status};
use crate::detect::{state_key, StateKey};
use crate::event::time::format_micros;
use crate::event::{EventView, CREDENTIAL_ID_KEY};
use crate::rules::field::Field;
use crate::rules::Severity;
use foldhash::{HashMap, HashSet};

/// Default gap of event time after an incident's last alert before it closes.
pub const DEFAULT_GAP: i64 = 3600 * 1_000_000;

#[derive(Debug, Clone, Copy)]
pub struct IncidentOptions {
    /// Event time after the last alert that closes an incident (microseconds).
    pub gap: i64,
    /// Items kept per list (timeline steps, blast-radius lists, alerts).
    pub cap: usize,
    /// Live: an `updated` report at most this often (event time); None in a replay.
    pub update_every: Option<i64>,
}

impl Default for IncidentOptions {
    fn default() -> Self {
        IncidentOptions {
            gap: DEFAULT_GAP,
            cap: crate::detect::episode::DEFAULT_EPISODE_CAP,
            update_every: None,
        }
    }
}

/// A capped list of distinct strings with its true total.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Set {
    seen: HashSet<String>,
    items: Vec<String>,
    total: u64,
}

impl Set {
    fn add(&mut self, value: &str, cap: usize) {
        if value.is_empty() || self.seen.contains(value) {
            return;
        }
        self.total += 1;
        // Beyond the cap only the count grows; what was seen stays bounded too.
        if self.items.len() < cap {
            self.seen.insert(value.to_owned());
            self.items.push(value.to_owned());
        }
    }

    fn capped(&self) -> Capped {
        Capped {
            total: self.total,
            items: self.items.clone(),
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
    keys: Vec<String>,
    usernames: Set,
    credentials: Set,
    impersonated: Set,
    alerts: Vec<AlertRef>,
    alert_ids: HashSet<String>,
    alerts_total: u64,
    story: Story,
    reported: Option<(u64, u64, i64)>,
}

/// What an identity did: its requests as a timeline (read-only ones folded), the alerts raised
/// on them, and the blast radius. An incident tells one; so does `audithound timeline`.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Story {
    steps: Vec<Step>,
    steps_total: u64,
    /// Audit IDs of recorded steps (to mark the alerts raised on them) and the rules that
    /// alerted on requests not recorded yet.
    step_at: HashMap<String, usize>,
    pending_marks: HashMap<String, Vec<String>>,
    blast: Blast,
    /// The latest request's time.
    last: i64,
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

/// Fields a request is described by that the event struct does not hold directly.
pub struct Fields {
    source_ips: Field,
    /// The name of an object being created (`objectRef.name` is empty then).
    created_name: Field,
}

impl Default for Fields {
    fn default() -> Self {
        let field = |path: &str| Field::parse(path).unwrap_or(Field::StatusCode);
        Fields {
            source_ips: field("sourceIPs"),
            created_name: field("requestObject.metadata.name"),
        }
    }
}

/// The incidents being built.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Incidents {
    /// Given again when restored.
    #[serde(skip)]
    opts: IncidentOptions,
    open: Vec<Option<Open>>,
    /// Identity key (`user:`, `cred:`, `imp:` + cluster and value) → incident.
    by_key: HashMap<String, usize>,
    /// Actor (state key of `cluster\x1fusername`) → incident, for recording its requests.
    by_actor: HashMap<StateKey, usize>,
    #[serde(skip)]
    fields: Fields,
    pub stats: IncidentStats,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct IncidentStats {
    pub incidents: u64,
    pub recorded_requests: u64,
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

    /// Joins `alert` (delivered, in event-time order) to its identity's incident, or opens one.
    /// Reports go to `out`.
    pub fn alert(&mut self, alert: &Alert, family: &str, out: &mut Vec<Incident>) {
        // An episode's later report updates the incident its opening joined, if that is still
        // open; it never starts one.
        if matches!(alert.status, Some(Status::Updated | Status::Closed)) {
            let cap = self.opts.cap;
            let open = self.open.iter_mut().flatten();
            if let Some(open) = open.into_iter().find(|o| o.alert_ids.contains(&alert.id)) {
                open.add_alert(alert, family, cap);
            }
            return;
        }
        let keys = keys_of(alert);
        let gap = self.opts.gap;
        let mut found: Vec<usize> = keys
            .iter()
            .filter_map(|k| self.by_key.get(k).copied())
            .filter(|&i| {
                self.open[i]
                    .as_ref()
                    .is_some_and(|o| alert.time_micros - o.last_alert <= gap)
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        let at = match found.first() {
            Some(&first) => {
                // An alert naming identities of several incidents joins them into the first.
                for &other in &found[1..] {
                    self.merge(first, other);
                }
                first
            }
            None => self.start(alert),
        };
        for key in keys {
            self.by_key.insert(key, at);
        }
        let actor = state_key(&format!("{}\u{1f}{}", alert.cluster, alert.actor.username));
        self.by_actor.insert(actor, at);
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
        self.open.push(Some(Open {
            id,
            cluster: alert.cluster.clone(),
            first: alert.time_micros,
            last: alert.time_micros,
            last_alert: alert.time_micros,
            worst: alert.rule.severity,
            severity: alert.rule.severity,
            families: Vec::new(),
            keys: keys_of(alert),
            usernames: Set::default(),
            credentials: Set::default(),
            impersonated: Set::default(),
            alerts: Vec::new(),
            alert_ids: HashSet::default(),
            alerts_total: 0,
            story: Story::default(),
            reported: None,
        }));
        self.open.len() - 1
    }

    /// Moves incident `other` into `into`.
    fn merge(&mut self, into: usize, other: usize) {
        let Some(moved) = self.open[other].take() else {
            return;
        };
        for i in self.by_key.values_mut().chain(self.by_actor.values_mut()) {
            if *i == other {
                *i = into;
            }
        }
        let cap = self.opts.cap;
        if let Some(target) = self.open[into].as_mut() {
            target.absorb(moved, cap);
        }
    }

    /// Whether requests of `actor` are recorded (an incident of theirs is open).
    pub fn watches(&self, actor: StateKey) -> bool {
        !self.by_actor.is_empty() && self.by_actor.contains_key(&actor)
    }

    /// Records one request of a watched actor (see `watches`), unless its incident's gap has
    /// passed by then (the incident is over, only not closed yet).
    pub fn request(&mut self, actor: StateKey, view: &EventView) {
        let Some(&at) = self.by_actor.get(&actor) else {
            return;
        };
        let (cap, gap) = (self.opts.cap, self.opts.gap);
        if let Some(open) = self.open[at].as_mut() {
            if view.time > open.last_alert.saturating_add(gap) {
                return;
            }
            open.story.request(view, &self.fields, cap);
            open.last = open.last.max(view.time);
            self.stats.recorded_requests += 1;
        }
    }

    /// Event time has reached `now` (or the input ended): incidents whose gap has passed close;
    /// live, reported ones that grew report again.
    pub fn tick(&mut self, now: i64, end: bool, out: &mut Vec<Incident>) {
        let gap = self.opts.gap;
        let mut closed = Vec::new();
        for (i, slot) in self.open.iter_mut().enumerate() {
            let Some(open) = slot else { continue };
            if end || now > open.last_alert.saturating_add(gap) {
                if open.reported.is_some() {
                    out.push(open.report(Status::Closed));
                }
                closed.push(i);
                *slot = None;
            } else if let (Some(every), Some(reported)) = (self.opts.update_every, open.reported) {
                let grew = (open.alerts_total, open.story.steps_total) != (reported.0, reported.1);
                if grew && now >= reported.2 + every {
                    open.reported = Some((open.alerts_total, open.story.steps_total, now));
                    out.push(open.report(Status::Updated));
                }
            }
        }
        if !closed.is_empty() {
            self.by_key.retain(|_, i| !closed.contains(i));
            self.by_actor.retain(|_, i| !closed.contains(i));
        }
        // Slots of closed incidents are reused only once all are closed: indices stay stable.
        if self.open.iter().all(Option::is_none) {
            self.open.clear();
        }
    }

    /// Incidents read back from a snapshot, with this run's options.
    pub fn restored(mut self, opts: IncidentOptions) -> Self {
        self.opts = opts;
        for open in self.open.iter_mut().flatten() {
            for step in &mut open.story.steps {
                step.micros = crate::event::time::parse_rfc3339_micros(&step.time).unwrap_or(0);
            }
        }
        self
    }

    pub fn open_count(&self) -> usize {
        self.open.iter().flatten().count()
    }
}

/// One request, from its event or from the alert raised on it.
struct Request {
    time: i64,
    verb: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    code: Option<i64>,
    username: String,
    source_ip: String,
    user_agent: String,
    audit_id: String,
    credential: Option<String>,
}

/// Read-only requests that are folded into counts in a timeline (Secret reads never are).
fn foldable(verb: &str, resource: &str, code: Option<i64>) -> bool {
    matches!(verb, "get" | "list" | "watch")
        && resource != "secrets"
        && code.is_none_or(|c| c < 400)
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
            self.families.push(family.to_owned());
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
            if !self.keys.contains(&key) {
                self.keys.push(key);
            }
        }
        // An episode's later reports are the same alert: its entry keeps the opening summary.
        // Live, interim reports come when the wall clock allows, so taking theirs would make
        // an incident read differently live and in a replay; the episode's own closing record
        // carries the full extent.
        if !self.alert_ids.insert(alert.id.clone()) {
            return;
        }
        self.alerts_total += 1;
        self.worst = self.worst.max(alert.rule.severity);
        self.rate(self.worst);
        if self.alerts.len() < cap {
            self.alerts.push(AlertRef {
                id: alert.id.clone(),
                rule: alert.rule.id.clone(),
                severity: alert.rule.severity,
                time: alert.time.clone(),
                summary: alert.summary.clone(),
            });
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
            match self.step_at.get(id).and_then(|&i| self.steps.get_mut(i)) {
                Some(step) => {
                    if !step.alerts.iter().any(|r| r == rule) {
                        step.alerts.push(rule.to_owned());
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
            match self.step_at.get(audit_id) {
                Some(&i) => {
                    if let Some(step) = self.steps.get_mut(i) {
                        step.alerts.push(alert.rule.id.clone());
                        marked = true;
                    }
                }
                None => self
                    .pending_marks
                    .entry(audit_id.clone())
                    .or_default()
                    .push(alert.rule.id.clone()),
            }
        }
        if marked {
            return;
        }
        let audit_id = alert.evidence.audit_ids.last().cloned().unwrap_or_default();
        self.pending_marks.remove(&audit_id);
        self.alert_request(alert, vec![alert.rule.id.clone()], cap);
    }

    /// Notes the request an alert was raised on (its target, actor and outcome), marked with
    /// `marks`.
    pub fn alert_request(&mut self, alert: &Alert, marks: Vec<String>, cap: usize) {
        let t = &alert.target;
        let request = Request {
            time: alert.time_micros,
            verb: t.verb.clone(),
            resource: t.resource.clone(),
            subresource: t.subresource.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            code: alert.outcome.status_code,
            username: alert.actor.username.clone(),
            source_ip: alert.actor.source_ips.first().cloned().unwrap_or_default(),
            user_agent: alert.actor.user_agent.clone().unwrap_or_default(),
            audit_id: alert.evidence.audit_ids.last().cloned().unwrap_or_default(),
            credential: alert.actor.credential_id.clone(),
        };
        self.note(request, marks, cap);
    }

    fn push_step(&mut self, step: Step, cap: usize) {
        self.steps_total += step.count;
        if self.steps.len() >= cap {
            return;
        }
        // Kept in time order: a request recorded late goes where it belongs.
        let at = self.steps.partition_point(|s| s.micros <= step.micros);
        if at < self.steps.len() {
            for i in self.step_at.values_mut() {
                if *i >= at {
                    *i += 1;
                }
            }
        }
        if !step.audit_id.is_empty() {
            self.step_at.insert(step.audit_id.clone(), at);
        }
        self.steps.insert(at, step);
    }

    /// A request of the story's identities, decoded.
    pub fn request(&mut self, view: &EventView, fields: &Fields, cap: usize) {
        let ev = view.event;
        let text = |s: Option<&crate::event::JStr>| s.map(|s| s.to_string()).unwrap_or_default();
        let audit_id = text(ev.audit_id.as_ref());
        // Already in the timeline as an alert's request.
        if !audit_id.is_empty() && self.step_at.contains_key(&audit_id) {
            return;
        }
        let o = ev.object_ref.as_ref();
        let request = Request {
            time: view.time,
            verb: text(ev.verb.as_ref()),
            resource: text(o.and_then(|o| o.resource.as_ref())),
            subresource: text(o.and_then(|o| o.subresource.as_ref())),
            namespace: text(o.and_then(|o| o.namespace.as_ref())),
            name: match o.and_then(|o| o.name.as_ref()) {
                Some(name) => name.to_string(),
                None => fields.created_name.first_text(view).unwrap_or_default(),
            },
            code: ev.status_code(),
            username: ev.username().to_owned(),
            source_ip: fields.source_ips.first_text(view).unwrap_or_default(),
            user_agent: text(ev.user_agent.as_ref()),
            credential: view
                .extra()
                .get(CREDENTIAL_ID_KEY)
                .and_then(crate::alert::first_string),
            audit_id,
        };
        let marks = self
            .pending_marks
            .remove(&request.audit_id)
            .unwrap_or_default();
        self.note(request, marks, cap);
    }

    /// Adds a request to the timeline (folding repeated reads) and the blast radius.
    fn note(&mut self, r: Request, alerts: Vec<String>, cap: usize) {
        self.last = self.last.max(r.time);
        let allowed = r.code.is_none_or(|c| c < 400);
        let object = match (r.namespace.is_empty(), r.name.is_empty()) {
            (false, false) => format!("{} {}/{}", r.resource, r.namespace, r.name),
            (true, false) => format!("{} {}", r.resource, r.name),
            (false, true) => format!("{} in {}", r.resource, r.namespace),
            (true, true) => r.resource.clone(),
        };
        let b = &mut self.blast;
        if allowed {
            match r.verb.as_str() {
                "get" | "list" | "watch" if r.resource == "secrets" => {
                    let what = match (r.namespace.is_empty(), r.name.is_empty()) {
                        (false, false) => format!("{}/{}", r.namespace, r.name),
                        (true, false) => r.name.clone(),
                        (false, true) => format!("{}/* ({})", r.namespace, r.verb),
                        (true, true) => format!("* in every namespace ({})", r.verb),
                    };
                    b.secrets_read.add(&what, cap);
                }
                // A session into a pod (exec, attach, port-forward, proxy) writes no object.
                _ if matches!(
                    r.subresource.as_str(),
                    "exec" | "attach" | "portforward" | "proxy"
                ) =>
                {
                    b.sessions.add(&format!("{} {object}", r.subresource), cap)
                }
                // Access and token reviews are questions put to the API server, not objects.
                "create" if r.resource.ends_with("reviews") => {}
                "create" => b.created.add(&object, cap),
                "update" | "patch" => b.changed.add(&object, cap),
                "delete" | "deletecollection" => b.deleted.add(&object, cap),
                _ => {}
            }
            b.namespaces.add(&r.namespace, cap);
        }
        b.source_ips.add(&r.source_ip, cap);
        b.user_agents.add(&r.user_agent, cap);
        if let Some(c) = &r.credential {
            b.credentials.add(c, cap);
        }
        let resource = if r.subresource.is_empty() {
            r.resource
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        // A read-only request like the previous step's folds into it.
        if alerts.is_empty() && foldable(&r.verb, &resource, r.code) {
            if let Some(last) = self.steps.last_mut() {
                let same = last.alerts.is_empty()
                    && last.verb == r.verb
                    && last.resource == resource
                    && last.namespace == r.namespace
                    && last.micros <= r.time;
                if same {
                    last.count += 1;
                    last.last_time = Some(format_micros(r.time));
                    if last.name != r.name {
                        last.name.clear();
                    }
                    self.steps_total += 1;
                    return;
                }
            }
        }
        let step = Step {
            time: format_micros(r.time),
            last_time: None,
            micros: r.time,
            verb: r.verb,
            resource,
            namespace: r.namespace,
            name: r.name,
            status_code: r.code,
            username: r.username,
            source_ip: r.source_ip,
            user_agent: r.user_agent,
            audit_id: r.audit_id,
            count: 1,
            alerts,
        };
        self.push_step(step, cap);
    }
}

impl Open {
    fn absorb(&mut self, other: Open, cap: usize) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.last_alert = self.last_alert.max(other.last_alert);
        for f in other.families {
            if !self.families.contains(&f) {
                self.families.push(f);
            }
        }
        self.families.sort();
        self.worst = self.worst.max(other.worst);
        self.rate(self.worst);
        for k in other.keys {
            if !self.keys.contains(&k) {
                self.keys.push(k);
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
            if self.alert_ids.insert(a.id.clone()) {
                self.alerts_total += 1;
                if self.alerts.len() < cap {
                    self.alerts.push(a);
                }
            }
        }
        self.alerts.sort_by(|a, b| a.time.cmp(&b.time));
        self.story.absorb(other.story, cap);
        self.reported = self.reported.or(other.reported);
    }

    fn report(&self, status: Status) -> Incident {
        let who = self.usernames.items.first().cloned().unwrap_or_default();
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
        if b.secrets_read.total > 0 {
            parts.push(format!(
                "read {}",
                plural(b.secrets_read.total, "Secret", "Secrets")
            ));
        }
        let writes = b.created.total + b.changed.total + b.deleted.total;
        if writes > 0 {
            parts.push(format!(
                "created, changed or deleted {}",
                plural(writes, "object", "objects")
            ));
        }
        if b.sessions.total > 0 {
            parts.push(format!(
                "opened {} into pods",
                plural(b.sessions.total, "session", "sessions")
            ));
        }
        if !parts.is_empty() {
            summary.push_str(" and ");
            summary.push_str(&parts.join(" and "));
        }
        if b.source_ips.total > 0 {
            summary.push_str(&format!(
                ", from {}",
                plural(b.source_ips.total, "address", "addresses")
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
                usernames: self.usernames.items.clone(),
                credential_ids: self.credentials.items.clone(),
                impersonated: self.impersonated.items.clone(),
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
        let mut steps = self.steps.clone();
        for step in &mut steps {
            step.alerts.sort();
        }
        Timeline {
            total: self.steps_total,
            steps,
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
