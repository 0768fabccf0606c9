//! `audithound run`: the audit webhook receiver over real HTTP, against the same events as a
//! replay. Live and replay must raise the same alerts.

mod common;
use common::{
    alert_ids, attack_lines, audithound, free_port, replayed_ids, root, wait_until, Service,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A bare HTTP/1.1 request; returns the status code (0 when nothing answered).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> u16 {
    request(port, method, path, body).0
}

/// Status code and body.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    request_with(port, method, path, "", body)
}

/// The same with extra header lines (each ending in \r\n).
fn request_with(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return (0, String::new());
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |b| b.1).to_owned();
    (status, body)
}

/// Starts `audithound run` with `sinks` (TOML), posts the attack samples through its webhook as
/// the API server would (EventLists in time order), then stops it with SIGTERM; returns stderr.
fn run_service_with_attacks(dir: &std::path::Path, sinks: &str) -> String {
    let port = free_port();
    let config = dir.join("audithound.toml");
    std::fs::write(
        &config,
        format!(
            "[detection]\nrevocations = \"samples/revocations.yaml\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 1000000\n{sinks}"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let check = audithound(&["run", "--config", config, "--check-config"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let service = Service::start(config);
    wait_until("receiver never became ready", || {
        http(port, "GET", "/readyz", b"") == 200
    });
    let events: Vec<serde_json::Value> = attack_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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

    // Prometheus exposition, once the engine has caught up with everything accepted.
    let posted = events.len().div_ceil(7) + 1;
    let want = [
        format!("audithound_records_total {posted}\n"),
        "audithound_rule_alerts_total{rule=\"k8s.rbac.admin_binding\"} 1".to_string(),
        "audithound_rejected_total{reason=\"truncated_json\"} 1".to_string(),
        "audithound_alert_latency_seconds_count".to_string(),
        "audithound_alert_ingest_latency_seconds_count".to_string(),
        "audithound_webhook_requests_total{outcome=\"too_large\"} 1".to_string(),
    ];
    let start = Instant::now();
    loop {
        let (status, metrics) = request(port, "GET", "/metrics", b"");
        assert_eq!(status, 200);
        if want.iter().all(|w| metrics.contains(w.as_str())) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // SIGTERM: stop intake, drain, flush, exit 0.
    service.stop()
}

#[test]
fn webhook_batches_raise_the_same_alerts_as_replay() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    run_service_with_attacks(
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"file\"\npath = {:?}\n",
            alerts.to_str().unwrap()
        ),
    );
    let live = alert_ids(&std::fs::read_to_string(&alerts).unwrap());
    assert_eq!(live, replayed_ids("default"));
}

/// Requests seen, the bodies accepted, and every request's header lines.
type Received = std::sync::Arc<std::sync::Mutex<(usize, Vec<String>, Vec<String>)>>;

/// A SIEM endpoint on loopback that answers 503 to its first `failures` requests, then 200,
/// and keeps the (gunzipped) bodies it accepted.
fn siem(failures: usize) -> (u16, Received) {
    siem_with(move |n| n > failures)
}

/// A SIEM endpoint that accepts the `n`th request (from 1) when `accept(n)`, else answers 503.
fn siem_with(accept: impl Fn(usize) -> bool + Send + 'static) -> (u16, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Received = Default::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
            let (mut len, mut gzip) = (0usize, false);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
                    break;
                }
                head.push_str(&line);
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                gzip |= lower.starts_with("content-encoding: gzip");
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut state = log.lock().unwrap();
            state.0 += 1;
            state.2.push(head);
            let accept = accept(state.0);
            if accept {
                let mut text = String::new();
                if gzip {
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_string(&mut text)
                        .unwrap();
                } else {
                    text = String::from_utf8(body).unwrap();
                }
                state.1.push(text);
            }
            let status = if accept {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, seen)
}

#[test]
fn the_siem_sink_retries_until_accepted_and_loses_nothing() {
    let (port, seen) = siem(3);
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_service_with_attacks(
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/alerts\"\nprotocol = \"json\"\nbatch = 3\n"
        ),
    );
    let state = seen.lock().unwrap();
    assert!(state.0 > 3, "requests: {}", state.0);
    let mut delivered = std::collections::BTreeSet::new();
    for body in &state.1 {
        let records: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
        for r in records.iter().filter(|r| r.get("incident").is_none()) {
            delivered.insert(r["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(delivered, replayed_ids("default"), "{stderr}");
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
    assert_eq!(
        out.status.code(),
        Some(2),
        "a configuration error is a usage error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("queu"), "{err}");
}

#[test]
fn a_configured_bearer_token_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("audithound.toml");
    std::fs::write(
        &config,
        format!("[webhook]\nlisten = \"127.0.0.1:{port}\"\nbearer_token = \"s3cret\"\n[[sink]]\ntype = \"stdout\"\n"),
    )
    .unwrap();
    let service = Service::start(config.to_str().unwrap());
    wait_until("receiver never became ready", || {
        http(port, "GET", "/readyz", b"") == 200
    });
    let list = br#"{"kind":"EventList","items":[]}"#;
    assert_eq!(http(port, "POST", "/audit", list), 401);
    assert_eq!(
        request_with(
            port,
            "POST",
            "/audit",
            "Authorization: Bearer wrong\r\n",
            list
        )
        .0,
        401
    );
    assert_eq!(
        request_with(
            port,
            "POST",
            "/audit",
            "Authorization: Bearer s3cret\r\n",
            list
        )
        .0,
        200
    );
    service.stop();
}

#[test]
fn followed_files_across_a_rotation_raise_the_same_alerts_as_replay() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("audit.log");
    std::fs::write(&log, "{\"old\": \"line before the start, not read\"}\n").unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let config = dir.path().join("audithound.toml");
    std::fs::write(
        &config,
        format!(
            "[detection]\nrevocations = \"samples/revocations.yaml\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\n[files]\nfollow = [{:?}]\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
            log.to_str().unwrap(),
            alerts.to_str().unwrap()
        ),
    )
    .unwrap();
    let service = Service::start(config.to_str().unwrap());
    wait_until("never became ready", || {
        http(port, "GET", "/readyz", b"") == 200
    });
    std::thread::sleep(Duration::from_millis(300)); // the follower has opened the file at its end

    let lines = attack_lines();
    let (first, second) = lines.split_at(lines.len() / 2);
    let append = |chunk: &[String]| {
        let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for l in chunk {
            writeln!(w, "{l}").unwrap();
        }
    };
    append(first);
    // Rotation as logrotate does it: rename, then the API server opens a new file.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
    std::fs::write(&log, "").unwrap();
    append(second);

    let want = format!("audithound_records_total {}\n", lines.len());
    let start = Instant::now();
    loop {
        let (_, metrics) = request(port, "GET", "/metrics", b"");
        if metrics.contains(&want) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    service.stop();
    let live = alert_ids(&std::fs::read_to_string(&alerts).unwrap());
    assert_eq!(live, replayed_ids("default"));
}

#[test]
fn an_added_rule_file_is_used_without_a_restart_and_a_broken_one_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    for f in std::fs::read_dir(common::root().join("detectors")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, rules.join(f.file_name().unwrap())).unwrap();
    }
    let port = free_port();
    let alerts = dir.path().join("alerts.jsonl");
    let config = dir.path().join("audithound.toml");
    std::fs::write(
        &config,
        format!(
            "[detection]\nrules = [{:?}]\n[webhook]\nlisten = \"127.0.0.1:{port}\"\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
            rules.to_str().unwrap(),
            alerts.to_str().unwrap()
        ),
    )
    .unwrap();
    let service = Service::start(config.to_str().unwrap());
    wait_until("receiver never became ready", || {
        http(port, "GET", "/readyz", b"") == 200
    });
    let probe = |n: u32| {
        let event = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"00000000-0000-4000-8000-{n:012}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces","verb":"list","user":{{"username":"probe-{n}"}},"userAgent":"reload-probe/1.0","objectRef":{{"resource":"namespaces","apiVersion":"v1"}},"responseStatus":{{"code":200}},"stageTimestamp":"2025-03-04T00:00:{:02}Z"}}"#,
            n % 60
        );
        assert_eq!(http(port, "POST", "/audit", event.as_bytes()), 200);
    };
    let fired = || {
        std::fs::read_to_string(&alerts)
            .unwrap_or_default()
            .contains("site.reload_probe")
    };
    probe(0);
    wait_until("the first probe was not processed", || {
        common::metric(port, "audithound_records_total") == Some(1)
    });
    assert!(!fired(), "no such rule yet");

    // A broken file first: logged, and the rules in force stay.
    std::fs::write(
        rules.join("site.yaml"),
        "rules: [{id: site.reload_probe, nope: 1}]\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(
        rules.join("site.yaml"),
        "rules:\n  - id: site.reload_probe\n    title: Reload probe\n    severity: low\n    condition: {userAgent: {prefix: reload-probe/}}\n    summary: \"{user.username} probed\"\n",
    )
    .unwrap();
    let mut n = 1;
    wait_until("the added rule never fired", || {
        probe(n);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
        fired()
    });
    let stderr = service.stop();
    assert!(stderr.contains("rules NOT reloaded"), "{stderr}");
}

/// One audit event at `time` (seconds after 12:00).
fn event_at(id: &str, seconds: u32, user: &str, verb: &str, object: &str, code: u16) -> String {
    let time = format!("2025-03-04T12:00:{seconds:02}.000000Z");
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/x","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["10.0.4.2"],"userAgent":"agent/1.0","objectRef":{object},"responseStatus":{{"code":{code}}},"requestReceivedTimestamp":"{time}","stageTimestamp":"{time}"}}"#
    )
}

/// Two API servers: one logs a service account's deletion at 12:00:00, the other the account's
/// token used at 12:00:03. Their webhook batches arrive the wrong way round (the later event's
/// server posts first). A replay merges the two logs by time and alerts; the live service must
/// too, because its detectors wait (`lateness`) for events a few seconds older than the newest.
#[test]
fn api_servers_posting_out_of_order_raise_the_replays_alerts() {
    let delete = event_at(
        "00000000-0000-4000-8000-000000000001",
        0,
        "bob@example.com",
        "delete",
        r#"{"resource":"serviceaccounts","namespace":"mon","name":"exporter","apiVersion":"v1"}"#,
        200,
    );
    let used = event_at(
        "00000000-0000-4000-8000-000000000002",
        3,
        "system:serviceaccount:mon:exporter",
        "list",
        r#"{"resource":"pods","apiVersion":"v1"}"#,
        200,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server-a.log"), format!("{used}\n")).unwrap();
    std::fs::write(dir.path().join("server-b.log"), format!("{delete}\n")).unwrap();
    let replay = audithound(&["replay", "-q", dir.path().to_str().unwrap()]);
    let replayed = alert_ids(&String::from_utf8_lossy(&replay.stdout));
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("k8s.serviceaccount.used_after_deletion"),
        "the replay itself must alert"
    );

    let live = |lateness: &str| {
        let port = free_port();
        let alerts = dir.path().join(format!("alerts-{lateness}.jsonl"));
        let config = dir.path().join(format!("live-{lateness}.toml"));
        std::fs::write(
            &config,
            format!(
                "[detection]\nlateness = \"{lateness}\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
                alerts.to_str().unwrap()
            ),
        )
        .unwrap();
        let service = Service::start(config.to_str().unwrap());
        wait_until("receiver never became ready", || {
            http(port, "GET", "/readyz", b"") == 200
        });
        for event in [&used, &delete] {
            let list = format!(
                r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{event}]}}"#
            );
            assert_eq!(http(port, "POST", "/audit", list.as_bytes()), 200);
        }
        // Nothing comes after them: the service applies what waits after a quiet spell.
        wait_until("the events were never analysed", || {
            let (_, metrics) = request(port, "GET", "/metrics", b"");
            metrics.contains("audithound_events_total 2\n")
        });
        std::thread::sleep(Duration::from_secs(3));
        let written = std::fs::read_to_string(&alerts).unwrap_or_default();
        service.stop();
        alert_ids(&written)
    };
    assert_eq!(live("10s"), replayed);
    // Without waiting, the use arrives before the deletion is known: the alert is lost. This is
    // what the test guards against.
    assert!(live("0s").is_empty());
}

/// A program of Debian's `prometheus` package (`prometheus`, `promtool`), which scripts/test
/// installs. Missing, the test fails and says so: it is never skipped.
fn prometheus_program(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found: run scripts/test, which installs Debian's prometheus package \
                 (prometheus and promtool) for this test"
            )
        })
}

/// A real Prometheus on loopback scraping `target` every second, stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: audithound\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new(prometheus_program("prometheus"))
            .current_dir(dir.path())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The JSON answer of an HTTP API call (`/api/v1/…`), if Prometheus answers yet.
    fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<serde_json::Value> {
        let mut req = ureq::get(&format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5));
        for (k, v) in query {
            req = req.query(k, v);
        }
        let text = req.call().ok()?.into_string().ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The value of an instant query's first sample.
    fn sample(&self, query: &str) -> Option<f64> {
        let answer = self.api("/api/v1/query", &[("query", query)])?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service with the webhook and the ops listener on ports of their own.
fn ops_config(dir: &std::path::Path, hook: u16, ops: u16, sinks: &str) -> String {
    let config = dir.join("audithound.toml");
    std::fs::write(
        &config,
        format!("[webhook]\nlisten = \"127.0.0.1:{hook}\"\n[ops]\nlisten = \"127.0.0.1:{ops}\"\n{sinks}"),
    )
    .unwrap();
    config.to_str().unwrap().to_owned()
}

/// The attack samples as EventList bodies of seven events, as an API server posts them.
fn attack_bodies() -> (usize, Vec<String>) {
    let events: Vec<serde_json::Value> = attack_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bodies = events
        .chunks(7)
        .map(|chunk| {
            serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": chunk})
                .to_string()
        })
        .collect();
    (events.len(), bodies)
}

#[test]
fn prometheus_scrapes_the_ops_listener_and_promtool_accepts_the_exposition() {
    let (prometheus, promtool) = (
        prometheus_program("prometheus"),
        prometheus_program("promtool"),
    );
    assert!(prometheus.is_file());
    let dir = tempfile::tempdir().unwrap();
    let (hook, ops) = (free_port(), free_port());
    let alerts = dir.path().join("alerts.jsonl");
    let config = ops_config(
        dir.path(),
        hook,
        ops,
        &format!(
            "[[sink]]\ntype = \"file\"\npath = {:?}\n",
            alerts.to_str().unwrap()
        ),
    );
    let service = Service::start(&config);
    wait_until("the ops listener never became ready", || {
        http(ops, "GET", "/readyz", b"") == 200
    });
    assert_eq!(http(ops, "GET", "/healthz", b""), 200);

    let (events, bodies) = attack_bodies();
    for body in &bodies {
        assert_eq!(http(hook, "POST", "/audit", body.as_bytes()), 200);
    }
    // Two listeners: the ops port takes no audit events, and serves no webhook.
    assert_ne!(http(ops, "POST", "/audit", bodies[0].as_bytes()), 200);
    assert_ne!(ops, hook);
    let want = format!("audithound_events_total {events}\n");
    let mut exposition = String::new();
    wait_until("the engine never caught up", || {
        exposition = request(ops, "GET", "/metrics", b"").1;
        exposition.contains(&want) && exposition.contains("audithound_alert_latency_seconds_sum")
    });
    assert!(
        exposition.contains(&format!(
            "audithound_webhook_requests_total{{outcome=\"accepted\"}} {}\n",
            bodies.len()
        )),
        "{exposition}"
    );

    // promtool's linter: HELP and TYPE for every family, _total counters, base units.
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real scrape: the samples reach Prometheus's own query API.
    let server = Prometheus::start(ops);
    common::wait_up_to(60, "Prometheus never stored a scrape of /metrics", || {
        server.sample("audithound_events_total") == Some(events as f64)
    });
    let targets = server.api("/api/v1/targets", &[]).unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{targets}\n{}", server.log());
    assert_eq!(target["lastError"], "", "{targets}");
    let alerts_raised = server.sample("sum(audithound_rule_alerts_total)").unwrap();
    assert!(alerts_raised > 10.0, "{alerts_raised}");
    assert!(server
        .sample("audithound_alert_latency_seconds_count")
        .is_some_and(|n| n > 0.0));
    drop(server);
    service.stop();
}

/// SIGTERM stops intake at once; the ops listener stays up while the engine drains (here: a
/// SIEM refusing the alerts), answering /readyz 503 and /healthz 200, and the service exits 0
/// once everything accepted is delivered.
#[test]
fn readiness_drops_at_the_signal_and_the_ops_listener_outlives_the_drain() {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    let (siem_port, seen) = siem_with(move |_| gate.load(std::sync::atomic::Ordering::Relaxed));
    let dir = tempfile::tempdir().unwrap();
    let (hook, ops) = (free_port(), free_port());
    let config = ops_config(
        dir.path(),
        hook,
        ops,
        &format!(
            "[[sink]]\ntype = \"http\"\nurl = \"http://127.0.0.1:{siem_port}/alerts\"\nbatch = 1\nmax_retry_seconds = 120\n"
        ),
    );
    let service = Service::start(&config);
    // Starting: the window before the sources start is too short to observe; once up, ready.
    wait_until("never became ready", || {
        http(ops, "GET", "/readyz", b"") == 200
    });
    let event =
        std::fs::read_to_string(root().join("samples/attacks/exec-system-pod.log")).unwrap();
    let items: Vec<serde_json::Value> = event
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let list = serde_json::json!({"kind": "EventList", "items": items}).to_string();
    assert_eq!(http(hook, "POST", "/audit", list.as_bytes()), 200);
    wait_until("the sink never tried the SIEM", || {
        seen.lock().unwrap().0 > 0
    });

    service.terminate();
    wait_until("/readyz still 200 after SIGTERM", || {
        http(ops, "GET", "/readyz", b"") == 503
    });
    assert_eq!(http(ops, "GET", "/healthz", b""), 200);
    assert_eq!(request(ops, "GET", "/metrics", b"").0, 200);
    wait_until("the webhook still takes requests after SIGTERM", || {
        http(hook, "POST", "/audit", list.as_bytes()) == 0
    });

    open.store(true, std::sync::atomic::Ordering::Relaxed);
    let stderr = service.wait();
    wait_until("the ops listener outlived the service", || {
        http(ops, "GET", "/healthz", b"") == 0
    });
    let state = seen.lock().unwrap();
    let delivered = state.1.join("\n");
    assert!(
        delivered.contains("k8s.exec.into_system_pod"),
        "{delivered}\n{stderr}"
    );
}

/// Tokens from `${VAR}` and from `bearer_token_file`, and HTTP sink headers from `${VAR}`
/// (`Authorization`, and an API key header, which ureq's own debug lines do not mask), are used
/// (the webhook checks the token, the SIEM receives the headers) and appear nowhere else: not
/// in `--check-config`, not in the debug log (`-v`), not on `/metrics`.
#[test]
fn secrets_reach_only_where_they_are_used() {
    const WEBHOOK: &str = "wh-9f3c1e7a-5d1b-secret";
    const FROM_FILE: &str = "file-77aa01bd-c3e9-secret";
    const HEC: &str = "hec-5b2d8c40-a1f6-secret";
    const API_KEY: &str = "key-0c4e9d21-77b3-secret";
    let secrets = [WEBHOOK, FROM_FILE, HEC, API_KEY];
    let leaked = |text: &str| secrets.iter().find(|s| text.contains(*s)).copied();
    let (siem_port, seen) = siem(0);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{FROM_FILE}\n")).unwrap();
    let env = [
        ("AUDITHOUND_TEST_WEBHOOK_TOKEN", WEBHOOK),
        ("AUDITHOUND_TEST_HEC_TOKEN", HEC),
        ("AUDITHOUND_TEST_API_KEY", API_KEY),
    ];
    let (events, bodies) = attack_bodies();
    for (auth, token) in [
        (
            "bearer_token = \"${AUDITHOUND_TEST_WEBHOOK_TOKEN}\"".to_string(),
            WEBHOOK,
        ),
        (format!("bearer_token_file = {token_file:?}"), FROM_FILE),
    ] {
        let (hook, ops) = (free_port(), free_port());
        let config = dir.path().join("audithound.toml");
        std::fs::write(
            &config,
            format!(
                "[webhook]\nlisten = \"127.0.0.1:{hook}\"\n{auth}\n[ops]\nlisten = \"127.0.0.1:{ops}\"\n[[sink]]\ntype = \"http\"\nurl = \"http://127.0.0.1:{siem_port}/services/collector/event\"\nprotocol = \"splunk_hec\"\nheaders = {{ Authorization = \"Splunk ${{AUDITHOUND_TEST_HEC_TOKEN}}\", X-Api-Key = \"${{AUDITHOUND_TEST_API_KEY}}\" }}\n"
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_audithound"))
            .current_dir(root())
            .args(["run", "-v", "--config", config, "--check-config"])
            .envs(env)
            .output()
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(check.status.success(), "{shown}");
        assert!(shown.contains("a bearer token"), "{shown}");
        assert_eq!(leaked(&shown), None, "--check-config: {shown}");

        let service = Service::spawn_with_env(&["run", "-v", "--config", config], &env);
        wait_until("never became ready", || {
            http(ops, "GET", "/readyz", b"") == 200
        });
        // Refused: no token, a wrong one, the other configuration's token.
        let other = if token == WEBHOOK { FROM_FILE } else { WEBHOOK };
        assert_eq!(http(hook, "POST", "/audit", bodies[0].as_bytes()), 401);
        for wrong in ["nope", other] {
            let header = format!("Authorization: Bearer {wrong}\r\n");
            let status = request_with(hook, "POST", "/audit", &header, bodies[0].as_bytes()).0;
            assert_eq!(status, 401);
        }
        let header = format!("Authorization: Bearer {token}\r\n");
        for body in &bodies {
            assert_eq!(
                request_with(hook, "POST", "/audit", &header, body.as_bytes()).0,
                200
            );
        }
        let want = format!("audithound_events_total {events}\n");
        let mut metrics = String::new();
        wait_until("the events were never analysed", || {
            metrics = request(ops, "GET", "/metrics", b"").1;
            metrics.contains(&want)
        });
        let on_the_webhook = request_with(hook, "GET", "/metrics", &header, b"").1;
        assert!(on_the_webhook.contains(&want));
        for text in [&metrics, &on_the_webhook] {
            assert_eq!(leaked(text), None, "/metrics: {text}");
        }
        wait_until("the SIEM never got an alert", || {
            seen.lock().unwrap().2.iter().any(|h| {
                h.contains(&format!("Splunk {HEC}")) && h.contains(&format!("X-Api-Key: {API_KEY}"))
            })
        });
        let log = service.stop();
        assert!(log.contains("DEBUG"), "-v logs debug lines: {log}");
        // Refusals name the peer and the reason, never the token offered.
        assert!(
            log.lines().any(|l| l.contains("webhook request refused")
                && l.contains("peer=127.0.0.1:")
                && l.contains("no bearer token")),
            "{log}"
        );
        assert_eq!(leaked(&log), None, "the log: {log}");
    }
}

/// A `${VAR}` that is not set is a configuration error, exit status 2, naming the key.
#[test]
fn an_unset_variable_is_a_configuration_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("audithound.toml");
    std::fs::write(
        &config,
        "[webhook]\nlisten = \"127.0.0.1:1\"\n[[sink]]\ntype = \"http\"\nurl = \"https://siem.example.com\"\nheaders = { Authorization = \"Splunk ${AUDITHOUND_TEST_NEVER_SET}\" }\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for args in [
        vec!["run", "--config", config, "--check-config"],
        vec!["run", "--config", config],
    ] {
        let out = audithound(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("[[sink]] #1: type = \"http\", key `headers`")
                && err.contains("AUDITHOUND_TEST_NEVER_SET is not set"),
            "{err}"
        );
    }
}

#[test]
fn a_service_killed_at_any_point_and_restarted_raises_every_alert_of_an_uninterrupted_run() {
    let (_, batches) = attack_bodies();
    let want = replayed_ids("default");
    // Killed after a quarter, half and three quarters of the input (and snapshotting often,
    // so that some kills come after a snapshot and some before the next).
    for kill_after in [batches.len() / 4, batches.len() / 2, 3 * batches.len() / 4] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let alerts = dir.path().join("alerts.jsonl");
        let config = dir.path().join("audithound.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\nsnapshot_every = \"1s\"\n[detection]\nrevocations = \"samples/revocations.yaml\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
                dir.path().join("state").to_str().unwrap(),
                alerts.to_str().unwrap()
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let post_all = |range: std::ops::Range<usize>| {
            for body in &batches[range] {
                assert_eq!(http(port, "POST", "/audit", body.as_bytes()), 200);
            }
        };
        let service = Service::start(config);
        wait_until("never became ready", || {
            http(port, "GET", "/readyz", b"") == 200
        });
        post_all(0..kill_after);
        // Some snapshots happen while the first part is processed.
        std::thread::sleep(Duration::from_millis(1500));
        // Acknowledged with 200, then a crash: nothing may be lost.
        service.kill();
        let service = Service::start(config);
        wait_until("never became ready again", || {
            http(port, "GET", "/readyz", b"") == 200
        });
        post_all(kill_after..batches.len());
        std::thread::sleep(Duration::from_millis(500));
        service.stop();
        let live = alert_ids(&std::fs::read_to_string(&alerts).unwrap());
        let missing: Vec<&String> = want.difference(&live).collect();
        let extra: Vec<&String> = live.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "killed after {kill_after} of {} batches: missing {missing:?}, unexpected {extra:?}",
            batches.len()
        );
    }
}

#[test]
fn a_followed_file_killed_half_way_with_the_rest_appended_while_down_loses_nothing() {
    let lines = attack_lines();
    let want = replayed_ids("default");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(&log, "").unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let port = free_port();
    let config = dir.path().join("audithound.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nsnapshot_every = \"1s\"\n[detection]\nrevocations = \"samples/revocations.yaml\"\n[ops]\nlisten = \"127.0.0.1:{port}\"\n[files]\nfollow = [{:?}]\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
            dir.path().join("state").to_str().unwrap(),
            log.to_str().unwrap(),
            alerts.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let append = |chunk: &[String]| {
        let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for l in chunk {
            writeln!(w, "{l}").unwrap();
        }
    };
    let (first, second) = lines.split_at(lines.len() / 2);
    let service = Service::start(config);
    wait_until("never became ready", || {
        http(port, "GET", "/readyz", b"") == 200
    });
    append(first);
    std::thread::sleep(Duration::from_millis(1500));
    service.kill();
    // Written while the service is down.
    append(second);
    let service = Service::start(config);
    wait_until("never became ready again", || {
        http(port, "GET", "/readyz", b"") == 200
    });
    std::thread::sleep(Duration::from_millis(1500));
    service.stop();
    let live = alert_ids(&std::fs::read_to_string(&alerts).unwrap());
    let missing: Vec<&String> = want.difference(&live).collect();
    let extra: Vec<&String> = live.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
}

/// The last record of each incident and episode in JSON lines, by id, with its status.
fn final_records(jsonl: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut last = std::collections::BTreeMap::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (id, record) = match v.get("incident") {
            Some(i) => (format!("incident {}", i["id"].as_str().unwrap()), i.clone()),
            None if v.get("status").is_some() => {
                (format!("episode {}", v["id"].as_str().unwrap()), v.clone())
            }
            None => continue,
        };
        last.insert(id, record);
    }
    last
}

/// Episodes and incidents run on event time: once the live input has moved past them (here a
/// quiet request the next day), the live service closes every one of them with, field for
/// field, the replay's closing record.
/// A service with `detection` as its `[detection]` section, a webhook and a file sink, sent the
/// attack samples: (the service, its port, the events posted, the sink's file).
fn service_sent_the_attack(
    dir: &std::path::Path,
    detection: &str,
) -> (Service, u16, usize, std::path::PathBuf) {
    let alerts = dir.join("alerts.jsonl");
    let port = free_port();
    let config = dir.join("audithound.toml");
    std::fs::write(
        &config,
        format!(
            "[detection]\n{detection}[webhook]\nlisten = \"127.0.0.1:{port}\"\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
            alerts.to_str().unwrap()
        ),
    )
    .unwrap();
    let service = Service::start(config.to_str().unwrap());
    wait_until("never became ready", || {
        http(port, "GET", "/readyz", b"") == 200
    });
    let (events, bodies) = attack_bodies();
    for body in &bodies {
        assert_eq!(http(port, "POST", "/audit", body.as_bytes()), 200);
    }
    (service, port, events, alerts)
}

#[test]
fn live_episodes_and_incidents_end_as_the_replays_do() {
    let dir = tempfile::tempdir().unwrap();
    let (service, port, events, alerts) =
        service_sent_the_attack(dir.path(), "revocations = \"samples/revocations.yaml\"\n");
    let namespace = r#"{"resource":"namespaces","name":"shop","apiVersion":"v1"}"#;
    let next_day = event_at("next-day", 0, "alice@example.com", "get", namespace, 200)
        .replace("2025-03-04T12:", "2025-03-05T12:");
    assert_eq!(http(port, "POST", "/audit", next_day.as_bytes()), 200);
    wait_until("the engine never caught up", || {
        common::metric(port, "audithound_events_total") == Some(events as u64 + 1)
    });
    std::thread::sleep(Duration::from_millis(500));
    service.stop();

    let live = final_records(&std::fs::read_to_string(&alerts).unwrap());
    let replay = audithound(&[
        "replay",
        "samples/attacks",
        "-q",
        "--revocations",
        "samples/revocations.yaml",
    ]);
    let replayed = final_records(&common::stdout(&replay));
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        replayed.keys().collect::<Vec<_>>()
    );
    assert!(live.len() >= 10, "{}", live.len());
    for (id, record) in &live {
        assert_eq!(record, &replayed[id], "{id}");
        assert_eq!(record["status"], "closed", "{id}");
    }
}

/// `[detection]` settings reach the service as they reach `replay`: with `incidents = false`
/// the sink gets the alerts and no incident record.
#[test]
fn the_service_honours_the_detection_section_s_incident_settings() {
    let dir = tempfile::tempdir().unwrap();
    let detection =
        "incidents = false\nincident_gap = \"5m\"\nepisode_cap = 5\nmax_open_incidents = 3\n";
    let (service, port, events, alerts) = service_sent_the_attack(dir.path(), detection);
    wait_until("the engine never caught up", || {
        common::metric(port, "audithound_events_total") == Some(events as u64)
    });
    std::thread::sleep(Duration::from_millis(500));
    service.stop();
    let out = std::fs::read_to_string(&alerts).unwrap();
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() >= 10, "{}", records.len());
    assert!(
        records.iter().all(|r| r.get("incident").is_none()),
        "incidents are off"
    );
    // episode_cap = 5: no episode lists more than five audit IDs.
    let listed = |r: &serde_json::Value| {
        r["episode"]["audit_ids"]["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(
        records.iter().any(|r| listed(r) == 5),
        "an episode at its cap"
    );
    assert!(records.iter().all(|r| listed(r) <= 5));
}
