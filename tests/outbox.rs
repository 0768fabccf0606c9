//! Sinks never drop: with `state_dir`, alerts a SIEM has not accepted wait in the sink's outbox,
//! across an outage longer than any retry budget and a crash in the middle of it.

mod common;
use common::{attack_lines, free_port, replayed_ids, wait_until, wait_up_to, Service};
use std::collections::BTreeSet;
use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A SIEM endpoint on loopback: 503 while `down`, else 200, keeping the alert ids it accepted
/// (JSON arrays, gzip) and counting the requests it refused.
struct Siem {
    port: u16,
    down: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
}

fn siem() -> Siem {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let siem = Siem {
        port,
        down: Arc::new(AtomicBool::new(true)),
        accepted: Arc::default(),
        refused: Arc::default(),
    };
    let (down, accepted, refused) = (
        siem.down.clone(),
        siem.accepted.clone(),
        siem.refused.clone(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let status = if down.load(Ordering::SeqCst) {
                *refused.lock().unwrap() += 1;
                "503 Service Unavailable"
            } else {
                let mut text = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut text)
                    .unwrap();
                let records: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
                accepted.lock().unwrap().extend(
                    records
                        .iter()
                        .filter(|r| r.get("incident").is_none())
                        .map(|r| r["id"].as_str().unwrap().to_owned()),
                );
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    siem
}

fn post(port: u16, body: &[u8]) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let head = format!(
        "POST /audit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn metrics(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

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
    wait_until("never became ready", || !metrics(port).is_empty());
    for chunk in events.chunks(7) {
        let list = serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": chunk});
        assert_eq!(post(port, list.to_string().as_bytes()), 200);
    }
    // Every alert is in the outbox, the SIEM has refused it for longer than the budget.
    wait_up_to(30, "the outbox never held every alert", || {
        sample(&metrics(port), "audithound_outbox_pending").unwrap_or(0) >= want.len() as u64
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(*siem.refused.lock().unwrap() >= 2);
    assert!(siem.accepted.lock().unwrap().is_empty());
    // A crash in the outage.
    service.kill();

    let service = Service::start(config);
    wait_until("never became ready again", || !metrics(port).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    siem.down.store(false, Ordering::SeqCst);
    wait_up_to(60, "the outbox never emptied", || {
        let m = metrics(port);
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
