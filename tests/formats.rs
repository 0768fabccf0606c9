//! Every provider's shipping format carries the same attack to the same alerts.

mod common;

use common::{audithound, replay_with_summary, root};

use audithound::event::{decode_record, DecodeOptions, Item};
use audithound::rules::field::{EventView, Field};
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
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["cluster"]
                .as_str()
                .unwrap()
                .to_owned()
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
