//! Record → events: detects the envelope of one input record and hands each audit event in it
//! to a callback, or says precisely why it could not.
//!
//! Callback style keeps the borrowed events valid: an event may borrow from the record itself or
//! from a buffer this function owns (a JSON-encoded `properties.log` string, a mapped GKE entry).

use super::{AuditEvent, JStr};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::fmt;

/// The shape a record arrived in (counted in the summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// One `audit.k8s.io` Event per record (the log backend), v1 or v1beta1.
    Native,
    /// An `EventList` (the webhook backend's batch).
    EventList,
    /// Azure diagnostic settings / Event Hub export (`properties.log`).
    Aks,
    /// Google Cloud Audit Logs `LogEntry` with a `protoPayload`.
    Gke,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::EventList => "eventlist",
            Format::Aks => "aks",
            Format::Gke => "gke",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Cluster name used when the envelope does not name one.
    pub default_cluster: String,
}

/// Why a record (or one item of a batch) was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    InvalidUtf8,
    /// The JSON ended early: a line cut by rotation or a crash.
    Truncated(String),
    InvalidJson(String),
    /// Valid JSON, but a field has the wrong type (e.g. `"user": 7`).
    WrongType(String),
    /// Valid JSON that is not an audit event (no `auditID`, unknown `kind`, unknown envelope).
    NotAuditEvent(String),
    /// An audit event without a usable timestamp: it cannot be placed in event time.
    BadTimestamp(String),
}

impl DecodeError {
    /// Stable reason key used in counters, summaries and the dead-letter output.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::Truncated(_) => "truncated_json",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::WrongType(_) => "wrong_type",
            DecodeError::NotAuditEvent(_) => "not_audit_event",
            DecodeError::BadTimestamp(_) => "bad_timestamp",
        }
    }

    fn from_json(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Eof => DecodeError::Truncated(e.to_string()),
            Category::Data => DecodeError::WrongType(e.to_string()),
            Category::Syntax | Category::Io => DecodeError::InvalidJson(e.to_string()),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidUtf8 => f.write_str("record is not valid UTF-8"),
            DecodeError::Truncated(m)
            | DecodeError::InvalidJson(m)
            | DecodeError::WrongType(m)
            | DecodeError::NotAuditEvent(m)
            | DecodeError::BadTimestamp(m) => f.write_str(m),
        }
    }
}

/// What the decoder found in a record.
pub enum Item<'e, 'a> {
    Event(&'e AuditEvent<'a>, Format),
    Rejected(DecodeError),
    /// A well-formed record that is deliberately not analysed (e.g. an AKS `kube-apiserver`
    /// log line beside the audit categories); the string says what it was.
    Skipped(&'static str),
}

/// Decodes one record (a line, or a whole JSON document) and calls `f` once per item.
pub fn decode_record(bytes: &[u8], opts: &DecodeOptions, f: &mut dyn FnMut(Item<'_, '_>)) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return f(Item::Rejected(DecodeError::InvalidUtf8));
    };
    let text = text.trim_ascii();
    match text.as_bytes().first() {
        Some(b'{') => decode_object(text, Format::Native, opts, f),
        Some(b'[') => decode_array(text, Format::EventList, opts, f),
        Some(_) => f(Item::Rejected(DecodeError::InvalidJson(
            "record does not start with '{' or '['".into(),
        ))),
        None => {}
    }
}

fn decode_array(text: &str, format: Format, opts: &DecodeOptions, f: &mut dyn FnMut(Item)) {
    match serde_json::from_str::<Vec<&RawValue>>(text) {
        Ok(items) => items
            .into_iter()
            .for_each(|item| decode_object(item.get(), format, opts, f)),
        Err(e) => f(Item::Rejected(DecodeError::from_json(&e))),
    }
}

/// `format` is the shape of the container the object was found in (native for a bare line).
fn decode_object(text: &str, format: Format, opts: &DecodeOptions, f: &mut dyn FnMut(Item)) {
    let mut ev: AuditEvent = match serde_json::from_str(text) {
        Ok(ev) => ev,
        Err(e) => return f(Item::Rejected(DecodeError::from_json(&e))),
    };
    if let Some(items) = ev.envelope_items {
        return decode_array(items.get(), Format::EventList, opts, f);
    }
    if let Some(records) = ev.envelope_records {
        return decode_array(records.get(), Format::Aks, opts, f);
    }
    if let Some(props) = ev.envelope_properties {
        return decode_aks(&ev, props, opts, f);
    }
    if let Some(payload) = ev.envelope_proto_payload {
        return decode_gke(text, payload, opts, f);
    }
    match ev.kind.as_deref() {
        None | Some("Event") => {}
        Some(other) => {
            return f(Item::Rejected(DecodeError::NotAuditEvent(format!(
                "kind {other:?} is not an audit Event"
            ))))
        }
    }
    if ev.audit_id.is_none() {
        return f(Item::Rejected(DecodeError::NotAuditEvent(
            "object has no auditID and no known envelope (native, EventList, AKS, GKE)".into(),
        )));
    }
    if ev.event_time().is_none() {
        return f(Item::Rejected(DecodeError::BadTimestamp(
            "no parseable stageTimestamp, requestReceivedTimestamp or timestamp".into(),
        )));
    }
    if ev.cluster.is_none() {
        ev.cluster = Some(JStr(Cow::Borrowed(opts.default_cluster.as_str())));
    }
    f(Item::Event(&ev, format));
}

/// Azure: `{"category": "kube-audit", "properties": {"log": <event object or JSON string>}}`.
fn decode_aks(env: &AuditEvent, props: &RawValue, opts: &DecodeOptions, f: &mut dyn FnMut(Item)) {
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
    let cluster = env
        .envelope_resource_id
        .as_deref()
        .and_then(|id| id.rsplit('/').find(|s| !s.is_empty()))
        .map(str::to_ascii_lowercase);
    let opts = match cluster {
        Some(c) => Cow::Owned(DecodeOptions { default_cluster: c }),
        None => Cow::Borrowed(opts),
    };
    // `properties.log` is an object in diagnostic settings and a JSON string in some exports.
    let inner: Cow<str> = if log.get().starts_with('"') {
        match serde_json::from_str::<JStr>(log.get()) {
            Ok(s) => s.0,
            Err(e) => return f(Item::Rejected(DecodeError::from_json(&e))),
        }
    } else {
        Cow::Borrowed(log.get())
    };
    decode_object(&inner, Format::Aks, &opts, f);
}

/// Google Cloud Audit Logs `LogEntry` for `k8s.io`, mapped onto a native event. What GKE does not
/// record (groups, credential id, stage) is left absent rather than invented.
fn decode_gke(text: &str, payload: &RawValue, opts: &DecodeOptions, f: &mut dyn FnMut(Item)) {
    match gke_to_native(text, payload, opts) {
        Ok(Some((native, cluster))) => {
            let opts = DecodeOptions {
                default_cluster: cluster,
            };
            decode_object(&native, Format::Gke, &opts, f)
        }
        Ok(None) => f(Item::Skipped("gke_non_k8s_service")),
        Err(e) => f(Item::Rejected(e)),
    }
}

fn gke_to_native(
    entry_text: &str,
    payload: &RawValue,
    opts: &DecodeOptions,
) -> Result<Option<(String, String)>, DecodeError> {
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
    let cluster = s(&entry, &["resource", "labels", "cluster_name"])
        .unwrap_or_else(|| opts.default_cluster.clone());
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
    Ok(Some((event.to_string(), cluster)))
}

/// `io.k8s.core.v1.pods.exec.create` + `core/v1/namespaces/ns/pods/name/exec` → objectRef.
fn gke_object_ref(method: &str, resource_name: &str) -> Value {
    let parts: Vec<&str> = resource_name.split('/').filter(|s| !s.is_empty()).collect();
    // resourceName: [group/]version[/namespaces/ns]/resource[/name[/subresource]]
    let (group, version, rest) = match parts.as_slice() {
        [g, v, rest @ ..] if v.starts_with('v') && !g.starts_with('v') => (*g, *v, rest),
        [v, rest @ ..] if v.starts_with('v') => ("core", *v, rest),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(line: &str) -> (Vec<(String, Format, String)>, Vec<&'static str>) {
        let opts = DecodeOptions {
            default_cluster: "dflt".into(),
        };
        let (mut events, mut errs) = (Vec::new(), Vec::new());
        decode_record(line.as_bytes(), &opts, &mut |item| match item {
            Item::Event(ev, fmt) => events.push((
                ev.audit_id.as_deref().unwrap_or("").to_owned(),
                fmt,
                ev.cluster.as_deref().unwrap_or("").to_owned(),
            )),
            Item::Rejected(e) => errs.push(e.reason()),
            Item::Skipped(why) => errs.push(why),
        });
        (events, errs)
    }

    const EV: &str = r#"{"kind":"Event","auditID":"a1","stage":"ResponseComplete","verb":"get","user":{"username":"u"},"stageTimestamp":"2025-01-01T00:00:00Z"}"#;

    #[test]
    fn native_line() {
        let (ev, errs) = decode_all(EV);
        assert_eq!(ev, vec![("a1".into(), Format::Native, "dflt".into())]);
        assert!(errs.is_empty());
    }

    #[test]
    fn event_list_and_bare_array() {
        let list = format!(r#"{{"kind":"EventList","items":[{EV},{EV}]}}"#);
        assert_eq!(decode_all(&list).0.len(), 2);
        assert_eq!(decode_all(&format!("[{EV}]")).0[0].1, Format::EventList);
    }

    #[test]
    fn aks_object_and_string_logs() {
        let obj = format!(
            r#"{{"category":"kube-audit","resourceId":"/S/1/MANAGEDCLUSTERS/PROD-AKS","properties":{{"log":{EV}}}}}"#
        );
        assert_eq!(
            decode_all(&obj).0,
            vec![("a1".into(), Format::Aks, "prod-aks".into())]
        );
        let s = format!(
            r#"{{"category":"kube-audit-admin","properties":{{"log":{}}}}}"#,
            serde_json::to_string(EV).unwrap()
        );
        assert_eq!(decode_all(&s).0[0].0, "a1");
        let other = r#"{"category":"kube-apiserver","properties":{"log":"I0101 started"}}"#;
        assert_eq!(decode_all(other).1, vec!["aks_non_audit_category"]);
    }

    #[test]
    fn gke_entry_maps_onto_event() {
        let line = r#"{"protoPayload":{"serviceName":"k8s.io","methodName":"io.k8s.core.v1.pods.exec.create","resourceName":"core/v1/namespaces/prod/pods/web-1/exec","authenticationInfo":{"principalEmail":"eve@example.com"},"requestMetadata":{"callerIp":"1.2.3.4"},"status":{"code":7}},"insertId":"g1","resource":{"labels":{"cluster_name":"gke-1"}},"timestamp":"2025-01-01T00:00:00Z"}"#;
        let opts = DecodeOptions::default();
        let mut seen = false;
        decode_record(line.as_bytes(), &opts, &mut |item| {
            let Item::Event(ev, Format::Gke) = item else {
                panic!("not an event")
            };
            seen = true;
            assert_eq!(ev.verb.as_deref(), Some("create"));
            assert_eq!(ev.username(), "eve@example.com");
            assert_eq!(ev.status_code(), Some(403));
            let o = ev.object_ref.as_ref().unwrap();
            assert_eq!(o.resource.as_deref(), Some("pods"));
            assert_eq!(o.subresource.as_deref(), Some("exec"));
            assert_eq!(o.namespace.as_deref(), Some("prod"));
            assert_eq!(o.name.as_deref(), Some("web-1"));
            assert_eq!(ev.cluster.as_deref(), Some("gke-1"));
        });
        assert!(seen);
    }

    #[test]
    fn bad_records_are_classified() {
        assert_eq!(decode_all(&EV[..40]).1, vec!["truncated_json"]);
        assert_eq!(decode_all("{\"a\":}").1, vec!["invalid_json"]);
        assert_eq!(
            decode_all(r#"{"auditID":"x","user":7}"#).1,
            vec!["wrong_type"]
        );
        assert_eq!(
            decode_all(r#"{"hello":"world"}"#).1,
            vec!["not_audit_event"]
        );
        assert_eq!(
            decode_all(r#"{"auditID":"x","stageTimestamp":"yesterday"}"#).1,
            vec!["bad_timestamp"]
        );
        assert_eq!(decode_all("hello").1, vec!["invalid_json"]);
        let mut invalid = EV.as_bytes().to_vec();
        invalid[30] = 0xff;
        let opts = DecodeOptions::default();
        let mut reasons = Vec::new();
        decode_record(&invalid, &opts, &mut |i| {
            if let Item::Rejected(e) = i {
                reasons.push(e.reason())
            }
        });
        assert_eq!(reasons, vec!["invalid_utf8"]);
    }
}
