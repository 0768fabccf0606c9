//! Rule self-tests: every rule's `tests:` cases run through the same decoder and detectors as
//! a replay (`audithound rules test`). A fire case must raise the rule's alert (exactly N when it
//! says so); a quiet near-miss must raise none.

use crate::alert::Alert;
use crate::detect::{self, Outputs, Stateful};
use crate::event::{decode_record, DecodeOptions, EventView, Item, Lens};
use crate::revocation::RevocationList;
use crate::rules::{Rule, RuleSet};

/// Outcome of running every rule's tests.
#[derive(Debug, Default)]
pub struct TestReport {
    pub rules: usize,
    pub cases: usize,
    pub failures: Vec<TestFailure>,
}

impl TestReport {
    /// Rules with at least one failure.
    pub fn failed_rules(&self) -> usize {
        let rules: std::collections::BTreeSet<&str> =
            self.failures.iter().map(|f| f.rule.as_str()).collect();
        rules.len()
    }
}

/// One rule test that did not hold: `rule: tests.fire[2] did not fire but should fire`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {problem}")]
pub struct TestFailure {
    pub rule: String,
    pub problem: String,
}

pub fn run(set: &RuleSet) -> TestReport {
    let mut report = TestReport {
        rules: set.rules.len(),
        ..Default::default()
    };
    for (index, rule) in set.rules.iter().enumerate() {
        // Sigma rules come from elsewhere and carry no tests of ours.
        if rule.tags.iter().any(|t| t == "sigma") {
            continue;
        }
        let mut fail = |problem: String| {
            report.failures.push(TestFailure {
                rule: rule.id.clone(),
                problem,
            })
        };
        let tests = match rule.tests.get() {
            Ok(tests) => tests,
            Err(e) => {
                fail(format!("tests.{e}"));
                continue;
            }
        };
        if tests.fire.is_empty() {
            fail("has no `tests.fire` case".into());
        }
        if tests.quiet.is_empty() {
            fail("has no `tests.quiet` near-miss".into());
        }
        for (want, cases) in [(true, &tests.fire), (false, &tests.quiet)] {
            for (i, events) in cases.iter().enumerate() {
                report.cases += 1;
                let kind = if want { "fire" } else { "quiet" };
                let exactly = if want { tests.fire_alerts[i] } else { None };
                match fires(set, index, events) {
                    Ok(got) if exactly.is_some_and(|n| n != got.len()) => fail(format!(
                        "tests.fire[{i}] raised {} alerts but should raise exactly {}",
                        got.len(),
                        exactly.unwrap_or_default()
                    )),
                    Ok(got) if got.is_empty() != want => {
                        if let Some(missing) = got
                            .iter()
                            .find_map(|alert| incomplete_summary(rule, events, alert))
                        {
                            fail(format!("tests.{kind}[{i}]: the summary lacks {missing}: write it inside [...] so that it is left out when the event has none"));
                        }
                    }
                    Ok(got) => fail(format!(
                        "tests.{kind}[{i}] {} but should {}",
                        if got.is_empty() {
                            "did not fire"
                        } else {
                            "fired"
                        },
                        if want { "fire" } else { "stay quiet" }
                    )),
                    Err(e) => fail(format!("tests.{kind}[{i}]: {e}")),
                }
            }
        }
    }
    report
}

/// What a fire case's alert summary would leave blank: the template's fields the event it was
/// built from (the alert's last audit ID) lacks outside optional `[...]` parts. Values a
/// stateful kind supplies are taken as given.
fn incomplete_summary(rule: &Rule, events: &[String], alert: &Alert) -> Option<String> {
    let last = alert.evidence.audit_ids.last()?;
    let json = events
        .iter()
        .rev()
        .find(|e| e.contains(&format!("\"auditID\":\"{last}\"")))?;
    let values: Vec<(&str, String)> = rule
        .kind
        .values()
        .iter()
        .map(|v| (*v, "x".to_string()))
        .collect();
    let lens = rule.tests.get().map(|t| t.lens.clone()).unwrap_or_default();
    let mut missing = None;
    decode_record(
        json.as_bytes(),
        &DecodeOptions::default(),
        "default",
        &mut |item| {
            if let Item::Event(ev, _) = item {
                let view =
                    EventView::new(ev, ev.event_time().unwrap_or(0)).enriched(&lens.enrichment);
                missing = rule.summary.missing(&view, &values);
            }
        },
    );
    missing
}

/// The alerts rule `index` raises on `events`, replayed in order through the real decoder and
/// detectors (stateful rules included), as the workers run them (with follow-ups). The same
/// events observed in full must raise the same alerts: a test that fails otherwise.
pub fn fires(set: &RuleSet, index: usize, events: &[String]) -> Result<Vec<Alert>, String> {
    let followed = replay(set, index, events, true)?;
    let full = replay(set, index, events, false)?;
    let ids = |alerts: &[Alert]| alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    if ids(&followed) != ids(&full) {
        return Err(format!(
            "follow-ups raised {:?}, full observations {:?}",
            ids(&followed),
            ids(&full)
        ));
    }
    Ok(followed)
}

/// `fires` one way: with `follow`, steps that only advance held state are left as follow-ups.
fn replay(
    set: &RuleSet,
    index: usize,
    events: &[String],
    follow: bool,
) -> Result<Vec<Alert>, String> {
    let empty = RevocationList::default();
    let (revocations, lens) = match set.rules[index].tests.get() {
        Ok(tests) => (&tests.revocations, tests.lens.clone()),
        Err(_) => (&empty, Lens::default()),
    };
    let mut state = Stateful::new(set, detect::DEFAULT_MAX_KEYS);
    state.lens = lens.clone();
    let mut out = if follow {
        Outputs::with_follow_ups()
    } else {
        Outputs::default()
    };
    let mut fired = Vec::new();
    for json in events {
        let mut problem = Some("no event decoded".to_string());
        decode_record(
            json.as_bytes(),
            &DecodeOptions::default(),
            "default",
            &mut |item| match item {
                Item::Event(ev, _) => {
                    problem = None;
                    let view =
                        EventView::new(ev, ev.event_time().unwrap_or(0)).enriched(&lens.enrichment);
                    state.saw(view.time);
                    detect::evaluate(
                        set,
                        revocations,
                        detect::Origin::default(),
                        &view,
                        &mut out,
                        &mut |_| true,
                    );
                }
                Item::Rejected(e) => problem = Some(format!("event rejected: {e}")),
                Item::Skipped(why) => problem = Some(format!("event skipped: {why}")),
            },
        );
        if let Some(p) = problem {
            return Err(p);
        }
        for obs in out
            .observations
            .drain(..)
            .filter(|o| o.rule as usize == index)
        {
            state.observe(set, obs, &[], &mut fired);
        }
        for mut follow_up in out.follow_ups.iter_mut().flat_map(|f| f.drain(..)) {
            follow_up.checks = follow_up
                .checks
                .iter()
                .filter(|c| c.rule as usize == index)
                .copied()
                .collect();
            state.follow_up(set, follow_up, &[], &mut fired);
        }
        fired.extend(
            out.alerts
                .drain(..)
                .filter(|a| a.rule.id == set.rules[index].id),
        );
    }
    Ok(fired)
}
