//! A webhook that cannot be left open: it refuses to listen beyond loopback unauthenticated,
//! cuts slow and silent clients off while serving the others, and caps its connections.

mod common;
use common::{audithound, free_port, wait_until, Service};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("audithound.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A POST of one empty EventList; the status code (0 when nothing answered).
fn post(port: u16) -> u16 {
    common::post_audit(
        port,
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#,
    )
}

/// Whether the server closed `s`, waiting up to `wait` for a sign.
fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (408) before the close.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_webhook_open_to_anyone_is_refused_unless_something_in_front_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("[webhook]\nlisten = \"0.0.0.0:{port}\"\n");
    let open = config(dir.path(), &base);
    let check = audithound(&["run", "--config", &open, "--check-config"]);
    assert_eq!(check.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("anyone who can reach it") && stderr.contains("allow_unauthenticated"),
        "{stderr}"
    );
    // Starting it is refused the same way, before anything listens.
    let run = audithound(&["run", "-q", "--config", &open]);
    assert_eq!(run.status.code(), Some(2));
    for fix in [
        "bearer_token = \"s3cret\"\n",
        "allow_unauthenticated = true\n",
    ] {
        let ok = config(dir.path(), &format!("{base}{fix}"));
        let check = audithound(&["run", "--config", &ok, "--check-config"]);
        assert!(
            check.status.success(),
            "{fix}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    // Loopback needs nothing.
    let local = config(
        dir.path(),
        &format!("[webhook]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    assert!(audithound(&["run", "--config", &local, "--check-config"])
        .status
        .success());
}

#[test]
fn slow_clients_are_cut_off_while_a_normal_client_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The default header timeout (10 s); a body must arrive within 3 s here.
    let config = config(
        dir.path(),
        &format!("[webhook]\nlisten = \"127.0.0.1:{port}\"\nbody_timeout = \"3s\"\n"),
    );
    let service = Service::start(&config);
    wait_until("never became ready", || post(port) == 200);

    let started = Instant::now();
    // 40 clients sending their headers a line a second, never finishing.
    let tricklers: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || -> Option<Duration> {
                let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                let began = Instant::now();
                let _ = s.write_all(b"POST /audit HTTP/1.1\r\nHost: x\r\n");
                for n in 0..40 {
                    if s.write_all(format!("X-Slow-{i}-{n}: 1\r\n").as_bytes())
                        .is_err()
                        || closed(&mut s, Duration::from_secs(1))
                    {
                        return Some(began.elapsed());
                    }
                }
                None
            })
        })
        .collect();
    // One client sending its body a byte a second.
    let body_trickler = std::thread::spawn(move || -> Option<Duration> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        let began = Instant::now();
        let _ = s.write_all(b"POST /audit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{");
        for _ in 0..40 {
            if s.write_all(b" ").is_err() || closed(&mut s, Duration::from_secs(1)) {
                return Some(began.elapsed());
            }
        }
        None
    });
    // Meanwhile a normal client is served, every time.
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(12) {
        assert_eq!(post(port), 200, "a normal client was refused");
        served += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, t) in tricklers.into_iter().enumerate() {
        let cut = t.join().unwrap();
        assert!(
            cut.is_some_and(|d| d < Duration::from_secs(15)),
            "trickling client {i} was not cut off within 15 s: {cut:?}"
        );
    }
    let cut = body_trickler.join().unwrap();
    assert!(
        cut.is_some_and(|d| d < Duration::from_secs(6)),
        "a body trickling in was not cut off after body_timeout: {cut:?}"
    );
    assert!(served > 20);
    let metrics = {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    assert!(
        metrics.contains("audithound_webhook_requests_total{outcome=\"timed_out\"} 1"),
        "{metrics}"
    );
    service.stop();
}

#[test]
fn connections_beyond_the_cap_are_closed_on_arrival_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (port, ops) = (free_port(), free_port());
    let config = config(
        dir.path(),
        &format!(
            "[webhook]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 2\nheader_timeout = \"3s\"\n[ops]\nlisten = \"127.0.0.1:{ops}\"\n"
        ),
    );
    let service = Service::start(&config);
    wait_until("never became ready", || post(port) == 200);
    // Two connections hold both slots: one with its headers unfinished, one silent.
    let began = Instant::now();
    let mut held: Vec<TcpStream> = (0..2)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            if i == 0 {
                s.write_all(b"POST /audit HTTP/1.1\r\n").unwrap();
            }
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third is closed at once.
    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(closed(&mut third, Duration::from_secs(3)));
    assert!(!closed(&mut held[0], Duration::from_millis(100)));
    assert_eq!(
        common::metric(ops, "audithound_webhook_connections_refused_total"),
        Some(1)
    );
    // Neither finishes a request within header_timeout: both are closed and the webhook
    // serves again.
    for s in &mut held {
        assert!(closed(s, Duration::from_secs(5)));
    }
    assert!(began.elapsed() < Duration::from_secs(6));
    assert_eq!(post(port), 200);
    service.stop();
}

#[test]
fn a_client_without_the_token_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config(
        dir.path(),
        &format!(
            "[webhook]\nlisten = \"127.0.0.1:{port}\"\nbearer_token = \"s3cret\"\nbody_timeout = \"20s\"\n"
        ),
    );
    let service = Service::start(&config);
    wait_until("never listened", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Announces 8 MB, sends none of it: the answer must not wait for the body.
    let began = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"POST /audit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: 8000000\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    service.stop();
}

/// Requests, not bytes, keep a connection: an HTTP/2 client that only sends PINGs (its
/// library's keep-alive) holds its slot no longer than one that sends nothing.
#[test]
fn an_http2_client_sending_only_pings_does_not_keep_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config(
        dir.path(),
        &format!(
            "[webhook]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 1\nheader_timeout = \"2s\"\nidle_timeout = \"2s\"\n"
        ),
    );
    let service = Service::start(&config);
    wait_until("never became ready", || post(port) == 200);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Cleartext HTTP/2 with prior knowledge: the preface, empty SETTINGS, then a PING every
    // 200 ms.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let began = Instant::now();
    // Bytes the server sent: its SETTINGS and PING acknowledgements (it speaks HTTP/2).
    let mut answered = 0;
    let closed_after = loop {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "a connection sending only PINGs was never closed"
        );
        if s.write_all(&ping).is_err() {
            break began.elapsed();
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => break began.elapsed(),
            Ok(n) => answered += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break began.elapsed(),
        }
    };
    assert!(answered > 0, "the webhook answered the HTTP/2 preface");
    assert!(
        closed_after >= Duration::from_millis(1500),
        "{closed_after:?}"
    );
    // Its slot is free again.
    wait_until("the slot never came back", || post(port) == 200);
    service.stop();
}
