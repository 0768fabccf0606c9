//! Every provider's shipping format carries the same attack to the same alerts.

mod common;
#[path = "formats/fidelity.rs"]
mod fidelity;

use common::{audithound, replay_with_summary, root};

use audithound::event::EventView;
use audithound::event::{decode_record, DecodeOptions, Item};
use audithound::rules::field::Field;
use serde_json::Value;
use std::collections::BTreeSet;

const FILES: &[(&str, &str)] = &[
    ("native.log", "default"),
    ("eventlist.json", "default"),
    ("ack.log", "c5e8f0a1b2c3d4e5f60718293a4b5c6d7"),
    ("eks-cloudwatch.json.gz", "prod-eks"),
    ("eks-s3-export.log", "default"),
    ("gke.log", "prod-gke"),
    ("aks.log", "prod-aks"),
];

type Finding = (String, String, String, String, String, i64);

fn findings(file: &str) -> (BTreeSet<Finding>, BTreeSet<String>) {
    let path = format!("samples/formats/{file}");
    let out = audithound(&["replay", &path, "-q"]);
    assert!(
        out.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = BTreeSet::new();
    let mut clusters = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let a: Value = serde_json::from_str(line).unwrap();
        if a.get("incident").is_some() {
            continue;
        }
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        found.insert((
            s(&a["rule"]["id"]),
            s(&a["actor"]["username"]),
            s(&a["target"]["verb"]),
            s(&a["target"]["resource"]),
            s(&a["target"]["namespace"]),
            // GKE reports gRPC codes: 200 and 201 both arrive as OK, so compare the class.
            a["outcome"]["status_code"].as_i64().unwrap_or(0) / 100,
        ));
        clusters.insert(s(&a["cluster"]));
    }
    (found, clusters)
}

#[test]
fn the_same_attack_raises_the_same_alerts_in_every_format() {
    let (native, _) = findings("native.log");
    assert_eq!(native.len(), 5, "{native:#?}");
    for (file, cluster) in FILES {
        let (got, clusters) = findings(file);
        assert_eq!(got, native, "{file}");
        assert_eq!(clusters, BTreeSet::from([cluster.to_string()]), "{file}");
    }
}

/// Field paths detectors read, and the formats that cannot know them.
const FIELDS: &[(&str, &[&str])] = &[
    ("verb", &[]),
    ("stage", &[]),
    ("user.username", &[]),
    ("user.groups", &["gke.log"]),
    ("credentialID", &["gke.log"]),
    ("sourceIPs", &[]),
    ("userAgent", &[]),
    ("objectRef.resource", &[]),
    ("objectRef.subresource", &[]),
    ("objectRef.namespace", &[]),
    ("objectRef.name", &[]),
    ("objectRef.apiGroup", &[]),
    ("responseStatus.code", &[]),
    ("decision", &[]),
    ("requestObject.roleRef.name", &[]),
    ("requestObject.subjects[*].name", &[]),
    ("podSpec.containers[*].securityContext.privileged", &[]),
    ("podSpec.volumes[*].hostPath.path", &[]),
    ("podSpec.hostPID", &[]),
];

fn field_values(file: &str) -> Vec<Vec<Vec<String>>> {
    let bytes = std::fs::read(root().join("samples/formats").join(file)).unwrap();
    let text = if file.ends_with(".gz") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(bytes).unwrap()
    };
    let records: Vec<String> = if file.ends_with(".json") {
        vec![text]
    } else {
        text.lines().map(str::to_owned).collect()
    };
    let fields: Vec<Field> = FIELDS
        .iter()
        .map(|(p, _)| Field::parse(p).unwrap())
        .collect();
    let mut events = Vec::new();
    for r in records {
        decode_record(
            r.as_bytes(),
            &DecodeOptions::default(),
            "default",
            &mut |item| {
                if let Item::Event(ev, _) = item {
                    let view = EventView::new(ev, 0);
                    events.push(fields.iter().map(|f| f.all_text(&view)).collect());
                }
            },
        );
    }
    events
}

#[test]
fn every_field_the_detectors_use_is_mapped() {
    let native = field_values("native.log");
    assert_eq!(native.len(), 4);
    for (file, _) in FILES {
        let got = field_values(file);
        assert_eq!(got.len(), native.len(), "{file}: events decoded");
        for (i, (g, n)) in got.iter().zip(&native).enumerate() {
            for (j, (path, unknown_in)) in FIELDS.iter().enumerate() {
                if *path == "responseStatus.code" && *file == "gke.log" {
                    let class = |v: &Vec<String>| {
                        v.iter()
                            .map(|c| c.parse::<i64>().unwrap() / 100)
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(class(&g[j]), class(&n[j]), "{file}: event {i} status class");
                } else if unknown_in.contains(file) {
                    assert!(
                        g[j].is_empty(),
                        "{file}: event {i} {path} should be absent, not invented: {:?}",
                        g[j]
                    );
                } else {
                    assert_eq!(g[j], n[j], "{file}: event {i} field {path}");
                }
            }
        }
    }
}

#[test]
fn awkward_records_are_explained_not_rejected_as_garbage() {
    let (_, s) = replay_with_summary(&["samples/formats/", "-q"]);
    assert_eq!(s["rejected"], serde_json::json!({"truncated_upstream": 1}));
    assert_eq!(
        s["skipped"],
        serde_json::json!({"aks_non_audit_category": 1, "eks_control_message": 1})
    );
    assert_eq!(
        s["formats"],
        serde_json::json!({"ack": 4, "aks": 4, "eks": 8, "eventlist": 4, "gke": 4, "native": 4})
    );
}

#[test]
fn a_named_input_format_rejects_the_others() {
    let (_, s) = replay_with_summary(&["samples/formats/", "-q", "--input-format", "gke"]);
    assert_eq!(s["formats"], serde_json::json!({"gke": 4}));
    assert_eq!(s["rejected"]["format_mismatch"], 24);
}

#[test]
fn cluster_from_the_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let blue = dir.path().join("clusters/blue");
    std::fs::create_dir_all(&blue).unwrap();
    std::fs::copy(
        root().join("samples/formats/native.log"),
        blue.join("audit.log"),
    )
    .unwrap();
    std::fs::copy(root().join("samples/formats/aks.log"), blue.join("aks.log")).unwrap();
    let out = audithound(&[
        "replay",
        dir.path().to_str().unwrap(),
        "-q",
        "--cluster-from-path",
        "clusters/([^/]+)/",
    ]);
    assert!(out.status.success());
    let clusters: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| match r.get("incident") {
            Some(incident) => incident["cluster"].as_str().unwrap().to_owned(),
            None => r["cluster"].as_str().unwrap().to_owned(),
        })
        .collect();
    // The path names the native file's cluster; the AKS envelope names its own.
    assert_eq!(
        clusters,
        BTreeSet::from(["blue".to_string(), "prod-aks".to_string()])
    );
}

#[test]
fn eks_authenticator_extra_fields_reach_rules() {
    let line = r#"{"messageType":"DATA_MESSAGE","logGroup":"/aws/eks/prod/cluster","logEvents":[{"message":"{\"kind\":\"Event\",\"auditID\":\"e1\",\"stage\":\"ResponseComplete\",\"verb\":\"get\",\"user\":{\"username\":\"kubernetes-admin\",\"extra\":{\"arn\":[\"arn:aws:iam::111122223333:role/ops\"],\"accessKeyId\":[\"ASIAEXAMPLE\"],\"sessionName\":[\"jane\"]}},\"stageTimestamp\":\"2025-03-04T09:00:00Z\"}"}]}"#;
    let mut seen = Vec::new();
    decode_record(
        line.as_bytes(),
        &DecodeOptions::default(),
        "x",
        &mut |item| {
            if let Item::Event(ev, _) = item {
                let view = EventView::new(ev, 0);
                for p in [
                    "user.extra.arn",
                    "user.extra.accessKeyId",
                    "user.extra.sessionName",
                    "cluster",
                ] {
                    seen.extend(Field::parse(p).unwrap().all_text(&view));
                }
            }
        },
    );
    assert_eq!(
        seen,
        [
            "arn:aws:iam::111122223333:role/ops",
            "ASIAEXAMPLE",
            "jane",
            "prod"
        ]
    );
}

/// Native events for three detections that complete on a later request (a chain's success, a
/// use after the last binding went, a deleted service account's token), one second apart.
fn continued_detections() -> Vec<Value> {
    let ok = |code: i64| code < 400;
    let event = |i: usize, user: &str, verb: &str, object: Value, code: i64, request: Value| {
        let time = audithound::event::time::format_micros(
            audithound::event::time::parse_rfc3339_micros("2025-03-04T10:00:00Z").unwrap()
                + i as i64 * 1_000_000,
        );
        let mut e = serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": format!("00000000-0000-4000-8000-{i:012x}"), "stage": "ResponseComplete",
            "requestURI": "/apis", "verb": verb, "user": {"username": user, "groups": ["system:authenticated"]},
            "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.31.0", "objectRef": object,
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": time, "stageTimestamp": time,
            "annotations": {"authorization.k8s.io/decision": if ok(code) { "allow" } else { "forbid" }, "authorization.k8s.io/reason": ""},
        });
        if !request.is_null() {
            e["requestObject"] = request;
        }
        e
    };
    let obj = |resource: &str, namespace: &str, name: &str| serde_json::json!({"resource": resource, "namespace": namespace, "name": name, "apiVersion": "v1"});
    let binding = |user: &str| {
        serde_json::json!({"kind": "RoleBinding", "subjects": [{"kind": "User", "name": user}],
            "roleRef": {"kind": "Role", "name": "reader"}})
    };
    vec![
        event(
            0,
            "mallory",
            "list",
            obj("secrets", "shop", ""),
            403,
            Value::Null,
        ),
        event(
            1,
            "admin",
            "create",
            obj("rolebindings", "shop", "x"),
            201,
            binding("mallory"),
        ),
        event(
            2,
            "mallory",
            "list",
            obj("secrets", "shop", ""),
            200,
            Value::Null,
        ),
        event(
            3,
            "admin",
            "create",
            obj("rolebindings", "shop", "dev"),
            201,
            binding("dave"),
        ),
        event(
            4,
            "admin",
            "delete",
            obj("rolebindings", "shop", "dev"),
            200,
            Value::Null,
        ),
        event(5, "dave", "get", obj("pods", "shop", "p"), 200, Value::Null),
        event(
            6,
            "bob",
            "delete",
            obj("serviceaccounts", "mon", "old-exporter"),
            200,
            Value::Null,
        ),
        event(
            7,
            "system:serviceaccount:mon:old-exporter",
            "list",
            obj("pods", "mon", ""),
            200,
            Value::Null,
        ),
    ]
}

/// The steps that complete these detections reach the collector as follow-ups, which decode
/// their event again when state awaits them: from the batch's text, from an envelope record, or
/// from a provider's mapping.
#[test]
fn detections_completed_by_a_later_request_fire_in_every_format() {
    use audithound::event::Format;
    let events = continued_detections();
    let dir = tempfile::tempdir().unwrap();
    let expected = BTreeSet::from([
        "k8s.credentials.unbound_still_used".to_string(),
        "k8s.rbac.denied_granted_used".to_string(),
        "k8s.serviceaccount.used_after_deletion".to_string(),
    ]);
    for format in [
        Format::Native,
        Format::EventList,
        Format::Ack,
        Format::Eks,
        Format::Gke,
        Format::Aks,
    ] {
        let path = dir.path().join(format!("{}.log", format.name()));
        let text = audithound::synth::formats::render(format, &events, "prod");
        std::fs::write(&path, text).unwrap();
        let out = audithound(&["replay", "-q", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fired: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r.get("incident").is_none())
            .map(|a| a["rule"]["id"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(expected.is_subset(&fired), "{}: {fired:?}", format.name());
    }
}
