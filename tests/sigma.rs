//! Sigma rules for Kubernetes audit logs load and run unchanged beside the native library.

mod common;

use common::{audithound, stdout};

const HOSTPATH: &str = r#"
title: Pod With Host Root Or Runtime Socket Mounted
id: 3c2a1f0e-0000-4000-8000-000000000001
status: experimental
description: A pod mounts the node's root filesystem or the container runtime socket.
logsource:
  product: kubernetes
  service: audit
detection:
  selection:
    verb: create
    objectRef.resource: pods
    hostPath:
      - '/'
      - '*docker.sock'
  condition: selection
level: high
tags:
  - attack.privilege_escalation
  - attack.t1611
"#;

const EXEC: &str = r#"
title: Interactive Session Into A Pod By A Person
id: 3c2a1f0e-0000-4000-8000-000000000002
logsource:
  product: kubernetes
  service: audit
detection:
  selection_sub:
    objectRef.subresource|contains: ['EXEC', 'attach']
  selection_verb:
    verb: create
  filter_system:
    user.username|startswith: 'system:'
  condition: all of selection_* and not (filter_system)
level: medium
"#;

const WINDOWS: &str = r#"
title: Not For Us
logsource:
  product: windows
  service: security
detection:
  selection:
    EventID: 4624
  condition: selection
"#;

#[test]
fn sigma_rules_translate_and_fire() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostpath.yml"), HOSTPATH).unwrap();
    std::fs::write(dir.path().join("exec.yml"), EXEC).unwrap();
    std::fs::write(dir.path().join("windows.yml"), WINDOWS).unwrap();
    let sigma = dir.path().to_str().unwrap();

    let listed = stdout(&audithound(&["rules", "list", sigma]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("sigma.3c2a1f0e-0000-4000-8000-000000000001"),
        "{listed}"
    );

    let out = audithound(&["replay", "samples/attacks/", "-q", "--rules", sigma]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let fired: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"]["id"].as_str().unwrap(),
                a["target"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // The privileged pod mounts `/`; the exec into etcd is by a person (case-insensitive EXEC).
    assert_eq!(
        fired,
        [
            ("sigma.3c2a1f0e-0000-4000-8000-000000000001", ""),
            ("sigma.3c2a1f0e-0000-4000-8000-000000000002", "etcd-cp-1")
        ]
    );
    let hostpath = &alerts[0];
    assert_eq!(hostpath["rule"]["severity"], "high");
    assert_eq!(hostpath["rule"]["mitre"], serde_json::json!(["T1611"]));
}

#[test]
fn a_broken_sigma_condition_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        HOSTPATH.replace(
            "condition: selection",
            "condition: selection and not filter",
        ),
    )
    .unwrap();
    let out = audithound(&["rules", "check", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(Sigma): detection.condition \"selection and not filter\": unknown selection \"filter\""), "{err}");
}
