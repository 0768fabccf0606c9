//! The HTML report a responder hands over: one self-contained file (inline CSS and SVG, no
//! network fetches) with the run's summary, incidents ranked by severity with their timelines
//! and blast radius, alerts, charts and the rejected input. Written by `replay --report`.

mod charts;

use crate::alert::{Alert, Incident, Record};
use crate::metrics::RunStats;
use crate::rules::Severity;
use crate::sink::AlertSink;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// What a report is made of.
pub struct ReportInput<'a> {
    /// What was run: `audithound replay samples/`.
    pub title: String,
    pub stats: &'a RunStats,
    /// Latest report of each alert, in the order they were first raised.
    pub alerts: &'a [Alert],
    /// Alerts left out beyond the cap.
    pub alerts_dropped: u64,
    /// Latest report of each incident.
    pub incidents: &'a [Incident],
}

/// Alerts kept for a report at most (the rest are counted).
pub const MAX_ALERTS: usize = 10_000;
/// Incidents kept for a report at most: beyond it the lowest-ranked one (least severe, then
/// latest) makes room or the newcomer is left out. Each incident's own lists are capped, so
/// this bounds the memory a long replay spends on its report.
pub const MAX_INCIDENTS: usize = 1_000;

/// A sink that keeps what a report needs while passing everything on: the latest report of
/// each alert and of each incident (both capped).
pub struct Keep<S> {
    pub inner: S,
    pub alerts: Vec<Alert>,
    pub alerts_dropped: u64,
    pub incidents: Vec<Incident>,
    alert_at: HashMap<String, usize>,
    incident_at: HashMap<String, usize>,
}

impl<S> Keep<S> {
    pub fn new(inner: S) -> Self {
        Keep {
            inner,
            alerts: Vec::new(),
            alerts_dropped: 0,
            incidents: Vec::new(),
            alert_at: HashMap::new(),
            incident_at: HashMap::new(),
        }
    }
}

impl<S: AlertSink> AlertSink for Keep<S> {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        match record {
            Record::Alert(a) => match self.alert_at.get(&a.id) {
                Some(&i) => self.alerts[i] = a.clone(),
                None if self.alerts.len() < MAX_ALERTS => {
                    self.alert_at.insert(a.id.clone(), self.alerts.len());
                    self.alerts.push(a.clone());
                }
                None => self.alerts_dropped += 1,
            },
            Record::Incident(i) => match self.incident_at.get(&i.id) {
                Some(&at) => self.incidents[at] = i.clone(),
                None if self.incidents.len() < MAX_INCIDENTS => {
                    self.incident_at.insert(i.id.clone(), self.incidents.len());
                    self.incidents.push(i.clone());
                }
                None => {
                    // The lowest-ranked kept incident gives way to a worse one.
                    let lowest = (0..self.incidents.len())
                        .max_by(|&a, &b| rank(&self.incidents[a]).cmp(&rank(&self.incidents[b])));
                    if let Some(at) = lowest.filter(|&at| rank(i) < rank(&self.incidents[at])) {
                        self.incident_at.remove(&self.incidents[at].id);
                        self.incident_at.insert(i.id.clone(), at);
                        self.incidents[at] = i.clone();
                    }
                }
            },
        }
        self.inner.send(record)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush()
    }
}

/// What the page lists at most; beyond each cap it says how many were left out, so the page
/// stays a few MiB whatever the archive.
pub mod caps {
    /// Incidents listed.
    pub const INCIDENTS: usize = 200;
    /// The first incidents are listed in full…
    pub const FULL_INCIDENTS: usize = 10;
    /// Timeline lines, alerts and items of each blast-radius list of each of the first
    /// [`FULL_INCIDENTS`] incidents…
    pub const TIMELINE_ROWS: usize = 500;
    pub const INCIDENT_ALERTS: usize = 100;
    pub const BLAST_ITEMS: usize = 50;
    /// …and of every later one.
    pub const TIMELINE_ROWS_LATER: usize = 10;
    pub const INCIDENT_ALERTS_LATER: usize = 10;
    pub const BLAST_ITEMS_LATER: usize = 5;
    /// Identities, credentials and families listed for one incident, and rules for one line.
    pub const IDENTITIES: usize = 10;
    pub const LINE_RULES: usize = 5;
    /// Characters of a name, user agent or list item, and of a title, summary or detail.
    pub const TEXT: usize = 160;
    pub const LONG_TEXT: usize = 600;
    /// Rows of the alerts table.
    pub const ALERTS: usize = 2000;
    /// Incidents charted as requests per minute.
    pub const RATE_CHARTS: usize = 6;
    /// Requests an incident's timeline needs to be charted.
    pub const RATE_MIN_REQUESTS: u64 = 10;
}

/// Writes the report to `path`.
pub fn write(path: &Path, input: &ReportInput) -> anyhow::Result<()> {
    let html = render(input)?;
    std::fs::write(path, html)
        .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", path.display()))
}

/// The page's template: autoescaped (its name ends in `.html`), so every value from the input
/// is escaped; only the charts, which plotters escaped itself, are marked safe.
const TEMPLATE: &str = include_str!("report.html");

/// The report as one HTML document.
pub fn render(input: &ReportInput) -> anyhow::Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("t", |s: String| short_time(&s));
    env.add_template("report.html", TEMPLATE)?;
    let page = env.get_template("report.html")?;
    Ok(page.render(minijinja::Value::from(minijinja::value::Serde(view(input))))?)
}

#[derive(Serialize)]
struct View<'a> {
    title: Cow<'a, str>,
    version: &'static str,
    span: Option<(String, String)>,
    summary: Vec<(&'static str, String)>,
    severities: Vec<(&'static str, u64)>,
    formats: Vec<(&'a str, u64)>,
    incidents: Vec<IncidentView<'a>>,
    incidents_total: usize,
    incidents_more: usize,
    rates: Vec<ChartView>,
    rates_more: usize,
    by_rule: ChartView,
    actors_by_events: ChartView,
    actors_by_alerts: ChartView,
    alerts: Vec<AlertRow<'a>>,
    alerts_total: u64,
    alerts_more: u64,
    /// Alerts beyond what the report could keep (`MAX_ALERTS`).
    alerts_not_kept: u64,
    rejected: Vec<(&'a str, u64)>,
    rejected_total: u64,
    rejected_examples: &'a [crate::metrics::RejectionExample],
    caps: Caps,
}

#[derive(Serialize)]
struct Caps {
    incidents: usize,
    alerts: usize,
    timeline_rows: usize,
    rate_min_requests: u64,
}

#[derive(Serialize)]
struct ChartView {
    title: String,
    caption: String,
    svg: Option<String>,
    error: Option<String>,
}

impl ChartView {
    fn new(title: String, caption: String, svg: Result<String, String>) -> ChartView {
        let (svg, error) = match svg {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        ChartView {
            title,
            caption,
            svg,
            error,
        }
    }
}

#[derive(Serialize)]
struct IncidentView<'a> {
    rank: usize,
    id: &'a str,
    severity: &'static str,
    status: &'static str,
    title: Cow<'a, str>,
    summary: Cow<'a, str>,
    cluster: Cow<'a, str>,
    first_time: &'a str,
    last_time: &'a str,
    usernames: List<'a>,
    credential_ids: List<'a>,
    impersonated: List<'a>,
    families: List<'a>,
    alerts: Vec<IncidentAlert<'a>>,
    alerts_total: u64,
    alerts_more: u64,
    steps: Vec<StepRow<'a>>,
    steps_kept: usize,
    steps_more: usize,
    requests: u64,
    /// Requests the kept lines stand for (fewer than `requests` when the timeline was capped).
    kept_requests: u64,
    blast: Vec<BlastList<'a>>,
}

/// The first items of a list, each clipped, and how many it holds in all.
#[derive(Serialize)]
struct List<'a> {
    items: Vec<Cow<'a, str>>,
    total: u64,
}

impl<'a> List<'a> {
    fn new(items: &'a [String], total: u64, cap: usize) -> List<'a> {
        List {
            items: items
                .iter()
                .take(cap)
                .map(|s| clip(s, caps::TEXT))
                .collect(),
            total: total.max(items.len() as u64),
        }
    }
}

#[derive(Serialize)]
struct IncidentAlert<'a> {
    time: &'a str,
    severity: &'static str,
    rule: Cow<'a, str>,
    summary: Cow<'a, str>,
}

#[derive(Serialize)]
struct StepRow<'a> {
    time: &'a str,
    last_time: Option<&'a str>,
    username: Cow<'a, str>,
    verb: Cow<'a, str>,
    resource: Cow<'a, str>,
    target: String,
    status: Option<i64>,
    source_ip: Cow<'a, str>,
    user_agent: Cow<'a, str>,
    count: u64,
    alerts: List<'a>,
}

#[derive(Serialize)]
struct BlastList<'a> {
    label: &'static str,
    list: List<'a>,
}

#[derive(Serialize)]
struct AlertRow<'a> {
    time: &'a str,
    severity: &'static str,
    rule: Cow<'a, str>,
    actor: Cow<'a, str>,
    status: Option<&'static str>,
    summary: Cow<'a, str>,
}

/// `s` cut to `max` characters with an ellipsis: one absurd field (a user agent of megabytes)
/// must not make the page as large.
fn clip(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}…", &s[..at])),
    }
}

/// `2025-03-04 09:00:00.003` for `2025-03-04T09:00:00.003745Z` (the page says it is UTC);
/// anything else as it is.
fn short_time(s: &str) -> String {
    match (s.get(..10), s.get(11..19), s.get(19..)) {
        (Some(day), Some(clock), Some(rest)) if s.ends_with('Z') && s.as_bytes()[10] == b'T' => {
            let millis = rest.strip_prefix('.').and_then(|f| f.get(..3));
            match millis {
                Some(ms) if ms.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{day} {clock}.{ms}")
                }
                _ => format!("{day} {clock}"),
            }
        }
        _ => s.to_owned(),
    }
}

/// Where an incident ranks: worst first, then earliest first (smaller is listed sooner).
fn rank(i: &Incident) -> (std::cmp::Reverse<Severity>, i64, &str) {
    (std::cmp::Reverse(i.severity), i.first_micros, &i.id)
}

/// Incidents in their rank.
fn ranked(incidents: &[Incident]) -> Vec<&Incident> {
    let mut ranked: Vec<&Incident> = incidents.iter().collect();
    ranked.sort_by(|a, b| rank(a).cmp(&rank(b)));
    ranked
}

fn incident_view(rank: usize, i: &Incident) -> IncidentView<'_> {
    let (rows, incident_alerts, blast_items) = if rank <= caps::FULL_INCIDENTS {
        (
            caps::TIMELINE_ROWS,
            caps::INCIDENT_ALERTS,
            caps::BLAST_ITEMS,
        )
    } else {
        (
            caps::TIMELINE_ROWS_LATER,
            caps::INCIDENT_ALERTS_LATER,
            caps::BLAST_ITEMS_LATER,
        )
    };
    let steps = &i.timeline.steps[..i.timeline.steps.len().min(rows)];
    let alerts = &i.alerts[..i.alerts.len().min(incident_alerts)];
    let b = &i.blast_radius;
    let blast = [
        ("Secrets read", &b.secrets_read),
        ("Pod sessions (exec, attach, port-forward)", &b.sessions),
        ("Created", &b.created),
        ("Changed", &b.changed),
        ("Deleted", &b.deleted),
        ("Namespaces", &b.namespaces),
        ("Source IPs", &b.source_ips),
        ("User agents", &b.user_agents),
        ("Credentials", &b.credentials),
    ]
    .into_iter()
    .filter(|(_, c)| c.total > 0 || !c.items.is_empty())
    .map(|(label, c)| BlastList {
        label,
        list: List::new(&c.items, c.total, blast_items),
    })
    .collect();
    let ids = &i.identities;
    let names = |v: &'_ [String]| -> u64 { v.len() as u64 };
    IncidentView {
        rank,
        id: &i.id,
        severity: i.severity.name(),
        status: i.status.name(),
        title: clip(&i.title, caps::TEXT),
        summary: clip(&i.summary, caps::LONG_TEXT),
        cluster: clip(&i.cluster, caps::TEXT),
        first_time: &i.first_time,
        last_time: &i.last_time,
        usernames: List::new(&ids.usernames, names(&ids.usernames), caps::IDENTITIES),
        credential_ids: List::new(
            &ids.credential_ids,
            names(&ids.credential_ids),
            caps::IDENTITIES,
        ),
        impersonated: List::new(
            &ids.impersonated,
            names(&ids.impersonated),
            caps::IDENTITIES,
        ),
        families: List::new(&i.families, names(&i.families), caps::IDENTITIES),
        alerts: alerts
            .iter()
            .map(|a| IncidentAlert {
                time: &a.time,
                severity: a.severity.name(),
                rule: clip(&a.rule, caps::TEXT),
                summary: clip(&a.summary, caps::LONG_TEXT),
            })
            .collect(),
        alerts_total: i.alerts_total.max(i.alerts.len() as u64),
        alerts_more: i.alerts_total.saturating_sub(alerts.len() as u64),
        steps: steps
            .iter()
            .map(|s| StepRow {
                time: &s.time,
                last_time: s.last_time.as_deref(),
                username: clip(&s.username, caps::TEXT),
                verb: clip(&s.verb, caps::TEXT),
                resource: clip(&s.resource, caps::TEXT),
                target: match (s.namespace.is_empty(), s.name.is_empty()) {
                    (true, _) => clip(&s.name, caps::TEXT).into_owned(),
                    (false, true) => format!("{}/", clip(&s.namespace, caps::TEXT)),
                    (false, false) => format!(
                        "{}/{}",
                        clip(&s.namespace, caps::TEXT),
                        clip(&s.name, caps::TEXT)
                    ),
                },
                status: s.status_code,
                source_ip: clip(&s.source_ip, caps::TEXT),
                user_agent: clip(&s.user_agent, caps::TEXT),
                count: s.count,
                alerts: List::new(&s.alerts, s.alerts.len() as u64, caps::LINE_RULES),
            })
            .collect(),
        steps_kept: i.timeline.steps.len(),
        steps_more: i.timeline.steps.len() - steps.len(),
        requests: i.timeline.total,
        kept_requests: i.timeline.steps.iter().map(|st| st.count).sum(),
        blast,
    }
}

/// The first and last event time the report knows of: its alerts' and incidents'.
fn span(input: &ReportInput) -> Option<(String, String)> {
    let times = input
        .alerts
        .iter()
        .map(|a| (a.time_micros, a.time_micros))
        .chain(
            input
                .incidents
                .iter()
                .map(|i| (i.first_micros, i.last_micros)),
        );
    let (first, last) = times.fold((i64::MAX, i64::MIN), |(f, l), (a, b)| (f.min(a), l.max(b)));
    (first <= last).then(|| {
        (
            crate::event::time::format_micros(first),
            crate::event::time::format_micros(last),
        )
    })
}

fn view<'a>(input: &'a ReportInput<'a>) -> View<'a> {
    let stats = input.stats;
    let ranked = ranked(input.incidents);
    let incidents: Vec<IncidentView> = ranked
        .iter()
        .take(caps::INCIDENTS)
        .enumerate()
        .map(|(n, i)| incident_view(n + 1, i))
        .collect();

    // A rate needs a few requests to be worth a chart: the worst incidents with at least
    // `RATE_MIN_REQUESTS`, or any with a timeline when none has as many.
    let mut rate_incidents: Vec<&&Incident> = ranked
        .iter()
        .filter(|i| i.timeline.total >= caps::RATE_MIN_REQUESTS)
        .collect();
    if rate_incidents.is_empty() {
        rate_incidents = ranked
            .iter()
            .filter(|i| !i.timeline.steps.is_empty())
            .collect();
    }
    let rates: Vec<ChartView> = rate_incidents
        .iter()
        .take(caps::RATE_CHARTS)
        .filter_map(|i| {
            let rate = charts::incident_rate(i)?;
            Some(ChartView::new(
                format!("{} · {}", i.severity.name(), i.title),
                rate.caption,
                rate.svg,
            ))
        })
        .collect();

    let (caption, svg) = charts::alerts_by_rule(input.alerts);
    let by_rule = ChartView::new("Alerts by rule over time".to_owned(), caption, svg);

    let actors_by_events = ChartView::new(
        "Top actors by events analysed".to_owned(),
        format!(
            "the {} busiest of the run's identities (all events, not only alerted ones)",
            stats.top_actors.len().min(charts::MAX_ACTORS)
        ),
        charts::top_bars("events analysed", &stats.top_actors),
    );
    let mut by_actor: HashMap<&str, u64> = HashMap::new();
    for a in input.alerts {
        *by_actor.entry(a.actor.username.as_str()).or_default() += 1;
    }
    let mut by_actor: Vec<(String, u64)> = by_actor
        .into_iter()
        .map(|(a, n)| (a.to_owned(), n))
        .collect();
    by_actor.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let actors_by_alerts = ChartView::new(
        "Top actors by alerts".to_owned(),
        format!(
            "alerts per identity, from the {} alerts the report kept",
            input.alerts.len()
        ),
        charts::top_bars("alerts raised", &by_actor),
    );

    let shown = input.alerts.len().min(caps::ALERTS);
    // The run counted every alert (not their updates); `alerts_dropped` counts the reports,
    // updates included, that found the report's store full.
    let kept = input.alerts.len() as u64;
    let alerts_total = if stats.alerts >= kept {
        stats.alerts
    } else {
        kept + input.alerts_dropped
    };
    let alerts = input.alerts[..shown]
        .iter()
        .map(|a| AlertRow {
            time: &a.time,
            severity: a.rule.severity.name(),
            rule: clip(&a.rule.id, caps::TEXT),
            actor: clip(&a.actor.username, caps::TEXT),
            status: a.status.map(|s| s.name()),
            summary: clip(&a.summary, caps::LONG_TEXT),
        })
        .collect();

    let mut severities: Vec<(&'static str, u64)> = Severity::ALL
        .iter()
        .rev()
        .map(|s| {
            let n = stats.alerts_by_severity.get(s.name()).copied().unwrap_or(0);
            (s.name(), n)
        })
        .collect();
    severities.retain(|s| s.1 > 0);

    let summary = vec![
        ("files", stats.files.to_string()),
        ("bytes read", crate::metrics::human_bytes(stats.disk_bytes)),
        ("events decoded", stats.events.to_string()),
        ("events analysed", stats.analysed.to_string()),
        ("rejected records", stats.rejected_total().to_string()),
        ("alerts", stats.alerts.to_string()),
        ("incidents", stats.incidents.to_string()),
        ("elapsed", format!("{:.2} s", stats.elapsed_secs)),
    ];

    View {
        title: clip(&input.title, caps::LONG_TEXT),
        version: VERSION,
        span: span(input),
        summary,
        severities,
        formats: stats
            .formats
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
        // The run's count: beyond `MAX_INCIDENTS` some were not kept.
        incidents_total: (stats.incidents as usize).max(ranked.len()),
        incidents_more: (stats.incidents as usize).max(ranked.len()) - incidents.len(),
        incidents,
        rates_more: rate_incidents.len() - rates.len(),
        rates,
        by_rule,
        actors_by_events,
        actors_by_alerts,
        alerts,
        alerts_total,
        alerts_more: alerts_total - shown as u64,
        alerts_not_kept: alerts_total - kept,
        rejected: stats
            .rejected
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
        rejected_total: stats.rejected_total(),
        rejected_examples: &stats.rejected_examples,
        caps: Caps {
            incidents: caps::INCIDENTS,
            alerts: caps::ALERTS,
            timeline_rows: caps::TIMELINE_ROWS,
            rate_min_requests: caps::RATE_MIN_REQUESTS,
        },
    }
}

/// audithound's version and its rule library's, as `--version` prints them.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rule library ",
    env!("AUDITHOUND_LIBRARY_DIGEST"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::incident::{AlertRef, BlastRadius, Identities, Step, Timeline};
    use crate::alert::{Capped, Status};

    fn incident(n: usize, severity: Severity, title: &str, steps: usize) -> Incident {
        let t = 1_741_078_800_000_000 + n as i64 * 1_000_000;
        Incident {
            id: format!("i{n}"),
            status: Status::Closed,
            severity,
            title: title.to_owned(),
            summary: "summary".to_owned(),
            cluster: "c".to_owned(),
            first_time: crate::event::time::format_micros(t),
            last_time: crate::event::time::format_micros(t + 60_000_000),
            first_micros: t,
            last_micros: t + 60_000_000,
            identities: Identities {
                usernames: vec![title.to_owned()],
                ..Identities::default()
            },
            families: vec!["secrets".to_owned()],
            alerts: vec![AlertRef {
                id: "a".to_owned(),
                rule: "r<1>".to_owned(),
                severity,
                time: crate::event::time::format_micros(t),
                summary: "read <secret>".to_owned(),
            }],
            alerts_total: 1,
            timeline: Timeline {
                total: steps as u64 * 2,
                steps: (0..steps)
                    .map(|k| Step {
                        time: crate::event::time::format_micros(t + k as i64 * 1000),
                        micros: t + k as i64 * 1000,
                        verb: "get".to_owned(),
                        resource: "secrets".to_owned(),
                        username: title.to_owned(),
                        count: 2,
                        alerts: if k == 0 {
                            vec!["r<1>".to_owned()]
                        } else {
                            vec![]
                        },
                        ..Step::default()
                    })
                    .collect(),
            },
            blast_radius: BlastRadius {
                secrets_read: Capped {
                    total: 120,
                    items: (0..60).map(|k| format!("ns/s{k}")).collect(),
                },
                ..BlastRadius::default()
            },
        }
    }

    fn page(incidents: &[Incident], alerts: &[Alert], dropped: u64) -> String {
        let stats = RunStats::default();
        let input = ReportInput {
            title: "audithound replay <x>".to_owned(),
            stats: &stats,
            alerts,
            alerts_dropped: dropped,
            incidents,
        };
        render(&input).unwrap_or_else(|e| panic!("render: {e:#}"))
    }

    #[test]
    fn everything_from_the_input_is_escaped() {
        let evil = "<script>alert(1)</script>\"'&";
        let mut a = crate::alert::test_alert(1_741_078_800_000_000);
        a.summary = evil.to_owned();
        a.actor.username = evil.to_owned();
        let html = page(&[incident(1, Severity::High, evil, 3)], &[a], 0);
        assert!(!html.contains("<script>"), "unescaped input");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;&quot;&#x27;&amp;"));
        assert!(!html.contains("<secret>") && !html.contains("r<1>"));
        // The charts (plotters' SVG) are embedded as markup and escape their own text.
        assert!(html.contains("<svg"));
    }

    #[test]
    fn incidents_are_ranked_and_every_list_is_capped_with_a_count() {
        let mut incidents: Vec<Incident> = (0..caps::INCIDENTS + 5)
            .map(|n| incident(n, Severity::Low, &format!("user{n}@example.com"), 2))
            .collect();
        incidents.push(incident(
            900,
            Severity::Critical,
            "late-but-worst",
            caps::TIMELINE_ROWS + 7,
        ));
        let alerts: Vec<Alert> = (0..caps::ALERTS + 3)
            .map(|n| crate::alert::test_alert(1_741_078_800_000_000 + n as i64))
            .collect();
        let html = page(&incidents, &alerts, 4);
        let first = html.find("class=\"incident\"").unwrap_or(0);
        let worst = html.find("late-but-worst").unwrap_or(usize::MAX);
        let next = html[first + 1..]
            .find("class=\"incident\"")
            .map_or(0, |i| i + first + 1);
        assert!(
            worst > first && worst < next,
            "the critical incident comes first"
        );
        assert_eq!(
            html.matches("<details class=\"incident\"").count(),
            caps::INCIDENTS
        );
        assert!(html.contains("… and 6 more incidents"));
        assert!(html.contains("… and 7 more timeline lines"));
        assert!(
            html.contains("(50 of 120)"),
            "blast radius shows N of TOTAL"
        );
        assert!(
            html.contains("… and 7 more alerts"),
            "3 beyond the table, 4 not kept"
        );
        assert!(html.contains("4 were not kept"));
    }

    #[test]
    fn keep_holds_the_worst_incidents_when_full() {
        let mut keep = Keep::new(crate::sink::Fanout(Vec::new()));
        for n in 0..MAX_INCIDENTS {
            let i = incident(n, Severity::Medium, "m", 1);
            keep.send(Record::Incident(&i)).expect("send");
        }
        // A low one finds no room; a critical one replaces the latest medium one.
        let low = incident(5000, Severity::Low, "low", 1);
        let critical = incident(5001, Severity::Critical, "critical", 1);
        keep.send(Record::Incident(&low)).expect("send");
        keep.send(Record::Incident(&critical)).expect("send");
        assert_eq!(keep.incidents.len(), MAX_INCIDENTS);
        assert!(keep.incidents.iter().any(|i| i.id == "i5001"));
        assert!(!keep.incidents.iter().any(|i| i.id == "i5000"));
        let last = format!("i{}", MAX_INCIDENTS - 1);
        assert!(!keep.incidents.iter().any(|i| i.id == last));
        // Its updates land on the same place.
        let mut closed = critical.clone();
        closed.title = "closed".to_owned();
        keep.send(Record::Incident(&closed)).expect("send");
        assert_eq!(keep.incidents.iter().filter(|i| i.id == "i5001").count(), 1);
        assert!(keep.incidents.iter().any(|i| i.title == "closed"));
    }

    /// Every list longer than the page shows and every field longer than it prints: the page
    /// stays a few MiB, however large the archive behind it.
    #[test]
    fn the_page_stays_bounded_whatever_the_input() {
        let long = "x".repeat(caps::LONG_TEXT + 200);
        let huge = |n: usize, steps: usize, items: usize| {
            let mut i = incident(n, Severity::High, &long, steps);
            for s in &mut i.timeline.steps {
                s.user_agent = long.clone();
                s.name = long.clone();
                s.username = long.clone();
            }
            for s in i.timeline.steps.iter_mut().take(5) {
                s.alerts = vec![long.clone(); caps::IDENTITIES + 5];
            }
            i.summary = long.clone();
            i.alerts = (0..items)
                .map(|k| AlertRef {
                    id: k.to_string(),
                    rule: long.clone(),
                    severity: Severity::High,
                    time: i.first_time.clone(),
                    summary: long.clone(),
                })
                .collect();
            i.alerts_total = 5000;
            let list = Capped {
                total: 5000,
                items: vec![long.clone(); items],
            };
            i.blast_radius = BlastRadius {
                secrets_read: list.clone(),
                created: list.clone(),
                changed: list.clone(),
                deleted: list.clone(),
                namespaces: list.clone(),
                source_ips: list.clone(),
                user_agents: list.clone(),
                sessions: list.clone(),
                credentials: list,
            };
            i.identities.usernames = vec![long.clone(); caps::IDENTITIES + 5];
            i
        };
        // The first incidents are shown in full, the later ones shorter: inputs just over
        // each cap give the largest page.
        let incidents: Vec<Incident> = (0..caps::INCIDENTS + 20)
            .map(|n| {
                if n < caps::FULL_INCIDENTS {
                    huge(n, caps::TIMELINE_ROWS + 10, caps::INCIDENT_ALERTS + 10)
                } else {
                    huge(
                        n,
                        caps::TIMELINE_ROWS_LATER + 5,
                        caps::INCIDENT_ALERTS_LATER + 5,
                    )
                }
            })
            .collect();
        let alerts: Vec<Alert> = (0..MAX_ALERTS)
            .map(|n| {
                let mut a = crate::alert::test_alert(1_741_078_800_000_000 + n as i64);
                a.summary = long.clone();
                a.actor.username = long.clone();
                a
            })
            .collect();
        let started = std::time::Instant::now();
        let html = page(&incidents, &alerts, 1_000_000);
        let size = html.len();
        eprintln!("worst-case page: {size} bytes in {:?}", started.elapsed());
        assert!(size < 16 << 20, "{size} bytes");
        assert!(html.contains("… and 20 more incidents"));
        assert!(html.contains("… and 1008000 more alerts"));
        assert!(!html.contains(&long), "long fields are clipped");
    }

    #[test]
    fn an_empty_run_still_renders() {
        let html = page(&[], &[], 0);
        assert!(html.contains("id=\"summary\"") && html.contains("No incidents."));
        assert!(html.contains("id=\"rejections\""));
    }

    #[test]
    fn times_are_shortened_only_when_they_parse() {
        assert_eq!(
            short_time("2025-03-04T09:00:00.003745Z"),
            "2025-03-04 09:00:00.003"
        );
        assert_eq!(short_time("2025-03-04T09:00:00Z"), "2025-03-04 09:00:00");
        assert_eq!(short_time("yesterday"), "yesterday");
        assert_eq!(short_time("2025-03-04T09:00:00.é1Z"), "2025-03-04 09:00:00");
    }
}
