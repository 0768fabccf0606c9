//! OCSF 1.1 Detection Finding (class 2004) for SIEMs that speak OCSF.

use super::{Alert, Status};
use crate::rules::Severity;
use serde_json::{json, Value};

const CLASS_UID: u64 = 2004;

/// The finding's lifecycle as OCSF activities: an alert about one moment, or an episode's
/// opening, is created; an episode's later reports update it, the last one closes it (same
/// `finding_info.uid`, so a SIEM upserts).
fn activity(status: Option<Status>) -> (u64, &'static str) {
    match status {
        None | Some(Status::Open) => (1, "Create"),
        Some(Status::Updated) => (2, "Update"),
        Some(Status::Closed) => (3, "Close"),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn millis(time: &str) -> Option<i64> {
    crate::event::time::parse_rfc3339_micros(time).map(|t| t / 1000)
}

pub(super) fn severity_id(s: Severity) -> u64 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

pub fn detection_finding(a: &Alert) -> Value {
    let attacks: Vec<Value> = a
        .rule
        .mitre
        .iter()
        .map(|t| json!({"technique": {"uid": t}}))
        .collect();
    let mut resource = json!({
        "type": a.target.resource,
        "name": a.target.name,
        "namespace": a.target.namespace,
        "group": {"name": a.target.api_group},
        "data": {"verb": a.target.verb, "subresource": a.target.subresource, "request_uri": a.target.request_uri},
    });
    if a.target.name.is_empty() {
        resource["name"] = Value::Null;
    }
    let (activity_id, activity_name) = activity(a.status);
    let episode = a.episode.as_ref();
    let first_seen = episode.and_then(|e| millis(&e.first_time));
    let last_seen = episode.and_then(|e| millis(&e.last_time));
    json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "severity_id": severity_id(a.rule.severity),
        "severity": a.rule.severity.name(),
        "status_id": 1,
        "status": "New",
        "time": a.time_micros / 1000,
        "message": a.summary,
        "metadata": {
            "version": "1.1.0",
            "uid": a.id,
            "product": {"name": "audithound", "vendor_name": "audithound", "version": env!("CARGO_PKG_VERSION")},
        },
        "finding_info": {
            "uid": a.id,
            "title": a.rule.title,
            "desc": a.summary,
            "analytic": {"uid": a.rule.id, "name": a.rule.title, "type_id": 1, "type": "Rule"},
            "attacks": attacks,
            "first_seen_time": first_seen,
            "last_seen_time": last_seen,
            "related_events": a.evidence.audit_ids.iter().map(|id| json!({"uid": id})).collect::<Vec<_>>(),
        },
        "actor": {
            "user": {
                "name": a.actor.username,
                "uid": a.actor.uid,
                "groups": a.actor.groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
                "credential_uid": a.actor.credential_id,
            },
            "invoked_by": a.actor.impersonated_user,
        },
        "src_endpoint": {"ip": a.actor.source_ips.first()},
        "http_request": {"user_agent": a.actor.user_agent},
        "resources": [resource],
        "cloud": {"provider": "kubernetes", "account": {"uid": a.cluster}},
        "remediation": {"desc": a.remediation},
        "unmapped": {
            "status_code": a.outcome.status_code,
            "decision": a.outcome.decision,
            "evidence_count": a.evidence.count,
            "episode": episode,
        },
    })
}

/// OCSF leaves out what is unknown: attributes that are null, and objects left empty by that
/// (`"invoked_by": null`, `"src_endpoint": {"ip": null}`), go.
pub fn pruned(mut v: Value) -> Value {
    fn prune(v: &mut Value) -> bool {
        match v {
            Value::Null => false,
            Value::Object(map) => {
                map.retain(|_, item| prune(item));
                !map.is_empty()
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    prune(item);
                }
                true
            }
            _ => true,
        }
    }
    prune(&mut v);
    v
}
