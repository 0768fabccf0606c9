//! The alert: what an analyst or a SIEM receives. Native JSON (one per line) or OCSF.

pub mod incident;
pub mod ocsf;

pub use incident::Incident;

use crate::event::EventView;
use crate::event::{time, CREDENTIAL_ID_KEY, DECISION_KEY};
use crate::rules::field::Field;
use crate::rules::Severity;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// Stable hash of rule id, key and evidence: the same finding always has the same id, so
    /// redeliveries can be de-duplicated downstream.
    pub id: String,
    pub rule: RuleInfo,
    /// Event time of the triggering event.
    pub time: String,
    #[serde(skip)]
    pub time_micros: i64,
    pub cluster: String,
    pub actor: Actor,
    pub target: Target,
    pub outcome: Outcome,
    pub evidence: Evidence,
    /// Alerts about activity that goes on (thresholds, rate spikes): `open` when the threshold
    /// is crossed, `updated` while it continues (live runs, rate-limited), `closed` with its
    /// full extent once a window passes without it. Every update carries the same `id`, so a
    /// SIEM upserts it. Absent for alerts about one moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode: Option<Episode>,
    pub summary: String,
    pub remediation: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Updated,
    Closed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Updated => "updated",
            Status::Closed => "closed",
        }
    }
}

/// The whole extent of an episode so far: every event it counted, not only those that crossed
/// the threshold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Episode {
    pub first_time: String,
    pub last_time: String,
    /// Events counted.
    pub count: u64,
    /// The distinct values the rule counts (Secret URIs, resources…), first seen first.
    pub values: Capped,
    pub audit_ids: Capped,
}

/// A list cut at a cap, with the true number of items beside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Capped {
    pub total: u64,
    pub items: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleInfo {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub mitre: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Actor {
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    pub source_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    /// The impersonation proxy (`impersonation_proxies`) the request came through, acting for
    /// `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Target {
    pub verb: String,
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    pub request_uri: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Evidence {
    pub audit_ids: Vec<String>,
    /// Events behind the alert (1 for a single-event rule).
    pub count: u64,
    /// Event time of the first event counted (stateful rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// The revocation-list entry a revoked-credential alert matched, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<serde_json::Value>,
    /// Figures a built-in detector worked from: a rate spike's baseline, a chain's steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Alerts of this rule for this actor held back by `suppress` since the previous one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
}

impl Alert {
    /// `time_micros` again from `time` (it is not part of the JSON: an alert read back from a
    /// snapshot needs it).
    pub fn restore_time(&mut self) {
        self.time_micros = time::parse_rfc3339_micros(&self.time).unwrap_or(self.time_micros);
    }

    /// An alert of `rule` about the event `view`; its summary and remediation are the rule's
    /// to fill in.
    pub fn from_event(rule: RuleInfo, view: &EventView) -> Alert {
        let ev = view.event;
        let audit_id = ev.audit_id.as_deref().unwrap_or("").to_owned();
        let cluster = ev.cluster.as_deref().unwrap_or("").to_owned();
        let o = ev.object_ref.as_ref();
        let owned = |v: Option<&crate::event::JStr>| v.map(|x| x.to_string()).unwrap_or_default();
        let list = |path: &str| {
            Field::parse(path)
                .map(|f| f.all_text(view))
                .unwrap_or_default()
        };
        let text = |s: &Option<crate::event::JStr>| s.as_deref().map(str::to_owned);
        Alert {
            id: alert_id(&rule.id, &cluster, &[audit_id.as_str()]),
            rule,
            time: time::format_micros(view.time),
            time_micros: view.time,
            actor: Actor {
                username: ev.username().to_owned(),
                uid: text(&ev.user.uid),
                groups: list("user.groups"),
                credential_id: view
                    .extra()
                    .get(CREDENTIAL_ID_KEY)
                    .and_then(|v| v.first_str())
                    .map(str::to_owned),
                source_ips: list("sourceIPs"),
                user_agent: text(&ev.user_agent),
                impersonated_user: ev
                    .impersonated_user
                    .as_ref()
                    .and_then(|u| text(&u.username)),
                proxy: text(&ev.proxy),
            },
            target: Target {
                verb: ev.verb.as_deref().unwrap_or("").to_owned(),
                resource: owned(o.and_then(|o| o.resource.as_ref())),
                subresource: owned(o.and_then(|o| o.subresource.as_ref())),
                namespace: owned(o.and_then(|o| o.namespace.as_ref())),
                // A create names its object in the body, not in objectRef (which the API
                // server fills before the name is known).
                name: match o.and_then(|o| o.name.as_ref()) {
                    Some(name) => name.to_string(),
                    None => [
                        "requestObject.metadata.name",
                        "responseObject.metadata.name",
                    ]
                    .iter()
                    .find_map(|path| Field::parse(path).ok()?.first_text(view))
                    .unwrap_or_default(),
                },
                api_group: owned(o.and_then(|o| o.api_group.as_ref())),
                request_uri: ev.request_uri.as_deref().unwrap_or("").to_owned(),
            },
            outcome: Outcome {
                status_code: ev.status_code(),
                decision: view.annotation(DECISION_KEY).map(str::to_owned),
            },
            evidence: Evidence {
                audit_ids: vec![audit_id],
                count: 1,
                ..Evidence::default()
            },
            status: None,
            episode: None,
            summary: String::new(),
            remediation: String::new(),
            cluster,
        }
    }

    /// A total order on alerts that does not depend on how work was split across threads.
    pub fn sort_key(&self) -> (i64, &str, &str) {
        (self.time_micros, &self.rule.id, &self.id)
    }
}

/// 128-bit xxh3 of the parts, hex: stable across runs, platforms and versions of this program.
pub fn alert_id(rule_id: &str, key: &str, audit_ids: &[&str]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [rule_id, key].into_iter().chain(audit_ids.iter().copied()) {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    format!("{:032x}", h.digest128())
}

/// Output format of alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// audithound's own alert JSON (see README).
    #[default]
    Native,
    /// OCSF 1.1 Detection Finding (class 2004); incidents as Incident Findings (2005).
    Ocsf,
    /// One line per alert for a person: time, severity, rule, actor, summary (colour only on
    /// a terminal, and never with NO_COLOR set).
    Text,
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputFormat::Native => "native",
            OutputFormat::Ocsf => "ocsf",
            OutputFormat::Text => "text",
        })
    }
}

impl OutputFormat {
    pub fn render(self, record: Record) -> serde_json::Result<String> {
        match (self, record) {
            (OutputFormat::Native, Record::Alert(a)) => serde_json::to_string(a),
            (OutputFormat::Native, Record::Incident(i)) => {
                serde_json::to_string(&serde_json::json!({ "incident": i }))
            }
            (OutputFormat::Ocsf, Record::Alert(a)) => {
                serde_json::to_string(&ocsf::pruned(ocsf::detection_finding(a)))
            }
            (OutputFormat::Ocsf, Record::Incident(i)) => {
                serde_json::to_string(&ocsf::pruned(incident::ocsf(i)))
            }
            (OutputFormat::Text, record) => Ok(text_line(record, false)),
        }
    }
}

/// One line for a person: `time  SEVERITY  rule  actor  summary`. An episode's later reports
/// say so before the summary; an incident reads `INCIDENT` where the rule would be.
pub fn text_line(record: Record, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let severity = |s: Severity| {
        let name = format!("{:<8}", s.name().to_uppercase());
        let code = match s {
            Severity::Critical => "1;31",
            Severity::High => "31",
            Severity::Medium => "33",
            Severity::Low => "36",
            Severity::Info => "2",
        };
        paint(code, &name)
    };
    // Seconds are enough to read a line; the JSON keeps the microseconds.
    let short = |t: &str| {
        t.get(..19)
            .map_or_else(|| t.to_owned(), |s| format!("{s}Z"))
    };
    // The cluster beside the actor when there is more than the default one to tell apart.
    let who = |actor: &str, cluster: &str| match cluster {
        "" | "default" => actor.to_owned(),
        c => format!("{actor} ({c})"),
    };
    // A later report is printed when its episode or incident ends (or grows), so it carries
    // that time, and lines stay in time order.
    match record {
        Record::Alert(a) => {
            let (status, time) = match (a.status, &a.episode) {
                (Some(Status::Updated), Some(e)) => ("[updated] ", &e.last_time),
                (Some(Status::Closed), Some(e)) => ("[closed] ", &e.last_time),
                (Some(Status::Updated), None) => ("[updated] ", &a.time),
                (Some(Status::Closed), None) => ("[closed] ", &a.time),
                _ => ("", &a.time),
            };
            format!(
                "{}  {}  {:<40}  {:<28}  {status}{}",
                short(time),
                severity(a.rule.severity),
                a.rule.id,
                who(&a.actor.username, &a.cluster),
                a.summary
            )
        }
        Record::Incident(i) => format!(
            "{}  {}  {:<40}  {:<28}  [{}] {}",
            short(match i.status {
                Status::Open => &i.first_time,
                _ => &i.last_time,
            }),
            severity(i.severity),
            paint("1", "INCIDENT"),
            who(
                i.identities.usernames.first().map_or("", String::as_str),
                &i.cluster
            ),
            i.status.name(),
            i.summary
        ),
    }
}

/// What sinks deliver: alerts, and the incidents that group them.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Alert(&'a Alert),
    Incident(&'a Incident),
}

impl Record<'_> {
    /// Stable id: later reports of the same finding or incident carry the same one.
    pub fn id(&self) -> &str {
        match self {
            Record::Alert(a) => &a.id,
            Record::Incident(i) => &i.id,
        }
    }

    /// Event time the record is about (an incident's latest).
    pub fn time_micros(&self) -> i64 {
        match self {
            Record::Alert(a) => a.time_micros,
            Record::Incident(i) => i.last_micros,
        }
    }

    /// `alert` or `incident` (Splunk's sourcetype suffix, and the like).
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Alert(_) => "alert",
            Record::Incident(_) => "incident",
        }
    }
}

/// A bare alert at `time` (microseconds), for tests of what handles alerts.
#[cfg(test)]
pub(crate) fn test_alert(time: i64) -> Alert {
    Alert {
        id: time.to_string(),
        rule: RuleInfo {
            id: "r".into(),
            title: String::new(),
            severity: crate::rules::Severity::Low,
            mitre: vec![],
        },
        time: String::new(),
        time_micros: time,
        cluster: "c".into(),
        actor: Actor {
            username: "u".into(),
            ..Default::default()
        },
        target: Default::default(),
        outcome: Default::default(),
        evidence: Default::default(),
        status: None,
        episode: None,
        summary: String::new(),
        remediation: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separate_parts() {
        assert_eq!(alert_id("r", "k", &["a"]), alert_id("r", "k", &["a"]));
        assert_ne!(alert_id("r", "k", &["a"]), alert_id("r", "ka", &[]));
        assert_eq!(alert_id("r", "k", &["a"]).len(), 32);
    }

    #[test]
    fn a_text_line_reads_in_time_order_and_names_the_cluster() {
        let mut a = test_alert(1);
        a.time = "2025-03-04T16:30:45.006151Z".into();
        a.summary = "read 10 Secrets.".into();
        a.cluster = "default".into();
        let line = text_line(Record::Alert(&a), false);
        assert!(line.starts_with("2025-03-04T16:30:45Z  LOW "), "{line}");
        assert!(
            !line.contains("(default)") && !line.contains('\x1b'),
            "{line}"
        );
        // The closing report: the episode's last request, and the cluster beside the actor.
        a.status = Some(Status::Closed);
        a.cluster = "prod-eks".into();
        a.episode = Some(Episode {
            first_time: a.time.clone(),
            last_time: "2025-03-04T16:31:10.014216Z".into(),
            ..Episode::default()
        });
        let line = text_line(Record::Alert(&a), false);
        assert!(line.starts_with("2025-03-04T16:31:10Z"), "{line}");
        assert!(line.contains("u (prod-eks)"), "{line}");
        assert!(line.contains("[closed] read 10 Secrets."), "{line}");
        // Colour only when asked.
        assert!(text_line(Record::Alert(&a), true).contains("\x1b[36m"));
    }
}
