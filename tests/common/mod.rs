//! Shared by the integration tests: running the built binary from the repository root.
#![allow(dead_code)] // each test file uses the helpers it needs

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn audithound(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_audithound"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run audithound")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `audithound replay ARGS --summary-json <temp>`: asserts the run succeeded and returns its
/// output with the parsed summary.
pub fn replay_with_summary(args: &[&str]) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("summary.json");
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.extend(["--summary-json", path.to_str().expect("utf-8 temp path")]);
    let out = audithound(&all);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = serde_json::from_slice(&std::fs::read(&path).expect("summary written"))
        .expect("summary is JSON");
    (out, summary)
}

/// `audithound run -q --config CONFIG` running in the background. Its stderr is read as it
/// comes (a chatty service never blocks on a full pipe) and kept for the test.
pub struct Service {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    pub fn start(config: &str) -> Service {
        Service::spawn(&["run", "-q", "--config", config])
    }

    /// `audithound ARGS…` in the background, stopped like a service.
    pub fn spawn(args: &[&str]) -> Service {
        Service::spawn_with_env(args, &[])
    }

    /// The same with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Service {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_audithound"))
            .current_dir(root())
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start audithound");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = child.stderr.take().map(|stderr| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut lines = std::io::BufReader::new(stderr);
                let mut line = String::new();
                while lines.read_line(&mut line).unwrap_or(0) > 0 {
                    log.lock().expect("log lock").push_str(&line);
                    line.clear();
                }
            })
        });
        Service { child, log, reader }
    }

    /// What the service wrote on stderr up to now.
    pub fn stderr_so_far(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// SIGTERM, without waiting for the exit.
    pub fn terminate(&self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// SIGKILL: no drain, no flush, no commit (a crash or an OOM kill).
    #[allow(dead_code)] // only the Kafka tests crash it
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit: asserts it was clean and returns stderr.
    pub fn stop(self) -> String {
        self.terminate();
        self.wait()
    }

    /// The exit (after a signal sent earlier, or the end of its input): asserts it was clean
    /// and returns stderr.
    pub fn wait(mut self) -> String {
        let status = self.child.wait().expect("wait for audithound run");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let stderr = self.stderr_so_far();
        assert!(status.success(), "{stderr}");
        stderr
    }
}

/// Polls `ready` every 50 ms for up to 20 s; panics with `what` if it never holds.
pub fn wait_until(what: &str, ready: impl FnMut() -> bool) {
    wait_up_to(20, what, ready)
}

/// Polls `ready` every 50 ms for up to `secs` seconds; panics with `what` if it never holds.
pub fn wait_up_to(secs: u64, what: &str, mut ready: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "{what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every event of `samples/attacks/`, as JSON lines in event-time order (how a live source would
/// deliver them).
pub fn attack_lines() -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for f in std::fs::read_dir(root().join("samples/attacks")).expect("samples/attacks") {
        let text = std::fs::read_to_string(f.expect("dir entry").path()).expect("attack file");
        lines.extend(text.lines().map(str::to_owned));
    }
    let time = |l: &String| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        v["stageTimestamp"].as_str().unwrap_or("").to_owned()
    };
    lines.sort_by_key(time);
    lines
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The ids of the alerts in a JSON-lines text (ids are stable and include the rule);
/// incident records (`{"incident": …}`) are left out.
pub fn alert_ids(jsonl: &str) -> std::collections::BTreeSet<String> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("incident").is_none())
        .map(|v| v["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

impl Drop for Service {
    /// A test that fails midway leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A counter of the service's `/metrics` (served on the webhook's port), if it answers.
#[allow(dead_code)] // not every test reads metrics
pub fn metric(port: u16, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The alert ids a replay of the attack samples raises, their events in `cluster`.
#[allow(dead_code)] // not every test compares with a replay
pub fn replayed_ids(cluster: &str) -> std::collections::BTreeSet<String> {
    let replay = audithound(&[
        "replay",
        "samples/attacks",
        "-q",
        "--revocations",
        "samples/revocations.yaml",
        "--cluster",
        cluster,
    ]);
    let ids = alert_ids(&String::from_utf8_lossy(&replay.stdout));
    assert!(ids.len() > 10);
    ids
}

/// A SIEM endpoint on loopback: 503 while `down`, else 200, keeping the alert ids it accepted
/// (JSON arrays, gzip) and counting the requests it refused.
#[allow(dead_code)]
pub struct Siem {
    pub port: u16,
    pub down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub accepted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub refused: std::sync::Arc<std::sync::Mutex<usize>>,
}

#[allow(dead_code)] // only the durability tests take a SIEM down
pub fn siem() -> Siem {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let siem = Siem {
        port,
        down: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        accepted: std::sync::Arc::default(),
        refused: std::sync::Arc::default(),
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
                if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0
                    || line == "\r\n"
                {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                continue;
            }
            let status = if down.load(std::sync::atomic::Ordering::SeqCst) {
                *refused.lock().unwrap() += 1;
                "503 Service Unavailable"
            } else {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(&body[..]),
                    &mut text,
                )
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
            let _ = std::io::Write::write_fmt(
                &mut s,
                format_args!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            );
        }
    });
    siem
}

/// POSTs `body` to the webhook on `port` as the API server would; the status code (0 when
/// nothing answered).
#[allow(dead_code)] // not every test posts
pub fn post_audit(port: u16, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
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

/// The whole `/metrics` exposition on `port` (empty when nothing answered).
#[allow(dead_code)] // not every test reads metrics
pub fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}
