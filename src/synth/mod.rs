//! Synthetic but realistic audit traffic, for `samples/`, benchmarks and tests.
//!
//! A small cluster: control-plane components renewing leases and watching, kubelets reading
//! their pods' Secrets and ConfigMaps, controllers creating pods (privileged CNI pods included),
//! a CI service account rolling out Deployments, an operator watching Secrets cluster-wide,
//! health probes, and humans using kubectl. Attack snippets are written separately and every
//! event carries the rule ids it is expected to fire, so tests compare against intent, not
//! against a previous run. Deterministic for a given seed.

pub mod scenarios;

use crate::event::time::format_micros;
use serde_json::{json, Value};

/// splitmix64: tiny, fast and reproducible everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Who makes a request.
#[derive(Clone)]
pub struct Who {
    pub username: String,
    pub groups: Vec<String>,
    pub user_agent: String,
    pub source_ip: String,
    pub credential_id: Option<String>,
}

impl Who {
    pub fn new(username: &str, groups: &[&str], user_agent: &str, source_ip: &str) -> Who {
        Who {
            username: username.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            user_agent: user_agent.into(),
            source_ip: source_ip.into(),
            credential_id: None,
        }
    }
}

/// What is requested.
#[derive(Clone, Default)]
pub struct Req {
    pub verb: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub api_group: &'static str,
    pub code: i64,
    pub request_object: Option<Value>,
    /// Overrides the request URI built from the fields above (non-resource URLs, exec commands).
    pub uri: Option<String>,
    /// Top-level event fields to add (`impersonatedUser`); `annotations` are merged in.
    pub merge: Option<Value>,
}

/// One generated event: its JSON line and the rule ids expected to fire on it.
pub struct GenEvent {
    pub time: i64,
    pub audit_id: String,
    pub line: String,
    pub expect: Vec<&'static str>,
    /// Which API server of an HA control plane logged it.
    pub server: usize,
}

pub struct Generator {
    pub rng: Rng,
    counter: u64,
}

const HOUR: i64 = 3_600_000_000;
const SEC: i64 = 1_000_000;

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: Rng::new(seed),
            counter: 0,
        }
    }

    fn audit_id(&mut self) -> String {
        self.counter += 1;
        let r = self.rng.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (r >> 32) as u32,
            (r >> 16) as u16,
            self.counter & 0xfff,
            (self.counter >> 12) & 0xfff,
            (r.rotate_left(17) ^ self.counter) & 0xffff_ffff_ffff
        )
    }

    /// Builds one ResponseComplete event (and, when `with_received`, its RequestReceived twin).
    pub fn event(
        &mut self,
        t: i64,
        who: &Who,
        req: &Req,
        with_received: bool,
    ) -> Vec<(String, Value)> {
        let audit_id = self.audit_id();
        let group_path = if req.api_group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}/v1", req.api_group)
        };
        let uri = req.uri.clone().unwrap_or_else(|| {
            let mut u = group_path;
            if let Some(ns) = &req.namespace {
                u.push_str(&format!("/namespaces/{ns}"));
            }
            u.push('/');
            u.push_str(req.resource);
            if let Some(n) = &req.name {
                u.push('/');
                u.push_str(n);
            }
            if let Some(s) = req.subresource {
                u.push('/');
                u.push_str(s);
            }
            u
        });
        let mut user = json!({"username": who.username, "groups": who.groups});
        if let Some(c) = &who.credential_id {
            user["extra"] = json!({"authentication.kubernetes.io/credential-id": [c]});
        }
        let decision = if req.code == 403 { "forbid" } else { "allow" };
        let mut ev = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": if req.request_object.is_some() { "RequestResponse" } else { "Metadata" },
            "auditID": audit_id,
            "stage": "ResponseComplete",
            "requestURI": uri,
            "verb": req.verb,
            "user": user,
            "sourceIPs": [who.source_ip],
            "userAgent": who.user_agent,
            "responseStatus": {"metadata": {}, "code": req.code},
            "requestReceivedTimestamp": format_micros(t),
            "stageTimestamp": format_micros(t + 1500 + self.rng.below(20_000) as i64),
            "annotations": {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": ""},
        });
        if !req.resource.is_empty() {
            let mut obj =
                json!({"resource": req.resource, "apiVersion": "v1", "apiGroup": req.api_group});
            if let Some(ns) = &req.namespace {
                obj["namespace"] = json!(ns);
            }
            if let Some(n) = &req.name {
                obj["name"] = json!(n);
            }
            if let Some(s) = req.subresource {
                obj["subresource"] = json!(s);
            }
            ev["objectRef"] = obj;
        }
        if let Some(o) = &req.request_object {
            ev["requestObject"] = o.clone();
        }
        if let Some(Value::Object(fields)) = &req.merge {
            for (k, v) in fields {
                match (k.as_str(), v, ev["annotations"].as_object_mut()) {
                    ("annotations", Value::Object(extra), Some(ann)) => {
                        ann.extend(extra.clone());
                    }
                    _ => ev[k] = v.clone(),
                }
            }
        }
        let mut out = Vec::new();
        if with_received {
            let mut rr = ev.clone();
            rr["stage"] = json!("RequestReceived");
            rr["stageTimestamp"] = json!(format_micros(t));
            if let Some(m) = rr.as_object_mut() {
                m.remove("responseStatus");
            }
            out.push((audit_id.clone(), rr));
        }
        out.push((audit_id, ev));
        out
    }
}

fn pod(name: &str, image: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [{"name": name, "image": image}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name}, "spec": spec})
}

fn deployment(name: &str, image: &str) -> Value {
    json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": name},
           "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": name, "image": image,
               "securityContext": {"privileged": false, "runAsNonRoot": true}}]}}}})
}

const NODES: usize = 6;
const APP_NAMESPACES: &[&str] = &["shop", "payments", "search", "monitoring"];
const APPS: &[&str] = &["web", "api", "worker", "cache"];

/// The cast of benign actors.
struct Cast {
    kcm: Who,
    scheduler: Who,
    ds_controller: Who,
    rs_controller: Who,
    nodes: Vec<Who>,
    ci: Who,
    cert_manager: Who,
    probe: Who,
    humans: Vec<Who>,
}

fn cast() -> Cast {
    let sa = |ns: &str, name: &str, ua: &str, ip: &str| {
        Who::new(
            &format!("system:serviceaccount:{ns}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{ns}"),
                "system:authenticated",
            ],
            ua,
            ip,
        )
    };
    let mut alice = Who::new(
        "alice@example.com",
        &["devs", "system:authenticated"],
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        "203.0.113.10",
    );
    alice.credential_id =
        Some("X509SHA256=1f3a9c0d2b7e4f5a6c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b".into());
    let mut bob = Who::new(
        "bob@example.com",
        &["sre", "system:authenticated"],
        "kubectl/v1.29.1 (darwin/arm64) kubernetes/bc401b9",
        "203.0.113.22",
    );
    bob.credential_id = Some("JTI=6b1c2f0e-93a8-4d4c-9e43-1d7c5b2a8f10".into());
    Cast {
        kcm: Who::new("system:kube-controller-manager", &["system:authenticated"], "kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/3968350/leader-election", "10.0.0.10"),
        scheduler: Who::new("system:kube-scheduler", &["system:authenticated"], "kube-scheduler/v1.30.2 (linux/amd64) kubernetes/3968350/leader-election", "10.0.0.10"),
        ds_controller: sa("kube-system", "daemon-set-controller", "kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/3968350/system:serviceaccount:kube-system:daemon-set-controller", "10.0.0.10"),
        rs_controller: sa("kube-system", "replicaset-controller", "kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/3968350/system:serviceaccount:kube-system:replicaset-controller", "10.0.0.10"),
        nodes: (1..=NODES)
            .map(|i| Who::new(&format!("system:node:node-{i}"), &["system:nodes", "system:authenticated"], "kubelet/v1.30.2 (linux/amd64) kubernetes/3968350", &format!("10.0.1.{}", 10 + i)))
            .collect(),
        ci: sa("ci", "deployer", "argocd-application-controller/v2.11.3", "10.0.2.15"),
        cert_manager: sa("cert-manager", "cert-manager", "cert-manager-controller/v1.14.4 (linux/amd64) cert-manager/0d2b2d1", "10.0.2.30"),
        probe: Who::new("system:anonymous", &["system:unauthenticated"], "kube-probe/1.30", "10.0.0.1"),
        humans: vec![alice, bob],
    }
}

fn home_namespace(username: &str) -> &'static str {
    if username.starts_with("alice") {
        "shop"
    } else {
        "payments"
    }
}

fn ns_name(rng: &mut Rng) -> (String, String) {
    let ns = rng.pick(APP_NAMESPACES).to_string();
    let app = rng.pick(APPS);
    (ns, format!("{app}-{:x}", rng.below(0xfffff)))
}

/// A benign day (or `hours`) of traffic from `start`, roughly `events` events, spread over
/// `servers` API servers. Human execs into application pods are expected to raise the low
/// `k8s.exec.into_pod` alert; nothing else may fire.
pub fn benign(seed: u64, start: i64, hours: i64, events: usize, servers: usize) -> Vec<GenEvent> {
    let mut g = Generator::new(seed);
    let c = cast();
    let span = hours * HOUR;
    let step = (span / events.max(1) as i64).max(1);
    let mut out = Vec::with_capacity(events + events / 8);
    let mut t = start;
    while out.len() < events && t < start + span {
        t += step / 2 + g.rng.below(step as u64) as i64;
        let roll = g.rng.below(1000);
        let (who, req, expect): (&Who, Req, Vec<&'static str>) = match roll {
            0..=199 => {
                let who = if g.rng.chance(50) {
                    &c.kcm
                } else {
                    &c.scheduler
                };
                let name = if who.username.contains("scheduler") {
                    "kube-scheduler"
                } else {
                    "kube-controller-manager"
                };
                let verb = if g.rng.chance(50) { "get" } else { "update" };
                (
                    who,
                    Req {
                        verb,
                        resource: "leases",
                        api_group: "coordination.k8s.io",
                        namespace: Some("kube-system".into()),
                        name: Some(name.into()),
                        code: 200,
                        ..Req::default()
                    },
                    vec![],
                )
            }
            200..=449 => {
                let node = g.rng.pick(&c.nodes).clone();
                let node_name = node.username.trim_start_matches("system:node:").to_string();
                let (ns, name) = ns_name(&mut g.rng);
                let req = match g.rng.below(6) {
                    0 => Req {
                        verb: "update",
                        resource: "leases",
                        api_group: "coordination.k8s.io",
                        namespace: Some("kube-node-lease".into()),
                        name: Some(node_name),
                        code: 200,
                        ..Req::default()
                    },
                    1 => Req {
                        verb: "patch",
                        resource: "nodes",
                        subresource: Some("status"),
                        name: Some(node_name),
                        code: 200,
                        ..Req::default()
                    },
                    2 => Req {
                        verb: "get",
                        resource: "secrets",
                        namespace: Some(ns),
                        name: Some(format!("{name}-tls")),
                        code: 200,
                        ..Req::default()
                    },
                    3 => Req {
                        verb: "get",
                        resource: "configmaps",
                        namespace: Some(ns),
                        name: Some("kube-root-ca.crt".into()),
                        code: 200,
                        ..Req::default()
                    },
                    4 => Req {
                        verb: "watch",
                        resource: "pods",
                        code: 200,
                        uri: Some(format!(
                            "/api/v1/pods?fieldSelector=spec.nodeName%3D{}&watch=true",
                            node.username.trim_start_matches("system:node:")
                        )),
                        ..Req::default()
                    },
                    _ => Req {
                        verb: "patch",
                        resource: "pods",
                        subresource: Some("status"),
                        namespace: Some(ns),
                        name: Some(name),
                        code: 200,
                        ..Req::default()
                    },
                };
                return_push(&mut g, &mut out, t, &node, &req, vec![], servers);
                continue;
            }
            450..=519 => {
                let (ns, name) = ns_name(&mut g.rng);
                let req = Req {
                    verb: "create",
                    resource: "pods",
                    namespace: Some(ns),
                    code: 201,
                    request_object: Some(pod(&name, "registry.example.com/app:1.4.2", json!({}))),
                    ..Req::default()
                };
                (&c.rs_controller, req, vec![])
            }
            520..=529 => {
                // CNI and kube-proxy pods are privileged by design: created by the DaemonSet controller.
                let name = format!("calico-node-{:x}", g.rng.below(0xfffff));
                let spec = json!({"hostNetwork": true, "containers": [{"name": "calico-node", "image": "calico/node:v3.27.2", "securityContext": {"privileged": true}}],
                                  "volumes": [{"name": "lib-modules", "hostPath": {"path": "/lib/modules"}}]});
                let req = Req {
                    verb: "create",
                    resource: "pods",
                    namespace: Some("kube-system".into()),
                    code: 201,
                    request_object: Some(
                        json!({"kind": "Pod", "metadata": {"name": name}, "spec": spec}),
                    ),
                    ..Req::default()
                };
                (&c.ds_controller, req, vec![])
            }
            530..=599 => {
                let (ns, _) = ns_name(&mut g.rng);
                let app = g.rng.pick(APPS);
                let req = if g.rng.chance(70) {
                    Req {
                        verb: "patch",
                        resource: "deployments",
                        api_group: "apps",
                        namespace: Some(ns),
                        name: Some(app.to_string()),
                        code: 200,
                        request_object: Some(deployment(app, "registry.example.com/app:1.4.3")),
                        ..Req::default()
                    }
                } else {
                    Req {
                        verb: "get",
                        resource: "secrets",
                        namespace: Some(ns),
                        name: Some("registry-credentials".into()),
                        code: 200,
                        ..Req::default()
                    }
                };
                (&c.ci, req, vec![])
            }
            600..=669 => {
                // cert-manager watches Secrets cluster-wide and updates certificates.
                let req = if g.rng.chance(40) {
                    Req {
                        verb: "watch",
                        resource: "secrets",
                        code: 200,
                        uri: Some("/api/v1/secrets?allowWatchBookmarks=true&watch=true".into()),
                        ..Req::default()
                    }
                } else {
                    let (ns, name) = ns_name(&mut g.rng);
                    Req {
                        verb: "update",
                        resource: "secrets",
                        namespace: Some(ns),
                        name: Some(format!("{name}-tls")),
                        code: 200,
                        ..Req::default()
                    }
                };
                (&c.cert_manager, req, vec![])
            }
            670..=849 => {
                let path = *g.rng.pick(&["/healthz", "/readyz", "/livez"]);
                (
                    &c.probe,
                    Req {
                        verb: "get",
                        code: 200,
                        uri: Some(path.into()),
                        ..Req::default()
                    },
                    vec![],
                )
            }
            _ => {
                let human = g.rng.pick(&c.humans).clone();
                let (ns, name) = ns_name(&mut g.rng);
                let (req, expect) = match g.rng.below(20) {
                    0..=7 => (
                        Req {
                            verb: "list",
                            resource: "pods",
                            namespace: Some(ns),
                            code: 200,
                            ..Req::default()
                        },
                        vec![],
                    ),
                    8..=10 => (
                        Req {
                            verb: "get",
                            resource: "pods",
                            subresource: Some("log"),
                            namespace: Some(ns),
                            name: Some(name),
                            code: 200,
                            ..Req::default()
                        },
                        vec![],
                    ),
                    11..=13 => (
                        Req {
                            verb: "get",
                            resource: "deployments",
                            api_group: "apps",
                            namespace: Some(ns),
                            name: Some(g.rng.pick(APPS).to_string()),
                            code: 200,
                            ..Req::default()
                        },
                        vec![],
                    ),
                    14 => (
                        Req {
                            verb: "get",
                            resource: "secrets",
                            namespace: Some("kube-system".into()),
                            name: Some("bootstrap-token-abcdef".into()),
                            code: 403,
                            ..Req::default()
                        },
                        vec![],
                    ),
                    15 => (
                        Req {
                            verb: "get",
                            resource: "configmaps",
                            namespace: Some(ns),
                            name: Some("app-config-old".into()),
                            code: 404,
                            ..Req::default()
                        },
                        vec![],
                    ),
                    16 => (
                        // People read Secrets of the namespace their team runs.
                        Req {
                            verb: "list",
                            resource: "secrets",
                            namespace: Some(home_namespace(&human.username).into()),
                            code: 200,
                            ..Req::default()
                        },
                        vec![],
                    ),
                    17 if g.rng.chance(10) => {
                        let uri = format!("/api/v1/namespaces/{ns}/pods/{name}/exec?command=sh&container=app&stdin=true&stdout=true&tty=true");
                        (
                            Req {
                                verb: "create",
                                resource: "pods",
                                subresource: Some("exec"),
                                namespace: Some(ns),
                                name: Some(name),
                                code: 101,
                                uri: Some(uri),
                                ..Req::default()
                            },
                            vec!["k8s.exec.into_pod"],
                        )
                    }
                    _ => (
                        Req {
                            verb: "patch",
                            resource: "deployments",
                            subresource: Some("scale"),
                            api_group: "apps",
                            namespace: Some(ns),
                            name: Some(g.rng.pick(APPS).to_string()),
                            code: 200,
                            ..Req::default()
                        },
                        vec![],
                    ),
                };
                return_push(&mut g, &mut out, t, &human, &req, expect, servers);
                continue;
            }
        };
        let who = who.clone();
        return_push(&mut g, &mut out, t, &who, &req, expect, servers);
    }
    out
}

fn return_push(
    g: &mut Generator,
    out: &mut Vec<GenEvent>,
    t: i64,
    who: &Who,
    req: &Req,
    expect: Vec<&'static str>,
    servers: usize,
) {
    let with_received = g.rng.chance(10);
    let server = g.rng.below(servers.max(1) as u64) as usize;
    for (audit_id, ev) in g.event(t, who, req, with_received) {
        let complete = ev["stage"] == "ResponseComplete";
        out.push(GenEvent {
            time: t,
            audit_id,
            line: ev.to_string(),
            expect: if complete { expect.clone() } else { vec![] },
            server,
        });
    }
}

/// A labelled attack: a compromised developer credential used from outside.
pub struct Attack {
    pub name: &'static str,
    pub description: &'static str,
    pub events: Vec<GenEvent>,
}

/// The attack snippets of `samples/attacks/`, placed at `start` + a few hours.
pub fn attacks(seed: u64, start: i64) -> Vec<Attack> {
    let mut g = Generator::new(seed ^ 0x00A7_7AC4);
    let mut mallory = Who::new(
        "mallory@example.com",
        &["devs", "system:authenticated"],
        "kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b",
        "198.51.100.77",
    );
    mallory.credential_id =
        Some("X509SHA256=9d2c7be1f0a44c3e8e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80912".into());
    let curl = Who {
        user_agent: "curl/8.5.0".into(),
        ..mallory.clone()
    };
    let mut attacks = Vec::new();
    let mut snippet =
        |g: &mut Generator, name, description, steps: Vec<(i64, &Who, Req, Vec<&'static str>)>| {
            let mut events = Vec::new();
            for (offset, who, req, expect) in steps {
                return_push(g, &mut events, start + offset, who, &req, expect, 1);
            }
            attacks.push(Attack {
                name,
                description,
                events,
            });
        };
    snippet(
        &mut g,
        "cluster-admin-binding",
        "A stolen developer credential binds itself to cluster-admin, after a denied attempt to read Secrets.",
        vec![
            // A client never refused before (after the day's learning period).
            (9 * HOUR, &mallory, Req { verb: "list", resource: "secrets", namespace: Some("payments".into()), code: 403, ..Req::default() }, vec!["k8s.access.denied_new_user_agent"]),
            (9 * HOUR + 40 * SEC, &mallory, Req { verb: "create", resource: "clusterrolebindings", api_group: "rbac.authorization.k8s.io", name: Some("backup-operator".into()), code: 201,
                request_object: Some(json!({"kind": "ClusterRoleBinding", "metadata": {"name": "backup-operator"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "User", "name": "mallory@example.com", "apiGroup": "rbac.authorization.k8s.io"}]})), ..Req::default() },
                // Refused a moment ago, this identity and client are now allowed: a first.
                vec!["k8s.rbac.admin_binding", "k8s.rbac.self_grant", "k8s.access.unusual_decision"]),
            // A benign near-miss right beside it: binding the read-only `view` role.
            (9 * HOUR + 50 * SEC, &mallory, Req { verb: "create", resource: "rolebindings", api_group: "rbac.authorization.k8s.io", namespace: Some("shop".into()), name: Some("viewers".into()), code: 201,
                request_object: Some(json!({"kind": "RoleBinding", "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "Group", "name": "sre"}]})), ..Req::default() }, vec![]),
        ],
    );
    snippet(
        &mut g,
        "privileged-pod",
        "A privileged pod with the host's root filesystem and PID namespace: a node breakout.",
        vec![(
            11 * HOUR,
            &mallory,
            Req {
                verb: "create",
                resource: "pods",
                namespace: Some("default".into()),
                code: 201,
                request_object: Some(pod(
                    "debug-tools",
                    "alpine:3.19",
                    json!({"hostPID": true,
                "containers": [{"name": "debug-tools", "image": "alpine:3.19", "command": ["sleep", "infinity"], "securityContext": {"privileged": true},
                                "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
                "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}),
                )),
                ..Req::default()
            },
            vec![
                "k8s.workload.privileged",
                "k8s.workload.host_namespaces",
                "k8s.workload.sensitive_hostpath",
            ],
        )],
    );
    snippet(
        &mut g,
        "exec-system-pod",
        "An interactive shell in etcd's pod in kube-system.",
        vec![(13 * HOUR, &mallory, Req { verb: "create", resource: "pods", subresource: Some("exec"), namespace: Some("kube-system".into()), name: Some("etcd-cp-1".into()), code: 101,
            uri: Some("/api/v1/namespaces/kube-system/pods/etcd-cp-1/exec?command=sh&command=-c&command=cat+%2Fetc%2Fkubernetes%2Fpki%2Fetcd%2Fca.key&stdout=true".into()), ..Req::default() },
            vec!["k8s.exec.into_system_pod", "k8s.exec.sensitive_file"])],
    );
    snippet(
        &mut g,
        "cluster-wide-secret-list",
        "Every Secret of the cluster listed with curl and the stolen credential.",
        vec![(
            15 * HOUR,
            &curl,
            Req {
                verb: "list",
                resource: "secrets",
                code: 200,
                uri: Some("/api/v1/secrets?limit=500".into()),
                ..Req::default()
            },
            // After the day's learning period, curl is also a new client for this identity.
            vec![
                "k8s.secrets.cluster_wide_list",
                "k8s.secrets.new_user_agent",
                "k8s.secrets.read_with_scripting_client",
            ],
        )],
    );
    let reads: Vec<_> = (0..15)
        .map(|i| {
            let ns = APP_NAMESPACES[i % APP_NAMESPACES.len()];
            let req = Req {
                verb: "get",
                resource: "secrets",
                namespace: Some(ns.into()),
                name: Some(format!(
                    "{}-credentials",
                    APPS[(i / APP_NAMESPACES.len()) % APPS.len()]
                )),
                code: 200,
                ..Req::default()
            };
            // The first read is a new client for this identity; the tenth distinct one crosses the threshold.
            // The first read in each namespace is a first for this identity there too.
            let expect = match i {
                0 => vec!["k8s.secrets.new_user_agent", "k8s.secrets.new_namespace"],
                1..=3 => vec!["k8s.secrets.new_namespace"],
                9 => vec!["k8s.secrets.enumeration"],
                _ => vec![],
            };
            (
                16 * HOUR + 30 * 60 * SEC + i as i64 * 5 * SEC,
                &mallory,
                req,
                expect,
            )
        })
        .collect();
    snippet(
        &mut g,
        "secret-enumeration",
        "Fifteen different Secrets read one after another with the stolen credential.",
        reads,
    );
    let mut ci_stolen = Who::new(
        "system:serviceaccount:ci:deployer",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated",
        ],
        "curl/8.5.0",
        "198.51.100.78",
    );
    ci_stolen.credential_id = Some("JTI=2f4c6a8e-0b1d-4e3f-a5c7-9e1b3d5f7a90".into());
    let probes: Vec<_> = (0..12)
        .map(|i| {
            let req = Req {
                verb: "get",
                resource: "secrets",
                namespace: Some("kube-system".into()),
                name: Some(format!("bootstrap-token-{i:06x}")),
                code: 403,
                ..Req::default()
            };
            (
                17 * HOUR + i as i64 * 10 * SEC,
                &ci_stolen,
                req,
                // A service account's token, from outside, in curl: flagged on first use (then
                // suppressed for an hour); the tenth refusal makes the burst.
                match i {
                    0 => vec![
                        "k8s.serviceaccount.token_from_outside",
                        "k8s.serviceaccount.token_used_by_human_client",
                        "k8s.secrets.read_with_scripting_client",
                        "k8s.access.denied_new_user_agent",
                    ],
                    9 => vec!["k8s.secrets.denied_burst"],
                    _ => vec![],
                },
            )
        })
        .collect();
    snippet(
        &mut g,
        "denied-secret-burst",
        "The CI service account's token, taken outside, probing kube-system Secrets and refused.",
        probes,
    );
    snippet(
        &mut g,
        "rbac-then-workload",
        "The stolen credential grants itself `edit` in a namespace, then deploys there two minutes later.",
        vec![
            (18 * HOUR, &mallory, Req { verb: "create", resource: "rolebindings", api_group: "rbac.authorization.k8s.io", namespace: Some("shop".into()), name: Some("mallory-edit".into()), code: 201,
                request_object: Some(json!({"kind": "RoleBinding", "roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "mallory@example.com"}]})), ..Req::default() }, vec!["k8s.rbac.self_grant"]),
            (18 * HOUR + 2 * 60 * SEC, &mallory, Req { verb: "create", resource: "deployments", api_group: "apps", namespace: Some("shop".into()), code: 201,
                request_object: Some(deployment("metrics-helper", "ghcr.io/mallory/miner:latest")), ..Req::default() }, vec!["k8s.rbac.change_then_workload"]),
        ],
    );
    // A retired exporter's service account is deleted at 12:30, but a forgotten deployment in
    // another cluster namespace still holds its legacy token and keeps calling in the evening.
    let bob = Who::new(
        "bob@example.com",
        &["sre", "system:authenticated"],
        "kubectl/v1.29.1 (darwin/arm64) kubernetes/bc401b9",
        "203.0.113.22",
    );
    let exporter = Who::new(
        "system:serviceaccount:monitoring:old-exporter",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:monitoring",
            "system:authenticated",
        ],
        "old-exporter/0.9.1",
        "10.0.3.7",
    );
    snippet(
        &mut g,
        "deleted-serviceaccount-used",
        "A service account deleted at midday keeps authenticating in the evening: its token outlived it.",
        vec![
            (
                12 * HOUR + 30 * 60 * SEC,
                &bob,
                Req { verb: "delete", resource: "serviceaccounts", namespace: Some("monitoring".into()), name: Some("old-exporter".into()), code: 200, ..Req::default() },
                vec![],
            ),
            (19 * HOUR, &exporter, Req { verb: "list", resource: "pods", code: 200, ..Req::default() }, vec!["k8s.serviceaccount.used_after_deletion"]),
        ],
    );
    // Dave left on 2025-03-04 at 12:00 (samples/revocations.yaml) but his kubeconfig was never revoked.
    let mut dave = Who::new(
        "dave@example.com",
        &["devs", "system:authenticated"],
        "kubectl/v1.29.4 (linux/amd64) kubernetes/55fb4f1",
        "203.0.113.41",
    );
    dave.credential_id =
        Some("X509SHA256=4e1f0c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f".into());
    let get = |verb: &'static str, resource: &'static str, ns: &str, code: i64| Req {
        verb,
        resource,
        namespace: Some(ns.into()),
        code,
        ..Req::default()
    };
    snippet(
        &mut g,
        "revoked-credential",
        "A departed engineer's kubeconfig still works after offboarding: used before the revocation time (fine), then after it.",
        vec![
            (10 * HOUR, &dave, get("list", "pods", "payments", 200), vec![]),
            (14 * HOUR, &dave, get("list", "secrets", "payments", 200), vec!["k8s.credentials.revoked_in_use", "k8s.secrets.new_user_agent", "k8s.secrets.new_namespace"]),
            (14 * HOUR + 5 * 60 * SEC, &dave, get("get", "pods", "payments", 200), vec![]),
            // Always allowed until now: refused for the first time, with a client never refused.
            (14 * HOUR + 10 * 60 * SEC, &dave, get("list", "secrets", "kube-system", 403),
                vec!["k8s.credentials.revoked_in_use", "k8s.access.denied_new_user_agent", "k8s.access.unusual_decision"]),
        ],
    );
    attacks
}

/// Endless benign traffic for benchmarks: calls `f` with JSON lines until it returns false.
pub fn stream(seed: u64, start: i64, mut f: impl FnMut(&str) -> bool) {
    let mut chunk = 0u64;
    loop {
        let day = benign(
            seed.wrapping_add(chunk),
            start + chunk as i64 * HOUR,
            1,
            20_000,
            1,
        );
        for e in &day {
            if !f(&e.line) {
                return;
            }
        }
        chunk += 1;
    }
}

/// How the providers ship the same events: renders native events as one file of `format`.
pub mod formats {
    use crate::event::time::{format_micros, parse_rfc3339_micros};
    use crate::event::Format;
    use serde_json::{json, Value};

    /// The file content of `events` (native event objects) as `format` ships them.
    pub fn render(format: Format, events: &[Value], cluster: &str) -> String {
        let lines: Vec<String> = match format {
            Format::Native => events.iter().map(Value::to_string).collect(),
            Format::EventList => {
                let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": events});
                return serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
            }
            Format::Ack => events.iter().map(|e| ack(e, cluster).to_string()).collect(),
            Format::Eks => return eks_subscription(events, cluster).to_string() + "\n",
            Format::Gke => events.iter().map(|e| gke(e, cluster).to_string()).collect(),
            Format::Aks => events
                .iter()
                .enumerate()
                .map(|(i, e)| aks(e, cluster, i % 2 == 0).to_string())
                .collect(),
        };
        lines.join("\n") + "\n"
    }

    /// AKS records with `properties.log` all as objects (diagnostic settings) or all as strings.
    pub fn aks_lines(events: &[Value], cluster: &str, log_as_string: bool) -> String {
        events
            .iter()
            .map(|e| aks(e, cluster, log_as_string).to_string() + "\n")
            .collect()
    }

    /// CloudWatch export to S3: each event prefixed with its ingestion time.
    pub fn eks_s3_export(events: &[Value]) -> String {
        events
            .iter()
            .map(|e| format!("{} {}\n", e["stageTimestamp"].as_str().unwrap_or(""), e))
            .collect()
    }

    /// A CloudWatch Logs subscription batch (what a Lambda or Firehose receives, gzip aside).
    pub fn eks_subscription(events: &[Value], cluster: &str) -> Value {
        let log_events: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let ms = e["stageTimestamp"]
                    .as_str()
                    .and_then(parse_rfc3339_micros)
                    .unwrap_or(0)
                    / 1000;
                json!({"id": format!("{:056}", i), "timestamp": ms, "message": e.to_string()})
            })
            .collect();
        json!({"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": format!("/aws/eks/{cluster}/cluster"),
               "logStream": "kube-apiserver-audit-0a1b2c3d4e5f", "subscriptionFilters": ["audithound"], "logEvents": log_events})
    }

    /// ACK via SLS: top-level keys flat, nested objects as JSON strings, SLS metadata beside them.
    fn ack(e: &Value, cluster: &str) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(obj) = e.as_object() {
            for (k, v) in obj {
                let flat = if v.is_object() || v.is_array() {
                    Value::String(v.to_string())
                } else {
                    v.clone()
                };
                out.insert(k.clone(), flat);
            }
        }
        out.insert("__topic__".into(), json!(""));
        out.insert("__source__".into(), json!("10.0.0.10"));
        out.insert("__logstore__".into(), json!(format!("audit-{cluster}")));
        out.insert(
            "__time__".into(),
            json!(
                e["stageTimestamp"]
                    .as_str()
                    .and_then(parse_rfc3339_micros)
                    .unwrap_or(0)
                    / 1_000_000
            ),
        );
        Value::Object(out)
    }

    fn aks(e: &Value, cluster: &str, log_as_string: bool) -> Value {
        let log = if log_as_string {
            Value::String(e.to_string())
        } else {
            e.clone()
        };
        json!({"category": "kube-audit", "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
               "resourceId": format!("/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/{}", cluster.to_uppercase()),
               "properties": {"log": log, "pod": "kube-apiserver-5d9f8", "stream": "stdout"},
               "time": e["stageTimestamp"]})
    }

    fn http_to_grpc(code: i64) -> i64 {
        match code {
            100..=399 => 0,
            400 => 3,
            401 => 16,
            403 => 7,
            404 => 5,
            409 => 6,
            429 => 8,
            _ => 2,
        }
    }

    fn gke(e: &Value, cluster: &str) -> Value {
        let o = &e["objectRef"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let group = if s(&o["apiGroup"]).is_empty() {
            "core".to_owned()
        } else {
            s(&o["apiGroup"])
        };
        let mut resource_name = format!(
            "{group}/{}",
            if s(&o["apiVersion"]).is_empty() {
                "v1".into()
            } else {
                s(&o["apiVersion"])
            }
        );
        if let Some(ns) = o["namespace"].as_str() {
            resource_name.push_str(&format!("/namespaces/{ns}"));
        }
        resource_name.push_str(&format!("/{}", s(&o["resource"])));
        let mut method = format!(
            "io.k8s.{}.v1.{}",
            group.replace('.', "_"),
            s(&o["resource"])
        );
        if let Some(n) = o["name"].as_str() {
            resource_name.push_str(&format!("/{n}"));
        }
        if let Some(sub) = o["subresource"].as_str() {
            resource_name.push_str(&format!("/{sub}"));
            method.push_str(&format!(".{sub}"));
        }
        method.push_str(&format!(".{}", s(&e["verb"])));
        if o.is_null() {
            // A non-resource request (`/readyz`): GKE names the path and the bare verb.
            resource_name = s(&e["requestURI"]).trim_start_matches('/').to_owned();
            method = format!("io.k8s.{}", s(&e["verb"]));
        }
        let code = e["responseStatus"]["code"].as_i64().unwrap_or(200);
        let mut payload = json!({
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "k8s.io", "methodName": method, "resourceName": resource_name,
            "authenticationInfo": {"principalEmail": e["user"]["username"]},
            "requestMetadata": {"callerIp": e["sourceIPs"][0], "callerSuppliedUserAgent": e["userAgent"]},
            "status": {"code": http_to_grpc(code)},
        });
        if let Some(req) = e.get("requestObject") {
            payload["request"] = req.clone();
        }
        let time = e["stageTimestamp"]
            .as_str()
            .and_then(parse_rfc3339_micros)
            .map(format_micros);
        json!({"protoPayload": payload, "insertId": e["auditID"], "timestamp": time,
               "resource": {"type": "k8s_cluster", "labels": {"cluster_name": cluster, "location": "europe-west1", "project_id": "acme-prod"}},
               "labels": e["annotations"], "logName": "projects/acme-prod/logs/cloudaudit.googleapis.com%2Factivity",
               "operation": {"id": e["auditID"], "producer": "k8s.io", "first": true, "last": true}})
    }
}
