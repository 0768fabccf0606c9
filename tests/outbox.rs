//! Sinks never drop: with `state_dir`, alerts a SIEM has not accepted wait in the sink's outbox,
//! across an outage longer than any retry budget and a crash in the middle of it.

mod common;
use common::{
    attack_lines, free_port, metrics_text, post_audit, replayed_ids, siem, wait_until, wait_up_to,
    Service,
};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The value of the first sample of `family` (labels ignored).
fn sample(text: &str, family: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn alerts_wait_out_a_siem_outage_longer_than_the_retry_budget_and_a_crash_in_it() {
    let siem = siem();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("audithound.toml");
    // A retry budget of one second: without the outbox the outage would outlast it.
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nsnapshot_every = \"1s\"\n[detection]\nrevocations = \"samples/revocations.yaml\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\n[[sink]]\ntype = \"http\"\nurl = \"http://127.0.0.1:{}/alerts\"\nbatch = 4\nmax_retry_seconds = 1\n",
            dir.path().join("state").to_str().unwrap(),
            siem.port
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let events: Vec<serde_json::Value> = attack_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = replayed_ids("default");

    let service = Service::start(config);
    wait_until("never became ready", || !metrics_text(port).is_empty());
    for chunk in events.chunks(7) {
        let list = serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": chunk});
        assert_eq!(post_audit(port, list.to_string().as_bytes()), 200);
    }
    // Every alert is in the outbox, the SIEM has refused it for longer than the budget.
    wait_up_to(30, "the outbox never held every alert", || {
        sample(&metrics_text(port), "audithound_outbox_pending").unwrap_or(0) >= want.len() as u64
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(*siem.refused.lock().unwrap() >= 2);
    assert!(siem.accepted.lock().unwrap().is_empty());
    // A crash in the outage.
    service.kill();

    let service = Service::start(config);
    wait_until("never became ready again", || {
        !metrics_text(port).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    siem.down.store(false, Ordering::SeqCst);
    wait_up_to(60, "the outbox never emptied", || {
        let m = metrics_text(port);
        sample(&m, "audithound_outbox_pending") == Some(0)
            && sample(&m, "audithound_outbox_delivered_total").unwrap_or(0) > 0
    });
    let stderr = service.stop();
    let accepted = siem.accepted.lock().unwrap();
    let delivered: BTreeSet<String> = accepted.iter().cloned().collect();
    let missing: Vec<&String> = want.difference(&delivered).collect();
    let extra: Vec<&String> = delivered.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}\n{stderr}"
    );
}
