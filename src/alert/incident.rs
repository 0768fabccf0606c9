//! The incident: the alerts of one identity joined into one story, with what that identity did
//! meanwhile (its requests, folded) and the blast radius (what it read, changed, from where).
//! `crate::incident` builds them; sinks send them beside alerts.

use super::{Capped, Status};
use crate::rules::Severity;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Incident {
    /// Stable: derived from the first alert's id, so the same archive always gives the same id
    /// and every update upserts.
    pub id: String,
    pub status: Status,
    /// The worst alert's, raised one level when the alerts span two of the mission families
    /// (escalation, secrets, revoked) and to critical when they span all three.
    pub severity: Severity,
    pub title: String,
    pub summary: String,
    pub cluster: String,
    pub first_time: String,
    pub last_time: String,
    #[serde(skip)]
    pub first_micros: i64,
    #[serde(skip)]
    pub last_micros: i64,
    /// Who: every username, credential id and impersonated identity that joined its alerts.
    pub identities: Identities,
    /// Detector families its alerts come from.
    pub families: Vec<String>,
    pub alerts: Vec<AlertRef>,
    pub alerts_total: u64,
    /// The identities' requests while the incident was open, the read-only ones folded.
    pub timeline: Timeline,
    pub blast_radius: BlastRadius,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Identities {
    pub usernames: Vec<String>,
    pub credential_ids: Vec<String>,
    pub impersonated: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertRef {
    pub id: String,
    pub rule: String,
    pub severity: Severity,
    pub time: String,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Timeline {
    /// Requests recorded (a folded step counts all it stands for).
    pub total: u64,
    pub steps: Vec<Step>,
}

/// One request, or a run of the same read-only request folded into one line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Step {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
    #[serde(skip)]
    pub micros: i64,
    pub verb: String,
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_ip: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub audit_id: String,
    /// Requests this line stands for (more than one when folded).
    pub count: u64,
    /// Rules that alerted on this request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct BlastRadius {
    pub secrets_read: Capped,
    /// Sessions into pods: exec, attach, port-forward, proxy.
    pub sessions: Capped,
    pub created: Capped,
    pub changed: Capped,
    pub deleted: Capped,
    pub namespaces: Capped,
    pub source_ips: Capped,
    pub user_agents: Capped,
    pub credentials: Capped,
}

pub(super) fn ocsf(i: &Incident) -> serde_json::Value {
    use serde_json::json;
    let (activity_id, activity_name) = match i.status {
        Status::Open => (1, "Create"),
        Status::Updated => (2, "Update"),
        Status::Closed => (3, "Close"),
    };
    let millis = |t: &str| crate::event::time::parse_rfc3339_micros(t).map(|t| t / 1000);
    json!({
        "class_uid": 2005,
        "class_name": "Incident Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 200500 + activity_id,
        "severity_id": super::ocsf::severity_id(i.severity),
        "severity": i.severity.name(),
        "status_id": 1,
        "status": "New",
        "time": i.last_micros / 1000,
        "start_time": millis(&i.first_time),
        "end_time": millis(&i.last_time),
        "desc": i.summary,
        "metadata": {
            "version": "1.1.0",
            "uid": i.id,
            "profiles": ["incident"],
            "product": {"name": "audithound", "vendor_name": "audithound", "version": env!("CARGO_PKG_VERSION")},
        },
        "finding_info_list": i.alerts.iter().map(|a| json!({
            "uid": a.id,
            "title": a.summary,
            "analytic": {"uid": a.rule, "type_id": 1, "type": "Rule"},
            "created_time": millis(&a.time),
        })).collect::<Vec<_>>(),
        "actor": {"user": {"name": i.identities.usernames.first()}},
        "cloud": {"provider": "kubernetes", "account": {"uid": i.cluster}},
        "unmapped": {
            "title": i.title,
            "identities": i.identities,
            "families": i.families,
            "timeline": i.timeline,
            "blast_radius": i.blast_radius,
        },
    })
}
