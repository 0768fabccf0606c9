//! Rule self-tests as written in a rule: scenarios that must fire it and near-misses that must
//! not. This module turns them into events; `eval::rule_tests` runs them.
//!
//! A test case is one event (a mapping), a list of events replayed in order (for stateful
//! rules), or `{repeat: N, event: {...}}`, which repeats an event N times with `{i}` in its
//! strings replaced by 0…N-1.

use crate::event::time::format_micros;
use crate::revocation::RevocationList;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTests {
    #[serde(default)]
    fire: Vec<serde_yaml::Value>,
    #[serde(default)]
    quiet: Vec<serde_yaml::Value>,
    /// For the built-in `revoked` rule: the revocation list its cases run against.
    #[serde(default)]
    revocations: Vec<crate::revocation::Revocation>,
    /// For rules on `sourceIP.lists`: named IP lists, addresses or CIDRs
    /// (`ip_lists: {tor: [203.0.113.5/32]}`), as `--ip-list` would load them.
    #[serde(default)]
    ip_lists: std::collections::BTreeMap<String, Vec<String>>,
    /// For rules on `sourceIP.asn`, `.asOrg`, `.country`: what a GeoIP database would say of
    /// each network (`geoip: {203.0.113.0/24: {asn: 64500, asOrg: Example, country: NL}}`).
    #[serde(default)]
    geoip: std::collections::BTreeMap<String, crate::reputation::Geo>,
}

/// Each case is a list of native JSON events, boilerplate filled in.
#[derive(Debug, Default)]
pub struct RuleTests {
    pub fire: Vec<Vec<String>>,
    /// Per fire case, how many alerts it must raise exactly (`{alerts: 1, events: [...]}`);
    /// None: at least one.
    pub fire_alerts: Vec<Option<usize>>,
    pub quiet: Vec<Vec<String>>,
    pub revocations: RevocationList,
    /// The cases' view of their events: the IP lists and GeoIP table they give.
    pub lens: crate::event::Lens,
}

/// A rule's tests as written, turned into events the first time they are needed (`rules test`,
/// `rules check`): a replay or a service never runs them, and building them was a third of
/// the time it took to load the library.
#[derive(Debug)]
pub struct Tests {
    raw: RawTests,
    built: std::sync::OnceLock<Result<RuleTests, String>>,
}

impl Tests {
    pub fn new(raw: RawTests) -> Tests {
        Tests {
            raw,
            built: std::sync::OnceLock::new(),
        }
    }

    /// The cases, or what is wrong with them (`fire[2][0]: a test event must be a mapping`).
    pub fn get(&self) -> Result<&RuleTests, &str> {
        self.built
            .get_or_init(|| RuleTests::from_raw(&self.raw))
            .as_ref()
            .map_err(String::as_str)
    }
}

/// 2025-01-01T00:00:00Z: test events without a timestamp are one second apart from here.
const BASE_TIME: i64 = 1_735_689_600_000_000;

impl RuleTests {
    pub fn from_raw(raw: &RawTests) -> Result<RuleTests, String> {
        let (fire, fire_alerts) = cases(&raw.fire, "fire")?;
        let (quiet, counts) = cases(&raw.quiet, "quiet")?;
        if counts.iter().any(Option::is_some) {
            return Err(
                "quiet: a near-miss raises no alert; `alerts:` belongs to fire cases".into(),
            );
        }
        Ok(RuleTests {
            fire,
            fire_alerts,
            quiet,
            revocations: RevocationList::new(raw.revocations.clone())
                .map_err(|e| format!("revocations: {e}"))?,
            lens: crate::event::Lens {
                enrichment: std::sync::Arc::new(crate::reputation::Enrichment::inline(
                    &raw.ip_lists,
                    &raw.geoip,
                )?),
                ..Default::default()
            },
        })
    }
}

type Cases = (Vec<Vec<String>>, Vec<Option<usize>>);

/// A case is an event, a list of events, or `{alerts: N, events: [...]}` (exactly N alerts).
fn cases(items: &[serde_yaml::Value], kind: &str) -> Result<Cases, String> {
    let mut counts = Vec::new();
    let events = items
        .iter()
        .enumerate()
        .map(|(c, y)| {
            let at = format!("{kind}[{c}]");
            let mut v: Value = serde_json::to_value(y).map_err(|e| format!("{at}: {e}"))?;
            let mut alerts = None;
            if let Some(case) = v.as_object_mut().filter(|m| m.contains_key("events")) {
                if let Some(n) = case.remove("alerts") {
                    let n = n
                        .as_u64()
                        .ok_or_else(|| format!("{at}.alerts: expected a count"))?;
                    alerts = Some(n as usize);
                }
                if let Some(other) = case.keys().find(|k| *k != "events") {
                    return Err(format!(
                        "{at}.{other}: unknown key; a case has events and alerts"
                    ));
                }
                v = case.remove("events").unwrap_or_default();
            }
            counts.push(alerts);
            let mut events = Vec::new();
            match v {
                Value::Array(items) => {
                    for (j, item) in items.into_iter().enumerate() {
                        expand(item, &format!("{at}[{j}]"), &mut events)?;
                    }
                }
                other => expand(other, &at, &mut events)?,
            }
            events
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    with_defaults(e, &format!("{kind}-{c}-{i}"), i)
                        .map_err(|m| format!("{at}: {m}"))
                })
                .collect()
        })
        .collect::<Result<_, String>>()?;
    Ok((events, counts))
}

/// One event, or a `{repeat: N, event: {...}}` block: N copies with `{i}` replaced by 0..N, and
/// with `from: <RFC 3339>` (and optionally `every: 5m`) timestamps spaced through time.
fn expand(v: Value, at: &str, out: &mut Vec<Value>) -> Result<(), String> {
    let Value::Object(ref m) = v else {
        out.push(v);
        return Ok(());
    };
    if !m.contains_key("repeat") {
        out.push(v);
        return Ok(());
    }
    let n = m["repeat"]
        .as_u64()
        .ok_or_else(|| format!("{at}.repeat: expected a count"))?;
    let event = m
        .get("event")
        .ok_or_else(|| format!("{at}: `repeat` needs an `event`"))?;
    let from = match m.get("from").map(|f| f.as_str()) {
        None => None,
        Some(f) => Some(
            f.and_then(crate::event::time::parse_rfc3339_micros)
                .ok_or_else(|| format!("{at}.from: expected an RFC 3339 time"))?,
        ),
    };
    let every = match m.get("every") {
        None => 1_000_000,
        Some(e) => crate::event::time::parse_duration(e.as_str().unwrap_or(""))
            .map_err(|e| format!("{at}.every: {e}"))?,
    };
    for i in 0..n {
        let mut e = substitute(event, i);
        if let (Some(from), Some(obj)) = (from, e.as_object_mut()) {
            let t = format_micros(from + i as i64 * every);
            obj.insert("stageTimestamp".into(), Value::from(t));
        }
        out.push(e);
    }
    Ok(())
}

fn substitute(v: &Value, i: u64) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{i}", &i.to_string())),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, i)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), substitute(x, i)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn with_defaults(mut v: Value, audit_id: &str, index: usize) -> Result<String, String> {
    let Some(obj) = v.as_object_mut() else {
        return Err("a test event must be a mapping".into());
    };
    let defaults = [
        ("kind", Value::from("Event")),
        ("apiVersion", Value::from("audit.k8s.io/v1")),
        ("auditID", Value::from(audit_id)),
        ("stage", Value::from("ResponseComplete")),
        ("level", Value::from("RequestResponse")),
        (
            "stageTimestamp",
            Value::from(format_micros(BASE_TIME + index as i64 * 1_000_000)),
        ),
        ("responseStatus", serde_json::json!({"code": 200})),
    ];
    for (k, d) in defaults {
        obj.entry(k).or_insert(d);
    }
    Ok(v.to_string())
}
