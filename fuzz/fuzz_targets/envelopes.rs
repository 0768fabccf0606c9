//! An event (the input after its first byte) inside each provider's envelope, escaped as the
//! provider escapes it, so that mutations reach the decoding of the nested event and not only
//! the envelope's JSON. The first byte picks the envelope.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The input as a JSON string.
fn quoted(inner: &str) -> String {
    serde_json::to_string(inner).unwrap()
}

/// ACK's flat record: every nested object or array of the event as a JSON-encoded string.
fn ack(inner: &str) -> String {
    match serde_json::from_str::<Value>(inner) {
        Ok(Value::Object(mut map)) => {
            for v in map.values_mut() {
                if v.is_object() || v.is_array() {
                    *v = Value::String(v.to_string());
                }
            }
            map.insert("__topic__".into(), Value::String(String::new()));
            map.insert("__source__".into(), Value::String("10.0.0.10".into()));
            map.insert("__time__".into(), Value::from(1741078800));
            Value::Object(map).to_string()
        }
        _ => inner.to_owned(),
    }
}

const AKS_ID: &str =
    "/SUBSCRIPTIONS/S/RESOURCEGROUPS/G/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/FUZZ";

fn wrap(kind: u8, inner: &str) -> String {
    let raw = inner;
    match kind % 13 {
        0 => format!(
            r#"{{"category":"kube-audit","resourceId":"{AKS_ID}","time":"2025-03-04T09:50:21.3372914Z","properties":{{"log":{}}}}}"#,
            quoted(inner)
        ),
        1 => format!(
            r#"{{"category":"kube-audit-admin","resourceId":"{AKS_ID}","properties":{{"log":{raw}}}}}"#
        ),
        2 => format!(
            r#"{{"records":[{{"time":"2025-03-04T09:50:21Z","resourceId":"{AKS_ID}","category":"kube-audit","properties":{{"log":{}}}}},{{"category":"kube-apiserver","properties":{{"log":"x"}}}}]}}"#,
            quoted(inner)
        ),
        3 => format!(
            r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"/aws/eks/fuzz/cluster","logStream":"kube-apiserver-audit-1","subscriptionFilters":["f"],"logEvents":[{{"id":"1","timestamp":1741078800000,"message":{}}}]}}"#,
            quoted(inner)
        ),
        4 => format!(r#"{{"timestamp":1741082401215,"message":{raw}}}"#),
        5 => format!(
            r#"{{"timestamp":1741082401215,"message":{}}}"#,
            quoted(inner)
        ),
        6 => format!(
            r#"{{"time":"2025-10-24T09:40:48.4872846Z","category":"AdvancedHunting-CloudAuditEvents","properties":{{"AzureResourceId":"/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerService/managedClusters/fuzz","RawEventData":{raw}}}}}"#
        ),
        7 => format!(
            r#"{{"@timestamp":"2025-03-04T09:30:03.512Z","orchestrator":{{"cluster":{{"name":"fuzz"}}}},"kubernetes":{{"audit":{raw}}}}}"#
        ),
        8 => format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{raw},{raw}]}}"#
        ),
        9 => format!("2025-03-04T09:00:00.014213Z {raw}"),
        10 => format!(
            r#"{{"insertId":"i","logName":"projects/p/logs/cloudaudit.googleapis.com%2Factivity","resource":{{"type":"k8s_cluster","labels":{{"cluster_name":"fuzz","location":"l","project_id":"p"}}}},"timestamp":"2025-03-04T09:00:00.1Z","receiveTimestamp":"2025-03-04T09:00:01Z","operation":{{"first":true,"last":true,"id":"i","producer":"k8s.io"}},"protoPayload":{raw}}}"#
        ),
        11 => format!(
            r#"{{"logName":"projects/p/logs/cloudaudit.googleapis.com%2Fdata_access","resource":{{"type":"k8s_cluster","labels":{{"cluster_name":"fuzz"}}}},"timestamp":"2025-03-04 09:00:00.1 UTC","protopayload_auditlog":{raw}}}"#
        ),
        _ => ack(inner),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let inner = String::from_utf8_lossy(rest);
    audithound_fuzz::decode_all(wrap(kind, &inner).as_bytes());
});
