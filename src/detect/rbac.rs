//! What the RBAC-aware built-ins need to know about one event: is it a binding change and whom
//! does it bind, was it refused or allowed, and which action did it attempt.

use crate::event::EventView;
use crate::event::DECISION_KEY;
use serde::Deserialize;

const BINDINGS: [&str; 2] = ["rolebindings", "clusterrolebindings"];

#[derive(Deserialize)]
struct Binding {
    subjects: Option<Vec<Subject>>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    namespace: Option<String>,
}

/// The request went through: 1xx-3xx, or an allow decision when no status was recorded.
pub fn is_allowed(view: &EventView) -> bool {
    match view.event.status_code() {
        Some(code) => code < 400,
        None => view.annotation(DECISION_KEY) == Some("allow"),
    }
}

/// RBAC refused the request (403, or a forbid decision when no status was recorded).
pub fn is_denied(view: &EventView) -> bool {
    match view.event.status_code() {
        Some(code) => code == 403,
        None => view.annotation(DECISION_KEY) == Some("forbid"),
    }
}

/// `verb resource[/subresource] namespace`: what a later success must repeat to count as the
/// same action.
pub fn action(view: &EventView) -> Box<str> {
    let mut a = String::new();
    write_action(view, &mut a);
    a.into_boxed_str()
}

/// Appends `action` to `out`.
pub fn write_action(view: &EventView, out: &mut String) {
    let ev = view.event;
    let o = ev.object_ref.as_ref();
    out.push_str(ev.verb.as_deref().unwrap_or(""));
    out.push(' ');
    out.push_str(o.and_then(|o| o.resource.as_deref()).unwrap_or(""));
    if let Some(sub) = o.and_then(|o| o.subresource.as_deref()) {
        out.push('/');
        out.push_str(sub);
    }
    if let Some(ns) = o.and_then(|o| o.namespace.as_deref()) {
        out.push(' ');
        out.push_str(ns);
    }
}

/// A (Cluster)RoleBinding is written (create, update, patch) or deleted.
pub enum BindingChange {
    Write,
    Delete,
}

pub fn binding_change(view: &EventView) -> Option<BindingChange> {
    let o = view.event.object_ref.as_ref()?;
    if !BINDINGS.contains(&o.resource.as_deref()?) || o.subresource.is_some() {
        return None;
    }
    match view.event.verb.as_deref()? {
        "create" | "update" | "patch" => Some(BindingChange::Write),
        "delete" => Some(BindingChange::Delete),
        _ => None,
    }
}

/// `kind namespace/name` of the binding an event touches.
pub fn binding_id(view: &EventView) -> String {
    let o = view.event.object_ref.as_ref();
    let text = |s: Option<&crate::event::JStr>| s.map(|s| s.to_string()).unwrap_or_default();
    let (resource, namespace, name) = (
        text(o.and_then(|o| o.resource.as_ref())),
        text(o.and_then(|o| o.namespace.as_ref())),
        text(o.and_then(|o| o.name.as_ref())),
    );
    // `rolebindings shop/dev`, or `clusterrolebindings ops` for a cluster-scoped one.
    if namespace.is_empty() {
        format!("{resource} {name}")
    } else {
        format!("{resource} {namespace}/{name}")
    }
}

/// The identities a binding's request object names, as they appear in `user.username`
/// (`system:serviceaccount:ns:name` for service accounts) and `group:<name>` for groups.
/// None when the request carries no subjects (a patch of other fields, Metadata-level logs).
pub fn binding_subjects(view: &EventView) -> Option<Vec<Box<str>>> {
    let raw = view.event.request_object?;
    let binding: Binding = serde_json::from_str(raw.get()).ok()?;
    let default_ns = view
        .event
        .object_ref
        .as_ref()
        .and_then(|o| o.namespace.as_deref())
        .unwrap_or("default");
    let subjects = binding
        .subjects?
        .into_iter()
        .filter(|s| !s.name.is_empty())
        .map(|s| match s.kind.as_str() {
            "ServiceAccount" => format!(
                "system:serviceaccount:{}:{}",
                s.namespace.as_deref().unwrap_or(default_ns),
                s.name
            ),
            "Group" => format!("group:{}", s.name),
            _ => s.name,
        })
        .map(String::into_boxed_str)
        .collect();
    Some(subjects)
}

/// The actor's groups, each as `group:<name>` like `binding_subjects` writes them.
pub fn actor_groups(view: &EventView) -> Vec<Box<str>> {
    let mut groups = Vec::new();
    if let Some(raw) = view.event.user.groups {
        crate::event::for_each_str(raw, &mut |g| {
            groups.push(format!("group:{g}").into_boxed_str());
            false
        });
    }
    groups
}
