//! Verdicts per event shape. Many rules are settled by who is asking and what they asked, without
//! looking further: `user.username: system:anonymous`, `macro: service_account`, the
//! control-plane exceptions, a list of user agents, `responseStatus.code: 401`, `verb: [create,
//! update, patch]`. A stream has few distinct shapes (actor, verb, resource, outcome), so each
//! thread works out once per shape and rule set which candidate rules cannot match such events
//! and which match whatever else they hold; each event then tests only the rest.
//!
//! The verdicts are exact, not a heuristic: a rule is left out only when its condition is false
//! (or an exception true) whatever the other fields hold, by three-valued evaluation over the
//! shape's fields. A shape is worked out on its second sighting, and a stream where most shapes
//! are new (millions of one-off identities), which would pay for verdicts it never reuses, finds
//! the cache standing aside.

use super::condition::{Cond, Matcher, Op};
use super::{Kind, Matched, Rule, RuleSet};
use crate::event::EventView;
use foldhash::{HashMap, HashSet};
use std::cell::RefCell;

/// The fields that make up a shape (and the fields computed from them). Left out on purpose,
/// because they would multiply the shapes: `sourceIPs` (pods and people move between
/// addresses), namespaces and names.
const SHAPE_FIELDS: &[&str] = &[
    "user.username",
    "user.groups",
    "serviceAccount.namespace",
    "serviceAccount.name",
    "userAgent",
    "impersonatedUser.username",
    "verb",
    "objectRef.resource",
    "objectRef.subresource",
    "objectRef.apiGroup",
    "responseStatus.code",
];

/// Shapes remembered per thread before the cache is emptied and refilled (an entry is a 16-byte
/// key and a short list), and as many seen once.
const CAPACITY: usize = 65_536;
/// Lookups per measuring period, after which the cache stands aside for `REST` lookups unless
/// it paid: looking a shape up costs about a third of what a hit saves, and working a shape out
/// about three hits' savings, so it must have served half the lookups and three per shape it
/// worked out. (A busy cluster's stream serves nearly all; one of mostly new identities, few.)
const PERIOD: u32 = 8_192;
const REST: u32 = 32 * PERIOD;

/// Marks a rule in `Shape::rules` that matches every event of the shape.
const ALWAYS: u32 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The rule cannot match events of this shape.
    Never,
    /// The rule matches every event of this shape.
    Always,
    /// It depends on the rest of the event: test it.
    Test,
}

/// What one shape leaves to do.
pub struct Shape {
    /// Candidate rules not ruled out, in rule order; `ALWAYS` set on those that need no test.
    rules: Box<[u32]>,
    /// The macros (by slot) the shape settles, and which of those hold: given to each event,
    /// so that the rules left to test do not work them out again.
    macros_known: u64,
    macros_true: u64,
    /// Sequence rules' steps the shape settles, as `Matched::steps` holds them.
    steps: Box<[(u32, u32, u32)]>,
}

impl Shape {
    fn of(set: &RuleSet, ev: &EventView) -> Shape {
        // Macros first (each once), so that the rules using them read the answer.
        let mut settled = Settled::default();
        for (slot, body) in &set.macros {
            if let Some(answer) = body.decide(ev, &settled) {
                settled.set(*slot, answer);
            }
        }
        let rules = set.candidates(ev).iter().filter_map(|&i| {
            match verdict(&set.rules[i as usize], ev, &settled) {
                Verdict::Never => None,
                Verdict::Always => Some(i | ALWAYS),
                Verdict::Test => Some(i),
            }
        });
        let rules: Box<[u32]> = rules.collect();
        let steps = rules.iter().filter_map(|&r| {
            let i = r & !ALWAYS;
            let Kind::Sequence(spec) = &set.rules[i as usize].kind else {
                return None;
            };
            let (mut known, mut holds) = (0, 0);
            for (b, step) in spec.steps.iter().enumerate().take(32) {
                if let Some(answer) = step.decide(ev, &settled) {
                    known |= 1 << b;
                    holds |= u32::from(answer) << b;
                }
            }
            (known != 0).then_some((i, known, holds))
        });
        Shape {
            steps: steps.collect(),
            rules,
            macros_known: settled.known,
            macros_true: settled.answers,
        }
    }

    /// The rules that match `ev`, an event of this shape, in rule order, and the sequence
    /// steps the shape settles.
    pub fn matching(&self, set: &RuleSet, ev: &EventView, out: &mut Matched) {
        ev.settle_macros(self.macros_known, self.macros_true);
        for &r in self.rules.iter() {
            let i = r & !ALWAYS;
            if r & ALWAYS != 0 || set.rules[i as usize].matches(ev) {
                out.rules.push(i);
            }
        }
        out.steps.extend_from_slice(&self.steps);
    }
}

/// What the shape's fields alone (and the macros they settle) say about `rule` on events like
/// `ev`.
fn verdict(rule: &Rule, ev: &EventView, settled: &Settled) -> Verdict {
    let condition = admitted(rule, ev, settled);
    let mut excepts = rule.except.iter().map(|c| c.decide(ev, settled));
    if condition == Some(false) || excepts.clone().any(|e| e == Some(true)) {
        Verdict::Never
    } else if condition == Some(true) && excepts.all(|e| e == Some(false)) {
        Verdict::Always
    } else {
        Verdict::Test
    }
}

/// `rule.admits()` decided: a sequence observes only events one of its steps may hold on, so
/// a shape none of its steps can hold on rules it out.
fn admitted(rule: &Rule, ev: &EventView, settled: &Settled) -> Option<bool> {
    let condition = rule.condition.decide(ev, settled);
    let Kind::Sequence(spec) = &rule.kind else {
        return condition;
    };
    let steps = spec.steps.iter().map(|s| s.decide(ev, settled));
    let (mut open, mut holds) = (false, false);
    for step in steps {
        match step {
            Some(true) => holds = true,
            Some(false) => {}
            None => open = true,
        }
    }
    match (condition, holds, open) {
        (Some(false), ..) | (_, false, false) => Some(false),
        (Some(true), true, _) => Some(true),
        _ => None,
    }
}

/// Whether a matcher looks only at the shape's fields. Without IP lists or a GeoIP database
/// (the shape says which), `sourceIP.*` has no value on any event: known too.
fn shape_known(m: &Matcher, ev: &EventView) -> bool {
    let path = m.path.as_str();
    let known =
        SHAPE_FIELDS.contains(&path) || (path.starts_with(ENRICHED_PREFIX) && !ev.is_enriched());
    known && !matches!(m.op, Op::SameAs(_))
}

/// The fields the reputation enrichment gives (`sourceIP.lists`, `.asn`, `.asOrg`, `.country`).
const ENRICHED_PREFIX: &str = "sourceIP.";

struct Cache {
    /// The rule set the shapes are for (`RuleSet::id`).
    set: u64,
    /// Scratch for a shape's fields; shapes are stored under their 128-bit hash.
    key: Vec<u8>,
    shapes: HashMap<u128, Shape>,
    /// Shapes seen once. A shape is worked out on its second sighting, so that a one-off shape
    /// costs a set insert rather than a look at every candidate rule.
    seen_once: HashSet<u128>,
    lookups: u32,
    hits: u32,
    built: u32,
    /// Lookups left before the cache is tried again, after a period where it served too few.
    resting: u32,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        set: 0,
        key: Vec::new(),
        shapes: HashMap::default(),
        seen_once: HashSet::default(),
        lookups: 0,
        hits: 0,
        built: 0,
        resting: 0,
    });
}

/// Calls `f` with what the shape of `ev` leaves to do under `set`, or with None when the event
/// is to be tested against every candidate (a shape seen for the first time, or while the cache
/// stands aside).
pub fn with_shape<R>(set: &RuleSet, ev: &EventView, f: impl FnOnce(Option<&Shape>) -> R) -> R {
    CACHE.with_borrow_mut(|cache| {
        if cache.set != set.id {
            cache.set = set.id;
            cache.shapes.clear();
            cache.seen_once.clear();
        }
        if cache.resting > 0 {
            cache.resting -= 1;
            return f(None);
        }
        cache.lookups += 1;
        if cache.lookups == PERIOD {
            // Kept while resting: a stream that settles down finds its shapes again.
            if cache.hits < PERIOD / 2 + 3 * cache.built {
                cache.resting = REST;
            }
            (cache.lookups, cache.hits, cache.built) = (0, 0, 0);
        }
        shape_key(ev, &mut cache.key);
        let key = crate::keyed::hash128(&cache.key);
        let Cache {
            shapes,
            seen_once,
            hits,
            built,
            ..
        } = cache;
        if shapes.contains_key(&key) {
            *hits += 1;
        } else if seen_once.remove(&key) {
            if shapes.len() >= CAPACITY {
                shapes.clear();
            }
            *built += 1;
            shapes.insert(key, Shape::of(set, ev));
        } else {
            if seen_once.len() >= CAPACITY {
                seen_once.clear();
            }
            seen_once.insert(key);
            return f(None);
        }
        f(shapes.get(&key))
    })
}

/// The shape's fields, each string followed by 0xFF and an absent one written as 0xFE: neither
/// byte occurs in UTF-8 text, so no two shapes write the same bytes.
fn shape_key(ev: &EventView, key: &mut Vec<u8>) {
    let e = ev.event;
    key.clear();
    let mut push = |field: Option<&str>| match field {
        Some(s) => {
            key.extend_from_slice(s.as_bytes());
            key.push(0xFF);
        }
        None => key.push(0xFE),
    };
    let object = e.object_ref.as_ref();
    push(e.user.username.as_deref());
    push(e.user.groups.map(|g| g.get()));
    push(e.user_agent.as_deref());
    push(
        e.impersonated_user
            .as_ref()
            .and_then(|u| u.username.as_deref()),
    );
    push(e.verb.as_deref());
    push(object.and_then(|o| o.resource.as_deref()));
    push(object.and_then(|o| o.subresource.as_deref()));
    push(object.and_then(|o| o.api_group.as_deref()));
    key.extend_from_slice(&e.status_code().map_or(i64::MIN, |c| c).to_le_bytes());
    key.push(u8::from(ev.is_enriched()));
}

/// Macro answers a shape settles, by slot.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Settled {
    known: u64,
    answers: u64,
}

impl Settled {
    fn set(&mut self, slot: u8, answer: bool) {
        self.known |= 1 << slot;
        if answer {
            self.answers |= 1 << slot;
        }
    }

    fn get(&self, slot: u8) -> Option<bool> {
        (self.known & 1 << slot != 0).then_some(self.answers & 1 << slot != 0)
    }
}

impl Cond {
    /// The answer when only the shape's fields may be looked at; None when it depends on
    /// others. (Not written to the event's macro answers: the event is seen in part.)
    pub(crate) fn decide(&self, ev: &EventView, settled: &Settled) -> Option<bool> {
        match self {
            Cond::All(cs) | Cond::Any(cs) => {
                // `all` is settled by a false child, `any` by a true one.
                let settles = matches!(self, Cond::Any(_));
                let mut open = false;
                for c in cs {
                    match c.decide(ev, settled) {
                        Some(b) if b == settles => return Some(settles),
                        Some(_) => {}
                        None => open = true,
                    }
                }
                (!open).then_some(!settles)
            }
            Cond::Not(c) => c.decide(ev, settled).map(|b| !b),
            Cond::Macro(slot, c) => slot
                .and_then(|s| settled.get(s))
                .or_else(|| c.decide(ev, settled)),
            Cond::Match(m) => shape_known(m, ev).then(|| m.eval(ev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::field::on_event;
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
        let (mut with, mut skipped, mut steps_settled) = (Matched::default(), 0, 0);
        // Three times: events are tested in full, then their shapes worked out, then reused.
        for line in events.iter().chain(&events).chain(&events) {
            on_event(line, |view| {
                rules.matching(view, &mut with);
                let view = EventView::new(view.event, 0);
                let plain: Vec<u32> = (rules.candidates(&view).iter().copied())
                    .filter(|&i| rules.rules[i as usize].matches(&view))
                    .collect();
                // A shape may also leave out sequences none of whose steps hold: they observe
                // nothing on the event. Every other rule is the same.
                let observes = |i: &u32| match &rules.rules[*i as usize].kind {
                    Kind::Sequence(spec) => spec.steps.iter().any(|s| s.eval(&view)),
                    _ => true,
                };
                let effective =
                    |set: &[u32]| set.iter().copied().filter(observes).collect::<Vec<_>>();
                assert!(with.rules.iter().all(|i| plain.contains(i)), "{line}");
                assert_eq!(effective(&with.rules), effective(&plain), "{line}");
                // Settled sequence steps answer as the steps' conditions do.
                for &(rule, settled, holds) in &with.steps {
                    let Kind::Sequence(spec) = &rules.rules[rule as usize].kind else {
                        panic!("steps settled for a rule that is no sequence");
                    };
                    for (b, step) in spec.steps.iter().enumerate() {
                        if settled & 1 << b != 0 {
                            assert_eq!(holds & 1 << b != 0, step.eval(&view), "{line}");
                            steps_settled += 1;
                        }
                    }
                }
                skipped += (rules.rules.iter())
                    .filter(|r| verdict(r, &view, &Settled::default()) == Verdict::Never)
                    .count();
            });
        }
        assert!(
            steps_settled > events.len(),
            "steps settled ({steps_settled})"
        );
        assert!(
            skipped > events.len(),
            "verdicts rule out rules ({skipped})"
        );
    }

    #[test]
    fn without_ip_lists_reputation_rules_are_ruled_out_by_the_shape_and_with_them_tested() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = RuleSet::load(&[root.join("detectors")]).unwrap();
        let tor = rules
            .rules
            .iter()
            .position(|r| r.id == "k8s.reputation.tor_exit")
            .unwrap() as u32;
        let lists = [("tor".to_owned(), vec!["203.0.113.5/32".to_owned()])].into();
        let enrichment =
            crate::reputation::Enrichment::inline(&lists, &Default::default()).unwrap();
        let json = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"list","user":{"username":"zed"},"sourceIPs":["203.0.113.5"],"objectRef":{"resource":"secrets"},"responseStatus":{"code":200},"stageTimestamp":"2025-01-01T00:00:00Z"}"#;
        // Three sightings each: the last two through the shape worked out on the second.
        for (enriched, fires) in [(false, false), (true, true), (false, false)] {
            let mut served = 0;
            for _ in 0..3 {
                on_event(json, |view| {
                    let view = EventView::new(view.event, 0);
                    let view = if enriched {
                        view.enriched(&enrichment)
                    } else {
                        view
                    };
                    let mut matched = Matched::default();
                    rules.matching(&view, &mut matched);
                    assert_eq!(matched.rules.contains(&tor), fires, "enriched: {enriched}");
                    let shape = with_shape(&rules, &view, |s| s.map(|s| s.rules.clone()));
                    if let Some(candidates) = shape {
                        let listed = candidates.iter().any(|r| r & !ALWAYS == tor);
                        assert_eq!(listed, enriched, "tested only with lists loaded");
                        served += 1;
                    }
                });
            }
            assert!(served >= 2, "the shape served the later sightings");
        }
    }

    #[test]
    fn shapes_are_worked_out_on_their_second_sighting_and_set_aside_when_most_are_new() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = RuleSet::load(&[root.join("detectors")]).unwrap();
        let served = |username: &str| {
            let json = format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"get","user":{{"username":"{username}"}},"stageTimestamp":"2025-01-01T00:00:00Z"}}"#
            );
            let mut served = None;
            on_event(&json, |view| {
                served = Some(with_shape(&rules, view, |s| s.is_some()))
            });
            served.unwrap()
        };
        assert!(!served("alice"), "first sighting: tested in full");
        assert!(served("alice"), "second: worked out");
        assert!(served("alice"), "third: remembered");
        for i in 0..PERIOD - 3 {
            assert!(
                !served(&format!("user-{i}")),
                "one-off shapes are not worked out"
            );
        }
        assert!(
            !served("alice"),
            "a period of one-off shapes sets the cache aside"
        );
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
        let mut decided = false;
        on_event(json, |view| {
            decided = true;
            let decide = |yaml: &str| {
                let y: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
                Cond::compile(&y, &scope, "t")
                    .unwrap()
                    .decide(view, &Settled::default())
            };
            assert_eq!(decide("user.username: alice"), Some(true));
            assert_eq!(decide("verb: [get, list]"), Some(true));
            assert_eq!(decide("objectRef.namespace: x"), None, "not a shape field");
            let both = |how: &str, user: &str| {
                decide(&format!(
                    "{how}: [{{user.username: {user}}}, {{objectRef.namespace: x}}]"
                ))
            };
            assert_eq!(both("all", "bob"), Some(false));
            assert_eq!(both("all", "alice"), None);
            assert_eq!(both("any", "alice"), Some(true));
            assert_eq!(both("any", "bob"), None);
            assert_eq!(decide("not: {userAgent: {prefix: kubectl/}}"), Some(false));
            assert_eq!(
                decide("impersonatedUser.username: {exists: true}"),
                Some(false)
            );
        });
        assert!(decided, "the event decodes");
    }
}
