//! The scenario suite, scored end to end by `audithound eval`: alerts, episodes, incidents.

mod common;
use common::{audithound, root};
use serde_json::Value;

fn eval(extra: &[&str]) -> (std::process::Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut args = vec![
        "eval",
        "samples/scenarios",
        "-q",
        "--json",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = audithound(&args);
    let report = serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    (out, report)
}

#[test]
fn every_scenario_is_caught_and_the_baseline_stays_quiet() {
    let (out, r) = eval(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for family in ["revoked", "escalation", "secrets"] {
        let f = &r["families"][family];
        assert!(
            f["expected"].as_u64().unwrap() > 0,
            "{family} has no labels"
        );
        assert_eq!(f["found"], f["expected"], "{family}: recall below 1.0");
        assert_eq!(f["false_positives"], 0, "{family}: false positives");
    }
    let files = r["files"].as_array().unwrap();
    let scenarios = files
        .iter()
        .filter(|f| f["file"] != "baseline.log.zst")
        .count();
    assert!(scenarios >= 15, "only {scenarios} scenarios");
    let baseline = files
        .iter()
        .find(|f| f["file"] == "baseline.log.zst")
        .unwrap();
    assert!(baseline["events"].as_u64().unwrap() >= 100_000);
    assert_eq!(baseline["unexpected"].as_array().unwrap().len(), 0);
    // The baseline's own labels are only people's low-severity execs into application pods.
    let labels = std::fs::read_to_string(root().join("samples/scenarios/expected.labels")).unwrap();
    for l in labels
        .lines()
        .filter(|l| l.contains("\"baseline.log.zst\""))
    {
        assert!(l.contains("k8s.exec.into_pod"), "{l}");
    }
    // Each mission detector is exercised by more than one rule.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for rule in [
        "k8s.rbac.denied_granted_used",
        "k8s.credentials.unbound_still_used",
        "k8s.secrets.rate_spike",
        "k8s.secrets.new_namespace",
        "k8s.credentials.revoked_in_use",
    ] {
        assert_eq!(
            r["rules"][rule]["found"], r["rules"][rule]["expected"],
            "{rule}"
        );
        assert!(stdout.contains(rule));
    }
}

#[test]
fn episodes_cite_every_request_of_the_attack_and_each_attack_is_one_incident() {
    let (out, r) = eval(&[]);
    assert!(out.status.success());
    // An enumeration of 15 Secrets, a burst of 12 refusals, 120 reads of a rate spike: the
    // final report of each alert cites every one of them.
    let episodes = r["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 3);
    for e in episodes {
        assert!(e["expected"].as_u64().unwrap() >= 12, "{e}");
        assert_eq!(e["cited"], e["expected"], "{e}");
    }
    // Every scenario's alerts form one incident, and no two attacks' alerts share one.
    let pairs = &r["incidents"];
    assert!(pairs["labelled"].as_u64().unwrap() >= 50, "{pairs}");
    assert_eq!(pairs["both"], pairs["labelled"], "recall: {pairs}");
    assert_eq!(pairs["both"], pairs["grouped"], "precision: {pairs}");
}

#[test]
fn a_missing_detector_shows_as_lost_recall() {
    // The shipped library with the escalation chain switched off by a user override.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("off.yaml"),
        "overrides:\n  - {rule: k8s.rbac.denied_granted_used, enabled: false}\n",
    )
    .unwrap();
    let (out, r) = eval(&[
        "--rules",
        "detectors",
        "--rules",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "eval must fail when a label is missed"
    );
    let esc = &r["families"]["escalation"];
    assert_eq!(
        esc["expected"].as_u64().unwrap() - esc["found"].as_u64().unwrap(),
        1
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("missed      k8s.rbac.denied_granted_used")
    );
}
