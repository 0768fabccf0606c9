//! The declarative rule library: loading `detectors/*.yaml`, validating and compiling rules, and
//! an index that tests each event only against the rules that can match it.
//!
//! A rule file holds `lists`, `macros` and `rules`; lists and macros are shared by every file
//! loaded together. See `detectors/README.md` for the language.

pub mod condition;
pub mod derived;
pub mod field;
pub mod kind;
pub mod library;
mod locate;
mod memo;
pub mod policy;
pub mod reload;
pub mod shape;
pub mod sigma;
pub mod template;
pub mod testing;

use crate::event::EventView;
use condition::{Cond, Scope};
use foldhash::{HashMap, HashMapExt};
use serde::{Deserialize, Serialize};
use serde_yaml::Value as Y;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use template::Template;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn parse(s: &str) -> Option<Severity> {
        Self::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

pub use kind::Kind;

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub mitre: Vec<String>,
    pub tags: Vec<String>,
    pub kind: Kind,
    /// The filter every kind applies first.
    pub condition: Cond,
    /// At most one alert per actor and cluster per this many microseconds; the next alert
    /// counts what was suppressed.
    pub suppress: Option<i64>,
    /// The rule stays quiet when any exception holds.
    pub except: Vec<Cond>,
    /// Exceptions are cheaper to test than the condition.
    except_first: bool,
    pub summary: Template,
    pub remediation: String,
    pub tests: testing::Tests,
    /// File the rule was loaded from.
    pub source: PathBuf,
    /// `enabled: false` rules are checked when loaded, and run only if an override enables them.
    pub enabled: bool,
}

impl Rule {
    /// Which of the three mission detectors the rule belongs to, from its tags: `revoked`,
    /// `escalation` or `secrets` (else `other`). Incidents that span families are worse.
    pub fn family(&self) -> &'static str {
        for (tag, family) in [
            ("revoked", "revoked"),
            ("escalation", "escalation"),
            ("secret-access", "secrets"),
        ] {
            if self.tags.iter().any(|t| t == tag) {
                return family;
            }
        }
        "other"
    }

    /// The events the rule looks at: its condition, and for a sequence also any of its steps
    /// (the steps themselves are tested once, by the detector, not here as well).
    pub fn admits(&self) -> Cow<'_, Cond> {
        match &self.kind {
            Kind::Sequence(spec) => Cow::Owned(Cond::All(vec![
                self.condition.clone(),
                Cond::Any(spec.steps.clone()),
            ])),
            _ => Cow::Borrowed(&self.condition),
        }
    }

    /// Every condition the rule tests: its condition, exceptions and sequence steps.
    pub fn conditions(&self) -> impl Iterator<Item = &Cond> {
        let steps = match &self.kind {
            Kind::Sequence(spec) => spec.steps.as_slice(),
            _ => &[],
        };
        std::iter::once(&self.condition)
            .chain(&self.except)
            .chain(steps)
    }

    /// Why this rule does or does not match the event, matcher by matcher.
    pub fn explain(&self, ev: &EventView) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "rule {} ({}, kind {})\ncondition:\n",
            self.id,
            self.severity.name(),
            self.kind.name()
        );
        let hit = self.admits().explain(ev, 1, &mut out);
        let mut excepted = false;
        for (i, e) in self.except.iter().enumerate() {
            let _ = writeln!(out, "except[{i}]:");
            excepted |= e.explain(ev, 1, &mut out);
        }
        let verdict = match (hit, excepted, &self.kind) {
            (false, _, _) => "does not match: the condition is false".to_string(),
            (true, true, _) => "does not match: an exception holds".to_string(),
            (true, false, Kind::Match) => "MATCHES: this event raises the alert".to_string(),
            (true, false, k) => format!(
                "passes the filter: the event counts towards this {} rule's state",
                k.name()
            ),
        };
        let _ = writeln!(out, "verdict: {verdict}");
        out
    }

    pub fn matches(&self, ev: &EventView) -> bool {
        let excepted = || self.except.iter().any(|c| c.eval(ev));
        // Test whichever side is cheaper first; the answer is the same.
        if self.except_first {
            if excepted() {
                return false;
            }
            return self.condition.eval(ev);
        }
        self.condition.eval(ev) && !excepted()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    macros: BTreeMap<String, Y>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    overrides: Vec<RawOverride>,
    /// Each rule's index in the file when some could not be read (`lenient`), else empty.
    #[serde(skip)]
    indices: Vec<usize>,
}

/// Changes to a rule defined elsewhere, so teams tune the shipped library without editing it:
/// `{rule: ID, enabled: false}`, `{rule: ID, except: [...]}` (appended), `{rule: ID, severity: low}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    rule: String,
    enabled: Option<bool>,
    #[serde(default)]
    except: Vec<Y>,
    severity: Option<Severity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    severity: Severity,
    #[serde(default)]
    mitre: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "match_kind")]
    kind: String,
    threshold: Option<kind::RawThreshold>,
    new_terms: Option<kind::RawNewTerms>,
    sequence: Option<kind::RawSequence>,
    builtin: Option<kind::RawBuiltin>,
    suppress: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    condition: Option<Y>,
    #[serde(default)]
    except: Vec<Y>,
    summary: String,
    #[serde(default)]
    remediation: String,
    #[serde(default)]
    tests: testing::RawTests,
}

fn yes() -> bool {
    true
}

fn match_kind() -> String {
    "match".into()
}

/// What `RuleSet::matching` found on one event.
#[derive(Debug, Default)]
pub struct Matched {
    /// Indices of the rules that fire, in rule order.
    pub rules: Vec<u32>,
    /// Sequence rules whose steps the event's shape settled: (rule, steps settled, steps that
    /// hold), a bit per step. Steps not settled are tested on the event.
    pub steps: Vec<(u32, u32, u32)>,
}

impl Matched {
    /// Whether step `step` of sequence rule `rule` holds on `ev`.
    pub fn step_holds(&self, rule: u32, step: usize, condition: &Cond, ev: &EventView) -> bool {
        let bit = 1u32.checked_shl(step as u32).unwrap_or(0);
        match self.steps.iter().find(|s| s.0 == rule) {
            Some(&(_, settled, holds)) if settled & bit != 0 => holds & bit != 0,
            _ => condition.eval(ev),
        }
    }
}

/// All rules of a run, indexed by `objectRef.resource`.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Loaded and checked, but switched off (`enabled: false`): kept for listings and reports.
    pub disabled: Vec<Rule>,
    index: Index,
    /// The body of each macro the rules use that has an answer slot (see `Cond::Macro`).
    macros: Vec<(u8, Cond)>,
    /// Tells this set's (and this index's) shape verdicts apart from another's.
    id: u64,
}

/// Which rules can match an event with a given `objectRef.resource` and `verb`: every pinned
/// value gets a slot (0 is "anything else"), and each (resource, verb) slot pair holds its
/// candidate list, in rule order, computed once at load.
#[derive(Debug, Default)]
struct Index {
    resources: HashMap<String, usize>,
    verbs: HashMap<String, usize>,
    lists: Vec<Vec<u32>>,
}

impl Index {
    fn candidates(&self, resource: &str, verb: &str) -> &[u32] {
        let r = self.resources.get(resource).copied().unwrap_or(0);
        let v = self.verbs.get(verb).copied().unwrap_or(0);
        self.lists
            .get(r * (self.verbs.len() + 1) + v)
            .map_or(&[], Vec::as_slice)
    }
}

/// Problems found while loading rules; each line names the file and the place in it.
#[derive(Debug)]
pub struct LoadErrors(pub Vec<String>);

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} {} in the rules:",
            if n == 1 { "problem" } else { "problems" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

impl RuleSet {
    /// Loads every `*.yaml`/`*.yml` file under the given directories (or files), in name order;
    /// `builtin` names the library built into the binary. Disabled rules are left out. All
    /// problems are collected, not just the first.
    pub fn load(paths: &[PathBuf]) -> Result<RuleSet, LoadErrors> {
        Self::load_with(paths, Vec::new())
    }

    /// `load`, then rule files given as (name, text) after them: they see the lists and
    /// macros of the files before (a hunt's condition, written on the command line).
    pub fn load_with(
        paths: &[PathBuf],
        extra: Vec<(PathBuf, String)>,
    ) -> Result<RuleSet, LoadErrors> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for p in paths {
            if p.as_os_str() == library::BUILTIN {
                sources.extend(library::sources());
                continue;
            }
            let mut files: Vec<PathBuf> = Vec::new();
            if p.is_dir() {
                files = walkdir::WalkDir::new(p)
                    .sort_by_file_name()
                    .into_iter()
                    .filter_map(Result::ok)
                    .map(|e| e.into_path())
                    .filter(|p| {
                        p.is_file()
                            && matches!(
                                p.extension().and_then(|e| e.to_str()),
                                Some("yaml" | "yml")
                            )
                    })
                    .collect();
                if files.is_empty() {
                    errors.push(format!("{}: no *.yaml rule files here", p.display()));
                }
            } else if p.is_file() {
                files.push(p.clone());
            } else {
                errors.push(format!(
                    "{}: no such rules file or directory (`{}` is the built-in library)",
                    p.display(),
                    library::BUILTIN
                ));
            }
            for path in files {
                match std::fs::read_to_string(&path) {
                    Ok(text) => sources.push((path, Cow::Owned(text))),
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                }
            }
        }
        sources.extend(
            extra
                .into_iter()
                .map(|(name, text)| (name, Cow::Owned(text))),
        );
        Self::load_sources(sources, errors)
    }

    /// The set with only the rules `keep` accepts (their lists and macros stay resolved).
    pub fn retain(mut self, keep: impl Fn(&Rule) -> bool) -> RuleSet {
        self.rules.retain(|r| keep(r));
        self.disabled.clear();
        self.build_index();
        self
    }

    /// Loads rule files given as (name, text), in order, after `errors` met finding them.
    fn load_sources(
        sources: Vec<(PathBuf, Cow<'static, str>)>,
        mut errors: Vec<String>,
    ) -> Result<RuleSet, LoadErrors> {
        let mut parsed = Vec::new();
        let mut lists = BTreeMap::new();
        let mut macros = BTreeMap::new();
        for (path, text) in &sources {
            match read_rule_file(path, text) {
                Ok((f, unread)) => {
                    errors.extend(unread);
                    for (name, items) in &f.lists {
                        // A list defined again extends the earlier one (user overrides append).
                        lists
                            .entry(name.clone())
                            .or_insert_with(Vec::new)
                            .extend(items.iter().cloned());
                    }
                    for (name, body) in &f.macros {
                        if macros.insert(name.clone(), body.clone()).is_some() {
                            errors.push(format!(
                                "{}: macro {name:?} is defined twice",
                                path.display()
                            ));
                        }
                    }
                    parsed.push((path, text, f));
                }
                Err(e) => errors.push(e),
            }
        }
        let scope = Scope {
            lists: &lists,
            macros: &macros,
        };
        let mut set = RuleSet::default();
        let mut seen = HashMap::new();
        let mut overrides = Vec::new();
        for (path, text, file) in parsed {
            overrides.extend(file.overrides.into_iter().map(|o| (path.clone(), o)));
            let indices = file.indices;
            for (n, raw) in file.rules.into_iter().enumerate() {
                let i = indices.get(n).copied().unwrap_or(n);
                let at = format!("{}: rules[{i}] (id {})", path.display(), raw.id);
                if let Some(prev) = seen.insert(raw.id.clone(), at.clone()) {
                    errors.push(format!("{at}: duplicate rule id, first defined at {prev}"));
                    continue;
                }
                match compile_rule(raw, path, &scope, &at) {
                    Ok(rule) => set.rules.push(rule),
                    Err(e) => {
                        errors.extend(e.into_iter().map(|e| with_position(e, &at, path, text, i)))
                    }
                }
            }
        }
        for (path, o) in overrides {
            let at = format!("{}: override of {}", path.display(), o.rule);
            let Some(rule) = set.rules.iter_mut().find(|r| r.id == o.rule) else {
                if !seen.contains_key(&o.rule) {
                    errors.push(format!("{at}: no rule with this id is loaded"));
                }
                continue;
            };
            if let Some(enabled) = o.enabled {
                rule.enabled = enabled;
            }
            if let Some(severity) = o.severity {
                rule.severity = severity;
            }
            for (i, e) in o.except.iter().enumerate() {
                match Cond::compile(e, &scope, &format!("{at}.except[{i}]")) {
                    Ok(c) => rule.except.push(c),
                    Err(e) => errors.push(e),
                }
            }
            rule.except_first =
                rule.except.iter().map(Cond::cost).sum::<u32>() < rule.condition.cost();
        }
        let (on, off) = std::mem::take(&mut set.rules)
            .into_iter()
            .partition(|r| r.enabled);
        set.rules = on;
        set.disabled = off;
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        set.build_index();
        Ok(set)
    }

    fn build_index(&mut self) {
        let pins: Vec<_> = self
            .rules
            .iter()
            .map(|r| {
                let admits = r.admits();
                (
                    admits.required_values("objectRef.resource"),
                    admits.required_values("verb"),
                )
            })
            .collect();
        let slots = |values: Vec<&String>| -> HashMap<String, usize> {
            let mut m = HashMap::new();
            for v in values {
                let next = m.len() + 1;
                m.entry(v.clone()).or_insert(next);
            }
            m
        };
        let resources = slots(pins.iter().filter_map(|p| p.0.as_ref()).flatten().collect());
        let verbs = slots(pins.iter().filter_map(|p| p.1.as_ref()).flatten().collect());
        let name_of = |m: &HashMap<String, usize>, slot: usize| {
            m.iter().find(|(_, s)| **s == slot).map(|(k, _)| k.clone())
        };
        let width = verbs.len() + 1;
        let mut lists = vec![Vec::new(); (resources.len() + 1) * width];
        for r in 0..=resources.len() {
            let resource = name_of(&resources, r);
            for v in 0..=verbs.len() {
                let verb = name_of(&verbs, v);
                let admits =
                    |pinned: &Option<Vec<String>>, value: &Option<String>| match (pinned, value) {
                        (None, _) => true,
                        (Some(p), Some(x)) => p.contains(x),
                        (Some(_), None) => false,
                    };
                lists[r * width + v] = (0..self.rules.len() as u32)
                    .filter(|&i| {
                        admits(&pins[i as usize].0, &resource) && admits(&pins[i as usize].1, &verb)
                    })
                    .collect();
            }
        }
        self.index = Index {
            resources,
            verbs,
            lists,
        };
        self.macros = used_macros(&self.rules);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Indices of the rules the index leaves to test on this event.
    pub fn candidates(&self, ev: &EventView) -> &[u32] {
        let verb = ev.event.verb.as_deref().unwrap_or("");
        self.index.candidates(ev.event.resource(), verb)
    }

    /// The rules that fire on this event, in rule order, and what its shape settled of their
    /// sequence steps.
    pub fn matching(&self, ev: &EventView, out: &mut Matched) {
        out.rules.clear();
        out.steps.clear();
        shape::with_shape(self, ev, |shape| match shape {
            Some(shape) => shape.matching(self, ev, out),
            None => {
                for &i in self.candidates(ev) {
                    if self.rules[i as usize].matches(ev) {
                        out.rules.push(i);
                    }
                }
            }
        });
    }

    /// The same set with its `enabled: false` rules switched on, so that `rules test` runs their
    /// tests too.
    pub fn with_disabled_enabled(mut self) -> RuleSet {
        self.rules.append(&mut self.disabled);
        self.build_index();
        self
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// The body of each macro with an answer slot the rules use, inner macros before the ones that
/// use them.
fn used_macros(rules: &[Rule]) -> Vec<(u8, Cond)> {
    let mut macros: Vec<(u8, Cond)> = Vec::new();
    for c in rules.iter().flat_map(Rule::conditions) {
        c.for_each_macro(&mut |slot, body| {
            if !macros.iter().any(|(s, _)| *s == slot) {
                macros.push((slot, body.clone()));
            }
        });
    }
    macros
}

/// `FILE: rules[i] (id x).condition.all[1].verb: problem` → `FILE:LINE:COL: rules[i] (id x)…`,
/// the position of the deepest node of that path found in the file.
fn with_position(error: String, at: &str, path: &Path, text: &str, index: usize) -> String {
    let Some(rest) = error.strip_prefix(at) else {
        return error;
    };
    let node = rest.split(": ").next().unwrap_or("");
    match locate::locate(text, &format!("rules[{index}]{node}")) {
        Some((line, col)) => {
            let head = at
                .strip_prefix(&format!("{}: ", path.display()))
                .unwrap_or(at);
            format!("{}:{line}:{col}: {head}{rest}", path.display())
        }
        None => error,
    }
}

fn read_rule_file(path: &Path, text: &str) -> Result<(RuleFile, Vec<String>), String> {
    let located = |e: serde_yaml::Error| match e.location() {
        Some(l) => format!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
        None => format!("{}: {e}", path.display()),
    };
    // YAML parsing is most of what loading costs: only a file that may be Sigma (it names
    // both keys somewhere) is parsed to a tree first to find out.
    let doc: Y = if text.contains("logsource") && text.contains("detection") {
        serde_yaml::from_str(text).map_err(located)?
    } else {
        Y::Null
    };
    if sigma::is_sigma(&doc) {
        return match sigma::translate(&doc)
            .map_err(|e| format!("{} (Sigma): {e}", path.display()))?
        {
            sigma::Translation::Rule(ours) => serde_yaml::from_value(ours)
                .map(|f| (f, Vec::new()))
                .map_err(|e| format!("{} (Sigma): {e}", path.display())),
            sigma::Translation::Skip(why) => {
                tracing::warn!(file = %path.display(), "Sigma rule skipped: {why}");
                Ok((RuleFile::default(), Vec::new()))
            }
        };
    }
    match serde_yaml::from_str(text) {
        Ok(file) => Ok((file, Vec::new())),
        Err(e) => lenient(path, text).ok_or_else(|| located(e)),
    }
}

/// A file whose rules do not all read: one bad field must not hide the rest. Each rule is read
/// on its own; those that read are kept (and compiled, so their own problems show too), the
/// others reported with the key at fault. None when the file's shape itself is wrong (then
/// the first error stands).
fn lenient(path: &Path, text: &str) -> Option<(RuleFile, Vec<String>)> {
    let Y::Mapping(mut doc) = serde_yaml::from_str::<Y>(text).ok()? else {
        return None;
    };
    let rules = match doc.remove("rules") {
        Some(Y::Sequence(rules)) => rules,
        None => Vec::new(),
        Some(_) => return None,
    };
    let mut file: RuleFile = serde_yaml::from_value(Y::Mapping(doc)).ok()?;
    let mut errors = Vec::new();
    for (i, raw) in rules.into_iter().enumerate() {
        match serde_yaml::from_value::<RawRule>(raw.clone()) {
            Ok(rule) => {
                file.rules.push(rule);
                file.indices.push(i);
            }
            Err(e) => {
                let e = e.to_string();
                let id = raw.get("id").and_then(Y::as_str).unwrap_or("?");
                let at = format!("{}: rules[{i}] (id {id})", path.display());
                let node = culprit::<RawRule>(&raw, &e).map_or(String::new(), |k| format!(".{k}"));
                errors.push(with_position(
                    format!("{at}{node}: {e}"),
                    &at,
                    path,
                    text,
                    i,
                ));
            }
        }
    }
    Some((file, errors))
}

/// The key of `value` (a mapping) at fault for `error`: the one whose absence makes it go away.
/// (serde stops at the first bad value, before it looks for missing keys.)
fn culprit<T: serde::de::DeserializeOwned>(value: &Y, error: &str) -> Option<String> {
    let Y::Mapping(map) = value else { return None };
    map.keys().find_map(|key| {
        let mut without = map.clone();
        without.remove(key);
        let gone = serde_yaml::from_value::<T>(Y::Mapping(without))
            .map_or_else(|e| e.to_string() != error, |_| true);
        gone.then(|| key.as_str().map(str::to_owned)).flatten()
    })
}

/// The value, or None with the error recorded: lets a rule report all its problems at once.
fn keep<T>(errors: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

fn compile_rule(raw: RawRule, path: &Path, scope: &Scope, at: &str) -> Result<Rule, Vec<String>> {
    let mut errors = Vec::new();
    let id_ok = !raw.id.is_empty()
        && raw
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    keep(
        &mut errors,
        if id_ok {
            Ok(())
        } else {
            Err(format!(
                "{at}: id must be non-empty and use only letters, digits, '.', '_' and '-'"
            ))
        },
    );
    let kind = keep(
        &mut errors,
        kind::compile(
            &raw.kind,
            raw.threshold,
            raw.new_terms,
            raw.sequence,
            raw.builtin,
            scope,
            at,
        ),
    );
    let filter = match (&raw.condition, &kind) {
        (Some(c), _) => match Cond::compile_each(c, scope, &format!("{at}.condition")) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.extend(e);
                None
            }
        },
        (None, Some(Kind::Sequence(_) | Kind::Revoked(_))) => Some(Cond::All(Vec::new())),
        (None, _) => keep(&mut errors, Err(format!("{at}: missing `condition`"))),
    };
    let except: Vec<Option<Cond>> = raw
        .except
        .iter()
        .enumerate()
        .map(|(i, e)| {
            keep(
                &mut errors,
                Cond::compile(e, scope, &format!("{at}.except[{i}]")),
            )
        })
        .collect();
    let values = kind.as_ref().map_or(&[][..], Kind::values);
    let summary = keep(
        &mut errors,
        Template::parse(&raw.summary, values).map_err(|e| format!("{at}.summary: {e}")),
    );
    let suppress = match &raw.suppress {
        Some(d) => keep(
            &mut errors,
            crate::event::time::parse_duration(d).map_err(|e| format!("{at}.suppress: {e}")),
        ),
        None => Some(0),
    };
    let (Some(kind), Some(filter), Some(summary), Some(suppress)) =
        (kind, filter, summary, suppress)
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let except: Vec<Cond> = except.into_iter().flatten().collect();
    let except_first = except.iter().map(Cond::cost).sum::<u32>() < filter.cost();
    Ok(Rule {
        id: raw.id,
        enabled: raw.enabled,
        title: raw.title,
        description: raw.description,
        severity: raw.severity,
        mitre: raw.mitre,
        tags: raw.tags,
        kind,
        condition: filter,
        suppress: (suppress > 0).then_some(suppress),
        except,
        except_first,
        summary,
        remediation: raw.remediation,
        tests: testing::Tests::new(raw.tests),
        source: path.to_path_buf(),
    })
}
