//! Verdicts per actor: many rules are settled by who is asking alone (`user.username:
//! system:anonymous`, `macro: service_account`, the control-plane exceptions, a list of user
//! agents). A stream has few distinct actors, so each thread works out once per actor and rule
//! set which rules cannot match that actor's events (and which match whatever the event), and
//! the index skips testing them.
//!
//! The verdicts are exact, not a heuristic: a rule is ruled out only when its condition is false
//! (or an exception true) whatever the other fields hold. A stream where most actors are new
//! (millions of one-off identities) would pay for working out verdicts it never reuses, so the
//! cache stands aside while it mostly misses.

use super::condition::{Cond, Matcher, Op};
use super::field::EventView;
use super::{Kind, Rule};
use foldhash::HashMap;
use std::cell::RefCell;

/// The fields that make up an actor (and the fields computed from them). `sourceIPs` is left
/// out on purpose: pods and people move between addresses, which would multiply the actors.
const ACTOR_FIELDS: &[&str] = &[
    "user.username",
    "user.groups",
    "serviceAccount.namespace",
    "serviceAccount.name",
    "userAgent",
    "impersonatedUser.username",
];

/// Actors remembered per thread before the cache is emptied and refilled.
const CAPACITY: usize = 8_192;
/// Lookups per measuring period, and the misses in one above which the cache stands aside for
/// `REST` lookups (a miss costs a look at every rule, many times a hit's saving).
const PERIOD: u32 = 4_096;
const MAX_MISSES: u32 = PERIOD / 8;
const REST: u32 = 16 * PERIOD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The rule cannot match this actor's events.
    Never,
    /// The rule matches every event of this actor.
    Always,
    /// It depends on the event: test it.
    Test,
}

/// One bit per rule in each set.
pub struct Verdicts {
    never: Vec<u64>,
    always: Vec<u64>,
    /// The macros (by slot) the actor's fields settle, and which of those hold: given to each
    /// event of the actor, so that rules left to test do not work them out again.
    macros_known: u64,
    macros_true: u64,
}

impl Verdicts {
    fn of_actor(rules: &[Rule], ev: &EventView) -> Verdicts {
        let words = rules.len().div_ceil(64);
        let mut v = Verdicts {
            never: vec![0; words],
            always: vec![0; words],
            macros_known: 0,
            macros_true: 0,
        };
        for (i, rule) in rules.iter().enumerate() {
            let steps = match &rule.kind {
                Kind::Sequence(s) => s.steps.as_slice(),
                _ => &[],
            };
            for c in std::iter::once(&rule.condition)
                .chain(&rule.except)
                .chain(steps)
            {
                v.settle_macros(c, ev);
            }
            let bit = 1u64 << (i % 64);
            match verdict(rule, ev) {
                Verdict::Never => v.never[i / 64] |= bit,
                Verdict::Always => v.always[i / 64] |= bit,
                Verdict::Test => {}
            }
        }
        v
    }

    fn settle_macros(&mut self, c: &Cond, ev: &EventView) {
        match c {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| self.settle_macros(c, ev)),
            Cond::Not(c) => self.settle_macros(c, ev),
            Cond::Match(_) => {}
            Cond::Macro(slot, body) => {
                if let Some(bit) = slot.map(|s| 1u64 << s) {
                    if self.macros_known & bit == 0 {
                        if let Some(answer) = body.decide(ev, &actor_known) {
                            self.macros_known |= bit;
                            if answer {
                                self.macros_true |= bit;
                            }
                        }
                    }
                }
                self.settle_macros(body, ev);
            }
        }
    }

    /// Hands the macros the actor settles to the event.
    pub fn settle_event_macros(&self, ev: &EventView) {
        ev.settle_macros(self.macros_known, self.macros_true);
    }

    #[inline]
    pub fn get(&self, rule: u32) -> Verdict {
        let (word, bit) = (rule as usize / 64, 1u64 << (rule % 64));
        if self.never.get(word).is_some_and(|w| w & bit != 0) {
            Verdict::Never
        } else if self.always.get(word).is_some_and(|w| w & bit != 0) {
            Verdict::Always
        } else {
            Verdict::Test
        }
    }
}

/// What the actor's fields alone say about `rule` on events like `ev`.
pub fn verdict(rule: &Rule, ev: &EventView) -> Verdict {
    let condition = rule.condition.decide(ev, &actor_known);
    let mut excepts = rule.except.iter().map(|c| c.decide(ev, &actor_known));
    if condition == Some(false) || excepts.clone().any(|e| e == Some(true)) {
        Verdict::Never
    } else if condition == Some(true) && excepts.all(|e| e == Some(false)) {
        Verdict::Always
    } else {
        Verdict::Test
    }
}

/// Whether a matcher looks only at the actor's fields.
fn actor_known(m: &Matcher) -> bool {
    ACTOR_FIELDS.contains(&m.path.as_str()) && !matches!(m.op, Op::SameAs(_))
}

struct Cache {
    /// The rule set the verdicts are for (`RuleSet::id`).
    set: u64,
    key: Vec<u8>,
    actors: HashMap<Box<[u8]>, Verdicts>,
    lookups: u32,
    misses: u32,
    /// Lookups left before the cache is tried again, after a period of mostly misses.
    resting: u32,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        set: 0,
        key: Vec::new(),
        actors: HashMap::default(),
        lookups: 0,
        misses: 0,
        resting: 0,
    });
}

/// Calls `f` with the verdicts for the actor of `ev` under the rule set `set` (`rules`), or
/// with None while the cache stands aside.
pub fn with_verdicts<R>(
    set: u64,
    rules: &[Rule],
    ev: &EventView,
    f: impl FnOnce(Option<&Verdicts>) -> R,
) -> R {
    CACHE.with_borrow_mut(|cache| {
        if cache.resting > 0 {
            cache.resting -= 1;
            return f(None);
        }
        if cache.set != set {
            cache.set = set;
            cache.actors.clear();
        }
        actor_key(ev, &mut cache.key);
        cache.lookups += 1;
        if cache.lookups == PERIOD {
            let mostly_misses = cache.misses > MAX_MISSES;
            (cache.lookups, cache.misses) = (0, 0);
            if mostly_misses {
                cache.resting = REST;
                cache.actors.clear();
                return f(None);
            }
        }
        if !cache.actors.contains_key(cache.key.as_slice()) {
            cache.misses += 1;
            if cache.actors.len() >= CAPACITY {
                cache.actors.clear();
            }
            let key = cache.key.as_slice().into();
            cache.actors.insert(key, Verdicts::of_actor(rules, ev));
        }
        f(cache.actors.get(cache.key.as_slice()))
    })
}

/// The actor's fields, each length-prefixed (absent and empty differ, no separator to escape).
fn actor_key(ev: &EventView, key: &mut Vec<u8>) {
    let e = ev.event;
    key.clear();
    let mut push = |field: Option<&str>| match field {
        Some(s) => {
            key.extend_from_slice(&(s.len() as u32).to_le_bytes());
            key.extend_from_slice(s.as_bytes());
        }
        None => key.extend_from_slice(&u32::MAX.to_le_bytes()),
    };
    push(e.user.username.as_deref());
    push(e.user.groups.map(|g| g.get()));
    push(e.user_agent.as_deref());
    push(
        e.impersonated_user
            .as_ref()
            .and_then(|u| u.username.as_deref()),
    );
}

impl Cond {
    /// The answer when only the matchers `known` accepts may look at the event; None when it
    /// depends on others. (Macro answers are not remembered here: the event is seen in part.)
    pub fn decide(&self, ev: &EventView, known: &impl Fn(&Matcher) -> bool) -> Option<bool> {
        match self {
            Cond::All(cs) | Cond::Any(cs) => {
                // `all` is settled by a false child, `any` by a true one.
                let settles = matches!(self, Cond::Any(_));
                let mut open = false;
                for c in cs {
                    match c.decide(ev, known) {
                        Some(b) if b == settles => return Some(settles),
                        Some(_) => {}
                        None => open = true,
                    }
                }
                (!open).then_some(!settles)
            }
            Cond::Not(c) => c.decide(ev, known).map(|b| !b),
            Cond::Macro(_, c) => c.decide(ev, known),
            Cond::Match(m) => known(m).then(|| m.eval(ev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode_record, DecodeOptions, Item};
    use crate::rules::RuleSet;

    /// Native JSON events: the attack samples, a scenario archive and every rule's test cases
    /// (written around each rule's conditions and exceptions).
    fn events(rules: &RuleSet) -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
        let mut texts = Vec::new();
        for entry in std::fs::read_dir(root.join("attacks")).unwrap() {
            texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        let archive = std::fs::File::open(root.join("scenarios/07-rbac-then-workload.log.zst"));
        texts.push(String::from_utf8(zstd::decode_all(archive.unwrap()).unwrap()).unwrap());
        let mut out: Vec<String> = texts
            .iter()
            .flat_map(|t| t.lines().map(str::to_owned))
            .collect();
        for rule in &rules.rules {
            let cases = rule.tests.get().unwrap();
            out.extend(cases.fire.iter().chain(&cases.quiet).flatten().cloned());
        }
        out
    }

    #[test]
    fn verdicts_change_no_answer() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = RuleSet::load(&[root.join("detectors")])
            .unwrap()
            .with_disabled_enabled();
        let events = events(&rules);
        assert!(events.len() > 1000, "{} events", events.len());
        let (mut with, mut skipped) = (Vec::new(), 0);
        // Twice: the first pass works verdicts out, the second reuses them.
        for line in events.iter().chain(&events) {
            decode_record(
                line.as_bytes(),
                &DecodeOptions::default(),
                "c",
                &mut |item| {
                    let Item::Event(ev, _) = item else { return };
                    let view = EventView::new(ev, 0);
                    rules.matching(&view, &mut with);
                    let view = EventView::new(ev, 0);
                    let plain: Vec<u32> = (rules.candidates(&view).iter().copied())
                        .filter(|&i| rules.rules[i as usize].matches(&view))
                        .collect();
                    assert_eq!(with, plain, "{line}");
                    skipped += rules
                        .rules
                        .iter()
                        .filter(|r| verdict(r, &view) == Verdict::Never)
                        .count();
                },
            );
        }
        assert!(
            skipped > events.len(),
            "verdicts rule out rules ({skipped})"
        );
    }

    #[test]
    fn a_stream_of_new_actors_sets_the_cache_aside_for_a_while() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = RuleSet::load(&[root.join("detectors")]).unwrap();
        let mut answers = Vec::new();
        for i in 0..PERIOD + 1 {
            let json = format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"get","user":{{"username":"user-{i}"}},"stageTimestamp":"2025-01-01T00:00:00Z"}}"#
            );
            decode_record(
                json.as_bytes(),
                &DecodeOptions::default(),
                "c",
                &mut |item| {
                    let Item::Event(ev, _) = item else { return };
                    let view = EventView::new(ev, 0);
                    answers.push(with_verdicts(rules.id, &rules.rules, &view, |v| {
                        v.is_some()
                    }));
                },
            );
        }
        assert!(answers[..PERIOD as usize - 1].iter().all(|a| *a));
        assert!(
            !answers[PERIOD as usize - 1],
            "every lookup missed: set aside"
        );
        assert!(!answers[PERIOD as usize], "and stays aside");
    }

    #[test]
    fn partial_answers_follow_three_valued_logic() {
        let lists = Default::default();
        let macros = Default::default();
        let scope = crate::rules::condition::Scope {
            lists: &lists,
            macros: &macros,
        };
        let json = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"get","user":{"username":"alice"},"userAgent":"kubectl/1.30","stageTimestamp":"2025-01-01T00:00:00Z"}"#;
        decode_record(
            json.as_bytes(),
            &DecodeOptions::default(),
            "c",
            &mut |item| {
                let Item::Event(ev, _) = item else { return };
                let view = EventView::new(ev, 0);
                let decide = |yaml: &str| {
                    let y: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
                    Cond::compile(&y, &scope, "t")
                        .unwrap()
                        .decide(&view, &actor_known)
                };
                assert_eq!(decide("user.username: alice"), Some(true));
                assert_eq!(decide("verb: get"), None, "not an actor field");
                assert_eq!(
                    decide("all: [{user.username: bob}, {verb: get}]"),
                    Some(false)
                );
                assert_eq!(decide("all: [{user.username: alice}, {verb: get}]"), None);
                assert_eq!(
                    decide("any: [{user.username: alice}, {verb: list}]"),
                    Some(true)
                );
                assert_eq!(decide("any: [{user.username: bob}, {verb: get}]"), None);
                assert_eq!(decide("not: {userAgent: {prefix: kubectl/}}"), Some(false));
                assert_eq!(
                    decide("impersonatedUser.username: {exists: true}"),
                    Some(false)
                );
            },
        );
    }
}
