//! The rule tooling, through the built binary: the shipped library's own tests, and the errors
//! a rule author sees.

mod common;

use common::{audithound, stdout};

use std::path::PathBuf;

#[test]
fn shipped_library_passes_its_own_tests() {
    let listed = audithound(&["rules", "list", "detectors/"]);
    assert!(listed.status.success());
    let rules = stdout(&listed).lines().count();
    assert!(rules >= 7, "{}", stdout(&listed));
    let out = audithound(&["rules", "test", "detectors/"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("{rules} passed, 0 failed")),
        "{}",
        stdout(&out)
    );
}

fn write_rules(dir: &std::path::Path, body: &str) -> PathBuf {
    let lists = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("detectors/00-lists.yaml"),
    )
    .unwrap();
    std::fs::write(dir.join("00-lists.yaml"), lists).unwrap();
    let p = dir.join("mine.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn a_wrong_expectation_fails_the_rule_test() {
    let dir = tempfile::tempdir().unwrap();
    write_rules(
        dir.path(),
        r#"
rules:
  - id: test.get_secret
    title: t
    severity: low
    condition: {all: [{verb: get}, {objectRef.resource: secrets}]}
    summary: "{user.username}"
    tests:
      fire:
        - {verb: get, objectRef: {resource: secrets}}
      quiet:
        - {verb: get, objectRef: {resource: secrets, namespace: x}}
"#,
    );
    let out = audithound(&["rules", "test", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("FAIL test.get_secret: tests.quiet[0] fired but should stay quiet"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("0 passed, 1 failed"));
}

#[test]
fn bad_rules_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rules(
        dir.path(),
        "rules:\n  - id: bad\n    title: t\n    severity: urgent\n    condition: {verb: get}\n    summary: s\n",
    );
    let out = audithound(&["rules", "check", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4:5: rules[0] (id bad).severity",
            path.display()
        )),
        "{err}"
    );
    assert!(err.contains("unknown variant `urgent`"), "{err}");

    write_rules(
        dir.path(),
        "rules:\n  - id: bad\n    title: t\n    severity: low\n    condition: {all: [{verb: get}, {user.nmae: x}]}\n    summary: '{verb}'\n",
    );
    let out = audithound(&["rules", "check", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rules[0] (id bad).condition.all[1].user.nmae: unknown field \"user.nmae\""),
        "{err}"
    );
    // Problems found after parsing carry the place too: `user.nmae` is on line 5, column 37.
    assert!(
        err.contains(&format!("{}:5:37: rules[0]", path.display())),
        "{err}"
    );
}

/// Test cases are built only when run, yet `rules check` still finds a broken one; a replay
/// with the rule works meanwhile (its tests are never needed there).
#[test]
fn a_broken_test_case_fails_check_and_test_but_not_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rules(
        dir.path(),
        "rules:\n  - id: counted\n    title: t\n    severity: low\n    condition: {verb: get}\n    summary: s\n    tests:\n      fire:\n        - {repeat: lots, event: {verb: get}}\n      quiet:\n        - {verb: list}\n",
    );
    let rules = dir.path().to_str().unwrap();
    let out = audithound(&["rules", "check", rules]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: rule counted: tests.fire[0].repeat: expected a count",
            path.display()
        )),
        "{err}"
    );
    let out = audithound(&["rules", "test", rules]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("FAIL counted: tests.fire[0].repeat"));
    let out = audithound(&["replay", "-q", "--rules", rules, "samples/attacks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn overrides_disable_rules_and_append_exceptions_without_editing_the_library() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.yaml"),
        r#"
lists:
  secret_list_allowed_users: [mallory@example.com]   # appended to the shipped list
overrides:
  - {rule: k8s.exec.into_system_pod, enabled: false}
  - {rule: k8s.rbac.admin_binding, except: [{requestObject.metadata.name: backup-operator}]}
  - {rule: k8s.workload.privileged, severity: critical}
"#,
    )
    .unwrap();
    let site = dir.path().to_str().unwrap();
    let listed = stdout(&audithound(&["rules", "list", "detectors/", site]));
    let line = listed
        .lines()
        .find(|l| l.starts_with("k8s.exec.into_system_pod "))
        .unwrap_or_default();
    assert!(line.ends_with("(off)"), "{listed}");
    let out = audithound(&[
        "replay",
        "samples/attacks/",
        "-q",
        "--rules",
        "detectors",
        "--rules",
        site,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fired = stdout(&out);
    assert!(!fired.contains("k8s.exec.into_system_pod"));
    assert!(
        !fired.contains("k8s.secrets.cluster_wide_list"),
        "the appended list entry excepts mallory"
    );
    assert!(
        !fired.contains("k8s.rbac.admin_binding"),
        "the appended exception holds"
    );
    let privileged: Vec<&str> = fired
        .lines()
        .filter(|l| l.contains("k8s.workload.privileged") && !l.starts_with(r#"{"incident""#))
        .collect();
    assert_eq!(privileged.len(), 1);
    assert!(privileged[0].contains(r#""severity":"critical""#));

    std::fs::write(
        dir.path().join("bad.yaml"),
        "overrides:\n  - {rule: no.such.rule, enabled: false}\n",
    )
    .unwrap();
    let out = audithound(&["rules", "check", "detectors/", site]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("override of no.such.rule: no rule with this id is loaded"));
}

#[test]
fn explain_reads_files_of_many_records_or_one_line_and_fails_when_it_reads_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let event = |id: &str, ns: &str| {
        format!(
            r#"{{"kind":"Event","auditID":"{id}","stage":"ResponseComplete","verb":"create","user":{{"username":"eve"}},"objectRef":{{"resource":"pods","subresource":"exec","namespace":"{ns}","name":"p"}},"responseStatus":{{"code":101}},"stageTimestamp":"2025-01-01T00:00:00Z"}}"#
        )
    };
    std::fs::write(
        &log,
        format!(
            "{}\nnot json\n{}\n",
            event("a1", "kube-system"),
            event("a3", "shop")
        ),
    )
    .unwrap();
    let log = log.to_str().unwrap();
    let all = audithound(&["rules", "explain", "k8s.exec.into_system_pod", log]);
    assert!(all.status.success());
    let text = stdout(&all);
    assert!(text.contains(":1: event a1 (native)"), "{text}");
    assert!(text.contains(":2: rejected [invalid_json]"), "{text}");
    assert!(text.contains(":3: event a3 (native)"), "{text}");
    assert_eq!(text.matches("verdict: MATCHES").count(), 1, "{text}");
    let third = audithound(&[
        "rules",
        "explain",
        "k8s.exec.into_system_pod",
        log,
        "--line",
        "3",
    ]);
    let text = stdout(&third);
    assert!(third.status.success());
    assert!(
        text.contains("event a3") && !text.contains("event a1"),
        "{text}"
    );
    assert!(text.contains("verdict: does not match"), "{text}");
    // Nothing readable at the line asked for, or in the whole file: exit status 1.
    let bad = audithound(&["rules", "explain", "k8s.exec.into_pod", log, "--line", "2"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no audit event could be read"));
    let none = audithound(&["rules", "explain", "k8s.exec.into_pod", log, "--line", "9"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no record starts on line 9"));
}

#[test]
fn explain_shows_each_matcher_and_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("ev.json");
    std::fs::write(
        &event,
        r#"{"kind":"Event","auditID":"x1","stage":"ResponseComplete","verb":"create","user":{"username":"eve"},"objectRef":{"resource":"pods","subresource":"exec","namespace":"kube-system","name":"etcd-0"},"responseStatus":{"code":101},"stageTimestamp":"2025-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let out = audithound(&[
        "rules",
        "explain",
        "k8s.exec.into_system_pod",
        event.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("✓ objectRef.namespace: \"$system_namespaces\"   (event has: kube-system)"),
        "{text}"
    );
    assert!(text.contains("verdict: MATCHES"), "{text}");
    let out = audithound(&[
        "rules",
        "explain",
        "k8s.exec.into_pod",
        event.to_str().unwrap(),
    ]);
    assert!(
        stdout(&out).contains("verdict: does not match: an exception holds"),
        "{}",
        stdout(&out)
    );
}

/// One native audit event, as the API server writes it.
fn event(
    id: &str,
    time: &str,
    user: &str,
    verb: &str,
    ip: &str,
    target: &str,
    code: u16,
) -> String {
    let target = match target.split_once('/') {
        Some((resource, ns)) => {
            format!(r#""objectRef":{{"resource":"{resource}","namespace":"{ns}"}}"#)
        }
        None => format!(r#""requestURI":"{target}""#),
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"{user}"}},"sourceIPs":["{ip}"],"userAgent":"kubectl/v1.30.0",{target},"responseStatus":{{"code":{code}}},"requestReceivedTimestamp":"{time}","stageTimestamp":"{time}"}}"#
    )
}

/// Alerts of a replay, by rule: each alert's audit ID and summary.
fn alerts_by_rule(
    out: &std::process::Output,
) -> std::collections::BTreeMap<String, Vec<(String, String)>> {
    let mut by_rule = std::collections::BTreeMap::<String, Vec<(String, String)>>::new();
    for line in stdout(out).lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        if a.get("incident").is_some() {
            continue;
        }
        by_rule
            .entry(a["rule"]["id"].as_str().unwrap().into())
            .or_default()
            .push((
                a["evidence"]["audit_ids"][0].as_str().unwrap().into(),
                a["summary"].as_str().unwrap().into(),
            ));
    }
    by_rule
}

#[test]
fn ip_lists_and_a_geoip_database_decide_which_reputation_rules_fire() {
    use audithound::reputation::{mmdb, Geo};
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(p("tor.txt"), "# Tor exits\n203.0.113.5\n").unwrap();
    std::fs::write(p("threat.csv"), "ip,source\n198.51.100.0/24,feed\n").unwrap();
    std::fs::write(p("custom.txt"), "2001:db8:42::/48\n").unwrap();
    let geo = |asn: u32, org: &str, country: &str| Geo {
        asn: Some(asn),
        as_org: Some(org.into()),
        country: Some(country.into()),
    };
    std::fs::write(
        p("asn.mmdb"),
        mmdb::write(&[
            (
                "192.0.2.0/24".parse().unwrap(),
                geo(64500, "Example Office ISP", "NL"),
            ),
            (
                "198.18.0.0/15".parse().unwrap(),
                geo(64666, "Example Hosting", "RO"),
            ),
        ]),
    )
    .unwrap();
    let overrides = dir.path().join("site");
    std::fs::create_dir(&overrides).unwrap();
    std::fs::write(
        overrides.join("on.yaml"),
        "overrides:\n  - {rule: k8s.secrets.new_asn, enabled: true}\n",
    )
    .unwrap();
    let events = [
        event(
            "tor-1",
            "2025-01-01T00:00:00Z",
            "alice@example.com",
            "list",
            "203.0.113.5",
            "secrets/shop",
            200,
        ),
        event(
            "threat-1",
            "2025-01-01T00:00:01Z",
            "system:anonymous",
            "get",
            "198.51.100.23",
            "/version",
            403,
        ),
        event(
            "custom-1",
            "2025-01-01T00:00:02Z",
            "bob@example.com",
            "get",
            "2001:db8:42::9",
            "pods/shop",
            200,
        ),
        event(
            "carol-1",
            "2025-01-01T00:00:03Z",
            "carol@example.com",
            "get",
            "192.0.2.10",
            "secrets/shop",
            200,
        ),
        // A week and a day later: the same network, then one she never read Secrets from.
        event(
            "carol-2",
            "2025-01-09T00:00:00Z",
            "carol@example.com",
            "get",
            "192.0.2.99",
            "secrets/shop",
            200,
        ),
        event(
            "carol-3",
            "2025-01-09T00:00:01Z",
            "carol@example.com",
            "get",
            "198.18.7.7",
            "secrets/shop",
            200,
        ),
        // Unlisted, unknown to the database.
        event(
            "quiet-1",
            "2025-01-09T00:00:02Z",
            "dave@example.com",
            "get",
            "203.0.113.6",
            "secrets/shop",
            200,
        ),
    ];
    std::fs::write(p("audit.log"), events.join("\n") + "\n").unwrap();
    let rules = overrides.to_str().unwrap();
    let log = p("audit.log");
    let reputation = [
        "k8s.reputation.tor_exit",
        "k8s.reputation.threat_list",
        "k8s.reputation.custom_list",
        "k8s.secrets.new_asn",
    ];

    // Without lists or a database, none of them can match.
    let out = audithound(&["replay", &log, "-q", "--rules", "builtin", "--rules", rules]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = alerts_by_rule(&out);
    assert!(
        reputation.iter().all(|r| !plain.contains_key(*r)),
        "{plain:?}"
    );

    let (tor, threat, custom, asn) = (
        format!("tor={}", p("tor.txt")),
        format!("threat={}", p("threat.csv")),
        format!("custom={}", p("custom.txt")),
        p("asn.mmdb"),
    );
    let args = [
        "replay",
        &log,
        "-q",
        "--rules",
        "builtin",
        "--rules",
        rules,
        "--ip-list",
        &tor,
        "--ip-list",
        &threat,
        "--ip-list",
        &custom,
        "--geoip",
        &asn,
    ];
    let out = audithound(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = alerts_by_rule(&out);
    let ids = |rule: &str| {
        got.get(rule)
            .map(|a| a.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(ids("k8s.reputation.tor_exit"), ["tor-1"], "{got:?}");
    // Refused, and anonymous: from a listed address all the same.
    assert_eq!(ids("k8s.reputation.threat_list"), ["threat-1"], "{got:?}");
    assert_eq!(ids("k8s.reputation.custom_list"), ["custom-1"], "{got:?}");
    assert_eq!(ids("k8s.secrets.new_asn"), ["carol-3"], "{got:?}");
    // The stateful alert is built in the collector, from the event decoded again: it still
    // sees the database.
    let summary = &got["k8s.secrets.new_asn"][0].1;
    assert!(
        summary.contains("in AS64666 (Example Hosting), RO"),
        "{summary}"
    );

    // A bad line stops the run, naming the file and line.
    std::fs::write(p("bad.txt"), "203.0.113.5\nexit-node-7\n").unwrap();
    let bad = format!("tor={}", p("bad.txt"));
    let out = audithound(&["replay", &log, "-q", "--ip-list", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.txt:2"), "{err}");

    // hunt reads the same fields.
    let out = audithound(&[
        "hunt",
        &log,
        "-q",
        "--format",
        "json",
        "--where",
        "sourceIP.lists=tor",
        "--ip-list",
        &tor,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("tor-1"));
}

#[test]
fn version_names_the_built_in_rule_library() {
    let out = audithound(&["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with("audithound ") && text.contains("rule library"),
        "{text}"
    );
}

#[test]
fn the_dumped_library_passes_its_own_tests_and_is_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("library");
    let dump = audithound(&["rules", "dump", target.to_str().unwrap()]);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(stdout(&dump).starts_with("wrote "), "{}", stdout(&dump));
    // The same files as detectors/, byte for byte.
    for f in std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("detectors")).unwrap()
    {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "yaml") {
            let name = f.file_name().unwrap();
            assert_eq!(
                std::fs::read(&f).unwrap(),
                std::fs::read(target.join(name)).unwrap(),
                "{name:?}"
            );
        }
    }
    let test = audithound(&["rules", "test", target.to_str().unwrap()]);
    assert!(test.status.success(), "{}", stdout(&test));
    assert!(
        stdout(&test).contains(" passed, 0 failed"),
        "{}",
        stdout(&test)
    );
    let again = audithound(&["rules", "dump", target.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("dump into an empty directory"));
}

#[test]
fn the_shipped_audit_policy_logs_what_the_library_reads() {
    let out = audithound(&[
        "rules",
        "check",
        "--audit-policy",
        "deploy/audit-policy.yaml",
        "--strict-policy",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("logs what every rule reads"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_policy_logging_configmaps_at_metadata_blinds_the_configmap_rule() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    // The shipped policy with ConfigMaps left to its Metadata catch-all.
    let shipped = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/audit-policy.yaml"),
    )
    .unwrap();
    let edited = shipped.replace(
        "resources: [pods, pods/ephemeralcontainers, replicationcontrollers, services, configmaps]",
        "resources: [pods, pods/ephemeralcontainers, replicationcontrollers, services]",
    );
    assert_ne!(
        edited, shipped,
        "the shipped policy changed: update this test"
    );
    std::fs::write(&policy, edited).unwrap();
    let policy = policy.to_str().unwrap();
    let out = audithound(&["rules", "check", "--audit-policy", policy]);
    assert!(
        out.status.success(),
        "warnings alone exit 0: {}",
        stdout(&out)
    );
    let text = stdout(&out);
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", stdout(&out));
    let w = warnings[0];
    for part in [
        "k8s.configmap.credentials:",
        "configmaps (create, patch, update)",
        "need Request",
        "requestObject.data[*]",
        "logged at Metadata by policy rule 11 (line ",
    ] {
        assert!(w.contains(part), "{part:?} in {w}");
    }
    // --strict-policy turns the warning into a failure; a broken policy is a usage error.
    let strict = audithound(&[
        "rules",
        "check",
        "--audit-policy",
        policy,
        "--strict-policy",
    ]);
    assert_eq!(strict.status.code(), Some(1));
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Everything\n",
    )
    .unwrap();
    let bad = audithound(&[
        "rules",
        "check",
        "--audit-policy",
        dir.path().join("bad.yaml").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Everything"));
}

#[test]
fn rules_check_reports_every_rule_s_problem_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    write_rules(
        dir.path(),
        r#"rules:
  - id: site.one
    title: One
    severity: hgih
    condition: {verb: get}
    summary: "{user.username} did it."
  - id: site.two
    title: Two
    severity: high
    condition:
      all:
        - verb: {prefx: g}
        - usr.username: x
    summary: "{user.username} did it."
  - id: site.three
    title: Three
    severity: high
    condition: {objectRef.resourc: secrets}
    summary: "{user.username} did it."
"#,
    );
    let out = audithound(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4 problems in the rules"), "{err}");
    assert!(
        err.contains("(id site.two).condition.all[1].usr.username"),
        "{err}"
    );
    assert!(
        err.contains("mine.yaml:4:5: rules[0] (id site.one).severity: unknown variant `hgih`"),
        "{err}"
    );
    assert!(
        err.contains("(id site.two).condition.all[0].verb.prefx"),
        "{err}"
    );
    assert!(
        err.contains("did you mean \"objectRef.resource\"?"),
        "{err}"
    );
}
