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
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = if with_cert {
        let chain = rustls_pemfile::certs(&mut pki.client.0.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut pki.client.1.as_bytes())
            .unwrap()
            .unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .timeout(Duration::from_secs(5))
        .build()
}

#[test]
fn https_with_client_certificates() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (
        write("tls.crt", &pki.server.0),
        write("tls.key", &pki.server.1),
        write("ca.crt", &pki.ca_pem),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let alerts = dir.path().join("alerts.jsonl");
    let config = write(
        "audithound.toml",
        &format!(
            "[webhook]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = {cert:?}\ntls_key = {key:?}\nclient_ca = {ca:?}\n[[sink]]\ntype = \"file\"\npath = {:?}\n",
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
