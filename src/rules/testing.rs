//! Rule self-tests: every rule carries events that must fire it and near-misses that must not.

use super::field::EventView;
use super::{Rule, RuleSet};
use crate::event::{decode_record, DecodeOptions, Item};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTests {
    #[serde(default)]
    fire: Vec<serde_yaml::Value>,
    #[serde(default)]
    quiet: Vec<serde_yaml::Value>,
}

/// Test events as native JSON lines, with the boilerplate a rule author may leave out filled in.
#[derive(Debug, Default)]
pub struct RuleTests {
    pub fire: Vec<String>,
    pub quiet: Vec<String>,
}

impl RuleTests {
    pub fn from_raw(raw: RawTests) -> Result<RuleTests, String> {
        let convert = |events: Vec<serde_yaml::Value>, kind: &str| -> Result<Vec<String>, String> {
            events
                .into_iter()
                .enumerate()
                .map(|(i, y)| {
                    let mut v: Value =
                        serde_json::to_value(y).map_err(|e| format!("{kind}[{i}]: {e}"))?;
                    let Some(obj) = v.as_object_mut() else {
                        return Err(format!("{kind}[{i}]: a test event must be a mapping"));
                    };
                    let defaults = [
                        ("kind", Value::from("Event")),
                        ("apiVersion", Value::from("audit.k8s.io/v1")),
                        ("auditID", Value::from(format!("{kind}-{i}"))),
                        ("stage", Value::from("ResponseComplete")),
                        ("level", Value::from("RequestResponse")),
                        ("stageTimestamp", Value::from("2025-01-01T00:00:00Z")),
                        ("responseStatus", serde_json::json!({"code": 200})),
                    ];
                    for (k, d) in defaults {
                        obj.entry(k).or_insert(d);
                    }
                    Ok(v.to_string())
                })
                .collect()
        };
        Ok(RuleTests {
            fire: convert(raw.fire, "fire")?,
            quiet: convert(raw.quiet, "quiet")?,
        })
    }
}

/// Outcome of running every rule's tests.
#[derive(Debug, Default)]
pub struct TestReport {
    pub rules: usize,
    pub cases: usize,
    pub failures: Vec<String>,
}

pub fn run(set: &RuleSet) -> TestReport {
    let mut report = TestReport {
        rules: set.rules.len(),
        ..Default::default()
    };
    for rule in &set.rules {
        if rule.tests.fire.is_empty() {
            report
                .failures
                .push(format!("{}: has no `tests.fire` event", rule.id));
        }
        if rule.tests.quiet.is_empty() {
            report
                .failures
                .push(format!("{}: has no `tests.quiet` near-miss", rule.id));
        }
        for (want, events) in [(true, &rule.tests.fire), (false, &rule.tests.quiet)] {
            for (i, json) in events.iter().enumerate() {
                report.cases += 1;
                let kind = if want { "fire" } else { "quiet" };
                match fires(rule, json) {
                    Ok(got) if got == want => {}
                    Ok(got) => report.failures.push(format!(
                        "{}: tests.{kind}[{i}] {} but should {}",
                        rule.id,
                        if got { "fired" } else { "did not fire" },
                        if want { "fire" } else { "stay quiet" }
                    )),
                    Err(e) => report
                        .failures
                        .push(format!("{}: tests.{kind}[{i}]: {e}", rule.id)),
                }
            }
        }
    }
    report
}

/// Whether `rule` fires on the event in `json` (decoded exactly as the pipeline decodes).
pub fn fires(rule: &Rule, json: &str) -> Result<bool, String> {
    let mut result = Err("no event decoded".to_string());
    decode_record(
        json.as_bytes(),
        &DecodeOptions::default(),
        "default",
        &mut |item| {
            result = match item {
                Item::Event(ev, _) => match ev.event_time() {
                    Some(t) => Ok(rule.matches(&EventView::new(ev, t))),
                    None => Err("no timestamp".into()),
                },
                Item::Rejected(e) => Err(format!("event rejected: {e}")),
                Item::Skipped(why) => Err(format!("event skipped: {why}")),
            }
        },
    );
    result
}
