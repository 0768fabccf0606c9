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

use super::field::{EventView, Field, Val};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use regex::Regex;
use serde_yaml::Value as Y;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Match(Matcher),
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub path: String,
    pub field: Field,
    pub op: Op,
}

#[derive(Debug, Clone)]
pub enum Op {
    Eq(Scalar),
    In(HashSet<String>),
    InIcase(HashSet<String>),
    Glob(GlobSet),
    Prefix(Vec<String>, bool),
    Suffix(Vec<String>, bool),
    Contains(Vec<String>, bool),
    Regex(Regex),
    Cidr(Vec<IpNet>),
    Cmp(CmpOp, f64),
    Exists(bool),
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
    "lte", "exists",
];

impl Cond {
    pub fn eval(&self, ev: &EventView) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.eval(ev)),
            Cond::Any(cs) => cs.iter().any(|c| c.eval(ev)),
            Cond::Not(c) => !c.eval(ev),
            Cond::Match(m) => m.eval(ev),
        }
    }

    /// Literal values the `field` must take for this condition to hold, if the condition pins it
    /// (used to index rules, e.g. by `objectRef.resource`).
    pub fn required_values(&self, path: &str) -> Option<Vec<String>> {
        match self {
            Cond::Match(Matcher { path: p, op, .. }) if p == path => match op {
                Op::Eq(Scalar::Str(s, false)) => Some(vec![s.clone()]),
                Op::In(set) => Some(set.iter().cloned().collect()),
                _ => None,
            },
            Cond::All(cs) => cs.iter().find_map(|c| c.required_values(path)),
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
        Self::compile_depth(y, scope, at, 0)
    }

    fn compile_depth(y: &Y, scope: &Scope, at: &str, depth: usize) -> Result<Cond, String> {
        if depth > 32 {
            return Err(format!(
                "{at}: conditions nest deeper than 32 levels (a macro including itself?)"
            ));
        }
        match y {
            Y::Sequence(items) => Ok(Cond::All(compile_list(items, scope, at, depth)?)),
            Y::Mapping(map) => {
                let mut parts = Vec::new();
                for (k, v) in map {
                    let key = k
                        .as_str()
                        .ok_or_else(|| format!("{at}: condition keys must be strings"))?;
                    let here = format!("{at}.{key}");
                    parts.push(match key {
                        "all" => Cond::All(compile_list(seq(v, &here)?, scope, &here, depth)?),
                        "any" => Cond::Any(compile_list(seq(v, &here)?, scope, &here, depth)?),
                        "not" => {
                            Cond::Not(Box::new(Self::compile_depth(v, scope, &here, depth + 1)?))
                        }
                        "macro" => {
                            let name = v
                                .as_str()
                                .ok_or_else(|| format!("{here}: macro name must be a string"))?;
                            let body = scope.macros.get(name).ok_or_else(|| {
                                format!(
                                    "{here}: unknown macro {name:?}; defined: {}",
                                    keys(scope.macros)
                                )
                            })?;
                            Self::compile_depth(body, scope, &format!("{here}({name})"), depth + 1)?
                        }
                        path => compile_field(path, v, scope, &here)?,
                    });
                }
                Ok(if parts.len() == 1 {
                    parts.remove(0)
                } else {
                    Cond::All(parts)
                })
            }
            _ => Err(format!(
                "{at}: expected a mapping like `verb: create` or `all: [...]`"
            )),
        }
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

fn compile_list(items: &[Y], scope: &Scope, at: &str, depth: usize) -> Result<Vec<Cond>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, c)| Cond::compile_depth(c, scope, &format!("{at}[{i}]"), depth + 1))
        .collect()
}

fn compile_field(path: &str, v: &Y, scope: &Scope, at: &str) -> Result<Cond, String> {
    let field = Field::parse(path).map_err(|e| format!("{at}: {e}"))?;
    let matcher = |op| {
        Cond::Match(Matcher {
            path: path.to_owned(),
            field: field.clone(),
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
        "contains" => Op::Contains(lower(strings(arg, scope, at)?), icase),
        "glob" => {
            let mut b = GlobSetBuilder::new();
            for g in strings(arg, scope, at)? {
                let glob = GlobBuilder::new(&g)
                    .case_insensitive(icase)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("{at}: bad glob {g:?}: {e}"))?;
                b.add(glob);
            }
            Op::Glob(b.build().map_err(|e| format!("{at}: {e}"))?)
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
            Op::Regex(Regex::new(&src).map_err(|e| format!("{at}: bad regex: {e}"))?)
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
        self.field.any(ev, &mut |v| self.op.test(v))
    }
}

impl Op {
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
            (Op::Glob(g), Val::Str(s)) => g.is_match(s),
            (Op::Prefix(ps, icase), Val::Str(s)) => {
                with_case(s, *icase, |s| ps.iter().any(|p| s.starts_with(p.as_str())))
            }
            (Op::Suffix(ps, icase), Val::Str(s)) => {
                with_case(s, *icase, |s| ps.iter().any(|p| s.ends_with(p.as_str())))
            }
            (Op::Contains(ps, icase), Val::Str(s)) => {
                with_case(s, *icase, |s| ps.iter().any(|p| s.contains(p.as_str())))
            }
            (Op::Regex(r), Val::Str(s)) => r.is_match(s),
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
        assert!(check("userAgent: {regex: '^KubeCtl/v1\\.[0-9]+$'}", EV));
        assert!(check("sourceIPs: {cidr: [8.8.8.0/24]}", EV));
        assert!(!check("sourceIPs: {cidr: [192.168.0.0/16]}", EV));
        assert!(check("responseStatus.code: {gte: 200, lt: 300}", EV));
        assert!(check("responseStatus.code: 201", EV));
        assert!(check("requestObject.roleRef: {exists: true}", EV));
        assert!(check("requestObject.subjects: {exists: false}", EV));
        assert!(check("{any: [{verb: delete}, {not: {verb: delete}}]}", EV));
        assert!(check(
            "[{verb: create}, {userAgent: {contains: ctl, icase: true}}]",
            EV
        ));
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
