//! End-to-end tests of `audithound replay`: the built binary on `samples/`, on real public logs
//! and on crafted bad input.

mod common;

use common::{audithound, replay_with_summary, root};

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// Every record a replay wrote: alerts and incidents.
fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

/// The alerts a replay wrote (incident records, `{"incident": …}`, left out).
fn alerts(stdout: &[u8]) -> Vec<Value> {
    records(stdout)
        .into_iter()
        .filter(|r| r.get("incident").is_none())
        .collect()
}

fn rule_and_audit_ids(alerts: &[Value]) -> BTreeSet<(String, String)> {
    alerts
        .iter()
        .map(|a| {
            // The last audit ID is the event that completed the finding.
            let ids = a["evidence"]["audit_ids"].as_array().expect("audit ids");
            (
                a["rule"]["id"].as_str().unwrap().to_owned(),
                ids.last().and_then(|id| id.as_str()).unwrap().to_owned(),
            )
        })
        .collect()
}

fn summary(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary written")).expect("summary is JSON")
}

#[test]
fn samples_raise_exactly_the_expected_alerts() {
    let (out, s) = replay_with_summary(&[
        "samples/cluster-day",
        "samples/attacks",
        "samples/formats",
        "--revocations",
        "samples/revocations.yaml",
        "--threads",
        "2",
        // Each provider's copy of the attacks is a cluster of its own (those whose envelope
        // names none are named after their file), so first-seen rules fire in each.
        "--cluster-from-path",
        "formats/([^./]+)",
    ]);

    let expected: BTreeSet<(String, String)> =
        std::fs::read_to_string(root().join("samples/expected-alerts.tsv"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let mut f = l.split('\t');
                (f.next().unwrap().to_owned(), f.next().unwrap().to_owned())
            })
            .collect();
    let got = alerts(&out.stdout);
    assert_eq!(rule_and_audit_ids(&got), expected);
    let ids: BTreeSet<&str> = got.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), expected.len(), "no duplicate alerts");
    // An episode reports twice under one id: when it opens, and its whole extent when it closes.
    let reports = |status: &str| -> Vec<&str> {
        got.iter()
            .filter(|a| a["status"] == status)
            .filter_map(|a| a["id"].as_str())
            .collect()
    };
    let (opened, closed) = (reports("open"), reports("closed"));
    assert!(!opened.is_empty());
    assert_eq!(
        opened, closed,
        "every episode that opened closed at the end of the replay"
    );
    assert_eq!(got.len(), ids.len() + closed.len());
    // Every attack scenario is represented.
    for rule in [
        "k8s.rbac.admin_binding",
        "k8s.workload.privileged",
        "k8s.exec.into_system_pod",
        "k8s.secrets.cluster_wide_list",
        "k8s.secrets.enumeration",
        "k8s.secrets.denied_burst",
        "k8s.secrets.new_user_agent",
        "k8s.rbac.change_then_workload",
        "k8s.credentials.revoked_in_use",
        "k8s.serviceaccount.used_after_deletion",
    ] {
        assert!(
            expected.iter().any(|(r, _)| r == rule),
            "{rule} missing from expectations"
        );
    }

    // samples/formats/ carries one event CloudWatch cut: explained, counted, not analysed.
    assert_eq!(s["rejected"], serde_json::json!({"truncated_upstream": 1}));
    assert_eq!(s["files"], 19);
    // RequestReceived twins are read but not analysed, so nothing is double-counted.
    let (events, analysed, skipped) = (
        s["events"].as_u64().unwrap(),
        s["analysed"].as_u64().unwrap(),
        s["skipped_stage"].as_u64().unwrap(),
    );
    assert!(skipped > 1000, "samples carry RequestReceived twins");
    assert_eq!(events, analysed + skipped);

    // Alerts come out in event-time order across the three API servers' files and the snippets.
    // (Batched records, an EventList or a CloudWatch batch, are placed by their first event.)
    // An episode's later reports keep its opening time and come when it closes.
    let day = audithound(&["replay", "samples/cluster-day", "samples/attacks", "-q"]);
    let day = alerts(&day.stdout);
    assert!(day.len() > 10);
    let times: Vec<&str> = day
        .iter()
        .filter(|a| a["status"] != "closed")
        .map(|a| a["time"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "alerts not in time order: {times:?}"
    );
    let admin = got
        .iter()
        .find(|a| a["rule"]["id"] == "k8s.rbac.admin_binding")
        .unwrap();
    assert_eq!(admin["actor"]["username"], "mallory@example.com");
    assert_eq!(admin["rule"]["severity"], "high");
    assert_eq!(admin["target"]["resource"], "clusterrolebindings");
    assert!(admin["summary"].as_str().unwrap().contains("cluster-admin"));
    assert!(admin["actor"]["credential_id"]
        .as_str()
        .unwrap()
        .starts_with("X509SHA256="));
}

#[test]
fn output_is_identical_for_any_thread_count() {
    let run = |threads: &str| {
        audithound(&[
            "replay",
            "samples/cluster-day",
            "samples/attacks",
            "samples/formats",
            "--revocations",
            "samples/revocations.yaml",
            "--threads",
            threads,
            "-q",
        ])
    };
    let (one, eight) = (run("1"), run("8"));
    assert!(one.status.success() && eight.status.success());
    assert!(!one.stdout.is_empty());
    assert_eq!(one.stdout, eight.stdout);
}

#[test]
fn time_window_limits_the_replay() {
    let out = audithound(&[
        "replay",
        "samples/cluster-day",
        "samples/attacks",
        "samples/formats",
        "-q",
        "--from",
        "2025-03-04T10:00:00Z",
        "--to",
        "2025-03-04T14:00:00Z",
    ]);
    assert!(out.status.success());
    let rules: BTreeSet<String> = alerts(&out.stdout)
        .iter()
        .filter(|a| a["rule"]["severity"] != "low")
        .map(|a| a["rule"]["id"].as_str().unwrap().to_owned())
        .collect();
    // 11:00 privileged pod and 13:00 exec are inside; the 09:00 binding and 15:00 list are not.
    let want: BTreeSet<String> = [
        "k8s.workload.privileged",
        "k8s.workload.host_namespaces",
        "k8s.workload.sensitive_hostpath",
        "k8s.exec.into_system_pod",
        "k8s.exec.sensitive_file",
    ]
    .map(String::from)
    .into();
    assert_eq!(rules, want);
}

#[test]
fn ocsf_output_is_a_detection_finding() {
    let out = audithound(&["replay", "samples/attacks/", "-q", "--format", "ocsf"]);
    assert!(out.status.success());
    let records = records(&out.stdout);
    let findings: Vec<Value> = records
        .iter()
        .filter(|r| r["class_uid"] == 2004)
        .cloned()
        .collect();
    let native = alerts(&audithound(&["replay", "samples/attacks/", "-q"]).stdout);
    assert!(!findings.is_empty());
    // What is unknown is left out, as OCSF has it, not written as null.
    for r in &records {
        let text = r.to_string();
        assert!(!text.contains(":null"), "{text}");
    }
    // Incidents are OCSF Incident Findings that list the findings they group.
    let incidents: Vec<&Value> = records.iter().filter(|r| r["class_uid"] == 2005).collect();
    assert!(!incidents.is_empty());
    for i in &incidents {
        let listed = i["finding_info_list"].as_array().unwrap();
        assert!(!listed.is_empty());
        assert!(listed
            .iter()
            .all(|f| native.iter().any(|a| a["id"] == f["uid"])));
        assert_eq!(i["metadata"]["profiles"][0], "incident");
    }
    assert_eq!(records.len(), findings.len() + incidents.len());
    assert_eq!(findings.len(), native.len());
    for (f, a) in findings.iter().zip(&native) {
        let severity = ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|s| a["rule"]["severity"] == *s)
            .unwrap() as u64
            + 1;
        assert_eq!(f["severity_id"], severity);
        assert_eq!(f["class_uid"], 2004);
        // An episode's last report closes the finding its opening created, under one uid.
        let activity = if a["status"] == "closed" { 3 } else { 1 };
        assert_eq!(f["activity_id"], activity);
        assert_eq!(f["type_uid"], 200400 + activity);
        assert_eq!(f["finding_info"]["uid"], a["id"]);
        if a["status"] == "closed" {
            let last = &f["finding_info"]["last_seen_time"];
            assert!(last.as_i64() >= f["finding_info"]["first_seen_time"].as_i64());
            assert_eq!(f["unmapped"]["episode"]["count"], a["episode"]["count"]);
        }
        assert!(f["finding_info"]["analytic"]["uid"]
            .as_str()
            .unwrap()
            .starts_with("k8s."));
        assert!(f["actor"]["user"]["name"].as_str().is_some());
    }
}

const GOOD: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"good-1","stage":"ResponseComplete","verb":"list","user":{"username":"good-1@example.com"},"objectRef":{"resource":"secrets"},"responseStatus":{"code":200},"stageTimestamp":"2025-03-04T10:00:00Z"}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn bad_input_is_counted_reported_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut mixed = Vec::new();
    for line in [
        GOOD.to_string(),
        GOOD[..GOOD.len() / 2].to_string(),   // truncated
        "{\"kind\":\"Event\",,}".to_string(), // invalid JSON
        GOOD.replace(r#"{"username":"good-1@example.com"}"#, "42"), // wrong type for `user`
        r#"{"message":"hello"}"#.to_string(), // JSON, not an audit event
        format!("{{\"pad\":\"{}\"}}", "x".repeat(10_000)), // over --max-line-bytes
        String::new(),                        // blank: ignored
        GOOD.replace("good-1", "good-2"),
    ] {
        mixed.extend_from_slice(line.as_bytes());
        mixed.push(b'\n');
    }
    mixed.extend_from_slice(b"{\"auditID\":\"\xff\xfe\"}\n"); // invalid UTF-8
    std::fs::write(d.join("mixed.log"), &mixed).unwrap();
    std::fs::write(d.join("empty.log"), b"").unwrap();

    // A gzip archive cut in its middle: what precedes the damage is still read.
    let many: String = (0..2000)
        .map(|i| GOOD.replace("good-1", &format!("gz-{i}")) + "\n")
        .collect();
    let gz = gzip(many.as_bytes());
    std::fs::write(d.join("broken.log.gz"), &gz[..gz.len() / 2]).unwrap();
    let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
    zst.extend_from_slice(&[0x55; 300]);
    std::fs::write(d.join("broken.log.zst"), &zst).unwrap();

    // Outputs written into the input directory must not be read back as input.
    let summary_path = d.join("summary.json");
    let dead = d.join("dead.jsonl");
    let missing = d.join("missing.log");
    let out = audithound(&[
        "replay",
        d.to_str().unwrap(),
        missing.to_str().unwrap(),
        "--max-line-bytes",
        "4096",
        "--dead-letter",
        dead.to_str().unwrap(),
        "--summary-json",
        summary_path.to_str().unwrap(),
        "--rules",
        "detectors",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let s = summary(&summary_path);
    let want = serde_json::json!({
        "truncated_json": 1, "invalid_json": 1, "wrong_type": 1, "not_audit_event": 1,
        "line_too_long": 1, "invalid_utf8": 1, "empty_file": 1, "corrupt_archive": 2, "unreadable_path": 1,
    });
    assert_eq!(s["rejected"], want);
    let gz_events = s["events"].as_u64().unwrap() - 2;
    assert!(
        gz_events > 0 && gz_events < 2000,
        "events before the gzip damage: {gz_events}"
    );

    // Both good events of the damaged file still raise their alert.
    let got = rule_and_audit_ids(&alerts(&out.stdout));
    assert!(got.contains(&("k8s.secrets.cluster_wide_list".into(), "good-1".into())));
    assert!(got.contains(&("k8s.secrets.cluster_wide_list".into(), "good-2".into())));

    // Every rejection is in the dead-letter file with its place.
    let dead_lines: Vec<Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead_lines.len(), 10);
    let truncated = dead_lines
        .iter()
        .find(|r| r["reason"] == "truncated_json")
        .unwrap();
    assert!(truncated["file"].as_str().unwrap().ends_with("mixed.log"));
    assert_eq!(truncated["line"], 2);
    assert_eq!(truncated["raw"], &GOOD[..GOOD.len() / 2]);
    let long = dead_lines
        .iter()
        .find(|r| r["reason"] == "line_too_long")
        .unwrap();
    assert_eq!(long["line"], 6);
    // Its head as it was (the line is 10 010 bytes, the cap 4 096).
    assert!(long["raw"].as_str().unwrap().starts_with("{\"pad\":\"xxx"));
    // Bytes that are not UTF-8 come back exactly, in base64.
    let utf8 = dead_lines
        .iter()
        .find(|r| r["reason"] == "invalid_utf8")
        .unwrap();
    assert_eq!(utf8["raw_base64"], "eyJhdWRpdElEIjoi//4ifQ==");
    assert!(utf8.get("raw").is_none());
    // And the summary on stderr names file and line.
    assert!(
        stderr.contains("mixed.log:2 [truncated_json]"),
        "stderr: {stderr}"
    );
}

#[test]
fn garbage_inside_a_damaged_archive_is_rejected_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let many: String = (0..3000)
        .map(|i| GOOD.replace("good-1", &format!("gz-{i}")) + "\n")
        .collect();
    let mut gz = gzip(many.as_bytes());
    let mid = gz.len() / 2;
    gz[mid..mid + 64].fill(0xAA); // deflate decodes garbage until the CRC check at the end
    std::fs::write(dir.path().join("damaged.log.gz"), &gz).unwrap();
    let damaged = dir.path().join("damaged.log.gz");
    let (_, s) = replay_with_summary(&[damaged.to_str().unwrap(), "-q"]);
    let rejected: u64 = s["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let events = s["events"].as_u64().unwrap();
    assert!(events > 100 && events < 3000, "{s:#}");
    assert!(rejected > 0, "{s:#}");
}

#[test]
fn nothing_readable_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.log"), b"not json\nstill not json\n").unwrap();
    let out = audithound(&["replay", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no audit events could be read"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("invalid_json: 2"), "stderr: {stderr}");

    let out = audithound(&["replay", "/nonexistent/audit.log"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no input files found"));
}

#[test]
fn event_lists_pretty_or_compact_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let list: Value = serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
        "items": [serde_json::from_str::<Value>(GOOD).unwrap(), serde_json::from_str::<Value>(&GOOD.replace("good-1", "good-2")).unwrap()]});
    std::fs::write(
        dir.path().join("batch.json"),
        serde_json::to_string_pretty(&list).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("compact.json"),
        list.to_string().replace("good-", "compact-"),
    )
    .unwrap();
    let out = audithound(&["replay", dir.path().to_str().unwrap(), "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: BTreeSet<String> = rule_and_audit_ids(&alerts(&out.stdout))
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        ids,
        ["compact-1", "compact-2", "good-1", "good-2"]
            .map(String::from)
            .into()
    );
}

#[test]
fn revocation_lists_in_every_format_and_bad_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("revoked.csv");
    std::fs::write(&csv, "username,revoked_at,reason,ticket\ndave@example.com,2025-03-04T12:00:00Z,\"left, no notice\",HR-1\n").unwrap();
    let json = dir.path().join("revoked.json");
    std::fs::write(
        &json,
        r#"[{"username": "dave@example.com", "revoked_at": "2025-03-04T12:00:00Z"}]"#,
    )
    .unwrap();
    for list in [&csv, &json] {
        let out = audithound(&[
            "replay",
            "samples/attacks/revoked-credential.log",
            "-q",
            "--revocations",
            list.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let severities: Vec<String> = alerts(&out.stdout)
            .iter()
            .filter(|a| a["rule"]["id"] == "k8s.credentials.revoked_in_use")
            .map(|a| a["rule"]["severity"].as_str().unwrap().to_owned())
            .collect();
        // Allowed use → critical, denied attempt → high; the 14:05 use is counted, not re-alerted.
        assert_eq!(severities, ["critical", "high"], "{}", list.display());
    }
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- username: dave\n  revoked_at: last tuesday\n").unwrap();
    let out = audithound(&[
        "replay",
        "samples/attacks/",
        "--revocations",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("entry 1: revoked_at \"last tuesday\" is not an RFC 3339 time"));
}

#[test]
fn the_benign_day_raises_nothing_above_low() {
    let out = audithound(&[
        "replay",
        "samples/cluster-day",
        "-q",
        "--revocations",
        "samples/revocations.yaml",
    ]);
    assert!(out.status.success());
    let got = alerts(&out.stdout);
    assert!(
        !got.is_empty(),
        "the day has a few expected low alerts (humans exec into app pods)"
    );
    for a in &got {
        assert_eq!(a["rule"]["severity"], "low", "{a}");
    }
}

/// A log whose lines are a few seconds out of order (a service account's token used at
/// 12:00:03 written before the account's deletion at 12:00:00): the detectors still see the
/// deletion first, within `--lateness`; with no lateness the use is judged alone, counted late.
#[test]
fn lines_out_of_order_within_the_lateness_reach_the_detectors_in_event_time() {
    let line = |id: &str, sec: u32, user: &str, verb: &str, object: &str| {
        let t = format!("2025-03-04T12:00:{sec:02}.000000Z");
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/x","verb":"{verb}","user":{{"username":"{user}"}},"sourceIPs":["10.0.4.2"],"userAgent":"agent/1.0","objectRef":{object},"responseStatus":{{"code":200}},"stageTimestamp":"{t}"}}"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(
        &log,
        [
            line(
                "u-1",
                3,
                "system:serviceaccount:mon:exporter",
                "list",
                r#"{"resource":"pods"}"#,
            ),
            line(
                "d-1",
                0,
                "bob",
                "delete",
                r#"{"resource":"serviceaccounts","namespace":"mon","name":"exporter"}"#,
            ),
        ]
        .join("\n"),
    )
    .unwrap();
    let log = log.to_str().unwrap();
    let fired = |out: &std::process::Output| {
        rule_and_audit_ids(&alerts(&out.stdout)).contains(&(
            "k8s.serviceaccount.used_after_deletion".into(),
            "u-1".into(),
        ))
    };
    let (ordered, s) = replay_with_summary(&[log, "-q"]);
    assert!(fired(&ordered));
    assert_eq!(s["late_observations"], 0);
    let (unordered, s) = replay_with_summary(&[log, "-q", "--lateness", "0s"]);
    assert!(!fired(&unordered));
    assert!(s["late_observations"].as_u64().unwrap() > 0);
}

/// A term seen inside the learning period and again just after it, the two lines out of order:
/// the earlier sighting decides (learnt, no alert), as it would in time order; without it the
/// later one alone is new.
#[test]
fn a_new_term_is_judged_by_its_earliest_sighting_whatever_the_line_order() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("r.yaml"),
        "rules:\n  - id: first-user\n    title: t\n    severity: low\n    kind: new_terms\n    new_terms: {fields: [user.username], learning: 100s}\n    condition: {verb: get}\n    summary: s\n",
    )
    .unwrap();
    let line = |id: &str, sec: u32, user: &str| {
        let t = format!("2025-03-04T12:{:02}:{:02}.000000Z", sec / 60, sec % 60);
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/pods","verb":"get","user":{{"username":"{user}"}},"objectRef":{{"resource":"pods"}},"responseStatus":{{"code":200}},"stageTimestamp":"{t}"}}"#
        )
    };
    let replay = |lines: &[String]| {
        let log = dir.path().join("audit.log");
        std::fs::write(&log, lines.join("\n")).unwrap();
        let out = audithound(&[
            "replay",
            "-q",
            "--rules",
            rules.to_str().unwrap(),
            log.to_str().unwrap(),
        ]);
        rule_and_audit_ids(&alerts(&out.stdout))
    };
    let start = line("s-0", 0, "someone");
    let after = line("x-101", 101, "x");
    let during = line("x-99", 99, "x");
    assert!(replay(&[start.clone(), after.clone(), during]).is_empty());
    assert_eq!(
        replay(&[start, after]),
        [("first-user".to_string(), "x-101".to_string())].into()
    );
}

/// A native audit event line for the episode and incident tests.
fn request(
    id: usize,
    user: &str,
    verb: &str,
    ns: &str,
    name: &str,
    code: u16,
    second: u32,
) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"00000000-0000-4000-8000-{id:012x}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/{ns}/secrets/{name}","verb":"{verb}","user":{{"username":"{user}"}},"sourceIPs":["198.51.100.7"],"userAgent":"curl/8.5.0","objectRef":{{"resource":"secrets","namespace":"{ns}","name":"{name}","apiVersion":"v1"}},"responseStatus":{{"code":{code}}},"stageTimestamp":"2025-03-04T10:{:02}:{:02}Z"}}"#,
        second / 60,
        second % 60
    )
}

#[test]
fn an_enumeration_of_forty_secrets_is_one_alert_whose_final_report_names_all_forty() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..40)
        .map(|i| {
            request(
                i,
                "mallory",
                "get",
                &format!("ns{}", i % 4),
                &format!("s{i}"),
                200,
                3 * i as u32,
            )
        })
        .collect();
    // Twenty-five refused reads of different Secrets: a burst, whose report names all 25.
    lines.extend((0..25).map(|i| {
        request(
            100 + i,
            "eve",
            "get",
            "kube-system",
            &format!("t{i}"),
            403,
            2 * i as u32,
        )
    }));
    lines.sort_by_key(|l| l[l.find("stageTimestamp").unwrap()..].to_owned());
    std::fs::write(dir.path().join("audit.log"), lines.join("\n") + "\n").unwrap();
    let out = audithound(&[
        "replay",
        dir.path().to_str().unwrap(),
        "-q",
        "--no-progress",
    ]);
    assert!(out.status.success());
    let got = alerts(&out.stdout);
    for (rule, n, user) in [
        ("k8s.secrets.enumeration", 40, "mallory"),
        ("k8s.secrets.denied_burst", 25, "eve"),
    ] {
        let reports: Vec<&Value> = got.iter().filter(|a| a["rule"]["id"] == rule).collect();
        let ids: BTreeSet<&str> = reports.iter().filter_map(|a| a["id"].as_str()).collect();
        assert_eq!(
            ids.len(),
            1,
            "{rule}: one alert, not one per window: {reports:?}"
        );
        let statuses: Vec<&str> = reports
            .iter()
            .filter_map(|a| a["status"].as_str())
            .collect();
        assert_eq!(statuses, ["open", "closed"], "{rule}");
        let last = reports.last().unwrap();
        let episode = &last["episode"];
        assert_eq!(episode["count"], n, "{rule}");
        assert_eq!(episode["values"]["total"], n, "{rule}");
        assert_eq!(episode["audit_ids"]["total"], n, "{rule}");
        let values: BTreeSet<&str> = episode["values"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(values.len(), n, "{rule}: every Secret named");
        assert!(last["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("In all: {n} events")));
        assert_eq!(last["actor"]["username"], user);
    }
}

#[test]
fn a_multi_step_attack_by_one_identity_is_one_incident() {
    // Refused, then granted by someone else, then the same action succeeds; Secrets read after.
    let out = audithound(&[
        "replay",
        "samples/scenarios/14-denied-granted-used.log.zst",
        "-q",
        "--no-progress",
    ]);
    assert!(out.status.success());
    let got = records(&out.stdout);
    let erin: BTreeSet<&str> = got
        .iter()
        .filter(|a| a["actor"]["username"] == "erin@example.com")
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(erin.len() >= 3, "{erin:?}");
    let incidents: Vec<&Value> = got.iter().filter_map(|a| a.get("incident")).collect();
    let closed: Vec<&Value> = incidents
        .iter()
        .copied()
        .filter(|i| i["status"] == "closed")
        .collect();
    assert_eq!(closed.len(), 1, "one story: {incidents:?}");
    let incident = closed[0];
    let grouped: BTreeSet<&str> = incident["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(grouped, erin, "every alert of erin's and only hers");
    // Its open report came first, under the same id.
    assert_eq!(incidents[0]["status"], "open");
    assert_eq!(incidents[0]["id"], incident["id"]);
    // The timeline holds the refusal and the success, marked with their alerts, in time order.
    let steps = incident["timeline"]["steps"].as_array().unwrap();
    let times: Vec<&str> = steps.iter().filter_map(|s| s["time"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(steps
        .iter()
        .any(|s| s["status_code"] == 403 && s["verb"] == "create"));
    assert!(steps.iter().any(|s| s["alerts"]
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r == "k8s.rbac.denied_granted_used"))));
    assert!(!incident["blast_radius"]["created"]["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(["high", "critical"].contains(&incident["severity"].as_str().unwrap()));
}

#[test]
fn hunt_streams_the_matching_events_in_event_time_order() {
    let out = audithound(&[
        "hunt",
        "samples/attacks",
        "--where",
        "user.username=mallory@example.com and objectRef.resource=secrets",
        "--format",
        "json",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = records(&out.stdout);
    // What the files hold: mallory's Secret requests, once each (their completed stage).
    let mut expected = BTreeSet::new();
    for file in std::fs::read_dir(root().join("samples/attacks")).unwrap() {
        for line in std::fs::read_to_string(file.unwrap().path())
            .unwrap()
            .lines()
        {
            let e: Value = serde_json::from_str(line).unwrap();
            if e["user"]["username"] == "mallory@example.com"
                && e["objectRef"]["resource"] == "secrets"
                && e["stage"] == "ResponseComplete"
            {
                expected.insert(e["auditID"].as_str().unwrap().to_owned());
            }
        }
    }
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| r["audit_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(expected.len() > 10);
    assert_eq!(got, expected);
    assert_eq!(rows.len(), expected.len());
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // Lists of the library resolve; a bad condition is a usage error.
    let system = audithound(&[
        "hunt",
        "samples/attacks",
        "--where",
        "objectRef.namespace=$system_namespaces",
        "--format",
        "json",
        "-q",
    ]);
    assert!(system.status.success());
    assert!(records(&system.stdout)
        .iter()
        .all(|r| r["namespace"] == "kube-system"));
    let bad = audithound(&["hunt", "samples/attacks", "--where", "verb=get and", "-q"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--where"));
}

#[test]
fn timeline_tells_what_one_identity_did_with_the_alerts_on_each_request() {
    let file = "samples/scenarios/14-denied-granted-used.log.zst";
    let by_user = audithound(&[
        "timeline",
        file,
        "--user",
        "erin@example.com",
        "--format",
        "json",
        "-q",
    ]);
    assert!(
        by_user.status.success(),
        "{}",
        String::from_utf8_lossy(&by_user.stderr)
    );
    let steps = records(&by_user.stdout);
    let refused = steps
        .iter()
        .find(|s| s["status_code"] == 403)
        .expect("the refusal");
    let allowed = steps
        .iter()
        .find(|s| s["status_code"] == 201)
        .expect("the success");
    for step in [refused, allowed] {
        let alerts = step["alerts"].as_array().unwrap();
        assert!(
            alerts.iter().any(|r| r == "k8s.rbac.denied_granted_used"),
            "{step}"
        );
    }
    // Who touched the object: the same two requests.
    let by_object = audithound(&[
        "timeline",
        file,
        "--object",
        "deployments/shop/report",
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(records(&by_object.stdout).len(), 2);
    // Nothing before the window.
    let late = audithound(&[
        "timeline",
        file,
        "--user",
        "erin@example.com",
        "--from",
        "2025-03-04T09:30:00Z",
        "--format",
        "json",
        "-q",
    ]);
    let late = records(&late.stdout);
    assert!(
        late.iter()
            .all(|s| s["time"].as_str().unwrap() >= "2025-03-04T09:30"),
        "{late:?}"
    );
    assert!(late.iter().any(|s| s["status_code"] == 201));
    // The table for a person, with the blast radius after it.
    let table = audithound(&[
        "timeline",
        file,
        "--user",
        "erin@example.com",
        "--format",
        "table",
        "-q",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("TIME"), "{text}");
    assert!(
        text.contains("created (1): deployments shop/report"),
        "{text}"
    );
    // A threshold alert marks every request it counted, the one that tipped it included (it is
    // matched after the alert is raised).
    let enumeration = audithound(&[
        "timeline",
        "samples/scenarios/05-secret-enumeration.log.zst",
        "--user",
        "mallory@example.com",
        "--format",
        "json",
        "-q",
    ]);
    let marked: Vec<String> = records(&enumeration.stdout)
        .iter()
        .filter(|s| {
            s["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r == "k8s.secrets.enumeration"))
        })
        .map(|s| s["time"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(marked.len(), 10, "{marked:?}");
}

/// `--fail-on`: exit status 3 when an alert at or above the severity was raised, 0 otherwise;
/// 2 for a usage error.
#[test]
fn fail_on_exits_3_only_when_an_alert_reaches_the_severity() {
    let code = |args: &[&str]| {
        let mut all = vec!["replay", "-q"];
        all.extend_from_slice(args);
        audithound(&all).status.code()
    };
    assert_eq!(code(&["samples/attacks", "--fail-on", "high"]), Some(3));
    // A shell in etcd's pod raises high alerts, none critical.
    let exec = "samples/attacks/exec-system-pod.log";
    assert_eq!(code(&[exec, "--fail-on", "critical"]), Some(0));
    assert_eq!(code(&[exec, "--fail-on", "high"]), Some(3));
    assert_eq!(code(&[exec]), Some(0));
    assert_eq!(code(&[exec, "--fail-on", "severe"]), Some(2));
}

#[test]
fn an_archive_in_a_format_not_read_is_named_not_rejected_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut bz = b"BZh91AY&SY".to_vec();
    bz.extend_from_slice(&[0x80; 200]);
    std::fs::write(dir.path().join("audit.log.bz2"), &bz).unwrap();
    let summary_path = dir.path().join("summary.json");
    let out = audithound(&[
        "replay",
        dir.path().join("audit.log.bz2").to_str().unwrap(),
        "--summary-json",
        summary_path.to_str().unwrap(),
    ]);
    let s = summary(&summary_path);
    assert_eq!(
        s["rejected"],
        serde_json::json!({"unsupported_compression": 1})
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bzip2-compressed"), "{stderr}");
}
