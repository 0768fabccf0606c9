//! `audithound run`: the audit webhook receiver over real HTTP, against the same events as a
//! replay. Live and replay must raise the same alerts.

mod common;
use common::{audithound, root};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A bare HTTP/1.1 request; returns the status code (0 when nothing answered).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return 0;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn alert_ids(jsonl: &str) -> std::collections::BTreeSet<String> {
    jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                v["rule"]["id"].as_str().unwrap(),
                v["id"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn webhook_batches_raise_the_same_alerts_as_replay() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let alerts = dir.path().join("alerts.jsonl");
    let config = dir.path().join("audithound.toml");
    std::fs::write(
        &config,
        format!(
            "[detection]\nrevocations = \"samples/revocations.yaml\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 1000000\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
            alerts.to_str().unwrap()
        ),
    )
    .unwrap();
    let check = audithound(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--check-config",
    ]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_audithound"))
        .current_dir(root())
        .args(["run", "-q", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while http(port, "GET", "/readyz", b"") != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "receiver never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The attack snippets' events in time order, posted as the API server does: EventLists.
    let mut events: Vec<serde_json::Value> = Vec::new();
    for f in std::fs::read_dir(root().join("samples/attacks")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        events.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    events.sort_by(|a, b| {
        let t = |e: &serde_json::Value| e["stageTimestamp"].as_str().unwrap_or("").to_owned();
        t(a).cmp(&t(b))
    });
    for chunk in events.chunks(7) {
        let list = serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": chunk});
        assert_eq!(
            http(port, "POST", "/audit", list.to_string().as_bytes()),
            200
        );
    }
    // Hostile bodies: counted, never fatal; an oversized one is refused outright.
    assert_eq!(http(port, "POST", "/audit", b"{\"items\": [tru"), 200);
    assert_eq!(http(port, "POST", "/audit", &vec![b' '; 2_000_000]), 413);

    // SIGTERM: stop intake, drain, flush, exit 0.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");

    let live = alert_ids(&std::fs::read_to_string(&alerts).unwrap());
    let replay = audithound(&[
        "replay",
        "samples/attacks",
        "-q",
        "--revocations",
        "samples/revocations.yaml",
    ]);
    let replayed = alert_ids(&String::from_utf8_lossy(&replay.stdout));
    assert!(replayed.len() > 10);
    assert_eq!(live, replayed);
}

#[test]
fn a_bad_config_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[webhook]\nlisten = \"127.0.0.1:1\"\nqueu = 4\n").unwrap();
    let out = audithound(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--check-config",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("queu"), "{err}");
}
