//! Conditions: `all` / `any` / `not` trees over field matchers, compiled from YAML.
//!
//! ```yaml
//! all:
//!   - verb: [create, update, patch]            # a list means "in"
//!   - objectRef.resource: clusterrolebindings  # a scalar means "equals"
//!   - requestObject.roleRef.name: {in: $admin_roles}
//!   - userAgent: {prefix: kubectl/, icase: true}
//!   - not: {user.username: {glob: "system:node:*"}}
//!   - macro: rbac_write
//! ```
//! A field matcher holds when any value of the field satisfies it.

use super::field::{Field, Val};
use super::memo;
use crate::event::EventView;
use foldhash::HashSet;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use regex::Regex;
use serde_yaml::Value as Y;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Match(Matcher),
    /// A named macro's body. Several rules test the same macro on an event (`control_plane`,
    /// `service_account`…): its answer is kept on the event for the rest (slot < 64).
    Macro(Option<u8>, Box<Cond>),
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub path: String,
    /// The matcher as written, for `rules explain`.
    pub spec: String,
    pub field: Field,
    pub op: Op,
    /// Set when answers are remembered per value (a costly test on a field whose values repeat).
    pub memo: Option<u32>,
    /// `key: true` / `key: false` deep in a JSON object: the key's searcher and the literal, so
    /// that an object where no occurrence of the key is followed by it is not parsed at all
    /// (`privileged: false` is in most pod specs; `true` in almost none).
    pub literal: Option<Box<(memchr::memmem::Finder<'static>, &'static str)>>,
}

#[derive(Debug, Clone)]
pub enum Op {
    Eq(Scalar),
    In(StrSet),
    InIcase(StrSet),
    /// Globs that are only a literal with a leading and/or trailing `*` are tested as plain
    /// string checks; the rest go through the glob set.
    Glob(Vec<SimpleGlob>, Option<GlobSet>),
    Prefix(Vec<String>, bool),
    Suffix(Vec<String>, bool),
    /// One automaton for all the needles; ASCII case folded by it when `icase`, other text
    /// lowercased first (the bool) only when a needle needs Unicode folding.
    Contains(aho_corasick::AhoCorasick, bool),
    /// The regex, and the literal every match must start with (tested first: far cheaper).
    Regex(Regex, Option<String>),
    Cidr(Vec<IpNet>),
    Cmp(CmpOp, f64),
    Exists(bool),
    /// Some value equals some value of another field of the same event
    /// (`requestObject.subjects[*].name: {same_as: user.username}`).
    SameAs(Field),
}

/// A set of strings: a short list is scanned (faster than hashing a handful), a long one hashed.
#[derive(Debug, Clone)]
pub enum StrSet {
    Few(Vec<String>),
    Many(HashSet<String>),
}

impl FromIterator<String> for StrSet {
    fn from_iter<I: IntoIterator<Item = String>>(items: I) -> Self {
        let mut v: Vec<String> = items.into_iter().collect();
        v.sort();
        v.dedup();
        if v.len() <= 16 {
            StrSet::Few(v)
        } else {
            StrSet::Many(v.into_iter().collect())
        }
    }
}

impl StrSet {
    pub fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Few(v) => v.iter().any(|x| x == s),
            StrSet::Many(h) => h.contains(s),
        }
    }

    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StrSet::Few(v) => v.clone(),
            StrSet::Many(h) => h.iter().cloned().collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String, bool),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Named lists and macros visible while compiling.
pub struct Scope<'s> {
    pub lists: &'s BTreeMap<String, Vec<String>>,
    pub macros: &'s BTreeMap<String, Y>,
}

const OPS: &[&str] = &[
    "equals", "in", "glob", "prefix", "suffix", "contains", "regex", "cidr", "gt", "gte", "lt",
    "lte", "exists", "same_as",
];

impl Cond {
    /// A rough price of evaluating this condition: top-level fields are cheap, lazily parsed maps
    /// and JSON paths dear, regexes dearer than literals. `All`/`Any` test cheap children first.
    pub fn cost(&self) -> u32 {
        match self {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().map(Cond::cost).sum(),
            Cond::Not(c) | Cond::Macro(_, c) => c.cost(),
            Cond::Match(m) => {
                let field = match m.field {
                    Field::Str(_) | Field::StatusCode => 1,
                    Field::List(_) => 2,
                    // Cheap to rule out: a substring check before any parsing.
                    Field::Extra(..) | Field::Annotation(..) => 4,
                    Field::Json(..) => 8,
                    // Decoding (URL query, base64, DER) is dearer still.
                    Field::Derived(_) => 12,
                };
                let op = match m.op {
                    Op::SameAs(_) => 4,
                    Op::Glob(..) => 1,
                    Op::Cidr(_) => 1,
                    Op::Regex(..) => 2,
                    _ => 0,
                };
                field + op
            }
        }
    }

    /// Reorders `all`/`any` children cheapest first; the result is the same, only faster.
    fn order_by_cost(mut self) -> Cond {
        if let Cond::All(cs) | Cond::Any(cs) = &mut self {
            let taken = std::mem::take(cs);
            let mut sorted: Vec<Cond> = taken.into_iter().map(Cond::order_by_cost).collect();
            sorted.sort_by_key(Cond::cost);
            *cs = sorted;
        }
        match self {
            Cond::Not(c) => Cond::Not(Box::new(c.order_by_cost())),
            Cond::Macro(slot, c) => Cond::Macro(slot, Box::new(c.order_by_cost())),
            other => other,
        }
    }

    /// Evaluates every branch (no short cut) and writes why, one line per node.
    pub fn explain(&self, ev: &EventView, depth: usize, out: &mut String) -> bool {
        use std::fmt::Write as _;
        let pad = "  ".repeat(depth);
        let mark = |b: bool| if b { "✓" } else { "✗" };
        match self {
            Cond::All(cs) | Cond::Any(cs) => {
                let all = matches!(self, Cond::All(_));
                let mut lines = String::new();
                let results: Vec<bool> = cs
                    .iter()
                    .map(|c| c.explain(ev, depth + 1, &mut lines))
                    .collect();
                let r = if all {
                    results.iter().all(|b| *b)
                } else {
                    results.iter().any(|b| *b)
                };
                let _ = writeln!(
                    out,
                    "{pad}{} {}",
                    mark(r),
                    if all { "all of" } else { "any of" }
                );
                out.push_str(&lines);
                r
            }
            Cond::Not(c) => {
                let mut lines = String::new();
                let r = !c.explain(ev, depth + 1, &mut lines);
                let _ = writeln!(out, "{pad}{} not", mark(r));
                out.push_str(&lines);
                r
            }
            Cond::Macro(_, c) => c.explain(ev, depth, out),
            Cond::Match(m) => {
                let r = m.eval(ev);
                let got = m.field.all_text(ev);
                let got = if got.is_empty() {
                    "(absent)".to_string()
                } else {
                    got.join(", ")
                };
                let _ = writeln!(
                    out,
                    "{pad}{} {}: {}   (event has: {got})",
                    mark(r),
                    m.path,
                    m.spec
                );
                r
            }
        }
    }

    pub fn eval(&self, ev: &EventView) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.eval_child(ev)),
            Cond::Any(cs) => cs.iter().any(|c| c.eval_child(ev)),
            Cond::Not(c) => !c.eval_child(ev),
            Cond::Match(m) => m.eval(ev),
            Cond::Macro(Some(slot), c) => ev.macro_answer(*slot, || c.eval(ev)),
            Cond::Macro(None, c) => c.eval(ev),
        }
    }

    /// Most children are matchers: tested here without another trip through the recursive
    /// `eval` (whose call overhead was a third of testing a rule).
    #[inline(always)]
    fn eval_child(&self, ev: &EventView) -> bool {
        match self {
            Cond::Match(m) => m.eval(ev),
            other => other.eval(ev),
        }
    }

    /// Calls `f` on every macro with an answer slot in this condition, inner ones included.
    pub fn for_each_macro(&self, f: &mut impl FnMut(u8, &Cond)) {
        match self {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| c.for_each_macro(f)),
            Cond::Not(c) => c.for_each_macro(f),
            Cond::Match(_) => {}
            Cond::Macro(slot, body) => {
                body.for_each_macro(f);
                if let Some(slot) = slot {
                    f(*slot, body);
                }
            }
        }
    }

    /// Literal values the `field` must take for this condition to hold, if the condition pins it
    /// (used to index rules, e.g. by `objectRef.resource`).
    pub fn required_values(&self, path: &str) -> Option<Vec<String>> {
        match self {
            Cond::Match(Matcher { path: p, op, .. }) if p == path => match op {
                Op::Eq(Scalar::Str(s, false)) => Some(vec![s.clone()]),
                Op::In(set) => Some(set.to_vec()),
                _ => None,
            },
            Cond::All(cs) => cs.iter().find_map(|c| c.required_values(path)),
            Cond::Macro(_, c) => c.required_values(path),
            Cond::Any(cs) => {
                let mut all = Vec::new();
                for c in cs {
                    all.extend(c.required_values(path)?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    pub fn compile(y: &Y, scope: &Scope, at: &str) -> Result<Cond, String> {
        Self::compile_each(y, scope, at).map_err(|e| e.join("\n"))
    }

    /// `compile`, with every problem of the condition rather than the first (for `rules check`).
    pub fn compile_each(y: &Y, scope: &Scope, at: &str) -> Result<Cond, Vec<String>> {
        Self::compile_depth(y, scope, at, 0).map(Cond::order_by_cost)
    }

    fn compile_depth(y: &Y, scope: &Scope, at: &str, depth: usize) -> Result<Cond, Vec<String>> {
        if depth > 32 {
            return Err(vec![format!(
                "{at}: conditions nest deeper than 32 levels (a macro including itself?)"
            )]);
        }
        match y {
            Y::Sequence(items) => Ok(Cond::All(compile_list(items, scope, at, depth)?)),
            Y::Mapping(map) => {
                // Every key is compiled, so that all of a condition's problems are told at once.
                let mut parts = Vec::new();
                let mut errors = Vec::new();
                for (k, v) in map {
                    let Some(key) = k.as_str() else {
                        errors.push(format!("{at}: condition keys must be strings"));
                        continue;
                    };
                    let here = format!("{at}.{key}");
                    let part = match key {
                        "all" => seq(v, &here)
                            .map_err(|e| vec![e])
                            .and_then(|items| compile_list(items, scope, &here, depth))
                            .map(Cond::All),
                        "any" => seq(v, &here)
                            .map_err(|e| vec![e])
                            .and_then(|items| compile_list(items, scope, &here, depth))
                            .map(Cond::Any),
                        "not" => Self::compile_depth(v, scope, &here, depth + 1)
                            .map(|c| Cond::Not(Box::new(c))),
                        "macro" => Self::compile_macro(v, scope, &here, depth),
                        path => compile_field(path, v, scope, &here).map_err(|e| vec![e]),
                    };
                    match part {
                        Ok(c) => parts.push(c),
                        Err(e) => errors.extend(e),
                    }
                }
                if !errors.is_empty() {
                    return Err(errors);
                }
                Ok(if parts.len() == 1 {
                    parts.remove(0)
                } else {
                    Cond::All(parts)
                })
            }
            _ => Err(vec![format!(
                "{at}: expected a mapping like `verb: create` or `all: [...]`"
            )]),
        }
    }

    fn compile_macro(v: &Y, scope: &Scope, here: &str, depth: usize) -> Result<Cond, Vec<String>> {
        let name = v
            .as_str()
            .ok_or_else(|| vec![format!("{here}: macro name must be a string")])?;
        let body = scope.macros.get(name).ok_or_else(|| {
            vec![format!(
                "{here}: unknown macro {name:?}; defined: {}",
                keys(scope.macros)
            )]
        })?;
        let slot = scope.macros.keys().position(|k| k == name);
        Ok(Cond::Macro(
            slot.and_then(|s| u8::try_from(s).ok()).filter(|s| *s < 64),
            Box::new(Self::compile_depth(
                body,
                scope,
                &format!("{here}({name})"),
                depth + 1,
            )?),
        ))
    }
}

fn keys<V>(m: &BTreeMap<String, V>) -> String {
    if m.is_empty() {
        return "(none)".into();
    }
    m.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn seq<'y>(v: &'y Y, at: &str) -> Result<&'y [Y], String> {
    v.as_sequence()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{at}: expected a list"))
}

fn compile_list(
    items: &[Y],
    scope: &Scope,
    at: &str,
    depth: usize,
) -> Result<Vec<Cond>, Vec<String>> {
    let mut conds = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, c) in items.iter().enumerate() {
        match Cond::compile_depth(c, scope, &format!("{at}[{i}]"), depth + 1) {
            Ok(c) => conds.push(c),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(conds)
    } else {
        Err(errors)
    }
}

fn compile_field(path: &str, v: &Y, scope: &Scope, at: &str) -> Result<Cond, String> {
    let field = Field::parse(path).map_err(|e| format!("{at}: {e}"))?;
    let spec = serde_json::to_string(v).unwrap_or_default();
    let matcher = |op: Op| {
        Cond::Match(Matcher {
            path: path.to_owned(),
            spec: spec.clone(),
            field: field.clone(),
            memo: (op.is_costly() && memo::LOW_CARDINALITY.contains(&path)).then(memo::next_id),
            literal: match op {
                Op::Eq(Scalar::Bool(b)) => field
                    .last_key_searcher()
                    .map(|key| Box::new((key, if b { "true" } else { "false" }))),
                _ => None,
            },
            op,
        })
    };
    match v {
        Y::Sequence(_) => Ok(matcher(Op::In(
            strings(v, scope, at)?.into_iter().collect(),
        ))),
        Y::String(s) if s.starts_with('$') => Ok(matcher(Op::In(
            strings(v, scope, at)?.into_iter().collect(),
        ))),
        Y::Mapping(m) => {
            let icase = match m.get("icase") {
                None => false,
                Some(Y::Bool(b)) => *b,
                Some(_) => return Err(format!("{at}.icase: expected true or false")),
            };
            let mut ops = Vec::new();
            for (k, arg) in m {
                let op = k.as_str().unwrap_or("");
                if op == "icase" {
                    continue;
                }
                let here = format!("{at}.{op}");
                ops.push(matcher(compile_op(op, arg, icase, scope, &here)?));
            }
            match ops.len() {
                0 => Err(format!("{at}: no operator; use one of {}", OPS.join(", "))),
                1 => Ok(ops.remove(0)),
                _ => Ok(Cond::All(ops)),
            }
        }
        Y::Null => Err(format!(
            "{at}: missing value; to test presence write `{{exists: true}}`"
        )),
        scalar => Ok(matcher(Op::Eq(to_scalar(scalar, false, at)?))),
    }
}

fn compile_op(op: &str, arg: &Y, icase: bool, scope: &Scope, at: &str) -> Result<Op, String> {
    let lower = |v: Vec<String>| -> Vec<String> {
        if icase {
            v.into_iter().map(|s| s.to_lowercase()).collect()
        } else {
            v
        }
    };
    Ok(match op {
        "equals" => Op::Eq(to_scalar(arg, icase, at)?),
        "in" if icase => Op::InIcase(lower(strings(arg, scope, at)?).into_iter().collect()),
        "in" => Op::In(strings(arg, scope, at)?.into_iter().collect()),
        "prefix" => Op::Prefix(lower(strings(arg, scope, at)?), icase),
        "suffix" => Op::Suffix(lower(strings(arg, scope, at)?), icase),
        "contains" => {
            let needles = lower(strings(arg, scope, at)?);
            let unicode = icase && needles.iter().any(|n| !n.is_ascii());
            let ac = aho_corasick::AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                .ascii_case_insensitive(icase)
                .build(&needles)
                .map_err(|e| format!("{at}: {e}"))?;
            Op::Contains(ac, unicode)
        }
        "glob" => {
            let mut b = GlobSetBuilder::new();
            let mut simple = Vec::new();
            let mut complex = 0;
            for g in strings(arg, scope, at)? {
                if let Some(sg) = (!icase).then(|| SimpleGlob::parse(&g)).flatten() {
                    simple.push(sg);
                    continue;
                }
                complex += 1;
                let glob = GlobBuilder::new(&g)
                    .case_insensitive(icase)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("{at}: bad glob {g:?}: {e}"))?;
                b.add(glob);
            }
            let set = if complex > 0 {
                Some(b.build().map_err(|e| format!("{at}: {e}"))?)
            } else {
                None
            };
            Op::Glob(simple, set)
        }
        "regex" => {
            let src = arg
                .as_str()
                .ok_or_else(|| format!("{at}: expected a regex string"))?;
            let src = if icase {
                format!("(?i){src}")
            } else {
                src.to_owned()
            };
            let prefix = (!icase).then(|| literal_prefix(&src)).flatten();
            Op::Regex(
                Regex::new(&src).map_err(|e| format!("{at}: bad regex: {e}"))?,
                prefix,
            )
        }
        "cidr" => Op::Cidr(
            strings(arg, scope, at)?
                .iter()
                .map(|c| {
                    c.parse::<IpNet>()
                        .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                })
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{at}: bad CIDR: {e}"))?,
        ),
        "gt" | "gte" | "lt" | "lte" => {
            let n = arg
                .as_f64()
                .ok_or_else(|| format!("{at}: expected a number"))?;
            let c = match op {
                "gt" => CmpOp::Gt,
                "gte" => CmpOp::Gte,
                "lt" => CmpOp::Lt,
                _ => CmpOp::Lte,
            };
            Op::Cmp(c, n)
        }
        "same_as" => Op::SameAs(
            arg.as_str()
                .ok_or_else(|| format!("{at}: expected a field path"))
                .and_then(|p| Field::parse(p).map_err(|e| format!("{at}: {e}")))?,
        ),
        "exists" => Op::Exists(
            arg.as_bool()
                .ok_or_else(|| format!("{at}: expected true or false"))?,
        ),
        other => {
            return Err(format!(
                "{at}: unknown operator {other:?}; use one of {}, icase",
                OPS.join(", ")
            ))
        }
    })
}

fn to_scalar(v: &Y, icase: bool, at: &str) -> Result<Scalar, String> {
    match v {
        Y::String(s) if icase => Ok(Scalar::Str(s.to_lowercase(), true)),
        Y::String(s) => Ok(Scalar::Str(s.clone(), false)),
        Y::Bool(b) => Ok(Scalar::Bool(*b)),
        Y::Number(n) => n
            .as_f64()
            .map(Scalar::Num)
            .ok_or_else(|| format!("{at}: bad number")),
        _ => Err(format!("{at}: expected a string, number or boolean")),
    }
}

/// A string, a list of strings, or `$list` references (expanded, recursively) to named lists.
fn strings(v: &Y, scope: &Scope, at: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let items: Vec<&Y> = match v {
        Y::Sequence(s) => s.iter().collect(),
        other => vec![other],
    };
    for item in items {
        let s = match item {
            Y::String(s) => s.clone(),
            Y::Number(n) => n.to_string(),
            Y::Bool(b) => b.to_string(),
            _ => return Err(format!("{at}: expected strings")),
        };
        match s.strip_prefix('$') {
            Some(name) => {
                let list = scope.lists.get(name).ok_or_else(|| {
                    format!("{at}: unknown list ${name}; defined: {}", keys(scope.lists))
                })?;
                out.extend(list.iter().cloned());
            }
            None => out.push(s),
        }
    }
    Ok(out)
}

impl Matcher {
    pub fn eval(&self, ev: &EventView) -> bool {
        if let Op::Exists(want) = self.op {
            return self.field.exists(ev) == want;
        }
        if let Op::SameAs(other) = &self.op {
            let theirs = other.all_text(ev);
            return !theirs.is_empty() && self.field.any(ev, |v| theirs.contains(&v.to_text()));
        }
        if let Some(literal) = &self.literal {
            let (key, lit) = &**literal;
            if !self.field.literal_may_follow(ev, key, lit) {
                return false;
            }
        }
        let test = || self.field.any(ev, |v| self.op.test(v));
        let Some(id) = self.memo else {
            // Most matchers test one top-level string: straight to the test.
            if let Field::Str(get) = &self.field {
                return get(ev.event).is_some_and(|s| self.op.test_str(s));
            }
            return test();
        };
        match self.field.raw_text(ev) {
            Some(text) => memo::answer(id, text, test),
            None => test(),
        }
    }
}

impl Op {
    /// Tests that cost far more than a hash lookup of the value.
    fn is_costly(&self) -> bool {
        match self {
            Op::Contains(..) | Op::Cidr(_) | Op::InIcase(_) => true,
            // A literal prefix rules most values out faster than a memo lookup.
            Op::Regex(_, prefix) => prefix.is_none(),
            Op::Glob(_, set) => set.is_some(),
            Op::Prefix(_, icase) | Op::Suffix(_, icase) => *icase,
            _ => false,
        }
    }

    /// `test` on a string, with the commonest operators first and inline.
    #[inline]
    fn test_str(&self, s: &str) -> bool {
        match self {
            Op::Eq(Scalar::Str(p, false)) => p == s,
            Op::In(set) => set.contains(s),
            Op::Prefix(ps, false) => ps.iter().any(|p| s.starts_with(p.as_str())),
            other => other.test(Val::Str(s)),
        }
    }

    pub fn test(&self, v: Val) -> bool {
        match (self, v) {
            (Op::Eq(Scalar::Str(p, false)), Val::Str(s)) => p == s,
            (Op::Eq(Scalar::Str(p, true)), Val::Str(s)) => {
                p.eq_ignore_ascii_case(s) || *p == s.to_lowercase()
            }
            (Op::Eq(Scalar::Num(p)), Val::Num(n)) => *p == n,
            (Op::Eq(Scalar::Num(p)), Val::Str(s)) => s.parse::<f64>().is_ok_and(|n| n == *p),
            (Op::Eq(Scalar::Bool(p)), Val::Bool(b)) => *p == b,
            (Op::Eq(Scalar::Bool(p)), Val::Str(s)) => s.parse::<bool>().is_ok_and(|b| b == *p),
            (Op::Eq(Scalar::Str(p, _)), other) => *p == other.to_text(),
            (Op::In(set), v) => match v {
                Val::Str(s) => set.contains(s),
                other => set.contains(&other.to_text()),
            },
            (Op::InIcase(set), v) => set.contains(&v.to_text().to_lowercase()),
            (Op::Glob(simple, set), Val::Str(s)) => {
                simple.iter().any(|g| g.matches(s)) || set.as_ref().is_some_and(|g| g.is_match(s))
            }
            (Op::Prefix(ps, icase), Val::Str(s)) => {
                with_case(s, *icase, |s| ps.iter().any(|p| s.starts_with(p.as_str())))
            }
            (Op::Suffix(ps, icase), Val::Str(s)) => {
                with_case(s, *icase, |s| ps.iter().any(|p| s.ends_with(p.as_str())))
            }
            (Op::Contains(ac, unicode), Val::Str(s)) => with_case(s, *unicode, |s| ac.is_match(s)),
            (Op::Regex(r, prefix), Val::Str(s)) => {
                prefix.as_ref().is_none_or(|p| s.starts_with(p.as_str())) && r.is_match(s)
            }
            (Op::Cidr(nets), Val::Str(s)) => s
                .parse::<IpAddr>()
                .is_ok_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            (Op::Cmp(c, p), v) => {
                let n = match v {
                    Val::Num(n) => n,
                    Val::Str(s) => match s.parse::<f64>() {
                        Ok(n) => n,
                        Err(_) => return false,
                    },
                    Val::Bool(_) => return false,
                };
                match c {
                    CmpOp::Gt => n > *p,
                    CmpOp::Gte => n >= *p,
                    CmpOp::Lt => n < *p,
                    CmpOp::Lte => n <= *p,
                }
            }
            _ => false,
        }
    }
}

/// `abc`, `abc*`, `*abc`, `*abc*`: a glob that needs no glob engine.
#[derive(Debug, Clone)]
pub enum SimpleGlob {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl SimpleGlob {
    fn parse(g: &str) -> Option<SimpleGlob> {
        let (lead, trail) = (g.starts_with('*'), g.ends_with('*') && g.len() > 1);
        let core = &g[usize::from(lead)..g.len() - usize::from(trail)];
        if core.is_empty() || core.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            return None;
        }
        let core = core.to_owned();
        Some(match (lead, trail) {
            (false, false) => SimpleGlob::Exact(core),
            (false, true) => SimpleGlob::Prefix(core),
            (true, false) => SimpleGlob::Suffix(core),
            (true, true) => SimpleGlob::Contains(core),
        })
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            SimpleGlob::Exact(c) => s == c,
            SimpleGlob::Prefix(c) => s.starts_with(c.as_str()),
            SimpleGlob::Suffix(c) => s.ends_with(c.as_str()),
            SimpleGlob::Contains(c) => s.contains(c.as_str()),
        }
    }
}

/// The literal text an anchored regex (`^abc…`) requires at the start, if any.
fn literal_prefix(src: &str) -> Option<String> {
    let body = src.strip_prefix('^')?;
    let mut prefix = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if !e.is_ascii_alphanumeric() => prefix.push(e),
                _ => break,
            },
            '.' | '[' | '(' | '|' | '$' | '{' | '^' => break,
            // A quantifier applies to the char before it: that char is not required.
            '*' | '?' | '+' => {
                prefix.pop();
                break;
            }
            c => {
                if matches!(chars.peek(), Some('*' | '?' | '{')) {
                    break;
                }
                prefix.push(c);
            }
        }
    }
    // An alternation anywhere makes the prefix optional.
    (!prefix.is_empty() && !src.contains('|')).then_some(prefix)
}

fn with_case(s: &str, icase: bool, f: impl Fn(&str) -> bool) -> bool {
    if icase {
        f(&s.to_lowercase())
    } else {
        f(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEvent;

    fn check(cond_yaml: &str, event_json: &str) -> bool {
        let lists = BTreeMap::from([(
            "admins".to_string(),
            vec!["cluster-admin".to_string(), "admin".to_string()],
        )]);
        let macros = BTreeMap::from([(
            "rbac".to_string(),
            serde_yaml::from_str::<Y>("objectRef.resource: [rolebindings, clusterrolebindings]")
                .unwrap(),
        )]);
        let scope = Scope {
            lists: &lists,
            macros: &macros,
        };
        let y: Y = serde_yaml::from_str(cond_yaml).unwrap();
        let cond = Cond::compile(&y, &scope, "test").unwrap();
        let ev: AuditEvent = serde_json::from_str(event_json).unwrap();
        cond.eval(&EventView::new(&ev, 0))
    }

    #[test]
    fn a_boolean_literal_is_ruled_out_from_the_text_only_when_it_cannot_be_there() {
        let pod = |spec: &str| format!(r#"{{"requestObject":{{"kind":"Pod","spec":{spec}}}}}"#);
        let privileged = "podSpec.containers[*].securityContext.privileged: true";
        for (spec, want) in [
            (
                r#"{"containers":[{"securityContext":{"privileged":false}}]}"#,
                false,
            ),
            (
                r#"{"containers":[{"securityContext":{"privileged":true}}]}"#,
                true,
            ),
            (
                r#"{"containers":[{"securityContext":{ "privileged" :  true }}]}"#,
                true,
            ),
            // One of two containers; a string "true"; a list at the end of the path.
            (
                r#"{"containers":[{"securityContext":{"privileged":false}},{"securityContext":{"privileged":true}}]}"#,
                true,
            ),
            (
                r#"{"containers":[{"securityContext":{"privileged":"true"}}]}"#,
                true,
            ),
            (
                r#"{"containers":[{"securityContext":{"privileged":[true]}}]}"#,
                true,
            ),
            // `true` after the key elsewhere does not make it true here; escapes: parsed.
            (
                r#"{"containers":[{"securityContext":{"privileged":false}}],"x":{"privileged":true}}"#,
                false,
            ),
            (
                r#"{"containers":[{"securityContext":{"privileg\u0065d":true}}]}"#,
                true,
            ),
            (r#"{"containers":[{"name":"a"}]}"#, false),
        ] {
            assert_eq!(check(privileged, &pod(spec)), want, "{spec}");
        }
        let not = "podSpec.containers[*].securityContext.privileged: false";
        assert!(check(
            not,
            &pod(r#"{"containers":[{"securityContext":{"privileged":false}}]}"#)
        ));
        assert!(!check(
            not,
            &pod(r#"{"containers":[{"securityContext":{"privileged":true}}]}"#)
        ));
    }

    const EV: &str = r#"{"verb":"create","userAgent":"KubeCtl/v1.30","sourceIPs":["10.0.0.5","8.8.8.8"],
        "objectRef":{"resource":"clusterrolebindings"},"responseStatus":{"code":201},
        "requestObject":{"roleRef":{"name":"cluster-admin"}}}"#;

    #[test]
    fn operators() {
        assert!(check("verb: create", EV));
        assert!(!check("verb: delete", EV));
        assert!(check("verb: [update, create]", EV));
        assert!(check("requestObject.roleRef.name: $admins", EV));
        assert!(check(
            "requestObject.roleRef.name: {in: [$admins, view]}",
            EV
        ));
        assert!(check("macro: rbac", EV));
        assert!(check("userAgent: {prefix: kubectl/, icase: true}", EV));
        assert!(!check("userAgent: {prefix: kubectl/}", EV));
        assert!(check("userAgent: {glob: 'kubectl*', icase: true}", EV));
        assert!(check("userAgent: {glob: ['*/v1.30', 'x']}", EV));
        assert!(check("userAgent: {glob: '*Ctl/*'}", EV));
        assert!(check("userAgent: {glob: 'KubeCtl/v1.3[0-9]'}", EV));
        assert!(!check("userAgent: {glob: 'KubeCtl'}", EV));
        assert!(check("userAgent: {glob: 'KubeCtl/v1.30'}", EV));
        assert!(check("userAgent: {regex: '^KubeCtl/v1\\.[0-9]+$'}", EV));
        assert!(check("sourceIPs: {cidr: [8.8.8.0/24]}", EV));
        assert!(!check("sourceIPs: {cidr: [192.168.0.0/16]}", EV));
        assert!(check("responseStatus.code: {gte: 200, lt: 300}", EV));
        assert!(check("responseStatus.code: 201", EV));
        assert!(check("requestObject.roleRef: {exists: true}", EV));
        assert!(check("requestObject.subjects: {exists: false}", EV));
        assert!(check(
            "requestObject.roleRef.name: {same_as: requestObject.roleRef.name}",
            EV
        ));
        assert!(!check("verb: {same_as: userAgent}", EV));
        assert!(!check("verb: {same_as: requestObject.nothing}", EV));
        assert!(check("{any: [{verb: delete}, {not: {verb: delete}}]}", EV));
        assert!(check(
            "[{verb: create}, {userAgent: {contains: ctl, icase: true}}]",
            EV
        ));
    }

    #[test]
    fn regex_literal_prefixes() {
        assert_eq!(literal_prefix("^kubectl/v1"), Some("kubectl/v1".into()));
        assert_eq!(literal_prefix(r"^curl/\d+"), Some("curl/".into()));
        assert_eq!(literal_prefix(r"^a\.b[cd]"), Some("a.b".into()));
        assert_eq!(literal_prefix("^abc*"), Some("ab".into()));
        assert_eq!(literal_prefix("^ab?c"), Some("a".into()));
        assert_eq!(literal_prefix("^a{2}"), None);
        assert_eq!(literal_prefix("kubectl"), None);
        assert_eq!(literal_prefix("^a|b"), None);
    }

    #[test]
    fn compile_errors_say_where_and_what() {
        let empty = BTreeMap::new();
        let scope = Scope {
            lists: &empty,
            macros: &BTreeMap::new(),
        };
        let err =
            |y: &str| Cond::compile(&serde_yaml::from_str(y).unwrap(), &scope, "r").unwrap_err();
        assert!(err("{all: [{verb: {like: x}}]}").contains("r.all[0].verb.like: unknown operator"));
        assert!(err("user.nmae: x").contains("unknown field"));
        assert!(err("verb: $nope").contains("unknown list $nope"));
        assert!(err("macro: m").contains("unknown macro"));
        assert!(err("userAgent: {regex: '('}").contains("bad regex"));
    }

    #[test]
    fn required_values_index_rules() {
        let empty = BTreeMap::new();
        let scope = Scope {
            lists: &empty,
            macros: &BTreeMap::new(),
        };
        let c = Cond::compile(
            &serde_yaml::from_str("all: [{verb: get}, {objectRef.resource: [a, b]}]").unwrap(),
            &scope,
            "r",
        )
        .unwrap();
        let mut v = c.required_values("objectRef.resource").unwrap();
        v.sort();
        assert_eq!(v, ["a", "b"]);
        assert_eq!(c.required_values("objectRef.namespace"), None);
    }
}
