//! Sigma rules (`logsource: {product: kubernetes, service: audit}`) translated into audithound's
//! own rule format, so a Sigma file in a rules directory loads like any other rule.
//!
//! Selections become `all` (a mapping) or `any` (a list of mappings) of field matchers; a list of
//! values means any of them; modifiers `contains`, `startswith`, `endswith`, `re`, `cidr`, `all`
//! and `exists` map onto our operators. Sigma compares strings case-insensitively and treats `*`
//! and `?` in plain values as wildcards; both are kept. The condition (`and`, `or`, `not`,
//! parentheses, `1 of x*`, `all of them`) becomes an `all`/`any`/`not` tree.

use serde_yaml::{Mapping, Value as Y};

/// Fields the community Kubernetes pipelines name differently from the audit event.
const FIELD_MAP: &[(&str, &str)] = &[
    ("apiGroup", "objectRef.apiGroup"),
    ("hostPath", "podSpec.volumes[*].hostPath.path"),
    ("capabilities", "podSpec.(containers|initContainers|ephemeralContainers)[*].securityContext.capabilities.add"),
];

/// Whether a parsed YAML document is a Sigma rule (it has a `logsource`).
pub fn is_sigma(doc: &Y) -> bool {
    doc.get("logsource").is_some() && doc.get("detection").is_some()
}

/// What a Sigma file becomes.
pub enum Translation {
    /// A rule file (`rules: [...]`) in our own format.
    Rule(Y),
    /// A Sigma rule that is well-formed but cannot run on audit events, and why: another log
    /// source, a field audit events do not have (`file_path`), a modifier we do not support.
    Skip(String),
}

const MODIFIERS: &[(&str, Option<&str>)] = &[
    ("contains", Some("contains")),
    ("startswith", Some("prefix")),
    ("endswith", Some("suffix")),
    ("re", Some("regex")),
    ("cidr", Some("cidr")),
    ("exists", Some("exists")),
    ("all", None),
];

/// Translates one Sigma rule; an error means the rule itself is malformed.
pub fn translate(doc: &Y) -> Result<Translation, String> {
    let text = |v: Option<&Y>| v.and_then(Y::as_str).unwrap_or("").to_owned();
    let logsource = doc.get("logsource");
    let product = text(logsource.and_then(|l| l.get("product")));
    let service = text(logsource.and_then(|l| l.get("service")));
    if product != "kubernetes" || service != "audit" {
        return Ok(Translation::Skip(format!(
            "a Sigma rule for {product}/{service}, not kubernetes/audit"
        )));
    }
    let title = text(doc.get("title"));
    let id = match text(doc.get("id")) {
        id if !id.is_empty() => format!("sigma.{id}"),
        _ => format!("sigma.{}", slug(&title)),
    };
    let detection = doc
        .get("detection")
        .and_then(Y::as_mapping)
        .ok_or("detection: expected a mapping")?;
    if let Some(why) = unsupported(detection) {
        return Ok(Translation::Skip(why));
    }
    let condition = text(detection.get("condition"));
    if condition.is_empty() {
        return Err("detection.condition: missing (e.g. `selection and not filter`)".into());
    }
    let mut selections = Vec::new();
    for (k, v) in detection {
        let name = k.as_str().unwrap_or("");
        if name != "condition" && name != "timeframe" {
            selections.push((
                name.to_owned(),
                selection(v).map_err(|e| format!("detection.{name}: {e}"))?,
            ));
        }
    }
    let cond = Parser::new(&condition, &selections)
        .parse()
        .map_err(|e| format!("detection.condition {condition:?}: {e}"))?;
    let severity = match text(doc.get("level")).as_str() {
        "informational" => "info",
        "low" => "low",
        "high" => "high",
        "critical" => "critical",
        _ => "medium",
    };
    let tags: Vec<String> = doc
        .get("tags")
        .and_then(Y::as_sequence)
        .map(|t| t.iter().filter_map(Y::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let mitre: Vec<Y> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .map(|t| Y::from(format!("T{}", t.to_ascii_uppercase())))
        .collect();
    let mut rule = Mapping::new();
    rule.insert("id".into(), id.into());
    rule.insert("title".into(), title.clone().into());
    rule.insert("description".into(), text(doc.get("description")).into());
    rule.insert("severity".into(), severity.into());
    rule.insert("mitre".into(), Y::Sequence(mitre));
    rule.insert(
        "tags".into(),
        Y::Sequence(
            tags.into_iter()
                .map(Y::from)
                .chain([Y::from("sigma")])
                .collect(),
        ),
    );
    rule.insert("condition".into(), cond);
    rule.insert(
        "summary".into(),
        format!("Sigma \"{}\": {{user.username}} {{verb}} {{objectRef.resource}} {{objectRef.namespace}}/{{objectRef.name}} from {{sourceIPs}}.", title.replace(['{', '}'], "")).into(),
    );
    rule.insert("remediation".into(), text(doc.get("falsepositives")).into());
    let mut file = Mapping::new();
    file.insert("rules".into(), Y::Sequence(vec![Y::Mapping(rule)]));
    Ok(Translation::Rule(Y::Mapping(file)))
}

/// Why the detection cannot be evaluated on audit events, if it cannot: the first field that
/// audit events do not have, or the first modifier we do not support.
fn unsupported(detection: &Mapping) -> Option<String> {
    let mut keys = Vec::new();
    fn collect<'y>(v: &'y Y, keys: &mut Vec<&'y str>) {
        match v {
            Y::Mapping(m) => keys.extend(m.keys().filter_map(Y::as_str)),
            Y::Sequence(items) => items.iter().for_each(|i| collect(i, keys)),
            _ => {}
        }
    }
    for (name, v) in detection {
        if !matches!(name.as_str(), Some("condition" | "timeframe")) {
            collect(v, &mut keys);
        }
    }
    keys.into_iter().find_map(|key| {
        let mut parts = key.split('|');
        let field = our_field(parts.next().unwrap_or(""));
        if let Err(e) = super::field::Field::parse(field) {
            let e = e.split(';').next().unwrap_or(&e).to_owned();
            return Some(format!("{e}: Kubernetes audit events have no such field"));
        }
        parts
            .find(|m| !MODIFIERS.iter().any(|(name, _)| name == m))
            .map(|m| format!("{key}: the modifier {m:?} is not supported"))
    })
}

fn our_field(sigma: &str) -> &str {
    FIELD_MAP
        .iter()
        .find(|(s, _)| *s == sigma)
        .map_or(sigma, |(_, ours)| ours)
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A selection: a mapping is all of its fields, a list is any of its items.
fn selection(v: &Y) -> Result<Y, String> {
    match v {
        Y::Mapping(m) => {
            let mut all = Vec::new();
            for (k, vals) in m {
                let key = k.as_str().ok_or("field names must be strings")?;
                all.push(field_matcher(key, vals)?);
            }
            Ok(tagged("all", all))
        }
        Y::Sequence(items) => Ok(tagged(
            "any",
            items.iter().map(selection).collect::<Result<_, _>>()?,
        )),
        _ => Err(
            "expected a mapping of fields or a list of them (keyword searches are not supported)"
                .into(),
        ),
    }
}

fn tagged(op: &str, items: Vec<Y>) -> Y {
    let mut m = Mapping::new();
    m.insert(op.into(), Y::Sequence(items));
    Y::Mapping(m)
}

fn one(key: &str, value: Y) -> Y {
    let mut m = Mapping::new();
    m.insert(key.into(), value);
    Y::Mapping(m)
}

/// `field|mod1|mod2: value(s)` → our matcher (case-insensitive, as Sigma is).
fn field_matcher(key: &str, vals: &Y) -> Result<Y, String> {
    let mut parts = key.split('|');
    let field = our_field(parts.next().unwrap_or(""));
    let mods: Vec<&str> = parts.collect();
    let all = mods.contains(&"all");
    let op = match mods.iter().find(|m| **m != "all") {
        None => None,
        Some(m) => match MODIFIERS.iter().find(|(name, _)| name == m) {
            Some((_, op)) => *op,
            None => return Err(format!("{key}: modifier {m:?} is not supported")),
        },
    };
    let values: Vec<Y> = match vals {
        Y::Sequence(v) => v.clone(),
        v => vec![v.clone()],
    };
    if values.iter().any(Y::is_null) && op.is_none() {
        return Ok(one(field, one("exists", Y::Bool(false))));
    }
    let matcher = |vals: Vec<Y>| -> Y {
        let mut spec = Mapping::new();
        match op {
            Some("exists") => {
                spec.insert(
                    "exists".into(),
                    vals.into_iter().next().unwrap_or(Y::Bool(true)),
                );
            }
            // One pattern per matcher (the caller splits a list), case-sensitive as in Sigma.
            Some("regex") => {
                spec.insert("regex".into(), vals.into_iter().next().unwrap_or_default());
            }
            Some("cidr") => {
                spec.insert("cidr".into(), Y::Sequence(vals));
            }
            Some(o) => {
                spec.insert(o.into(), Y::Sequence(vals));
                spec.insert("icase".into(), Y::Bool(true));
            }
            None => {
                let wildcard = vals
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| s.contains(['*', '?'])));
                let strings = vals.iter().all(Y::is_string);
                spec.insert(
                    (if wildcard { "glob" } else { "in" }).into(),
                    Y::Sequence(vals),
                );
                if strings {
                    spec.insert("icase".into(), Y::Bool(true));
                }
            }
        }
        one(field, Y::Mapping(spec))
    };
    // A regex takes one pattern per matcher.
    if all || op == Some("regex") {
        let each: Vec<Y> = values.into_iter().map(|v| matcher(vec![v])).collect();
        return Ok(tagged(if all { "all" } else { "any" }, each));
    }
    Ok(matcher(values))
}

/// Recursive descent over Sigma's condition: `or` < `and` < `not` < atoms.
struct Parser<'a> {
    tokens: Vec<String>,
    pos: usize,
    selections: &'a [(String, Y)],
}

impl<'a> Parser<'a> {
    fn new(text: &str, selections: &'a [(String, Y)]) -> Self {
        let tokens = text
            .replace('(', " ( ")
            .replace(')', " ) ")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Parser {
            tokens,
            pos: 0,
            selections,
        }
    }

    fn parse(mut self) -> Result<Y, String> {
        let y = self.or()?;
        match self.tokens.get(self.pos) {
            None => Ok(y),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    fn peek_is(&self, word: &str) -> bool {
        self.tokens
            .get(self.pos)
            .is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Y, String> {
        let mut items = vec![self.and()?];
        while self.peek_is("or") {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            tagged("any", items)
        })
    }

    fn and(&mut self) -> Result<Y, String> {
        let mut items = vec![self.not()?];
        while self.peek_is("and") {
            self.pos += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            tagged("all", items)
        })
    }

    fn not(&mut self) -> Result<Y, String> {
        if self.peek_is("not") {
            self.pos += 1;
            return Ok(one("not", self.not()?));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Y, String> {
        let Some(token) = self.tokens.get(self.pos).cloned() else {
            return Err("ends early".into());
        };
        self.pos += 1;
        match token.as_str() {
            "(" => {
                let y = self.or()?;
                if !self.peek_is(")") {
                    return Err("missing ')'".into());
                }
                self.pos += 1;
                Ok(y)
            }
            "1" | "all" | "any" if self.peek_is("of") => {
                self.pos += 1;
                let pattern = self
                    .tokens
                    .get(self.pos)
                    .cloned()
                    .ok_or("`of` needs a name, a pattern or `them`")?;
                self.pos += 1;
                let matched: Vec<Y> = self
                    .selections
                    .iter()
                    .filter(|(name, _)| match pattern.strip_suffix('*') {
                        _ if pattern == "them" => true,
                        Some(prefix) => name.starts_with(prefix),
                        None => *name == pattern,
                    })
                    .map(|(_, y)| y.clone())
                    .collect();
                if matched.is_empty() {
                    return Err(format!("no selection matches {pattern:?}"));
                }
                Ok(tagged(if token == "all" { "all" } else { "any" }, matched))
            }
            name => self
                .selections
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, y)| y.clone())
                .ok_or_else(|| format!("unknown selection {name:?}")),
        }
    }
}
