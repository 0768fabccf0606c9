//! The event as rules see it: the decoded `AuditEvent` plus what is worked out from it lazily,
//! at most once per event and only when a rule gets that far (nested JSON objects, `user.extra`,
//! annotations, an exec's command, a CSR's subject, macro answers).

use super::derived::CsrSubject;
use super::tree::Json;
use super::AuditEvent;
use crate::reputation::{Enrichment, SourceInfo};
use serde_json::value::RawValue;
use std::cell::{Cell, OnceCell};
use std::sync::Arc;

/// What a run adds to how rules see its events: the source reputation (IP lists, GeoIP) and
/// the impersonation proxies whose impersonated users are the real actors. A snapshot per
/// batch; the default adds nothing.
#[derive(Debug, Clone, Default)]
pub struct Lens {
    pub enrichment: Arc<Enrichment>,
    /// Usernames of impersonation proxies (Pinniped's concierge, kube-oidc-proxy…).
    pub proxies: Arc<[String]>,
}

impl Lens {
    /// Whether two lenses are the same snapshot.
    pub fn same(&self, other: &Lens) -> bool {
        Arc::ptr_eq(&self.enrichment, &other.enrichment)
            && Arc::ptr_eq(&self.proxies, &other.proxies)
    }

    /// When `ev`'s actor is an impersonation proxy acting for someone, the event as rules see
    /// it: the impersonated user is the actor, and the proxy is kept in `proxy`. None
    /// otherwise (the event is taken as it is).
    pub fn acting_for<'a>(&self, ev: &AuditEvent<'a>) -> Option<AuditEvent<'a>> {
        if self.proxies.is_empty() {
            return None;
        }
        let user = ev.impersonated_user.as_ref()?;
        if user.username.as_deref().is_none_or(str::is_empty) {
            return None;
        }
        let actor = ev.user.username.as_deref()?;
        if !self.proxies.iter().any(|p| p == actor) {
            return None;
        }
        let mut copy = ev.copy_for_rules();
        let user = copy.impersonated_user.take()?;
        let proxy = std::mem::replace(&mut copy.user, user);
        copy.proxy = proxy.username;
        Some(copy)
    }
}

/// Where a path into an event's objects starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonRoot {
    Request,
    Response,
    /// The pod template of whatever workload the request object is (Pod, Deployment, CronJob…).
    PodSpec,
}

/// What a look at the raw text says about a key's string value.
#[derive(Clone, Copy)]
pub(crate) enum Plain<'t> {
    Value(&'t str),
    Absent,
    /// Escapes, odd layout or a non-string value: parse to be sure.
    Unsure,
}

/// An event as rules see it: the parsed struct plus lazily parsed nested JSON.
pub struct EventView<'e, 'a> {
    pub event: &'e AuditEvent<'a>,
    /// Event time, microseconds since the epoch.
    pub time: i64,
    enrichment: Option<&'e Enrichment>,
    sources: OnceCell<Vec<SourceInfo<'e>>>,
    request: OnceCell<Option<Json<'a>>>,
    response: OnceCell<Option<Json<'a>>>,
    extra: OnceCell<Json<'a>>,
    annotations: OnceCell<Json<'a>>,
    exec_command: OnceCell<Option<String>>,
    csr: OnceCell<Option<CsrSubject>>,
    /// The last annotation read from the raw text, by the searcher that found it.
    annotation: Cell<Option<(u64, Plain<'a>)>>,
    /// Macros answered so far on this event (bit per slot), and their answers.
    macros_known: Cell<u64>,
    macros_true: Cell<u64>,
}

impl<'e, 'a> EventView<'e, 'a> {
    pub fn new(event: &'e AuditEvent<'a>, time: i64) -> Self {
        EventView {
            event,
            time,
            enrichment: None,
            sources: OnceCell::new(),
            request: OnceCell::new(),
            response: OnceCell::new(),
            extra: OnceCell::new(),
            annotations: OnceCell::new(),
            exec_command: OnceCell::new(),
            csr: OnceCell::new(),
            annotation: Cell::new(None),
            macros_known: Cell::new(0),
            macros_true: Cell::new(0),
        }
    }

    /// The view with `sourceIP.*` looked up in `enrichment` (without one, those fields have
    /// no value).
    pub fn enriched(mut self, enrichment: &'e Enrichment) -> Self {
        self.enrichment = Some(enrichment);
        self
    }

    /// Whether `sourceIP.*` can have a value: IP lists or a GeoIP database are loaded.
    pub fn is_enriched(&self) -> bool {
        self.enrichment.is_some_and(|e| !e.is_empty())
    }

    /// What the enrichment says of each source address (`sourceIPs` in order, text that is no
    /// address left out): looked up the first time a rule asks, at most once per event.
    pub fn sources(&self) -> &[SourceInfo<'e>] {
        self.sources.get_or_init(|| {
            let (Some(enrichment), Some(raw)) = (self.enrichment, self.event.source_ips) else {
                return Vec::new();
            };
            if enrichment.is_empty() {
                return Vec::new();
            }
            let mut out = Vec::new();
            super::for_each_str(raw, &mut |ip| {
                out.extend(enrichment.source(ip));
                false
            });
            out
        })
    }

    /// The answer of the macro in `slot` (< 64) on this event, computed the first time asked.
    pub fn macro_answer(&self, slot: u8, compute: impl FnOnce() -> bool) -> bool {
        let bit = 1u64 << slot;
        if self.macros_known.get() & bit != 0 {
            return self.macros_true.get() & bit != 0;
        }
        let answer = compute();
        self.macros_known.set(self.macros_known.get() | bit);
        if answer {
            self.macros_true.set(self.macros_true.get() | bit);
        }
        answer
    }

    /// Macro answers worked out elsewhere (from the event's shape alone), taken as known.
    pub fn settle_macros(&self, known: u64, answers: u64) {
        self.macros_known.set(self.macros_known.get() | known);
        self.macros_true
            .set(self.macros_true.get() | (answers & known));
    }

    fn parsed<'c>(
        cell: &'c OnceCell<Option<Json<'a>>>,
        raw: Option<&'a RawValue>,
    ) -> Option<&'c Json<'a>> {
        cell.get_or_init(|| raw.and_then(|r| Json::parse(r.get()).ok()))
            .as_ref()
    }

    pub(crate) fn json_root(&self, root: JsonRoot) -> Option<&Json<'a>> {
        match root {
            JsonRoot::Request => Self::parsed(&self.request, self.event.request_object),
            JsonRoot::Response => Self::parsed(&self.response, self.event.response_object),
            JsonRoot::PodSpec => pod_spec(Self::parsed(&self.request, self.event.request_object)?),
        }
    }

    /// Whether the object a JSON root lies in has been parsed already (a rule read it): walking
    /// it then costs less than scanning its text for keys.
    pub(crate) fn root_parsed(&self, root: JsonRoot) -> bool {
        match root {
            JsonRoot::Request | JsonRoot::PodSpec => self.request.get().is_some(),
            JsonRoot::Response => self.response.get().is_some(),
        }
    }

    /// The unparsed object a JSON root lies in.
    pub(crate) fn raw_root(&self, root: JsonRoot) -> Option<&'a RawValue> {
        match root {
            JsonRoot::Request | JsonRoot::PodSpec => self.event.request_object,
            JsonRoot::Response => self.event.response_object,
        }
    }

    /// `user.extra` parsed (an object; empty when absent or unreadable).
    pub fn extra(&self) -> &Json<'a> {
        self.extra.get_or_init(|| parse_map(self.event.user.extra))
    }

    /// Whether `extra` has been worked out already (a rule read it): reading it again is free.
    pub fn extra_parsed(&self) -> bool {
        self.extra.get().is_some()
    }

    /// `annotations` parsed (an object; empty when absent or unreadable).
    pub fn annotations(&self) -> &Json<'a> {
        self.annotations
            .get_or_init(|| parse_map(self.event.annotations))
    }

    /// An annotation's value as a searcher finds it in the raw annotations: remembered for the
    /// next rule that asks for the same key. Rules compile their own copies of a field; `id`,
    /// its keys' fingerprint, names it.
    pub(crate) fn plain_annotation(&self, id: u64, find: impl FnOnce() -> Plain<'a>) -> Plain<'a> {
        match self.annotation.get() {
            Some((seen, plain)) if seen == id => plain,
            _ => {
                let plain = find();
                self.annotation.set(Some((id, plain)));
                plain
            }
        }
    }

    /// The command of a `pods/exec` request, decoded from its request URI.
    pub fn exec_command(&self) -> Option<&str> {
        self.exec_command
            .get_or_init(|| {
                let uri = self.event.request_uri.as_deref()?;
                // Only exec carries a command; attach and port-forward have none.
                let exec = self.event.object_ref.as_ref()?.subresource.as_deref() == Some("exec");
                exec.then(|| super::derived::exec_command(uri)).flatten()
            })
            .as_deref()
    }

    /// The subject a CertificateSigningRequest in the request object asks for.
    pub fn csr_subject(&self) -> Option<&CsrSubject> {
        self.csr
            .get_or_init(|| {
                let is_csr = self.event.object_ref.as_ref()?.resource.as_deref()
                    == Some("certificatesigningrequests");
                if !is_csr {
                    return None;
                }
                super::derived::csr_subject(self.json_root(JsonRoot::Request)?)
            })
            .as_ref()
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations().get(key).and_then(Json::as_str)
    }
}

fn parse_map(raw: Option<&RawValue>) -> Json<'_> {
    raw.and_then(|r| Json::parse(r.get()).ok())
        .filter(|map| matches!(map, Json::Object(_)))
        .unwrap_or(Json::Object(Vec::new()))
}

/// Pod template of a workload object: Pod `spec`, `spec.template.spec` (Deployment, DaemonSet,
/// StatefulSet, ReplicaSet, Job), `spec.jobTemplate.spec.template.spec` (CronJob).
fn pod_spec<'v, 'a>(obj: &'v Json<'a>) -> Option<&'v Json<'a>> {
    let spec = obj.get("spec")?;
    if spec.get("containers").is_some() {
        return Some(spec);
    }
    fn template<'v, 'a>(v: &'v Json<'a>) -> Option<&'v Json<'a>> {
        v.get("template")?.get("spec")
    }
    template(spec).or_else(|| template(spec.get("jobTemplate")?.get("spec")?))
}
