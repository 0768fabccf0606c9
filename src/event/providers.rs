//! What managed Kubernetes actually exports, unwrapped onto the native event:
//! AKS diagnostic records, GKE Cloud Audit Logs entries, EKS CloudWatch envelopes and ACK's flat
//! SLS records. Each provider names its cluster in its own way; that name wins over the default.

use super::decode::{decode_object, Ctx, DecodeError, Format, Item, Sink};
use super::{AuditEvent, JStr};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Azure: `{"category": "kube-audit", "properties": {"log": <event object or JSON string>}}`.
pub(super) fn decode_aks(env: &AuditEvent, props: &RawValue, ctx: Ctx, f: &mut Sink) {
    let category = env.envelope_category.as_deref().unwrap_or("");
    if !matches!(category, "kube-audit" | "kube-audit-admin") {
        return f(Item::Skipped("aks_non_audit_category"));
    }
    #[derive(Deserialize)]
    struct Props<'a> {
        #[serde(borrow)]
        log: Option<&'a RawValue>,
    }
    let log = match serde_json::from_str::<Props>(props.get()) {
        Ok(Props { log: Some(log) }) => log,
        Ok(_) => {
            return f(Item::Rejected(DecodeError::NotAuditEvent(
                "AKS record without properties.log".into(),
            )))
        }
        Err(e) => return f(Item::Rejected(DecodeError::from_json(&e))),
    };
    // The resource id ends in `/MANAGEDCLUSTERS/<name>`; Azure ids are case-insensitive.
    let cluster = env
        .envelope_resource_id
        .as_deref()
        .and_then(|id| id.rsplit('/').find(|s| !s.is_empty()))
        .map(str::to_ascii_lowercase);
    let cluster = cluster.as_deref().unwrap_or(ctx.cluster);
    // `properties.log` is an object in diagnostic settings and a JSON string in some exports.
    let inner: Cow<str> = if log.get().starts_with('"') {
        match serde_json::from_str::<JStr>(log.get()) {
            Ok(s) => s.0,
            Err(e) => return f(Item::Rejected(DecodeError::from_json(&e))),
        }
    } else {
        Cow::Borrowed(log.get())
    };
    decode_object(&inner, Format::Aks, Ctx { cluster, ..ctx }, f);
}

/// Google Cloud Audit Logs `LogEntry` for `k8s.io`, mapped onto a native event. What GKE does not
/// record (groups, credential id, stage) is left absent rather than invented.
pub(super) fn decode_gke(text: &str, payload: &RawValue, ctx: Ctx, f: &mut Sink) {
    match gke_to_native(text, payload) {
        Ok(Some((native, cluster))) => {
            let cluster = cluster.as_deref().unwrap_or(ctx.cluster);
            decode_object(&native, Format::Gke, Ctx { cluster, ..ctx }, f)
        }
        Ok(None) => f(Item::Skipped("gke_non_k8s_service")),
        Err(e) => f(Item::Rejected(e)),
    }
}

type Mapped = (String, Option<String>);

fn gke_to_native(entry_text: &str, payload: &RawValue) -> Result<Option<Mapped>, DecodeError> {
    let entry: Value = serde_json::from_str(entry_text).map_err(|e| DecodeError::from_json(&e))?;
    let p: Value = serde_json::from_str(payload.get()).map_err(|e| DecodeError::from_json(&e))?;
    let s = |v: &Value, path: &[&str]| -> Option<String> {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if s(&p, &["serviceName"]).as_deref() != Some("k8s.io") {
        return Ok(None);
    }
    let method = s(&p, &["methodName"]).unwrap_or_default();
    let resource_name = s(&p, &["resourceName"]).unwrap_or_default();
    let object_ref = gke_object_ref(&method, &resource_name);
    let verb = method.rsplit('.').next().unwrap_or("").to_owned();
    let grpc = p
        .pointer("/status/code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let timestamp = s(&entry, &["timestamp"])
        .ok_or_else(|| DecodeError::BadTimestamp("GKE LogEntry without timestamp".into()))?;
    let audit_id = s(&entry, &["insertId"])
        .or_else(|| s(&entry, &["operation", "id"]))
        .ok_or_else(|| DecodeError::NotAuditEvent("GKE LogEntry without insertId".into()))?;
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "level": if p.get("request").is_some() { "RequestResponse" } else { "Metadata" },
        "verb": verb,
        "requestURI": format!("/{resource_name}"),
        "user": {"username": s(&p, &["authenticationInfo", "principalEmail"])},
        "sourceIPs": s(&p, &["requestMetadata", "callerIp"]).into_iter().collect::<Vec<_>>(),
        "userAgent": s(&p, &["requestMetadata", "callerSuppliedUserAgent"]),
        "objectRef": object_ref,
        "responseStatus": {"code": grpc_to_http(grpc), "message": s(&p, &["status", "message"])},
        "stageTimestamp": timestamp,
        "annotations": entry.get("labels").cloned().unwrap_or(Value::Null),
    });
    if let Some(req) = p.get("request") {
        event["requestObject"] = req.clone();
    }
    if let Some(resp) = p.get("response") {
        event["responseObject"] = resp.clone();
    }
    let cluster = s(&entry, &["resource", "labels", "cluster_name"]);
    Ok(Some((event.to_string(), cluster)))
}

/// `io.k8s.core.v1.pods.exec.create` + `core/v1/namespaces/ns/pods/name/exec` → objectRef.
fn gke_object_ref(method: &str, resource_name: &str) -> Value {
    let parts: Vec<&str> = resource_name.split('/').filter(|s| !s.is_empty()).collect();
    // resourceName: [group/]version[/namespaces/ns]/resource[/name[/subresource]]
    let is_version = |s: &str| {
        s.strip_prefix('v')
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    let (group, version, rest) = match parts.as_slice() {
        [g, v, rest @ ..] if is_version(v) && !is_version(g) => (*g, *v, rest),
        [v, rest @ ..] if is_version(v) => ("core", *v, rest),
        _ => ("", "", &parts[..0]),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let resource = rest.first().copied().unwrap_or_else(|| {
        // Non-resource or unparsable: fall back to the method's resource segment.
        method.rsplit('.').nth(1).unwrap_or("")
    });
    json!({
        "resource": resource,
        "namespace": namespace,
        "name": rest.get(1),
        "subresource": rest.get(2),
        "apiGroup": if group == "core" { "" } else { group },
        "apiVersion": version,
    })
}

fn grpc_to_http(code: i64) -> i64 {
    match code {
        0 => 200,
        3 | 9 | 11 => 400,
        16 => 401,
        7 => 403,
        5 => 404,
        6 | 10 => 409,
        8 => 429,
        1 => 499,
        12 => 501,
        14 => 503,
        4 => 504,
        _ => 500,
    }
}

/// CloudWatch marks events it cut at 256 KB with this suffix.
const CLOUDWATCH_TRUNCATED: &str = "[Truncated...]";

/// A CloudWatch Logs subscription batch:
/// `{"messageType": "DATA_MESSAGE", "logGroup": "/aws/eks/<cluster>/cluster", "logEvents": [{"message": "<event JSON>"}]}`.
pub(super) fn decode_eks_batch(env: &AuditEvent, ctx: Ctx, f: &mut Sink) {
    if env.envelope_message_type.as_deref() == Some("CONTROL_MESSAGE") {
        return f(Item::Skipped("eks_control_message"));
    }
    let cluster = env
        .envelope_log_group
        .as_deref()
        .and_then(eks_cluster_from_log_group);
    let ctx = Ctx {
        cluster: cluster.unwrap_or(ctx.cluster),
        ..ctx
    };
    #[derive(Deserialize)]
    struct LogEvent<'a> {
        #[serde(borrow)]
        message: Option<JStr<'a>>,
    }
    let Some(raw) = env.envelope_log_events else {
        return f(Item::Rejected(DecodeError::NotAuditEvent(
            "CloudWatch record without logEvents".into(),
        )));
    };
    match serde_json::from_str::<Vec<LogEvent>>(raw.get()) {
        Ok(events) => {
            for e in events {
                match e.message {
                    Some(m) => decode_eks_message(&m, Format::Eks, ctx, f),
                    None => f(Item::Rejected(DecodeError::NotAuditEvent(
                        "CloudWatch log event without message".into(),
                    ))),
                }
            }
        }
        Err(e) => f(Item::Rejected(DecodeError::from_json(&e))),
    }
}

/// One CloudWatch message: an event as a JSON string, possibly cut by CloudWatch.
pub(super) fn decode_eks_message(message: &str, format: Format, ctx: Ctx, f: &mut Sink) {
    let message = message.trim_ascii();
    if message.ends_with(CLOUDWATCH_TRUNCATED) {
        return f(Item::Rejected(DecodeError::TruncatedUpstream(format!(
            "CloudWatch truncated this {}-byte event ({CLOUDWATCH_TRUNCATED}); raise the log event size or read the original",
            message.len()
        ))));
    }
    decode_object(message, format, ctx, f)
}

/// `/aws/eks/<cluster>/cluster` → `<cluster>`.
fn eks_cluster_from_log_group(group: &str) -> Option<&str> {
    let mut parts = group.split('/').filter(|s| !s.is_empty());
    (parts.next()? == "aws" && parts.next()? == "eks")
        .then(|| parts.next())
        .flatten()
}

/// S3 exports of CloudWatch Logs prefix each event with its ingestion time:
/// `2025-03-04T09:00:40.000Z {"kind":"Event",…}`.
pub(super) fn strip_timestamp_prefix(line: &str) -> Option<&str> {
    let (stamp, rest) = line.split_once(' ')?;
    super::time::parse_rfc3339_micros(stamp)?;
    let rest = rest.trim_ascii_start();
    rest.starts_with('{').then_some(rest)
}

/// Keys of an Event that ACK's SLS export stores as JSON-encoded strings.
const ACK_ENCODED: &[&str] = &[
    "user",
    "impersonatedUser",
    "objectRef",
    "responseStatus",
    "annotations",
    "sourceIPs",
    "requestObject",
    "responseObject",
    "metadata",
];

/// ACK: a flat SLS record whose nested objects are JSON-encoded strings. Rebuilds the native
/// event (decoding each string once) and finds the cluster id. None when it is not that shape.
pub(super) fn ack_to_native(text: &str, ctx: Ctx) -> Option<(String, Option<String>)> {
    let fields: BTreeMap<JStr, &RawValue> = serde_json::from_str(text).ok()?;
    if !fields.contains_key("auditID") {
        return None;
    }
    let mut encoded_seen = false;
    let mut out = String::with_capacity(text.len());
    out.push('{');
    for (key, raw) in &fields {
        if key.starts_with("__") {
            continue; // SLS metadata (__topic__, __source__, __tag__:…)
        }
        let value = raw.get();
        if !out.ends_with('{') {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&**key).ok()?);
        out.push(':');
        let inner = value
            .starts_with('"')
            .then(|| serde_json::from_str::<JStr>(value).ok())
            .flatten()
            .filter(|s| ACK_ENCODED.contains(&&**key) && s.trim_start().starts_with(['{', '[']));
        match inner {
            Some(s) => {
                encoded_seen = true;
                out.push_str(&s);
            }
            None => out.push_str(value),
        }
    }
    out.push('}');
    if !encoded_seen {
        return None;
    }
    Some((out, ack_cluster(&fields, ctx)))
}

/// The cluster of an ACK record: a configured field, else the SLS logstore or project name
/// (`audit-<clusterid>`, `k8s-log-<clusterid>`).
fn ack_cluster(fields: &BTreeMap<JStr, &RawValue>, ctx: Ctx) -> Option<String> {
    let text = |k: &str| {
        fields
            .get(k)
            .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
    };
    if let Some(field) = &ctx.opts.cluster_field {
        if let Some(v) = text(field) {
            return Some(v);
        }
    }
    ["__logstore__", "logstore", "__project__", "project"]
        .iter()
        .filter_map(|k| text(k))
        .find_map(|name| {
            ["audit-", "k8s-log-"]
                .iter()
                .find_map(|p| name.strip_prefix(p).map(str::to_owned))
        })
}
