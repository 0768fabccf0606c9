//! The webhook over HTTPS with client certificates: the API server's webhook kubeconfig carries
//! a client certificate; clients without one signed by the configured CA are refused.

mod common;
use common::{root, wait_until, Service};

use std::sync::Arc;
use std::time::Duration;

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        server: leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(
            vec!["kube-apiserver".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    }
}

fn client(pki: &Pki, with_cert: bool) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(client_config(pki, with_cert)))
        .timeout(Duration::from_secs(5))
        .build()
}

fn client_config(pki: &Pki, with_cert: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    if with_cert {
        let chain = rustls_pemfile::certs(&mut pki.client.0.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut pki.client.1.as_bytes())
            .unwrap()
            .unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    }
}

/// The service's files and configuration (webhook on HTTPS with client certificates, `extra`
/// appended); returns the config path and the webhook port.
fn https_service(pki: &Pki, dir: &std::path::Path, extra: &str) -> (String, u16) {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (
        write("tls.crt", &pki.server.0),
        write("tls.key", &pki.server.1),
        write("ca.crt", &pki.ca_pem),
    );
    let port = common::free_port();
    let config = write(
        "audithound.toml",
        &format!(
            "[webhook]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = {cert:?}\ntls_key = {key:?}\nclient_ca = {ca:?}\n{extra}"
        ),
    );
    (config, port)
}

/// A TLS client on a plain socket, so that its own address is known: connects, tries a
/// request, and returns the address it came from and whether anything was answered.
fn tls_attempt(config: rustls::ClientConfig, port: u16) -> (std::net::SocketAddr, bool) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut answer = Vec::new();
    let answered = tls
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .and_then(|_| tls.read_to_end(&mut answer))
        .is_ok_and(|_| !answer.is_empty());
    (local, answered)
}

/// A client certificate from a CA the service does not trust.
fn stranger(ours: &Pki) -> rustls::ClientConfig {
    let other = pki();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ours.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut other.client.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut other.client.1.as_bytes())
        .unwrap()
        .unwrap();
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap()
}

#[test]
fn failed_handshakes_are_logged_with_the_peer_and_the_reason_at_most_every_ten_seconds() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = https_service(&pki, dir.path(), "[[sink]]\ntype = \"stdout\"\n");
    let service = common::Service::spawn(&["run", "--config", &config]);
    let good = client(&pki, true);
    let url = format!("https://127.0.0.1:{port}");
    wait_until("never became ready", || {
        good.get(&format!("{url}/readyz")).call().is_ok()
    });
    assert!(
        tls_attempt(client_config(&pki, true), port).1,
        "a trusted client is answered"
    );

    // No client certificate: refused, and the log says who and why.
    let (peer, answered) = tls_attempt(client_config(&pki, false), port);
    assert!(!answered);
    let wanted = |log: &str| {
        log.lines()
            .find(|l| l.contains("TLS handshake failed") && l.contains(&format!("peer={peer} ")))
            .map(str::to_owned)
    };
    wait_until("the failed handshake was not logged", || {
        wanted(&service.stderr_so_far()).is_some()
    });
    let line = wanted(&service.stderr_so_far()).unwrap();
    assert!(
        line.contains("WARN") && line.contains("no certificates"),
        "{line}"
    );

    // Within ten seconds, more failures are counted but not logged: a certificate of another
    // CA, and a client speaking plain HTTP. A TCP probe that closes at once is no failure.
    assert!(!tls_attempt(stranger(&pki), port).1);
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = plain.read_to_end(&mut Vec::new());
    }
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    let failures = || {
        let text = good
            .get(&format!("{url}/metrics"))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix("audithound_webhook_tls_handshake_failures_total ")?
                .parse::<u64>()
                .ok()
        })
    };
    wait_until("the failures were not counted", || failures() == Some(3));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(failures(), Some(3), "the TCP probe is no TLS failure");
    let log = service.stop();
    let logged = log
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    assert_eq!(logged, 1, "{log}");
}

#[test]
fn https_with_client_certificates() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let (config, port) = https_service(
        &pki,
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"file\"\npath = {:?}\n",
            alerts.to_str().unwrap()
        ),
    );
    let service = Service::start(&config);
    let good = client(&pki, true);
    let url = format!("https://127.0.0.1:{port}");
    wait_until("never became ready", || {
        good.get(&format!("{url}/readyz")).call().is_ok()
    });
    let event =
        std::fs::read_to_string(root().join("samples/attacks/exec-system-pod.log")).unwrap();
    let items: Vec<serde_json::Value> = event
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let list = serde_json::json!({"kind": "EventList", "items": items}).to_string();
    let resp = good
        .post(&format!("{url}/audit"))
        .send_string(&list)
        .unwrap();
    assert_eq!(resp.status(), 200);
    // No client certificate: the handshake is refused.
    let anonymous = client(&pki, false);
    assert!(anonymous
        .post(&format!("{url}/audit"))
        .send_string(&list)
        .is_err());

    service.stop();
    let out = std::fs::read_to_string(&alerts).unwrap();
    // The shell into etcd's pod, and the CA key it reads.
    assert!(out.contains("k8s.exec.into_system_pod"), "{out}");
    assert!(out.contains("k8s.exec.sensitive_file"), "{out}");
    let alerts = out.lines().filter(|l| !l.starts_with(r#"{"incident""#));
    assert_eq!(alerts.count(), 2);
    // Together they are one incident, opened (a service stopping does not close it).
    assert_eq!(
        out.lines()
            .filter(|l| l.contains(r#""status":"open""#) && l.starts_with(r#"{"incident""#))
            .count(),
        1
    );
}
