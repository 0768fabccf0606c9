//! `audithound rules check --audit-policy POLICY.yaml`: does the API server's audit policy log
//! what the rules read? A rule that reads `requestObject` (or the pod template in it,
//! `podSpec`, or a CSR's subject) needs its events logged at `Request`; one that reads
//! `responseObject` needs `RequestResponse`; every other rule needs `Metadata`, at least.
//!
//! What a rule reads comes from the compiled rule, not its text: the field paths of its
//! condition, exceptions and sequence steps (and the fields it groups or counts by), and the
//! events they are read on, from the values the condition pins (`objectRef.resource`,
//! `objectRef.subresource`, `objectRef.apiGroup`, `verb`, `user.username`, `user.groups`,
//! `objectRef.namespace`, `objectRef.name`; see `Cond::required_values`). An `any` whose
//! branches pin different resources or verbs is kept apart branch by branch, and a sequence step
//! by step, so each resource is paired with the verbs and fields it is really read with. The
//! built-ins that follow RBAC bindings read the subjects of binding writes (`Kind::implied_reads`).
//!
//! The policy is evaluated as the API server does (`audit.k8s.io/v1`, first matching rule
//! decides; `users`, `userGroups`, `verbs`, `resources` with `group`, `resources` (`*`,
//! `name/*`, `*/sub`) and `resourceNames`, `namespaces`, `nonResourceURLs`, `omitStages`), for
//! each resource and verb a rule reads. Verbs a rule does not pin are the eight standard ones;
//! the API group of a resource comes from a table of the built-in resources unless the rule
//! pins it. A policy rule limited to some users, groups, namespaces or object names that the
//! rule does not pin to (the lease renewals of the scheduler) concerns only some of the events:
//! it is passed over, and a later rule decides. A policy that omits the `ResponseComplete`
//! stage, which the detectors read, logs nothing they see.

use super::condition::{Cond, Matcher, Op, Scalar};
use super::derived::{self, Derived};
use super::field::{Field, Seg};
use super::{Kind, Rule, RuleSet};
use crate::event::view::JsonRoot;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How much of a request the API server logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An audit policy (`audit.k8s.io/v1`, kind `Policy`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Option<serde_yaml::Value>,
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
    /// Line of each rule in the file, for messages.
    #[serde(skip)]
    lines: Vec<Option<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

const STAGES: [&str; 4] = [
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

impl Policy {
    /// Reads and validates a policy file; errors name the file and, where known, the line.
    pub fn load(path: &std::path::Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Policy, String> {
        let mut policy: Policy = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if policy.api_version != "audit.k8s.io/v1" || policy.kind != "Policy" {
            return Err(format!(
                "expected apiVersion audit.k8s.io/v1 and kind Policy, not {} {}",
                policy.api_version, policy.kind
            ));
        }
        policy.lines = (0..policy.rules.len())
            .map(|i| super::locate::locate(text, &format!("rules[{i}]")).map(|(line, _)| line))
            .collect();
        let stage = |s: &String, at: &str| {
            if STAGES.contains(&s.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "{at}: unknown stage {s:?}; stages: {}",
                    STAGES.join(", ")
                ))
            }
        };
        for s in &policy.omit_stages {
            stage(s, "omitStages")?;
        }
        for (i, r) in policy.rules.iter().enumerate() {
            let at = policy.rule_name(i);
            for s in &r.omit_stages {
                stage(s, &at)?;
            }
            if !r.non_resource_urls.is_empty()
                && (!r.resources.is_empty() || !r.namespaces.is_empty())
            {
                return Err(format!(
                    "{at}: a rule applies to resources or to nonResourceURLs, not both"
                ));
            }
        }
        Ok(policy)
    }

    /// `policy rule 3 (line 40)`.
    fn rule_name(&self, i: usize) -> String {
        match self.lines.get(i).copied().flatten() {
            Some(line) => format!("policy rule {} (line {line})", i + 1),
            None => format!("policy rule {}", i + 1),
        }
    }

    /// The level the API server logs a request like `need`'s at, and why.
    fn verdict(&self, need: &Need) -> Verdict {
        let omits = |stages: &[String]| stages.iter().any(|s| s == "ResponseComplete");
        let Some(i) = self
            .rules
            .iter()
            .position(|rule| rule_matches(rule, need) == Match::Yes)
        else {
            return Verdict {
                level: Level::None,
                because: "not logged: no policy rule matches them".to_owned(),
            };
        };
        let (rule, name) = (&self.rules[i], self.rule_name(i));
        let omitted = if omits(&rule.omit_stages) {
            Some(format!("{name} (level {})", rule.level))
        } else if omits(&self.omit_stages) {
            Some(format!("the policy (its {name} is level {})", rule.level))
        } else {
            None
        };
        match omitted {
            Some(who) => Verdict {
                level: Level::None,
                because: format!(
                    "not logged where the detectors look: {who} omits stage ResponseComplete"
                ),
            },
            None if rule.level == Level::None => Verdict {
                level: Level::None,
                because: format!("not logged: {name} is level None"),
            },
            None => Verdict {
                level: rule.level,
                because: format!("logged at {} by {name}", rule.level),
            },
        }
    }
}

/// Whether a policy rule applies to the requests of a need: to all of them, to none, or to some
/// (it names users, groups, namespaces or objects that the rule does not pin to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    No,
    Partly,
    Yes,
}

/// All of several conditions: the weakest.
fn and(parts: impl IntoIterator<Item = Match>) -> Match {
    parts.into_iter().min().unwrap_or(Match::Yes)
}

/// Whether every value of `pinned` (None: any value) is in `list`.
fn within(pinned: &Option<BTreeSet<String>>, list: &[String]) -> Match {
    match pinned {
        None => Match::Partly,
        Some(values) if values.iter().all(|v| list.contains(v)) => Match::Yes,
        Some(values) if values.iter().all(|v| !list.contains(v)) => Match::No,
        Some(_) => Match::Partly,
    }
}

fn rule_matches(rule: &PolicyRule, need: &Need) -> Match {
    let mut parts = Vec::new();
    if !rule.users.is_empty() {
        parts.push(within(&need.users, &rule.users));
    }
    if !rule.user_groups.is_empty() {
        // The event carries one of these groups for sure, or may carry one.
        let sure = need
            .user_groups
            .iter()
            .any(|set| set.iter().all(|g| rule.user_groups.contains(g)));
        parts.push(if sure { Match::Yes } else { Match::Partly });
    }
    if !rule.verbs.is_empty() && !rule.verbs.contains(&need.verb) {
        return Match::No;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        let Target::Resource(r) = &need.target else {
            // Some resources of all that the rule reads.
            return and(parts.into_iter().chain([Match::Partly]));
        };
        if !rule.namespaces.is_empty() {
            let namespaces = if r.namespaced == Some(false) {
                Some(BTreeSet::from([String::new()]))
            } else {
                need.namespaces.clone()
            };
            parts.push(within(&namespaces, &rule.namespaces));
        }
        if !rule.resources.is_empty() {
            let best = rule
                .resources
                .iter()
                .map(|gr| resource_matches(gr, r, need))
                .max()
                .unwrap_or(Match::No);
            parts.push(best);
        }
        return and(parts);
    }
    if !rule.non_resource_urls.is_empty() {
        // The rules read resource requests, or any request.
        return match need.target {
            Target::Resource(_) => Match::No,
            Target::Any => and(parts.into_iter().chain([Match::Partly])),
        };
    }
    and(parts)
}

fn resource_matches(gr: &GroupResources, r: &Resource, need: &Need) -> Match {
    let group = match &r.group {
        Some(g) if *g != gr.group => return Match::No,
        Some(_) => Match::Yes,
        // A resource of no known group: only a policy naming it is taken to mean it.
        None => Match::Partly,
    };
    if gr.resources.is_empty() {
        return group;
    }
    let combined = match &r.subresource {
        Some(sub) => format!("{}/{sub}", r.resource),
        None => r.resource.clone(),
    };
    let named = gr.resources.iter().any(|res| {
        res == "*"
            || *res == combined
            || r.subresource
                .as_ref()
                .is_some_and(|sub| res.strip_prefix("*/") == Some(sub.as_str()))
            || res.strip_suffix("/*") == Some(r.resource.as_str())
    });
    if !named {
        return Match::No;
    }
    let names = if gr.resource_names.is_empty() {
        Match::Yes
    } else {
        within(&need.names, &gr.resource_names)
    };
    // Named explicitly: the group is taken as right even when not known.
    let group = if group == Match::Partly && gr.resources.contains(&combined) {
        Match::Yes
    } else {
        group
    };
    and([group, names])
}

struct Verdict {
    level: Level,
    /// Which policy rule decided, and how (`logged at Metadata by policy rule 7 (line 88)`).
    because: String,
}

/// The verbs of resource requests, for rules that read every verb.
const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The verbs a subresource is requested with, where they are fewer than a resource's (a rule
/// on `pods/exec` that pins no verb reads creates and gets, not watches).
const SUBRESOURCE_VERBS: &[(&str, &[&str])] = &[
    ("approval", &["update", "patch"]),
    ("attach", &["create", "get"]),
    ("binding", &["create"]),
    ("eviction", &["create"]),
    ("exec", &["create", "get"]),
    ("log", &["get"]),
    ("portforward", &["create", "get"]),
    ("token", &["create"]),
];

/// The built-in resources: (resource, API group, namespaced).
const RESOURCES: &[(&str, &str, bool)] = &[
    ("bindings", "", true),
    ("componentstatuses", "", false),
    ("configmaps", "", true),
    ("endpoints", "", true),
    ("events", "", true),
    ("limitranges", "", true),
    ("namespaces", "", false),
    ("nodes", "", false),
    ("persistentvolumeclaims", "", true),
    ("persistentvolumes", "", false),
    ("pods", "", true),
    ("podtemplates", "", true),
    ("replicationcontrollers", "", true),
    ("resourcequotas", "", true),
    ("secrets", "", true),
    ("serviceaccounts", "", true),
    ("services", "", true),
    (
        "mutatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        false,
    ),
    (
        "validatingadmissionpolicies",
        "admissionregistration.k8s.io",
        false,
    ),
    (
        "validatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
        false,
    ),
    (
        "validatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        false,
    ),
    ("customresourcedefinitions", "apiextensions.k8s.io", false),
    ("apiservices", "apiregistration.k8s.io", false),
    ("controllerrevisions", "apps", true),
    ("daemonsets", "apps", true),
    ("deployments", "apps", true),
    ("replicasets", "apps", true),
    ("statefulsets", "apps", true),
    ("selfsubjectreviews", "authentication.k8s.io", false),
    ("tokenreviews", "authentication.k8s.io", false),
    ("localsubjectaccessreviews", "authorization.k8s.io", true),
    ("selfsubjectaccessreviews", "authorization.k8s.io", false),
    ("selfsubjectrulesreviews", "authorization.k8s.io", false),
    ("subjectaccessreviews", "authorization.k8s.io", false),
    ("horizontalpodautoscalers", "autoscaling", true),
    ("cronjobs", "batch", true),
    ("jobs", "batch", true),
    ("certificatesigningrequests", "certificates.k8s.io", false),
    ("leases", "coordination.k8s.io", true),
    ("endpointslices", "discovery.k8s.io", true),
    ("flowschemas", "flowcontrol.apiserver.k8s.io", false),
    (
        "prioritylevelconfigurations",
        "flowcontrol.apiserver.k8s.io",
        false,
    ),
    ("ingressclasses", "networking.k8s.io", false),
    ("ingresses", "networking.k8s.io", true),
    ("networkpolicies", "networking.k8s.io", true),
    ("runtimeclasses", "node.k8s.io", false),
    ("poddisruptionbudgets", "policy", true),
    ("podsecuritypolicies", "policy", false),
    ("clusterrolebindings", "rbac.authorization.k8s.io", false),
    ("clusterroles", "rbac.authorization.k8s.io", false),
    ("rolebindings", "rbac.authorization.k8s.io", true),
    ("roles", "rbac.authorization.k8s.io", true),
    ("priorityclasses", "scheduling.k8s.io", false),
    ("csidrivers", "storage.k8s.io", false),
    ("csinodes", "storage.k8s.io", false),
    ("storageclasses", "storage.k8s.io", false),
    ("volumeattachments", "storage.k8s.io", false),
];

/// The API group and scope of a built-in resource.
pub fn builtin_resource(resource: &str) -> Option<(&'static str, bool)> {
    RESOURCES
        .iter()
        .find(|(r, ..)| *r == resource)
        .map(|&(_, group, namespaced)| (group, namespaced))
}

/// Which requests a rule reads something of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// Requests for every resource (the rule pins none).
    Any,
    Resource(Resource),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Resource {
    resource: String,
    subresource: Option<String>,
    /// None: not a built-in resource, and the rule does not pin `objectRef.apiGroup`.
    group: Option<String>,
    namespaced: Option<bool>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Any => f.write_str("every resource"),
            Target::Resource(r) => {
                f.write_str(&r.resource)?;
                if let Some(sub) = &r.subresource {
                    write!(f, "/{sub}")?;
                }
                Ok(())
            }
        }
    }
}

/// One kind of request a rule reads, and what it needs logged of it.
#[derive(Debug, Clone)]
struct Need {
    target: Target,
    verb: String,
    users: Option<BTreeSet<String>>,
    /// Each set: the event carries at least one of these groups.
    user_groups: Vec<BTreeSet<String>>,
    namespaces: Option<BTreeSet<String>>,
    names: Option<BTreeSet<String>>,
    level: Level,
    /// The fields that need `level`.
    fields: BTreeSet<String>,
}

/// Values a condition pins a field to: None is any value.
type Pin = Option<BTreeSet<String>>;

/// Whether the request is for a subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sub {
    /// Not pinned: taken to be the resource itself (as policies name it).
    Any,
    Absent,
    In(BTreeSet<String>),
}

/// One branch of a rule's conditions: what it pins, and the fields it reads.
#[derive(Debug, Clone)]
struct Case {
    resources: Pin,
    subresources: Sub,
    groups: Pin,
    verbs: Pin,
    users: Pin,
    user_groups: Vec<BTreeSet<String>>,
    namespaces: Pin,
    names: Pin,
    /// Fields read beyond the metadata, with the level each needs.
    reads: BTreeMap<String, Level>,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            resources: None,
            subresources: Sub::Any,
            groups: None,
            verbs: None,
            users: None,
            user_groups: Vec::new(),
            namespaces: None,
            names: None,
            reads: BTreeMap::new(),
        }
    }
}

fn meet(a: &Pin, b: &Pin) -> Option<Pin> {
    match (a, b) {
        (None, x) | (x, None) => Some(x.clone()),
        (Some(a), Some(b)) => {
            let both: BTreeSet<String> = a.intersection(b).cloned().collect();
            (!both.is_empty()).then_some(Some(both))
        }
    }
}

fn join(a: &Pin, b: &Pin) -> Pin {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.union(b).cloned().collect()),
        _ => None,
    }
}

impl Case {
    /// Both branches at once; None when they cannot both hold.
    fn and(&self, other: &Case) -> Option<Case> {
        let subresources = match (&self.subresources, &other.subresources) {
            (Sub::Any, x) | (x, Sub::Any) => x.clone(),
            (Sub::Absent, Sub::Absent) => Sub::Absent,
            (Sub::In(a), Sub::In(b)) => {
                let both: BTreeSet<String> = a.intersection(b).cloned().collect();
                if both.is_empty() {
                    return None;
                }
                Sub::In(both)
            }
            _ => return None,
        };
        let mut reads = self.reads.clone();
        reads.extend(other.reads.iter().map(|(k, v)| (k.clone(), *v)));
        Some(Case {
            resources: meet(&self.resources, &other.resources)?,
            subresources,
            groups: meet(&self.groups, &other.groups)?,
            verbs: meet(&self.verbs, &other.verbs)?,
            users: meet(&self.users, &other.users)?,
            user_groups: self
                .user_groups
                .iter()
                .chain(&other.user_groups)
                .cloned()
                .collect(),
            namespaces: meet(&self.namespaces, &other.namespaces)?,
            names: meet(&self.names, &other.names)?,
            reads,
        })
    }

    /// Either branch: what both allow (a safe widening when branches are too many to keep).
    fn or(&self, other: &Case) -> Case {
        let subresources = if self.subresources == other.subresources {
            self.subresources.clone()
        } else {
            Sub::Any
        };
        let mut reads = self.reads.clone();
        reads.extend(other.reads.iter().map(|(k, v)| (k.clone(), *v)));
        Case {
            resources: join(&self.resources, &other.resources),
            subresources,
            groups: join(&self.groups, &other.groups),
            verbs: join(&self.verbs, &other.verbs),
            users: join(&self.users, &other.users),
            user_groups: Vec::new(),
            namespaces: join(&self.namespaces, &other.namespaces),
            names: join(&self.names, &other.names),
            reads,
        }
    }

    fn reading(fields: BTreeMap<String, Level>) -> Case {
        Case {
            reads: fields,
            ..Case::default()
        }
    }
}

/// Branches kept apart before they are merged into one.
const MAX_CASES: usize = 256;

/// The branches of a condition.
fn cases(cond: &Cond) -> Vec<Case> {
    match cond {
        Cond::Match(m) => vec![matcher_case(m)],
        Cond::Macro(_, c) => cases(c),
        Cond::Any(cs) => {
            let all: Vec<Case> = cs.iter().flat_map(cases).collect();
            limit(all)
        }
        Cond::All(cs) => {
            let mut acc = vec![Case::default()];
            for c in cs {
                let next = cases(c);
                let mut product = Vec::new();
                for a in &acc {
                    product.extend(next.iter().filter_map(|b| a.and(b)));
                }
                acc = limit(product);
            }
            acc
        }
        // A negation pins nothing; what it reads, it reads on every event.
        Cond::Not(c) => {
            let mut reads = BTreeMap::new();
            for case in cases(c) {
                reads.extend(case.reads);
            }
            vec![Case::reading(reads)]
        }
    }
}

fn limit(cases: Vec<Case>) -> Vec<Case> {
    if cases.len() <= MAX_CASES {
        return cases;
    }
    let mut iter = cases.into_iter();
    let first = iter.next().unwrap_or_default();
    vec![iter.fold(first, |a, b| a.or(&b))]
}

fn matcher_case(m: &Matcher) -> Case {
    let pinned = match &m.op {
        Op::Eq(Scalar::Str(s, false)) => Some(BTreeSet::from([s.clone()])),
        Op::In(set) => Some(set.to_vec().into_iter().collect()),
        _ => None,
    };
    let mut case = Case::default();
    match (m.path.as_str(), pinned) {
        ("objectRef.resource", Some(p)) => case.resources = Some(p),
        ("objectRef.subresource", Some(p)) => case.subresources = Sub::In(p),
        ("objectRef.subresource", None) if matches!(m.op, Op::Exists(false)) => {
            case.subresources = Sub::Absent;
        }
        ("objectRef.apiGroup", Some(p)) => case.groups = Some(p),
        ("verb", Some(p)) => case.verbs = Some(p),
        ("user.username", Some(p)) => case.users = Some(p),
        ("user.groups", Some(p)) => case.user_groups = vec![p],
        ("objectRef.namespace", Some(p)) => case.namespaces = Some(p),
        ("objectRef.name", Some(p)) => case.names = Some(p),
        _ => {}
    }
    read(&mut case.reads, &m.path, &m.field);
    if let Op::SameAs(other) = &m.op {
        read(&mut case.reads, &field_path(other), other);
    }
    case
}

/// Notes `field` (written `path`) among the reads when it needs more than the metadata.
fn read(reads: &mut BTreeMap<String, Level>, path: &str, field: &Field) {
    let level = field_level(field);
    if level > Level::Metadata {
        reads.insert(path.to_owned(), level);
    }
}

/// The audit level an event must be logged at for `field` to be there.
pub fn field_level(field: &Field) -> Level {
    match field {
        Field::Json(JsonRoot::Request | JsonRoot::PodSpec, ..) => Level::Request,
        Field::Json(JsonRoot::Response, ..) => Level::RequestResponse,
        // Decoded from the CSR in the request object.
        Field::Derived(Derived::CsrCommonName | Derived::CsrOrganizations) => Level::Request,
        // From requestURI, and from sourceIPs through the IP lists and GeoIP.
        Field::Derived(
            Derived::ExecCommand
            | Derived::SourceLists
            | Derived::SourceAsn
            | Derived::SourceAsOrg
            | Derived::SourceCountry,
        ) => Level::Metadata,
        Field::Str(_)
        | Field::List(_)
        | Field::StatusCode
        | Field::Extra(..)
        | Field::Annotation(..) => Level::Metadata,
    }
}

/// A compiled field written back as a path, for messages (metadata fields are not named).
fn field_path(field: &Field) -> String {
    match field {
        Field::Json(root, segs, _) => {
            let mut out = String::from(match root {
                JsonRoot::Request => "requestObject",
                JsonRoot::Response => "responseObject",
                JsonRoot::PodSpec => "podSpec",
            });
            for seg in segs {
                match seg {
                    Seg::Key(k) if k.contains(['.', '[', '(']) => out.push_str(&format!(".{k:?}")),
                    Seg::Key(k) => {
                        out.push('.');
                        out.push_str(k);
                    }
                    Seg::AnyKey(keys) => out.push_str(&format!(".({})", keys.join("|"))),
                    Seg::Each => out.push_str("[*]"),
                    Seg::Index(i) => out.push_str(&format!("[{i}]")),
                }
            }
            out
        }
        Field::Derived(d) => derived::NAMES
            .iter()
            .find(|(_, x)| x == d)
            .map_or("(derived)", |(n, _)| n)
            .to_owned(),
        _ => "(metadata)".to_owned(),
    }
}

/// The fields a rule's kind reads besides its conditions (grouping, counting).
fn kind_reads(kind: &Kind) -> BTreeMap<String, Level> {
    let mut reads = BTreeMap::new();
    let fields: Vec<&Field> = match kind {
        Kind::Threshold(t) => t.by.iter().chain(&t.distinct).collect(),
        Kind::NewTerms(n) => n.fields.iter().chain(&n.known).collect(),
        Kind::Sequence(s) => s.by.iter().collect(),
        _ => Vec::new(),
    };
    for f in fields {
        read(&mut reads, &field_path(f), f);
    }
    reads
}

/// Every kind of request the rule reads, and the level each needs.
fn needs(rule: &Rule) -> Vec<Need> {
    let mut all: Vec<Case> = match &rule.kind {
        Kind::Sequence(spec) => spec
            .steps
            .iter()
            .flat_map(|step| cases(&Cond::All(vec![rule.condition.clone(), step.clone()])))
            .collect(),
        _ => cases(&rule.condition),
    };
    // Exceptions are tested on the events the condition admits.
    let mut extra = kind_reads(&rule.kind);
    for e in &rule.except {
        for case in cases(e) {
            extra.extend(case.reads);
        }
    }
    for case in &mut all {
        case.reads
            .extend(extra.iter().map(|(k, v)| (k.clone(), *v)));
    }
    if let Some(implied) = rule.kind.implied_reads() {
        all.extend(cases(&implied));
    }
    let mut out = Vec::new();
    for case in all {
        let level = case
            .reads
            .values()
            .copied()
            .max()
            .unwrap_or(Level::Metadata);
        let fields: BTreeSet<String> = case
            .reads
            .iter()
            .filter(|(_, l)| **l == level)
            .map(|(k, _)| k.clone())
            .collect();
        let subresources: Vec<Option<String>> = match &case.subresources {
            Sub::Any | Sub::Absent => vec![None],
            Sub::In(s) => s.iter().cloned().map(Some).collect(),
        };
        let verbs_of = |sub: &Option<String>| -> Vec<String> {
            if let Some(v) = &case.verbs {
                return v.iter().cloned().collect();
            }
            let known = sub.as_deref().and_then(|sub| {
                SUBRESOURCE_VERBS
                    .iter()
                    .find(|(s, _)| *s == sub)
                    .map(|(_, verbs)| *verbs)
            });
            known
                .unwrap_or(&VERBS)
                .iter()
                .map(|v| (*v).to_owned())
                .collect()
        };
        let targets: Vec<Target> = match &case.resources {
            None => vec![Target::Any],
            Some(resources) => resources
                .iter()
                .flat_map(|r| {
                    let builtin = builtin_resource(r);
                    let groups: Vec<Option<String>> = match &case.groups {
                        Some(g) => g.iter().cloned().map(Some).collect(),
                        None => vec![builtin.map(|(g, _)| g.to_owned())],
                    };
                    let subresources = &subresources;
                    groups.into_iter().flat_map(move |group| {
                        subresources.iter().map(move |sub| {
                            Target::Resource(Resource {
                                resource: r.clone(),
                                subresource: sub.clone(),
                                group: group.clone(),
                                namespaced: builtin.map(|(_, ns)| ns),
                            })
                        })
                    })
                })
                .collect(),
        };
        for target in &targets {
            let subresource = match target {
                Target::Resource(r) => r.subresource.clone(),
                Target::Any => None,
            };
            for verb in &verbs_of(&subresource) {
                out.push(Need {
                    target: target.clone(),
                    verb: verb.clone(),
                    users: case.users.clone(),
                    user_groups: case.user_groups.clone(),
                    namespaces: case.namespaces.clone(),
                    names: case.names.clone(),
                    level,
                    fields: fields.clone(),
                });
            }
        }
    }
    out
}

/// What a rule reads of one kind of request, as `rules check` reports it without a policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reads {
    pub rule: String,
    /// `pods`, `certificatesigningrequests/approval`, or `every resource`.
    pub resource: String,
    pub group: Option<String>,
    pub verbs: Vec<String>,
    pub level: Level,
    pub fields: Vec<String>,
}

/// Every rule's reads, merged per resource and level (verbs together), in rule order.
pub fn reads(set: &RuleSet) -> Vec<Reads> {
    let mut out = Vec::new();
    for rule in &set.rules {
        let mut merged: BTreeMap<(Target, Level), (BTreeSet<String>, BTreeSet<String>)> =
            BTreeMap::new();
        for need in needs(rule) {
            let slot = merged.entry((need.target, need.level)).or_default();
            slot.0.insert(need.verb);
            slot.1.extend(need.fields);
        }
        for ((target, level), (verbs, fields)) in merged {
            let group = match &target {
                Target::Resource(r) => r.group.clone(),
                Target::Any => None,
            };
            out.push(Reads {
                rule: rule.id.clone(),
                resource: target.to_string(),
                group,
                verbs: verbs.into_iter().collect(),
                level,
                fields: fields.into_iter().collect(),
            });
        }
    }
    out
}

/// A rule whose events the policy logs below what it needs (or not at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub rule: String,
    /// Resources with their verbs.
    pub requests: Vec<(String, Vec<String>)>,
    pub needed: Level,
    pub fields: Vec<String>,
    pub logged: Level,
    /// Which policy rule decided (`policy rule 7 (line 88)`), and why nothing is logged.
    pub because: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Resources read with the same verbs together: `pods, deployments (create, patch)`.
        let mut by_verbs: Vec<(&Vec<String>, Vec<&str>)> = Vec::new();
        for (resource, verbs) in &self.requests {
            match by_verbs.iter_mut().find(|(v, _)| *v == verbs) {
                Some((_, resources)) => resources.push(resource),
                None => by_verbs.push((verbs, vec![resource])),
            }
        }
        let requests: Vec<String> = by_verbs
            .iter()
            .map(|(verbs, resources)| format!("{} ({})", resources.join(", "), verbs.join(", ")))
            .collect();
        write!(
            f,
            "{}: {} need {}",
            self.rule,
            requests.join(", "),
            self.needed
        )?;
        if !self.fields.is_empty() {
            write!(f, " (reads {})", self.fields.join(", "))?;
        }
        write!(f, "; {}", self.because)
    }
}

/// Requests of one rule with the same outcome, and the fields they need.
#[derive(Default)]
struct Shortfall {
    requests: BTreeMap<String, Vec<String>>,
    fields: BTreeSet<String>,
}

/// The rules of `set` that would miss what they read under `policy`, one warning per rule and
/// outcome (a rule whose requests fall under two policy rules can have two).
pub fn check(policy: &Policy, set: &RuleSet) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for rule in &set.rules {
        // Per request kind, the shortfall that needs the most.
        let mut worst: BTreeMap<(Target, String), (Need, Verdict)> = BTreeMap::new();
        for need in needs(rule) {
            let verdict = policy.verdict(&need);
            if verdict.level >= need.level {
                continue;
            }
            let key = (need.target.clone(), need.verb.clone());
            match worst.get_mut(&key) {
                Some((held, _)) if held.level > need.level => {}
                Some((held, _)) if held.level == need.level => {
                    held.fields.extend(need.fields);
                }
                _ => {
                    worst.insert(key, (need, verdict));
                }
            }
        }
        // Grouped by outcome: the level needed, and what the policy does.
        let mut groups: BTreeMap<(Level, Level, String), Shortfall> = BTreeMap::new();
        for ((target, verb), (need, verdict)) in worst {
            let slot = groups
                .entry((need.level, verdict.level, verdict.because))
                .or_default();
            slot.requests
                .entry(target.to_string())
                .or_default()
                .push(verb);
            slot.fields.extend(need.fields);
        }
        for ((needed, logged, because), group) in groups {
            warnings.push(Warning {
                rule: rule.id.clone(),
                requests: group.requests.into_iter().collect(),
                needed,
                fields: group.fields.into_iter().collect(),
                logged,
                because,
            });
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn library() -> RuleSet {
        RuleSet::load(&[PathBuf::from(super::super::library::BUILTIN)]).unwrap()
    }

    fn rules(yaml: &str) -> RuleSet {
        RuleSet::load_with(&[], vec![(PathBuf::from("test.yaml"), yaml.to_owned())]).unwrap()
    }

    fn policy(rules: &str) -> Policy {
        Policy::parse(&format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{rules}"
        ))
        .unwrap()
    }

    const CONFIGMAP_RULE: &str = "rules:
  - id: t.cm
    title: t
    severity: low
    condition:
      all:
        - objectRef.resource: configmaps
        - verb: [create, update, patch]
        - requestObject.data[*]: {contains: password}
    summary: s
";

    #[test]
    fn reads_pair_each_resource_with_its_verbs_and_fields() {
        let all = reads(&library());
        let of = |id: &str| -> Vec<&Reads> { all.iter().filter(|r| r.rule == id).collect() };
        let cm = of("k8s.configmap.credentials");
        assert_eq!(cm.len(), 1, "{cm:?}");
        assert_eq!(
            (cm[0].resource.as_str(), cm[0].level),
            ("configmaps", Level::Request)
        );
        assert_eq!(cm[0].verbs, ["create", "patch", "update"]);
        assert_eq!(cm[0].fields, ["requestObject.data[*]"]);
        // An `any` of branches with their own verbs and subresource stays apart.
        let csr: Vec<(String, Vec<String>)> = of("k8s.csr.privileged_subject")
            .iter()
            .map(|r| (r.resource.clone(), r.verbs.clone()))
            .collect();
        assert_eq!(
            csr,
            [
                (
                    "certificatesigningrequests".to_string(),
                    vec!["create".to_string()]
                ),
                (
                    "certificatesigningrequests/approval".to_string(),
                    vec!["patch".to_string(), "update".to_string()]
                )
            ]
        );
        // The response, where a rule looks at it.
        assert!(of("k8s.rbac.existing_role_wildcarded")
            .iter()
            .any(|r| r.resource == "clusterroles"
                && r.level == Level::RequestResponse
                && r.fields
                    .contains(&"responseObject.rules[*].verbs".to_string())));
        // A built-in that follows bindings reads their subjects.
        assert!(of("k8s.rbac.denied_granted_used")
            .iter()
            .any(|r| r.resource == "rolebindings"
                && r.group.as_deref() == Some("rbac.authorization.k8s.io")
                && r.level == Level::Request));
        // Every resource the library names is a known one, so its API group is known.
        for r in &all {
            assert!(
                r.resource == "every resource" || r.group.is_some(),
                "{}: {} has no known API group: add it to RESOURCES",
                r.rule,
                r.resource
            );
        }
    }

    #[test]
    fn first_matching_rule_decides_and_narrower_rules_are_passed_over() {
        let set = rules(CONFIGMAP_RULE);
        // ConfigMaps at Metadata: a warning naming the policy rule and its line.
        let p = policy(
            "  - level: None\n    users: [system:kube-scheduler]\n  - level: Metadata\n    resources: [{group: \"\", resources: [configmaps]}]\n  - level: Request\n",
        );
        let w = check(&p, &set);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            w[0].to_string(),
            "t.cm: configmaps (create, patch, update) need Request (reads requestObject.data[*]); logged at Metadata by policy rule 2 (line 6)"
        );
        // Request for writes first: fine. A rule for other verbs or another group: no match.
        let ok = policy(
            "  - level: Metadata\n    verbs: [get, list]\n  - level: None\n    resources: [{group: apps, resources: [configmaps]}]\n  - level: Request\n    verbs: [create, update, patch]\n    resources: [{group: \"\", resources: [\"*\"]}]\n  - level: Metadata\n",
        );
        assert_eq!(check(&ok, &set), []);
        // Not logged at all, by a None rule or by no rule.
        let none = check(&policy("  - level: None\n"), &set);
        assert!(none[0].because.contains("is level None"), "{none:?}");
        let nothing = check(
            &policy("  - level: Request\n    resources: [{group: \"\", resources: [pods]}]\n"),
            &set,
        );
        assert!(
            nothing[0].because.contains("no policy rule matches"),
            "{nothing:?}"
        );
        // A rule for some namespaces only is passed over: the catch-all decides.
        let narrow = policy("  - level: Request\n    namespaces: [shop]\n  - level: Metadata\n");
        assert!(check(&narrow, &set)[0].because.contains("policy rule 2"));
        // Omitting ResponseComplete hides everything from the detectors.
        let omitted = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseComplete]\nrules:\n  - level: RequestResponse\n",
        )
        .unwrap();
        assert!(check(&omitted, &set)[0]
            .because
            .contains("omits stage ResponseComplete"));
    }

    #[test]
    fn pinned_users_subresources_and_names_decide_narrow_rules() {
        let set = rules(
            "rules:
  - id: t.approve
    title: t
    severity: low
    condition:
      all:
        - objectRef.resource: certificatesigningrequests
        - objectRef.subresource: approval
        - verb: update
        - user.username: [alice, bob]
        - requestObject.status.conditions[*].type: Approved
    summary: s
",
        );
        let ok = policy(
            "  - level: Request\n    users: [alice, bob, carol]\n    resources: [{group: certificates.k8s.io, resources: [certificatesigningrequests/approval]}]\n  - level: Metadata\n",
        );
        assert_eq!(check(&ok, &set), []);
        // The resource without the subresource, or a `*/status` pattern, does not match it.
        let wrong = policy(
            "  - level: Request\n    resources: [{group: certificates.k8s.io, resources: [certificatesigningrequests, \"*/status\"]}]\n  - level: Metadata\n",
        );
        assert_eq!(check(&wrong, &set).len(), 1);
        let wildcard = policy(
            "  - level: Request\n    resources: [{group: certificates.k8s.io, resources: [\"certificatesigningrequests/*\"]}]\n",
        );
        assert_eq!(check(&wildcard, &set), []);
        // Only some of the users: passed over.
        let some = policy("  - level: Request\n    users: [alice]\n  - level: Metadata\n");
        assert_eq!(check(&some, &set).len(), 1);
        // Some objects, or some groups, that the rule does not pin: passed over too.
        let objects = policy(
            "  - level: None\n    resources: [{group: certificates.k8s.io, resources: [\"*\"], resourceNames: [csr-1]}]\n    userGroups: [system:masters]\n  - level: Request\n",
        );
        assert_eq!(check(&objects, &set), []);
        // Cluster-scoped: its namespace is "".
        let cluster = policy("  - level: Request\n    namespaces: [\"\"]\n");
        assert_eq!(check(&cluster, &set), []);
    }

    #[test]
    fn bad_policies_are_refused() {
        for (text, why) in [
            ("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\n", "audit.k8s.io/v1"),
            ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Requset\n", "Requset"),
            ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    user: [x]\n", "user"),
            ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    omitStages: [Done]\n", "Done"),
            ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    nonResourceURLs: [/x]\n    namespaces: [a]\n", "not both"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
