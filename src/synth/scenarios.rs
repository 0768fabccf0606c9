//! The scenario suite of `samples/scenarios/`: one attack per file, each inside most of a day of
//! benign cluster traffic, labelled with the alerts it must raise; plus a large benign baseline on
//! which nothing may fire beyond what its own labels say. `audithound eval` scores the detectors
//! against these labels.

use super::{attacks, benign, deployment, return_push, GenEvent, Generator, Req, Who, HOUR, SEC};
use serde_json::json;

/// The detector family a scenario exercises (issue #4's three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Revoked,
    Escalation,
    Secrets,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Revoked => "revoked",
            Family::Escalation => "escalation",
            Family::Secrets => "secrets",
        }
    }
}

pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub family: Family,
    /// Attack events and their labels; the background is added by `with_background`.
    pub events: Vec<GenEvent>,
}

/// Hours of benign traffic around each scenario's attack, and how many events.
pub const BACKGROUND_HOURS: i64 = 20;
pub const BACKGROUND_EVENTS: usize = 5_000;

/// The scenario's attack inside its own benign background, in time order.
pub fn with_background(s: &Scenario, seed: u64, start: i64) -> Vec<GenEvent> {
    let mut all = benign(seed, start, BACKGROUND_HOURS, BACKGROUND_EVENTS, 1);
    let attack: Vec<GenEvent> = s
        .events
        .iter()
        .map(|e| GenEvent {
            time: e.time,
            audit_id: e.audit_id.clone(),
            line: e.line.clone(),
            expect: e.expect.clone(),
            server: 0,
        })
        .collect();
    all.extend(attack);
    all.sort_by_key(|e| e.time);
    all
}

type Step<'a> = (i64, &'a Who, Req, Vec<&'static str>);

fn scenario(
    g: &mut Generator,
    start: i64,
    name: &'static str,
    description: &'static str,
    family: Family,
    steps: Vec<Step>,
) -> Scenario {
    let mut events = Vec::new();
    for (offset, who, req, expect) in steps {
        return_push(g, &mut events, start + offset, who, &req, expect, 1);
    }
    Scenario {
        name,
        description,
        family,
        events,
    }
}

fn human(name: &str, groups: &[&str], ip: &str) -> Who {
    let mut all = groups.to_vec();
    all.push("system:authenticated");
    Who::new(
        name,
        &all,
        "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
        ip,
    )
}

fn service_account(ns: &str, name: &str, user_agent: &str, ip: &str) -> Who {
    Who::new(
        &format!("system:serviceaccount:{ns}:{name}"),
        &[
            "system:serviceaccounts",
            &format!("system:serviceaccounts:{ns}"),
            "system:authenticated",
        ],
        user_agent,
        ip,
    )
}

fn rbac(verb: &'static str, resource: &'static str, ns: Option<&str>, name: &str) -> Req {
    Req {
        verb,
        resource,
        api_group: "rbac.authorization.k8s.io",
        namespace: ns.map(str::to_owned),
        name: Some(name.into()),
        code: if verb == "create" { 201 } else { 200 },
        ..Req::default()
    }
}

fn binding(ns: Option<&str>, name: &str, role: &str, subjects: serde_json::Value) -> Req {
    let (resource, kind) = match ns {
        Some(_) => ("rolebindings", "RoleBinding"),
        None => ("clusterrolebindings", "ClusterRoleBinding"),
    };
    Req {
        request_object: Some(json!({"kind": kind, "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects})),
        ..rbac("create", resource, ns, name)
    }
}

fn req(verb: &'static str, resource: &'static str, ns: &str, name: &str, code: i64) -> Req {
    Req {
        verb,
        resource,
        namespace: (!ns.is_empty()).then(|| ns.to_owned()),
        name: (!name.is_empty()).then(|| name.to_owned()),
        code,
        ..Req::default()
    }
}

/// Every scenario, starting `start` (their background starts there too).
pub fn scenarios(seed: u64, start: i64) -> Vec<Scenario> {
    let family = |name: &str| match name {
        "deleted-serviceaccount-used" | "revoked-credential" => Family::Revoked,
        "cluster-wide-secret-list" | "secret-enumeration" | "denied-secret-burst" => {
            Family::Secrets
        }
        _ => Family::Escalation,
    };
    let mut out: Vec<Scenario> = attacks(seed, start)
        .into_iter()
        .map(|a| Scenario {
            name: a.name,
            description: a.description,
            family: family(a.name),
            events: a.events,
        })
        .collect();

    let mut g = Generator::new(seed ^ 0x5CE7_A210);
    let mallory = human("mallory@example.com", &["devs"], "198.51.100.77");
    let erin = human("erin@example.com", &["contractors"], "203.0.113.50");
    let bob = Who::new(
        "bob@example.com",
        &["sre", "system:authenticated"],
        "kubectl/v1.29.1 (darwin/arm64) kubernetes/bc401b9",
        "203.0.113.22",
    );
    let mut ci = service_account(
        "ci",
        "deployer",
        "argocd-application-controller/v2.11.3",
        "10.0.2.15",
    );
    // Revoked at 06:00 in samples/scenarios/revocations.yaml.
    ci.credential_id = Some("JTI=7d3e9b1a-5c2f-4e8d-b6a0-3f9c1e7d5b24".into());
    let patch_web = || Req {
        verb: "patch",
        resource: "deployments",
        api_group: "apps",
        namespace: Some("shop".into()),
        name: Some("web".into()),
        code: 200,
        request_object: Some(deployment("web", "registry.example.com/app:1.4.4")),
        ..Req::default()
    };
    out.push(scenario(&mut g, start, "revoked-token-id",
        "A leaked CI token was revoked by its JTI at 06:00; the pipeline's identity is fine, but that one token is used again at 08:00.",
        Family::Revoked,
        vec![
            (3 * HOUR, &ci, patch_web(), vec![]),
            (8 * HOUR, &ci, patch_web(), vec!["k8s.credentials.revoked_in_use"]),
        ]));

    let impersonate_dave = Req {
        merge: Some(
            json!({"impersonatedUser": {"username": "dave@example.com", "groups": ["devs"]}}),
        ),
        ..req("list", "pods", "payments", "", 200)
    };
    out.push(scenario(&mut g, start, "revoked-identity-impersonated",
        "An SRE impersonates the departed engineer's identity (revoked at 12:00), which keeps the revoked account in use.",
        Family::Revoked,
        vec![(13 * HOUR, &bob, impersonate_dave, vec!["k8s.credentials.revoked_in_use", "k8s.impersonation.by_non_admin"])]));

    out.push(scenario(&mut g, start, "unbound-identity-still-used",
        "A contractor's only binding is deleted at offboarding (10:00), yet the contractor's credential still lists pods at 15:00: some other grant remains.",
        Family::Revoked,
        vec![
            (7 * HOUR, &bob, binding(Some("shop"), "erin-edit", "edit", json!([{"kind": "User", "name": "erin@example.com"}])), vec![]),
            (7 * HOUR + 30 * 60 * SEC, &erin, req("get", "pods", "shop", "web-1", 200), vec![]),
            (10 * HOUR, &bob, rbac("delete", "rolebindings", Some("shop"), "erin-edit"), vec![]),
            (15 * HOUR, &erin, req("list", "pods", "shop", "", 200), vec!["k8s.credentials.unbound_still_used"]),
        ]));

    let backup = service_account("ops", "backup", "backup-agent/2.1", "203.0.113.9");
    let legacy = Req {
        merge: Some(
            json!({"annotations": {"authentication.k8s.io/legacy-token-autogenerated-secret": "backup-token-x7k2q"}}),
        ),
        ..req("list", "persistentvolumeclaims", "shop", "", 200)
    };
    out.push(scenario(&mut g, start, "legacy-token-from-outside",
        "A never-expiring legacy service-account token is used from an address outside the cluster.",
        Family::Revoked,
        vec![(9 * HOUR, &backup, legacy, vec!["k8s.serviceaccount.legacy_token_from_outside", "k8s.serviceaccount.token_from_outside"])]));

    let create_deploy = |code| Req {
        request_object: (code < 400)
            .then(|| deployment("report", "registry.example.com/report:2.0")),
        api_group: "apps",
        ..req("create", "deployments", "shop", "report", code)
    };
    out.push(scenario(&mut g, start, "denied-granted-used",
        "A contractor is refused creating a Deployment at 09:00, an SRE binds them to `edit` at 09:40, and the same creation succeeds at 09:52.",
        Family::Escalation,
        vec![
            (9 * HOUR, &erin, create_deploy(403), vec!["k8s.access.denied_new_user_agent", "k8s.access.forbidden_create"]),
            (9 * HOUR + 40 * 60 * SEC, &bob, binding(Some("shop"), "erin-edit", "edit", json!([{"kind": "User", "name": "erin@example.com"}])), vec![]),
            (9 * HOUR + 52 * 60 * SEC, &erin, create_deploy(201), vec!["k8s.rbac.denied_granted_used", "k8s.access.unusual_decision"]),
        ]));

    let review = Req {
        api_group: "authorization.k8s.io",
        ..req("create", "selfsubjectrulesreviews", "", "", 201)
    };
    out.push(scenario(&mut g, start, "recon-then-escalate",
        "A contractor runs `kubectl auth can-i --list`, then twenty minutes later binds a service account to a cluster role.",
        Family::Escalation,
        vec![
            (11 * HOUR, &erin, review, vec!["k8s.discovery.permission_review", "k8s.discovery.permission_review_new_user_agent"]),
            (11 * HOUR + 20 * 60 * SEC, &erin, binding(None, "helper-view", "view", json!([{"kind": "ServiceAccount", "namespace": "default", "name": "helper"}])),
                vec!["k8s.rbac.recon_then_escalate", "k8s.rbac.serviceaccount_cluster_binding"]),
        ]));

    let webhook = Req {
        api_group: "admissionregistration.k8s.io",
        request_object: Some(
            json!({"kind": "MutatingWebhookConfiguration", "metadata": {"name": "pod-defaults"},
            "webhooks": [{"name": "defaults.example.com", "clientConfig": {"url": "https://198.51.100.77/mutate"}}]}),
        ),
        ..req(
            "create",
            "mutatingwebhookconfigurations",
            "",
            "pod-defaults",
            201,
        )
    };
    out.push(scenario(&mut g, start, "webhook-tampering",
        "A mutating admission webhook pointing outside the cluster is registered: every new pod will pass through it.",
        Family::Escalation,
        vec![(10 * HOUR, &mallory, webhook, vec!["k8s.admission.webhook_changed"])]));

    let csr = Req {
        api_group: "certificates.k8s.io",
        ..req(
            "create",
            "certificatesigningrequests",
            "",
            "csr-mallory",
            201,
        )
    };
    let approve = Req {
        subresource: Some("approval"),
        ..Req {
            verb: "update",
            ..csr.clone()
        }
    };
    out.push(scenario(&mut g, start, "csr-self-approval",
        "A certificate signing request is created and approved by the same person: a client certificate that cannot be revoked.",
        Family::Escalation,
        vec![
            (12 * HOUR, &mallory, csr, vec![]),
            (12 * HOUR + 30 * SEC, &mallory, Req { code: 200, ..approve }, vec!["k8s.csr.approved", "k8s.csr.self_approved"]),
        ]));

    let token = Req {
        subresource: Some("token"),
        ..req(
            "create",
            "serviceaccounts",
            "kube-system",
            "clusterrole-aggregation-controller",
            201,
        )
    };
    out.push(scenario(
        &mut g,
        start,
        "token-for-another-serviceaccount",
        "A token is minted for a powerful kube-system controller's service account.",
        Family::Escalation,
        vec![(
            10 * HOUR,
            &mallory,
            token,
            vec!["k8s.serviceaccount.token_requested"],
        )],
    ));

    let ds = Req {
        api_group: "apps",
        request_object: Some(
            json!({"kind": "DaemonSet", "metadata": {"name": "node-agent"},
            "spec": {"template": {"spec": {"hostPID": true,
                "containers": [{"name": "agent", "image": "alpine:3.19", "securityContext": {"privileged": true}}],
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}}}),
        ),
        ..req("create", "daemonsets", "default", "node-agent", 201)
    };
    out.push(scenario(&mut g, start, "privileged-daemonset",
        "A DaemonSet puts a privileged container with the host's PID namespace and root filesystem on every node.",
        Family::Escalation,
        vec![(14 * HOUR, &mallory, ds, vec!["k8s.workload.privileged", "k8s.workload.host_namespaces", "k8s.workload.sensitive_hostpath"])]));

    let proxy = Req {
        subresource: Some("proxy"),
        uri: Some("/api/v1/nodes/node-2/proxy/runningpods/".into()),
        ..req("get", "nodes", "", "node-2", 200)
    };
    out.push(scenario(
        &mut g,
        start,
        "kubelet-through-nodes-proxy",
        "The kubelet API of a node is called through the API server's nodes/proxy.",
        Family::Escalation,
        vec![(13 * HOUR, &mallory, proxy, vec!["k8s.nodes.proxy"])],
    ));

    // A metrics exporter reads its two Secrets every few minutes all day; at 12:00 its token,
    // taken from the pod, is used from the same place to read them a hundred times in minutes.
    let exporter = service_account(
        "monitoring",
        "metrics-exporter",
        "metrics-exporter/1.8.0",
        "10.0.2.41",
    );
    let mut steps: Vec<Step> = (0..(BACKGROUND_HOURS * 20))
        .map(|i| {
            let name = if i % 2 == 0 {
                "exporter-config"
            } else {
                "exporter-tls"
            };
            (
                i * 3 * 60 * SEC + 7 * SEC,
                &exporter,
                req("get", "secrets", "monitoring", name, 200),
                vec![],
            )
        })
        .collect();
    steps.extend((0..120).map(|i| {
        let name = if i % 2 == 0 {
            "exporter-config"
        } else {
            "exporter-tls"
        };
        let expect = if i == 28 {
            vec!["k8s.secrets.rate_spike"]
        } else {
            vec![]
        };
        (
            12 * HOUR + 60 * SEC + i * 4 * SEC,
            &exporter,
            req("get", "secrets", "monitoring", name, 200),
            expect,
        )
    }));
    steps.sort_by_key(|s| s.0);
    out.push(scenario(&mut g, start, "secret-rate-spike",
        "A metrics exporter that reads its two Secrets every three minutes suddenly reads them 120 times in eight minutes.",
        Family::Secrets,
        steps));

    let web_sa = Who {
        user_agent: "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225".into(),
        ..service_account("shop", "web", "", "198.51.100.90")
    };
    out.push(scenario(&mut g, start, "serviceaccount-token-in-kubectl",
        "The shop web app's service-account token, copied out of its pod, reads the app's database Secret with kubectl from outside.",
        Family::Secrets,
        vec![(11 * HOUR, &web_sa, req("get", "secrets", "shop", "web-db", 200),
            vec!["k8s.serviceaccount.token_from_outside", "k8s.serviceaccount.token_used_by_human_client", "k8s.secrets.new_user_agent"])]));

    let alice = Who::new(
        "alice@example.com",
        &["devs", "system:authenticated"],
        "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        "203.0.113.10",
    );
    out.push(scenario(&mut g, start, "secrets-in-a-new-namespace",
        "A developer who only ever read her team's Secrets reads the payments database credentials.",
        Family::Secrets,
        vec![(16 * HOUR, &alice, req("get", "secrets", "payments", "db-credentials", 200), vec!["k8s.secrets.new_namespace"])]));
    out
}

/// The baseline: a day of a busier cluster (every kind of benign actor), `events` long.
pub fn baseline(seed: u64, start: i64, events: usize) -> Vec<GenEvent> {
    benign(seed, start, 24, events, 1)
}
