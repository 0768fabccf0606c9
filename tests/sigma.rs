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
        .filter(|r: &serde_json::Value| r.get("incident").is_none())
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
    // The privileged pod (named by its body: a create) mounts `/`; the exec into etcd is by a
    // person (case-insensitive EXEC).
    assert_eq!(
        fired,
        [
            ("sigma.3c2a1f0e-0000-4000-8000-000000000001", "debug-tools"),
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

/// Rules written the way the SigmaHQ Kubernetes audit rules are (`category: application`,
/// `objectRef.apiGroup`, numeric status lists, `hostPath`/`capabilities` wildcards, `|re` over
/// the URL-encoded request URI, a field audit events do not have).
const SIGMAHQ_STYLE: &[(&str, &str)] = &[
    (
        "webhooks.yml",
        r#"
title: Webhook Configuration Changed
id: 5b0e7c3a-1111-4000-8000-00000000000a
logsource: {category: application, product: kubernetes, service: audit}
detection:
  selection:
    objectRef.apiGroup: admissionregistration.k8s.io
    objectRef.resource: [mutatingwebhookconfigurations, validatingwebhookconfigurations]
    verb: [create, delete, patch, replace, update]
  condition: selection
level: medium
"#,
    ),
    (
        "refused.yml",
        r#"
title: Refused Requests
id: 5b0e7c3a-1111-4000-8000-00000000000b
logsource: {product: kubernetes, service: audit}
detection:
  selection:
    responseStatus.code: [401, 403]
  condition: selection
level: low
"#,
    ),
    (
        "capabilities.yml",
        r#"
title: Pod Adding Capabilities
id: 5b0e7c3a-1111-4000-8000-00000000000c
logsource: {category: application, product: kubernetes, service: audit}
detection:
  selection:
    verb: create
    objectRef.resource: pods
    capabilities: '*'
  condition: selection
level: low
"#,
    ),
    (
        "encoded-uri.yml",
        r#"
title: Shell Or Key Material Through Exec
id: 5b0e7c3a-1111-4000-8000-00000000000d
logsource: {product: kubernetes, service: audit}
detection:
  selection_uri:
    requestURI|re: '%2F(etc%2Fkubernetes|bin%2Fbash)'
  selection_agent:
    userAgent|contains: [peirates, trufflehog]
  condition: 1 of selection_*
level: medium
"#,
    ),
    (
        "not-audit.yml",
        r#"
title: Compiler In A Container
id: 5b0e7c3a-1111-4000-8000-00000000000e
logsource: {category: application, product: kubernetes, service: audit}
detection:
  selection:
    file_path: ['*gcc*', '*clang*']
  condition: selection
level: low
"#,
    ),
];

#[test]
fn sigmahq_style_rules_run_and_unevaluable_ones_are_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("sigma");
    std::fs::create_dir(&rules).unwrap();
    for (name, text) in SIGMAHQ_STYLE {
        std::fs::write(rules.join(name), text).unwrap();
    }
    let rules = rules.to_str().unwrap();
    let listed = audithound(&["rules", "list", rules]);
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        stderr.contains("Sigma rule skipped") && stderr.contains("file_path"),
        "{stderr}"
    );
    assert_eq!(stdout(&listed).lines().count(), 4, "{}", stdout(&listed));

    // Two pods, one adding a capability; both written here, next to the sample attacks.
    let pods = dir.path().join("pods.log");
    let pod = |id: &str, caps: &str| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods","verb":"create","user":{{"username":"eve"}},"sourceIPs":["10.0.0.9"],"objectRef":{{"resource":"pods","namespace":"shop","name":"{id}","apiVersion":"v1"}},"responseStatus":{{"code":201}},"requestObject":{{"kind":"Pod","spec":{{"containers":[{{"name":"a","securityContext":{{"capabilities":{caps}}}}}]}}}},"requestReceivedTimestamp":"2025-03-04T09:00:00.000000Z","stageTimestamp":"2025-03-04T09:00:00.100000Z"}}"#
        )
    };
    std::fs::write(
        &pods,
        [
            pod("with-caps", r#"{"add":["NET_ADMIN"]}"#),
            pod("no-caps", "{}"),
        ]
        .join("\n"),
    )
    .unwrap();
    let inputs = [
        "samples/attacks/",
        "samples/scenarios/16-webhook-tampering.log.zst",
        pods.to_str().unwrap(),
    ];
    let mut args = vec!["replay", "-q", "--rules", rules];
    args.extend(inputs);
    let out = audithound(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |id: char| -> Vec<&serde_json::Value> {
        let id = format!("sigma.5b0e7c3a-1111-4000-8000-00000000000{id}");
        alerts.iter().filter(|a| a["rule"]["id"] == id).collect()
    };
    let names = |alerts: Vec<&serde_json::Value>| -> Vec<String> {
        alerts
            .iter()
            .map(|a| a["target"]["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(names(of('a')), ["pod-defaults"]);
    assert_eq!(names(of('c')), ["with-caps"]);
    // The exec into etcd reads /etc/kubernetes/pki, URL-encoded in the request URI.
    assert_eq!(names(of('d')), ["etcd-cp-1"]);
    // Every refused request in the input, counted from the files themselves.
    let mut refused = 0;
    for file in std::fs::read_dir("samples/attacks").unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| l.contains("ResponseComplete")) {
            let ev: serde_json::Value = serde_json::from_str(line).unwrap();
            let code = ev["responseStatus"]["code"].as_i64().unwrap_or(0);
            refused += usize::from(code == 401 || code == 403);
        }
    }
    assert!(refused > 0);
    let webhook_day = audithound(&[
        "replay",
        "-q",
        "--rules",
        rules,
        "samples/scenarios/16-webhook-tampering.log.zst",
    ]);
    let refused_in_day = stdout(&webhook_day)
        .lines()
        .filter(|l| l.contains("00000000000b"))
        .count();
    assert_eq!(of('b').len(), refused + refused_in_day);
}
