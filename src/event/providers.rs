//! What managed Kubernetes actually exports, unwrapped onto the native event:
//! AKS diagnostic records, GKE Cloud Audit Logs entries, EKS CloudWatch envelopes and ACK's flat
//! SLS records. Each provider names its cluster in its own way; that name wins over the default.

use super::decode::{
    decode_object_with, finish_event, finish_owned, Ctx, DecodeError, Decoded, Format, Item,
    OwnedSink, Repair, Repairs, Sink,
};
use super::jstr::{unescape_literal, unescape_to_quote};
use super::time::{format_micros, parse_export_json, parse_rfc3339_micros};
use super::{AuditEvent, JStr, ObjectRef, ResponseStatus, UserInfo};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Rejects the record as not an audit event, saying why.
fn not_audit_event(g: &mut OwnedSink<'_, '_>, why: &str) {
    g(Decoded::Item(Item::Rejected(DecodeError::NotAuditEvent(
        why.into(),
    ))))
}

/// AKS `properties`: the event (object or JSON string) is in `log`, kept raw: an object is then
/// parsed in place (its text stays in the batch, so detectors can point at it), a string is
/// unescaped by a byte loop faster than serde's per-escape path, then parsed.
#[derive(Debug, Deserialize)]
pub struct AksProperties<'a> {
    #[serde(borrow)]
    log: Option<&'a RawValue>,
    /// A Defender XDR `CloudAuditEvents` row: the event with capitalised keys.
    #[serde(rename = "RawEventData", borrow)]
    raw_event_data: Option<&'a RawValue>,
    #[serde(rename = "AzureResourceId", borrow)]
    azure_resource_id: Option<JStr<'a>>,
}

/// One entry of a CloudWatch Logs batch's `logEvents`.
#[derive(Debug, Deserialize)]
pub struct CloudWatchEvent<'a> {
    /// Unescaped by serde in the same pass that finds the batch's structure.
    #[serde(borrow)]
    message: Option<JStr<'a>>,
    /// Ingestion time, epoch milliseconds.
    timestamp: Option<i64>,
}

/// The cluster named at the end of an Azure resource id (`…/managedClusters/<name>`); Azure ids
/// are case-insensitive.
fn azure_cluster<'a>(id: Option<&str>, ctx: Ctx<'a>) -> Option<&'a str> {
    id.and_then(|id| id.rsplit('/').find(|s| !s.is_empty()))
        .map(|name| ctx.keep(name.to_ascii_lowercase()))
}

/// Azure: `{"category": "kube-audit", "properties": {"log": <event object or JSON string>}}`.
/// `unescaped_log` is the event text when the caller already took it out of the string.
pub(super) fn decode_aks<'a>(
    mut env: AuditEvent<'a>,
    unescaped_log: Option<&'a str>,
    ctx: Ctx<'a>,
    g: &mut OwnedSink<'_, 'a>,
) {
    let ctx = Ctx {
        envelope_time: env.export_time(),
        ..ctx
    };
    let defender = env.envelope_properties.as_ref().and_then(|p| {
        p.raw_event_data
            .map(|raw| (raw, p.azure_resource_id.clone()))
    });
    if let (Some((raw, resource_id)), false) = (defender, ctx.opts.strict) {
        return decode_defender(raw, resource_id, ctx, g);
    }
    let category = env.envelope_category.as_deref().unwrap_or("");
    if !matches!(category, "kube-audit" | "kube-audit-admin") {
        return g(Decoded::Item(Item::Skipped("aks_non_audit_category")));
    }
    // The resource id ends in `/MANAGEDCLUSTERS/<name>`.
    let cluster = azure_cluster(env.envelope_resource_id.as_deref(), ctx);
    let ctx = Ctx {
        cluster: cluster.unwrap_or(ctx.cluster),
        ..ctx
    };
    if let Some(json) = unescaped_log {
        return decode_object_with(json, Format::Aks, ctx, g);
    }
    // `properties.log` is an object in diagnostic settings and a JSON string in some exports.
    let log = env.envelope_properties.take().and_then(|p| p.log);
    match log.map(RawValue::get) {
        Some(text) if text.starts_with('{') => decode_object_with(text, Format::Aks, ctx, g),
        Some(text) if text.starts_with('"') => match unescape_literal(text) {
            Some(json) => decode_object_with(ctx.keep(json), Format::Aks, ctx, g),
            None => not_audit_event(g, "AKS properties.log is not a valid JSON string"),
        },
        _ => not_audit_event(g, "AKS record without an event in properties.log"),
    }
}

/// Defender XDR's `RawEventData`: an AKS audit event with its top-level keys capitalised
/// (`AuditID`, `ObjectRef`, `User`…); the objects inside keep the API server's keys.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DefenderEvent<'a> {
    #[serde(rename = "AuditID", borrow)]
    audit_id: Option<JStr<'a>>,
    #[serde(borrow)]
    api_version: Option<JStr<'a>>,
    #[serde(borrow)]
    stage: Option<JStr<'a>>,
    #[serde(borrow)]
    level: Option<JStr<'a>>,
    #[serde(borrow)]
    verb: Option<JStr<'a>>,
    #[serde(rename = "RequestURI", borrow)]
    request_uri: Option<JStr<'a>>,
    #[serde(borrow)]
    user: Option<UserInfo<'a>>,
    #[serde(borrow)]
    impersonated_user: Option<UserInfo<'a>>,
    #[serde(rename = "SourceIPs", borrow)]
    source_ips: Option<&'a RawValue>,
    #[serde(borrow)]
    user_agent: Option<JStr<'a>>,
    #[serde(borrow)]
    object_ref: Option<ObjectRef<'a>>,
    #[serde(borrow)]
    response_status: Option<ResponseStatus<'a>>,
    #[serde(borrow)]
    request_object: Option<&'a RawValue>,
    #[serde(borrow)]
    response_object: Option<&'a RawValue>,
    #[serde(borrow)]
    request_received_timestamp: Option<JStr<'a>>,
    #[serde(borrow)]
    stage_timestamp: Option<JStr<'a>>,
    #[serde(borrow)]
    annotations: Option<&'a RawValue>,
    #[serde(borrow)]
    azure_resource_id: Option<JStr<'a>>,
}

/// A Defender XDR `CloudAuditEvents` row (`properties.RawEventData`), mapped onto the event.
/// Rows about other clouds' control planes carry no Kubernetes request: skipped.
fn decode_defender<'a>(
    raw: &'a RawValue,
    resource_id: Option<JStr<'a>>,
    ctx: Ctx<'a>,
    g: &mut OwnedSink<'_, 'a>,
) {
    let d: DefenderEvent = match serde_json::from_str(raw.get()) {
        Ok(d) => d,
        Err(e) => {
            return g(Decoded::Item(Item::Rejected(
                match DecodeError::from_json(&e) {
                    DecodeError::WrongType(m) => {
                        DecodeError::WrongType(format!("Defender RawEventData: {m}"))
                    }
                    other => other,
                },
            )))
        }
    };
    if d.verb.is_none() {
        return g(Decoded::Item(Item::Skipped("cloud_audit_non_kubernetes")));
    }
    let cluster = azure_cluster(
        d.azure_resource_id.as_deref().or(resource_id.as_deref()),
        ctx,
    );
    let mut repairs = Repairs::default();
    repairs.add(Repair::RenamedKeys);
    let ev = AuditEvent {
        kind: Some(JStr::borrowed("Event")),
        api_version: d.api_version,
        audit_id: d.audit_id,
        stage: d.stage,
        level: d.level,
        verb: d.verb,
        request_uri: d.request_uri,
        user: d.user.unwrap_or_default(),
        impersonated_user: d.impersonated_user,
        source_ips: d.source_ips,
        user_agent: d.user_agent,
        object_ref: d.object_ref,
        response_status: d.response_status,
        request_object: d.request_object,
        response_object: d.response_object,
        request_received_timestamp: d.request_received_timestamp,
        stage_timestamp: d.stage_timestamp,
        annotations: d.annotations,
        repairs,
        ..AuditEvent::default()
    };
    let ctx = Ctx {
        cluster: cluster.unwrap_or(ctx.cluster),
        ..ctx
    };
    finish_owned(ev, Format::Aks, ctx, g)
}

/// The AKS string export's fast path: serde would scan the whole `properties.log` string escape
/// by escape just to find its end, and then it is unescaped again. Instead the string found by
/// [`find_encoded`] at `quote` is unescaped in one pass that finds its end, and the envelope is
/// parsed with an empty string in its place. False (nothing emitted) unless that string turns
/// out to be exactly `properties.log`; the caller then takes the general path.
pub(super) fn decode_aks_inline<'a>(
    text: &'a str,
    quote: usize,
    ctx: Ctx<'a>,
    g: &mut OwnedSink<'_, 'a>,
) -> bool {
    let Some((log, used)) = unescape_to_quote(&text[quote + 1..]) else {
        return false;
    };
    let envelope = ctx.keep([&text[..quote], "\"\"", &text[quote + 1 + used..]].concat());
    let Ok(env) = serde_json::from_str::<AuditEvent>(envelope) else {
        return false;
    };
    let blank = envelope[quote..].as_ptr();
    let log_raw = env.envelope_properties.as_ref().and_then(|p| p.log);
    if log_raw.map(|raw| raw.get().as_ptr()) != Some(blank) {
        return false;
    }
    decode_aks(env, Some(ctx.keep(log)), ctx, g);
    true
}

/// Google Cloud Audit Logs `LogEntry` for `k8s.io` (its top-level keys ride in `AuditEvent`),
/// mapped field by field onto a borrowed event (no second parse). What GKE does not record (groups, credential id, the exact HTTP status,
/// stage) is left absent or approximated, never invented.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GkePayload<'a> {
    #[serde(borrow)]
    service_name: Option<JStr<'a>>,
    #[serde(borrow)]
    method_name: Option<JStr<'a>>,
    #[serde(borrow)]
    resource_name: Option<JStr<'a>>,
    #[serde(borrow)]
    authentication_info: Option<GkeAuthn<'a>>,
    #[serde(borrow)]
    request_metadata: Option<GkeRequestMetadata<'a>>,
    #[serde(borrow)]
    status: Option<GkeStatus<'a>>,
    #[serde(borrow)]
    request: Option<&'a RawValue>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
    /// BigQuery keeps `request` and `response` as JSON in strings.
    #[serde(borrow)]
    request_json: Option<JStr<'a>>,
    #[serde(borrow)]
    response_json: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GkeAuthn<'a> {
    #[serde(borrow)]
    principal_email: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GkeRequestMetadata<'a> {
    #[serde(borrow)]
    caller_ip: Option<&'a RawValue>,
    #[serde(borrow)]
    caller_supplied_user_agent: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
struct GkeStatus<'a> {
    #[serde(default, deserialize_with = "int_or_text")]
    code: Option<i64>,
    #[serde(borrow)]
    message: Option<JStr<'a>>,
}

/// A number, or a number in a string as BigQuery's JSON writes its integers.
fn int_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrText {
        Int(i64),
        Text(String),
    }
    match Option::<IntOrText>::deserialize(d)? {
        Some(IntOrText::Int(n)) => Ok(Some(n)),
        Some(IntOrText::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("status code {t:?} is not a number"))),
        None => Ok(None),
    }
}

#[derive(Debug, Deserialize)]
pub struct GkeResource<'a> {
    #[serde(borrow)]
    labels: Option<GkeResourceLabels<'a>>,
}

#[derive(Debug, Deserialize)]
struct GkeResourceLabels<'a> {
    #[serde(borrow)]
    cluster_name: Option<JStr<'a>>,
}

/// `renamed`: the payload came under BigQuery's column name instead of `protoPayload`.
pub(super) fn decode_gke<'a>(
    entry: &AuditEvent<'a>,
    p: &GkePayload<'a>,
    renamed: bool,
    ctx: Ctx<'a>,
    f: &mut Sink,
) {
    if p.service_name.as_deref() != Some("k8s.io") {
        return f(Item::Skipped("gke_non_k8s_service"));
    }
    let mut repairs = Repairs::default();
    if renamed {
        repairs.add(Repair::RenamedKeys);
    }
    let own_time = entry
        .timestamp
        .and_then(|t| unescape_literal(t.get()))
        .filter(|t| parse_rfc3339_micros(t).is_some());
    // BigQuery writes `2025-03-04 09:00:00.5 UTC`; some exports keep only `receiveTimestamp`.
    let stage_timestamp = match own_time {
        Some(t) => Some(JStr(t)),
        None if !ctx.opts.strict => entry
            .timestamp
            .and_then(parse_export_json)
            .or_else(|| entry.export_time())
            .map(|t| {
                repairs.add(Repair::ExportTimestamp);
                JStr(Cow::Owned(format_micros(t)))
            }),
        None => None,
    };
    let json = |text: &Option<JStr<'a>>| {
        let text = ctx.keep(text.as_ref()?.0.clone());
        serde_json::from_str::<&RawValue>(text).ok()
    };
    let method = p.method_name.as_deref().unwrap_or("");
    let resource_name = p.resource_name.as_deref().unwrap_or("");
    let meta = p.request_metadata.as_ref();
    let status = p.status.as_ref();
    let ev = AuditEvent {
        kind: Some(JStr::borrowed("Event")),
        api_version: Some(JStr::borrowed("audit.k8s.io/v1")),
        audit_id: entry.envelope_insert_id.clone(),
        stage: Some(JStr::borrowed("ResponseComplete")),
        level: Some(JStr::borrowed(
            if p.request.is_some() || p.request_json.is_some() {
                "RequestResponse"
            } else {
                "Metadata"
            },
        )),
        verb: method.rsplit('.').next().map(JStr::borrowed),
        request_uri: Some(JStr(Cow::Owned(format!("/{resource_name}")))),
        user: UserInfo {
            username: p
                .authentication_info
                .as_ref()
                .and_then(|a| a.principal_email.clone()),
            ..UserInfo::default()
        },
        source_ips: meta.and_then(|m| m.caller_ip),
        user_agent: meta.and_then(|m| m.caller_supplied_user_agent.clone()),
        object_ref: gke_object_ref(method, resource_name),
        response_status: Some(ResponseStatus {
            code: Some(grpc_to_http(status.and_then(|s| s.code).unwrap_or(0))),
            reason: None,
            message: status.and_then(|s| s.message.clone()),
        }),
        request_object: p.request.or_else(|| json(&p.request_json)),
        response_object: p.response.or_else(|| json(&p.response_json)),
        stage_timestamp,
        annotations: entry.envelope_labels,
        repairs,
        ..AuditEvent::default()
    };
    let cluster = entry
        .envelope_resource
        .as_ref()
        .and_then(|r| r.labels.as_ref())
        .and_then(|l| l.cluster_name.as_deref())
        .unwrap_or(ctx.cluster);
    finish_event(ev, Format::Gke, Ctx { cluster, ..ctx }, f);
}

/// `io.k8s.core.v1.pods.exec.create` + `core/v1/namespaces/ns/pods/name/exec` → objectRef.
/// None for a non-resource request (`io.k8s.get` on `readyz`), which has none in Kubernetes.
fn gke_object_ref<'a>(method: &'a str, resource_name: &'a str) -> Option<ObjectRef<'a>> {
    if method.split('.').count() <= 3 {
        return None;
    }
    let parts: Vec<&str> = resource_name.split('/').filter(|s| !s.is_empty()).collect();
    let is_version = |s: &str| {
        s.strip_prefix('v')
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    // resourceName: [group/]version[/namespaces/ns]/resource[/name[/subresource]]
    let (group, version, rest) = match parts.as_slice() {
        [g, v, rest @ ..] if is_version(v) && !is_version(g) => (*g, *v, rest),
        [v, rest @ ..] if is_version(v) => ("core", *v, rest),
        _ => ("", "", &parts[..0]),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    // Non-resource or unparsable names: fall back to the method's resource segment.
    let resource = rest.first().copied().or_else(|| method.rsplit('.').nth(1));
    let some = |s: &'a str| (!s.is_empty()).then(|| JStr::borrowed(s));
    Some(ObjectRef {
        resource: resource.map(JStr::borrowed),
        subresource: rest.get(2).map(|s| JStr::borrowed(s)),
        namespace: namespace.map(JStr::borrowed),
        name: rest.get(1).map(|s| JStr::borrowed(s)),
        api_group: Some(JStr::borrowed(if group == "core" { "" } else { group })),
        api_version: some(version),
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
pub(super) fn decode_eks_batch<'a>(
    mut env: AuditEvent<'a>,
    ctx: Ctx<'a>,
    g: &mut OwnedSink<'_, 'a>,
) {
    if env.envelope_message_type.as_deref() == Some("CONTROL_MESSAGE") {
        return g(Decoded::Item(Item::Skipped("eks_control_message")));
    }
    let cluster = env
        .envelope_log_group
        .take()
        .and_then(|group| eks_cluster_from_log_group(ctx.keep(group.0)));
    let ctx = Ctx {
        cluster: cluster.unwrap_or(ctx.cluster),
        ..ctx
    };
    let Some(events) = env.envelope_log_events.take() else {
        return not_audit_event(g, "CloudWatch record without logEvents");
    };
    for e in events {
        let ctx = Ctx {
            envelope_time: e.timestamp.map(|ms| ms.saturating_mul(1000)),
            ..ctx
        };
        // Messages are JSON in a string: unescaped by serde, kept for the events made of them.
        match e.message {
            Some(m) => decode_eks_message(ctx.keep(m.0), Format::Eks, ctx, g),
            None => not_audit_event(g, "CloudWatch log event without message"),
        }
    }
}

/// A CloudWatch event as log shippers deliver it, `{"timestamp": <ms>, "message": …}`: the
/// audit event as an object, or as JSON in a string, or another component's log line.
pub(super) fn decode_message<'a>(message: &'a RawValue, ctx: Ctx<'a>, g: &mut OwnedSink<'_, 'a>) {
    let text = message.get();
    if text.starts_with('{') {
        return decode_object_with(text, Format::Eks, ctx, g);
    }
    match text
        .starts_with('"')
        .then(|| unescape_literal(text))
        .flatten()
    {
        Some(m) => decode_eks_message(ctx.keep(m), Format::Eks, ctx, g),
        None => not_audit_event(g, "message is neither an event nor a log line"),
    }
}

/// One CloudWatch message: an event as a JSON string, possibly cut by CloudWatch.
pub(super) fn decode_eks_message<'a>(
    message: &'a str,
    format: Format,
    ctx: Ctx<'a>,
    g: &mut OwnedSink<'_, 'a>,
) {
    let message = message.trim_ascii();
    // The log group also holds the authenticator's and the API server's own log lines.
    if !message.starts_with(['{', '[']) {
        return g(Decoded::Item(Item::Skipped("non_audit_log_line")));
    }
    if message.ends_with(CLOUDWATCH_TRUNCATED) {
        return g(Decoded::Item(Item::Rejected(DecodeError::TruncatedUpstream(format!(
            "CloudWatch truncated this {}-byte event ({CLOUDWATCH_TRUNCATED}); raise the log event size or read the original",
            message.len()
        )))));
    }
    decode_object_with(message, format, ctx, g)
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

/// ACK via SLS: the Event's keys flat at the top, its nested objects as JSON-encoded strings,
/// SLS metadata beside them. Plain values are borrowed; each encoded object is unescaped and parsed
/// once, straight into the event's typed fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AckRecord<'a> {
    #[serde(borrow)]
    kind: Option<JStr<'a>>,
    #[serde(borrow)]
    api_version: Option<JStr<'a>>,
    #[serde(rename = "auditID", borrow)]
    audit_id: Option<JStr<'a>>,
    #[serde(borrow)]
    stage: Option<JStr<'a>>,
    #[serde(borrow)]
    level: Option<JStr<'a>>,
    #[serde(borrow)]
    verb: Option<JStr<'a>>,
    #[serde(rename = "requestURI", borrow)]
    request_uri: Option<JStr<'a>>,
    #[serde(borrow)]
    user_agent: Option<JStr<'a>>,
    #[serde(borrow)]
    request_received_timestamp: Option<JStr<'a>>,
    #[serde(borrow)]
    stage_timestamp: Option<JStr<'a>>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    impersonated_user: Option<&'a RawValue>,
    #[serde(borrow)]
    object_ref: Option<&'a RawValue>,
    #[serde(borrow)]
    response_status: Option<&'a RawValue>,
    #[serde(borrow)]
    annotations: Option<&'a RawValue>,
    #[serde(rename = "sourceIPs", borrow)]
    source_ips: Option<&'a RawValue>,
    #[serde(borrow)]
    request_object: Option<&'a RawValue>,
    #[serde(borrow)]
    response_object: Option<&'a RawValue>,
    #[serde(rename = "__logstore__", borrow)]
    logstore: Option<JStr<'a>>,
    #[serde(rename = "__project__", borrow)]
    project: Option<JStr<'a>>,
}

/// The JSON text of a field that may be JSON-encoded in a string.
fn unwrap_encoded(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if !text.starts_with('"') {
        return Ok(Some(Cow::Borrowed(text)));
    }
    let s = unescape_literal(text)
        .ok_or_else(|| DecodeError::InvalidJson("bad string escape".into()))?;
    // A plain string (e.g. a single source IP) stays a JSON string.
    Ok(Some(if s.trim_start().starts_with(['{', '[']) {
        s
    } else {
        Cow::Borrowed(text)
    }))
}

fn parse_inner<'s, T: Deserialize<'s>>(
    text: &'s Option<Cow<str>>,
    field: &str,
) -> Result<Option<T>, DecodeError> {
    text.as_deref()
        .map(|t| serde_json::from_str(t))
        .transpose()
        .map_err(|e| match DecodeError::from_json(&e) {
            DecodeError::WrongType(m) | DecodeError::InvalidJson(m) | DecodeError::Truncated(m) => {
                DecodeError::WrongType(format!("ACK field {field}: {m}"))
            }
            other => other,
        })
}

/// What one scan for string values holding an encoded JSON object (the rare `":"{\"`) found.
pub(super) enum Encoded {
    None,
    /// `user`, `objectRef` or `responseStatus` hold one: an ACK flat record.
    Ack,
    /// `log` holds one: an AKS record with the event as a string; the offset of its opening quote.
    AksLog(usize),
}

pub(super) fn find_encoded(text: &str) -> Encoded {
    use memchr::memmem::Finder;
    use std::sync::OnceLock;
    static ENCODED_OBJECT: OnceLock<Finder<'static>> = OnceLock::new();
    let finder = ENCODED_OBJECT.get_or_init(|| Finder::new(r#"":"{\""#));
    let bytes = text.as_bytes();
    for at in finder.find_iter(bytes).take(4) {
        let before = &bytes[..at];
        if [&b"\"user"[..], b"\"objectRef", b"\"responseStatus"]
            .iter()
            .any(|k| before.ends_with(k))
        {
            return Encoded::Ack;
        }
        if before.ends_with(b"\"log") {
            return Encoded::AksLog(at + 2);
        }
    }
    Encoded::None
}

/// Decodes `text` if it is an ACK flat record; returns false when it is not that shape.
pub(super) fn decode_ack(text: &str, ctx: Ctx, f: &mut Sink) -> bool {
    let Ok(rec) = serde_json::from_str::<AckRecord>(text) else {
        return false;
    };
    let encoded = [
        rec.user,
        rec.object_ref,
        rec.response_status,
        rec.impersonated_user,
    ];
    if rec.audit_id.is_none() || !encoded.iter().flatten().any(|r| r.get().starts_with('"')) {
        return false;
    }
    let strings = [
        rec.user,
        rec.impersonated_user,
        rec.object_ref,
        rec.response_status,
        rec.annotations,
        rec.source_ips,
        rec.request_object,
        rec.response_object,
    ]
    .map(unwrap_encoded);
    if let Some(Err(e)) = strings.iter().find(|r| r.is_err()) {
        f(Item::Rejected(e.clone()));
        return true;
    }
    let [user, imp, obj, status, ann, ips, req, resp] = strings.map(|r| r.ok().flatten());
    let built = (|| -> Result<AuditEvent, DecodeError> {
        Ok(AuditEvent {
            kind: rec.kind.clone(),
            api_version: rec.api_version.clone(),
            audit_id: rec.audit_id.clone(),
            stage: rec.stage.clone(),
            level: rec.level.clone(),
            verb: rec.verb.clone(),
            request_uri: rec.request_uri.clone(),
            user: parse_inner(&user, "user")?.unwrap_or_default(),
            impersonated_user: parse_inner(&imp, "impersonatedUser")?,
            source_ips: parse_inner(&ips, "sourceIPs")?,
            user_agent: rec.user_agent.clone(),
            object_ref: parse_inner(&obj, "objectRef")?,
            response_status: parse_inner(&status, "responseStatus")?,
            request_object: parse_inner(&req, "requestObject")?,
            response_object: parse_inner(&resp, "responseObject")?,
            request_received_timestamp: rec.request_received_timestamp.clone(),
            stage_timestamp: rec.stage_timestamp.clone(),
            annotations: parse_inner(&ann, "annotations")?,
            ..AuditEvent::default()
        })
    })();
    let cluster = ack_cluster(text, &rec, ctx);
    match built {
        Ok(ev) => finish_event(
            ev,
            Format::Ack,
            Ctx {
                cluster: cluster.as_deref().unwrap_or(ctx.cluster),
                ..ctx
            },
            f,
        ),
        Err(e) => f(Item::Rejected(e)),
    }
    true
}

/// The cluster of an ACK record: a configured field, else the SLS logstore or project name
/// (`audit-<clusterid>`, `k8s-log-<clusterid>`).
fn ack_cluster(text: &str, rec: &AckRecord, ctx: Ctx) -> Option<String> {
    if let Some(field) = &ctx.opts.cluster_field {
        let fields: BTreeMap<JStr, &RawValue> = serde_json::from_str(text).ok()?;
        if let Some(v) = fields
            .get(field.as_str())
            .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        {
            return Some(v);
        }
    }
    [&rec.logstore, &rec.project]
        .into_iter()
        .flatten()
        .find_map(|name| {
            ["audit-", "k8s-log-"]
                .iter()
                .find_map(|p| name.strip_prefix(p).map(str::to_owned))
        })
}
