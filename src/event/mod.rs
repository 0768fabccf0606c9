//! The audit event model: a borrowed `AuditEvent<'a>` parsed straight from the input buffer.
//!
//! Only the fields detectors read are materialised; nested objects that few rules look into
//! (`requestObject`, `responseObject`, `annotations`, `user.extra`, group and IP lists) stay as raw
//! JSON slices and are walked lazily when a rule asks for them.

mod decode;
pub mod derived;
mod jstr;
mod providers;
pub mod time;
pub mod tree;
pub mod view;

pub use decode::{
    decode_record, decode_record_with, Arena, DecodeError, DecodeOptions, Decoded, Format, Item,
    Repair, Repairs,
};
pub use jstr::{for_each_str, raw_entry, JStr};
pub use view::{EventView, Lens};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Pipeline stage of an audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "RequestReceived" => Some(Stage::RequestReceived),
            "ResponseStarted" => Some(Stage::ResponseStarted),
            "ResponseComplete" => Some(Stage::ResponseComplete),
            "Panic" => Some(Stage::Panic),
            _ => None,
        }
    }
}

/// One `audit.k8s.io` `Event` (v1 or v1beta1), borrowing from the record it was parsed from.
///
/// The `envelope_*` fields are top-level keys of the wrappers other backends put around events
/// (webhook `EventList`, AKS diagnostics, GKE `LogEntry`, CloudWatch batches). They ride along in this struct so a
/// native line is parsed exactly once; `decode_record` unwraps them. The large ones are boxed:
/// only envelopes have them, and every native event is moved into a run of events (`worker`).
/// Serializable too, for events mapped from provider formats (GKE, ACK): detectors keep their
/// JSON to rebuild an alert later, as they do with native events' own text.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent<'a> {
    #[serde(borrow)]
    pub kind: Option<JStr<'a>>,
    #[serde(borrow)]
    pub api_version: Option<JStr<'a>>,
    #[serde(rename = "auditID", borrow)]
    pub audit_id: Option<JStr<'a>>,
    #[serde(borrow)]
    pub stage: Option<JStr<'a>>,
    #[serde(borrow)]
    pub level: Option<JStr<'a>>,
    #[serde(borrow)]
    pub verb: Option<JStr<'a>>,
    #[serde(rename = "requestURI", borrow)]
    pub request_uri: Option<JStr<'a>>,
    #[serde(borrow, default)]
    pub user: UserInfo<'a>,
    #[serde(borrow)]
    pub impersonated_user: Option<UserInfo<'a>>,
    #[serde(rename = "sourceIPs", borrow)]
    pub source_ips: Option<&'a RawValue>,
    #[serde(borrow)]
    pub user_agent: Option<JStr<'a>>,
    #[serde(borrow)]
    pub object_ref: Option<ObjectRef<'a>>,
    #[serde(borrow)]
    pub response_status: Option<ResponseStatus<'a>>,
    #[serde(borrow)]
    pub request_object: Option<&'a RawValue>,
    #[serde(borrow)]
    pub response_object: Option<&'a RawValue>,
    #[serde(borrow)]
    pub request_received_timestamp: Option<JStr<'a>>,
    #[serde(borrow)]
    pub stage_timestamp: Option<JStr<'a>>,
    /// v1beta1 events carry a single `timestamp` instead of the two above. Raw: a CloudWatch
    /// event as shippers deliver it has an epoch-milliseconds number under the same name.
    #[serde(borrow)]
    pub timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    pub annotations: Option<&'a RawValue>,

    /// Cluster the event came from: set by the decoder from the envelope or the configured default.
    #[serde(skip)]
    pub cluster: Option<JStr<'a>>,
    /// The event's own JSON text, when it has one (not for events mapped from GKE or ACK).
    #[serde(skip)]
    pub source: Option<&'a str>,
    /// `event_time`, worked out once by the decoder.
    #[serde(skip)]
    pub time: Option<i64>,
    /// What the decoder filled in or renamed because the record lacked it (`DecodeOptions::strict`
    /// turns this off).
    #[serde(skip)]
    pub repairs: Repairs,
    /// The impersonation proxy this request came through, when the run names it
    /// (`impersonation_proxies`): `user` is then the user it acted for (`Lens::act_for`).
    #[serde(skip)]
    pub proxy: Option<JStr<'a>>,
    /// The managed service the record came from (`Format::provider`): `aks`, `gke`, `eks`,
    /// `ack`; None for the API server's own formats.
    #[serde(skip)]
    pub provider: Option<&'static str>,

    /// Times exports add beside (or instead of) the event's own: Panther's `p_event_time`,
    /// Elastic's `@timestamp`, a generic `time`, GCP's `receiveTimestamp`. Raw: some write
    /// numbers. Only read when the event has no usable time of its own.
    #[serde(rename = "p_event_time", borrow)]
    #[serde(skip_serializing)]
    pub(crate) export_p_event_time: Option<&'a RawValue>,
    #[serde(rename = "@timestamp", borrow)]
    #[serde(skip_serializing)]
    pub(crate) export_at_timestamp: Option<&'a RawValue>,
    #[serde(rename = "time", borrow)]
    #[serde(skip_serializing)]
    pub(crate) export_time: Option<&'a RawValue>,
    #[serde(rename = "receiveTimestamp", borrow)]
    #[serde(skip_serializing)]
    pub(crate) export_receive_timestamp: Option<&'a RawValue>,

    #[serde(rename = "items", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_items: Option<Vec<&'a RawValue>>,
    #[serde(rename = "records", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_records: Option<Vec<&'a RawValue>>,
    #[serde(rename = "properties", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_properties: Option<Box<providers::AksProperties<'a>>>,
    #[serde(rename = "category", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_category: Option<JStr<'a>>,
    #[serde(rename = "resourceId", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_resource_id: Option<JStr<'a>>,
    #[serde(rename = "protoPayload", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_proto_payload: Option<Box<providers::GkePayload<'a>>>,
    #[serde(rename = "insertId", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_insert_id: Option<JStr<'a>>,
    #[serde(rename = "resource", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_resource: Option<Box<providers::GkeResource<'a>>>,
    #[serde(rename = "labels", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_labels: Option<&'a RawValue>,
    #[serde(rename = "logEvents", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_log_events: Option<Vec<providers::CloudWatchEvent<'a>>>,
    #[serde(rename = "logGroup", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_log_group: Option<JStr<'a>>,
    #[serde(rename = "messageType", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_message_type: Option<JStr<'a>>,
    #[serde(rename = "@message", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_at_message: Option<JStr<'a>>,
    /// A CloudWatch event as log shippers deliver it: `{"timestamp": <ms>, "message": …}`.
    #[serde(rename = "message", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_message: Option<&'a RawValue>,
    /// Elastic's Kubernetes integration keeps the event under `kubernetes.audit`.
    #[serde(rename = "kubernetes", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_kubernetes: Option<&'a RawValue>,
    /// A BigQuery sink of Cloud Audit Logs names the payload column after its `@type`.
    #[serde(rename = "protopayload_auditlog", borrow)]
    #[serde(skip_serializing)]
    pub(crate) envelope_bigquery_payload: Option<Box<providers::GkePayload<'a>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct UserInfo<'a> {
    #[serde(borrow)]
    pub username: Option<JStr<'a>>,
    #[serde(borrow)]
    pub uid: Option<JStr<'a>>,
    #[serde(borrow)]
    pub groups: Option<&'a RawValue>,
    #[serde(borrow)]
    pub extra: Option<&'a RawValue>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef<'a> {
    #[serde(borrow)]
    pub resource: Option<JStr<'a>>,
    #[serde(borrow)]
    pub subresource: Option<JStr<'a>>,
    #[serde(borrow)]
    pub namespace: Option<JStr<'a>>,
    #[serde(borrow)]
    pub name: Option<JStr<'a>>,
    #[serde(borrow)]
    pub api_group: Option<JStr<'a>>,
    #[serde(borrow)]
    pub api_version: Option<JStr<'a>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ResponseStatus<'a> {
    pub code: Option<i64>,
    #[serde(borrow)]
    pub reason: Option<JStr<'a>>,
    #[serde(borrow)]
    pub message: Option<JStr<'a>>,
}

/// The credential id annotation the API server adds to `user.extra` (Kubernetes ≥ 1.29).
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";
pub const DECISION_KEY: &str = "authorization.k8s.io/decision";
pub const AUTHZ_REASON_KEY: &str = "authorization.k8s.io/reason";

/// The credential id in a raw `user.extra`, found by its key's text: every request of a service
/// account or certificate user carries one, and a scan for the key costs a tenth of walking the
/// object. Anything unusual (escapes, other spacing) takes the general path.
pub fn credential_id(extra: &serde_json::value::RawValue) -> Option<Cow<'_, str>> {
    use memchr::memmem::Finder;
    use std::sync::OnceLock;
    static KEY: OnceLock<Finder<'static>> = OnceLock::new();
    let key = KEY.get_or_init(|| Finder::new("\"authentication.kubernetes.io/credential-id\""));
    let text = extra.get();
    let general = || {
        raw_entry(extra, CREDENTIAL_ID_KEY)
            .and_then(first_str)
            .map(Cow::Owned)
    };
    // Keys come sorted, and this one is usually the first: checked before searching (which
    // costs more than the rest of this on such short texts).
    let first = text.strip_prefix('{').map(str::trim_start);
    let first = first.filter(|t| t.as_bytes().starts_with(key.needle()));
    let found = match first {
        Some(rest) => Some(text.len() - rest.len()),
        None => key.find(text.as_bytes()),
    };
    let Some(at) = found else {
        // An escaped key would hold a backslash; without one there is no such key.
        return if text.contains('\\') { general() } else { None };
    };
    let quick = text[at + key.needle().len()..]
        .trim_start()
        .strip_prefix(':')
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('['))
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('"'))
        .and_then(|r| {
            let end = memchr::memchr2(b'"', b'\\', r.as_bytes())?;
            (r.as_bytes()[end] == b'"').then(|| Cow::Borrowed(&r[..end]))
        });
    quick.or_else(general)
}

/// The string, or the first string of a list.
fn first_str(raw: &serde_json::value::RawValue) -> Option<String> {
    let mut first = None;
    for_each_str(raw, &mut |s| {
        first = Some(s.to_owned());
        true
    });
    first
}

impl<'a> AuditEvent<'a> {
    /// A copy of what rules and alerts read (not the envelope a decoder looks into).
    pub fn copy_for_rules(&self) -> AuditEvent<'a> {
        AuditEvent {
            kind: self.kind.clone(),
            api_version: self.api_version.clone(),
            audit_id: self.audit_id.clone(),
            stage: self.stage.clone(),
            level: self.level.clone(),
            verb: self.verb.clone(),
            request_uri: self.request_uri.clone(),
            user: self.user.clone(),
            impersonated_user: self.impersonated_user.clone(),
            source_ips: self.source_ips,
            user_agent: self.user_agent.clone(),
            object_ref: self.object_ref.clone(),
            response_status: self.response_status.clone(),
            request_object: self.request_object,
            response_object: self.response_object,
            request_received_timestamp: self.request_received_timestamp.clone(),
            stage_timestamp: self.stage_timestamp.clone(),
            timestamp: self.timestamp,
            annotations: self.annotations,
            cluster: self.cluster.clone(),
            source: self.source,
            time: self.time,
            repairs: self.repairs,
            proxy: self.proxy.clone(),
            provider: self.provider,
            ..AuditEvent::default()
        }
    }

    pub fn stage(&self) -> Option<Stage> {
        self.stage.as_deref().and_then(Stage::parse)
    }

    /// Event time in microseconds since the Unix epoch: `stageTimestamp`, else
    /// `requestReceivedTimestamp`, else the v1beta1 `timestamp`.
    pub fn event_time(&self) -> Option<i64> {
        self.time.or_else(|| self.parse_time())
    }

    fn parse_time(&self) -> Option<i64> {
        [&self.stage_timestamp, &self.request_received_timestamp]
            .into_iter()
            .flatten()
            .find_map(|t| time::parse_rfc3339_micros(t))
            .or_else(|| {
                let text = jstr::unescape_literal(self.timestamp?.get())?;
                time::parse_rfc3339_micros(&text)
            })
    }

    /// The time an export wrote beside the event, for an event without one of its own.
    pub(crate) fn export_time(&self) -> Option<i64> {
        [
            self.export_p_event_time,
            self.export_at_timestamp,
            self.export_time,
            self.export_receive_timestamp,
        ]
        .into_iter()
        .flatten()
        .find_map(time::parse_export_json)
    }

    /// Whether the API server keeps this request open (`exec`, `attach`, `portforward`, `log`,
    /// `proxy`, `watch`): logged at `ResponseStarted` when the session opens and at
    /// `ResponseComplete` when it ends. The API server's own test (`BasicLongRunningRequestCheck`),
    /// made from this one record.
    pub fn is_long_running(&self) -> bool {
        let sub = self
            .object_ref
            .as_ref()
            .and_then(|o| o.subresource.as_deref());
        if matches!(
            sub,
            Some("exec" | "attach" | "portforward" | "proxy" | "log")
        ) || matches!(self.verb.as_deref(), Some("watch" | "proxy"))
        {
            return true;
        }
        // A list with `?watch=<anything but false or 0>` is a watch (the API server's RequestInfo).
        let query = self
            .request_uri
            .as_deref()
            .and_then(|u| u.split_once('?'))
            .map_or("", |(_, q)| q);
        query.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == "watch" && !matches!(v.to_ascii_lowercase().as_str(), "" | "false" | "0")
        })
    }

    /// Recognisably an audit event though it lacks its `auditID`: a verb, what it acted on and
    /// who did it.
    pub(crate) fn recognisable(&self) -> bool {
        self.verb.is_some()
            && (self.object_ref.is_some() || self.request_uri.is_some())
            && self.user.username.is_some()
    }

    pub fn username(&self) -> &str {
        self.user.username.as_deref().unwrap_or("")
    }

    pub fn status_code(&self) -> Option<i64> {
        self.response_status.as_ref().and_then(|s| s.code)
    }

    /// `objectRef.resource`, or "" for non-resource requests.
    pub fn resource(&self) -> &str {
        self.object_ref
            .as_ref()
            .and_then(|o| o.resource.as_deref())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credential_id_found_by_key_text_or_by_walking_the_object() {
        let id = |json: &str| {
            let raw: Box<serde_json::value::RawValue> = serde_json::from_str(json).unwrap();
            credential_id(&raw).map(std::borrow::Cow::into_owned)
        };
        let jti = Some("JTI=1".to_owned());
        let k = "authentication.kubernetes.io/credential-id";
        assert_eq!(id(&format!(r#"{{"a":["b"],"{k}":["JTI=1"]}}"#)), jti);
        assert_eq!(id(&format!(r#"{{ "{k}" : [ "JTI=1" , "x" ] }}"#)), jti);
        // First, as the API server writes it (found without a search).
        assert_eq!(id(&format!(r#"{{"{k}":["JTI=1"],"a":["b"]}}"#)), jti);
        assert_eq!(id(&format!(r#"{{"{k}x":["JTI=2"],"{k}":["JTI=1"]}}"#)), jti);
        // An escaped value, an escaped key, the key's text as a value: the general path.
        assert_eq!(id(&format!(r#"{{"{k}":["JTI\u003d1"]}}"#)), jti);
        let escaped_key = k.replace('/', "\\/");
        assert_eq!(id(&format!(r#"{{"{escaped_key}":["JTI=1"]}}"#)), jti);
        assert_eq!(id(&format!(r#"{{"a":["{k}"]}}"#)), None);
        assert_eq!(id(r#"{"a":["b"]}"#), None);
    }

    use super::*;

    #[test]
    fn long_running_requests_are_told_from_one_record() {
        let ev = |json: &str| -> bool {
            serde_json::from_str::<AuditEvent>(json)
                .map(|e| e.is_long_running())
                .unwrap_or(false)
        };
        for json in [
            r#"{"verb":"create","objectRef":{"resource":"pods","subresource":"exec"}}"#,
            r#"{"verb":"get","objectRef":{"resource":"pods","subresource":"attach"}}"#,
            r#"{"verb":"create","objectRef":{"resource":"pods","subresource":"portforward"}}"#,
            r#"{"verb":"get","objectRef":{"resource":"nodes","subresource":"proxy"}}"#,
            r#"{"verb":"get","objectRef":{"resource":"pods","subresource":"log"}}"#,
            r#"{"verb":"watch","objectRef":{"resource":"secrets"}}"#,
            r#"{"verb":"list","requestURI":"/api/v1/pods?resourceVersion=1&watch=true"}"#,
            r#"{"verb":"list","requestURI":"/api/v1/pods?watch=1"}"#,
        ] {
            assert!(ev(json), "{json}");
        }
        for json in [
            r#"{"verb":"get","objectRef":{"resource":"pods"}}"#,
            r#"{"verb":"get","objectRef":{"resource":"pods","subresource":"status"}}"#,
            r#"{"verb":"list","requestURI":"/api/v1/pods?watch=false"}"#,
            r#"{"verb":"list","requestURI":"/api/v1/pods?allowWatchBookmarks=true"}"#,
        ] {
            assert!(!ev(json), "{json}");
        }
    }
}
