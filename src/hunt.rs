//! Forensic questions over archives: `audithound hunt --where EXPR` streams the events that match
//! a condition, and `audithound timeline --user U` (or a credential, a source address, an
//! object) tells what that identity did, request by request, with the alerts raised on each.
//!
//! Both are a replay: the same decoder, file merge and compiled matchers. The condition is the
//! rule language's own, written on one line (`user.username=mallory and objectRef.resource=
//! secrets`) or as a YAML flow mapping (`{verb: delete, objectRef.resource: secrets}`); it
//! becomes a single-event rule beside the library, so `$lists` and `macro:` names resolve.

use crate::alert::{Alert, Record};
use crate::incident::Story;
use crate::rules::{LoadErrors, RuleSet};
use crate::sink::AlertSink;
use serde::Serialize;
use serde_yaml::Value as Y;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

/// The id of the rule a hunt or timeline condition becomes.
pub const RULE_ID: &str = "hunt.match";

/// A condition written on one line, as the rule language's YAML: `field=value`, `!=`, `>`,
/// `>=`, `<`, `<=`, `~` (glob), `=~` (regex), `field in (a, b)`, `field exists`, `macro:name`,
/// joined by `and`, `or`, `not` and parentheses. Text starting with `{` or `[` is YAML already.
pub fn parse_where(expr: &str) -> Result<Y, String> {
    let trimmed = expr.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_yaml::from_str(trimmed).map_err(|e| format!("--where: {e}"));
    }
    let tokens = tokenize(trimmed).map_err(|(at, why)| pointed(trimmed, at, &why))?;
    let mut p = Parser {
        tokens,
        at: 0,
        end: trimmed.len(),
    };
    let parsed = p.or().and_then(|cond| match p.peek() {
        None => Ok(cond),
        Some(t) => Err(p.here(format!(
            "{} after a whole condition (join conditions with `and` or `or`)",
            t.describe()
        ))),
    });
    parsed.map_err(|(at, why)| pointed(trimmed, at, &why))
}

/// `--where: WHY`, the expression, and a caret under byte `at` of it.
fn pointed(expr: &str, at: usize, why: &str) -> String {
    let column = expr[..at.min(expr.len())].chars().count();
    format!("--where: {why}\n  {expr}\n  {}^", " ".repeat(column))
}

/// An error at a byte of the expression.
type Failure = (usize, String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    /// A quoted value: never a keyword or an operator.
    Quoted(String),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

impl Tok {
    /// How an error names it.
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) if KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                format!("the keyword `{w}`")
            }
            Tok::Word(w) => format!("`{w}`"),
            Tok::Quoted(q) => format!("the quoted text {q:?}"),
            Tok::Op(op) => format!("the operator `{op}`"),
            Tok::Open => "`(`".into(),
            Tok::Close => "`)`".into(),
            Tok::Comma => "`,`".into(),
        }
    }
}

const OPS: [&str; 8] = ["=~", "!=", ">=", "<=", "=", ">", "<", "~"];
const KEYWORDS: [&str; 5] = ["and", "or", "not", "in", "exists"];

/// The tokens, each with the byte it starts at.
fn tokenize(s: &str) -> Result<Vec<(Tok, usize)>, Failure> {
    let mut out = Vec::new();
    let mut rest = s;
    let at = |rest: &str| s.len() - rest.len();
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '(' || c == ')' || c == ',' {
            let tok = match c {
                '(' => Tok::Open,
                ')' => Tok::Close,
                _ => Tok::Comma,
            };
            out.push((tok, at(rest)));
            rest = &rest[1..];
            continue;
        }
        if c == '\'' || c == '"' {
            let body = &rest[1..];
            let end = body
                .find(c)
                .ok_or_else(|| (at(rest), format!("this {c} is never closed")))?;
            out.push((Tok::Quoted(body[..end].to_owned()), at(rest)));
            rest = &body[end + 1..];
            continue;
        }
        if let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
            out.push((Tok::Op(op), at(rest)));
            rest = &rest[op.len()..];
            continue;
        }
        // A word runs to whitespace, a parenthesis, a comma or an operator; quoted keys inside
        // a field path (`user.extra."a.b"`) are kept whole.
        let mut end = 0;
        let mut quoted = false;
        for (i, ch) in rest.char_indices() {
            if ch == '"' {
                quoted = !quoted;
            } else if !quoted
                && (ch.is_whitespace()
                    || matches!(ch, '(' | ')' | ',')
                    || OPS.iter().any(|op| rest[i..].starts_with(op)))
            {
                break;
            }
            end = i + ch.len_utf8();
        }
        out.push((Tok::Word(rest[..end].to_owned()), at(rest)));
        rest = &rest[end..];
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    at: usize,
    /// The expression's length: where "the end" is pointed at.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.peek().cloned();
        self.at += 1;
        t
    }

    /// An error at the token about to be read (or the end).
    fn here(&self, why: String) -> Failure {
        (
            self.tokens.get(self.at).map_or(self.end, |(_, at)| *at),
            why,
        )
    }

    /// An error at the token just read.
    fn there(&self, why: String) -> Failure {
        let at = self.at.saturating_sub(1);
        (self.tokens.get(at).map_or(self.end, |(_, at)| *at), why)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Y, Failure> {
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            self.at += 1;
            parts.push(self.and()?);
        }
        Ok(join("any", parts))
    }

    fn and(&mut self) -> Result<Y, Failure> {
        let mut parts = vec![self.factor()?];
        while self.keyword("and") {
            self.at += 1;
            parts.push(self.factor()?);
        }
        Ok(join("all", parts))
    }

    fn factor(&mut self) -> Result<Y, Failure> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(mapping("not", self.factor()?));
        }
        match self.next() {
            Some(Tok::Open) => {
                let open = self.there(String::new()).0;
                let inner = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(inner),
                    _ => Err((open, "this `(` is never closed".into())),
                }
            }
            Some(Tok::Word(w)) if w.starts_with("macro:") => {
                Ok(mapping("macro", Y::String(w["macro:".len()..].to_owned())))
            }
            Some(t @ Tok::Word(_)) if t.describe().starts_with("the keyword") => {
                Err(self.there(format!(
                    "expected a field (such as verb or user.username), found {}",
                    t.describe()
                )))
            }
            Some(Tok::Word(field)) => self.comparison(field),
            Some(t) => Err(self.there(format!(
                "expected a field (such as verb or user.username), found {}",
                t.describe()
            ))),
            None => Err(self.here("the condition ends too early: a field is missing".into())),
        }
    }

    fn comparison(&mut self, field: String) -> Result<Y, Failure> {
        if self.keyword("exists") {
            self.at += 1;
            return Ok(mapping(&field, mapping("exists", Y::Bool(true))));
        }
        if self.keyword("in") {
            self.at += 1;
            if self.next() != Some(Tok::Open) {
                return Err(self.there(format!("`{field} in` takes a list: in (a, b)")));
            }
            let mut values = Vec::new();
            loop {
                values.push(self.value()?);
                match self.next() {
                    Some(Tok::Comma) => {}
                    Some(Tok::Close) => break,
                    _ => {
                        return Err(
                            self.there(format!("`{field} in (…)`: expected `,` or `)` here"))
                        )
                    }
                }
            }
            return Ok(mapping(&field, Y::Sequence(values)));
        }
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            found => {
                let found = found.map_or("the end".into(), |t| t.describe());
                return Err(self.there(format!(
                    "after the field `{field}` comes an operator (=, !=, >, >=, <, <=, ~, =~, in, exists), not {found}"
                )));
            }
        };
        let value = self.value()?;
        Ok(match op {
            "=" => mapping(&field, value),
            "!=" => mapping("not", mapping(&field, value)),
            "~" => mapping(&field, mapping("glob", value)),
            "=~" => mapping(&field, mapping("regex", value)),
            ">" => mapping(&field, mapping("gt", value)),
            ">=" => mapping(&field, mapping("gte", value)),
            "<" => mapping(&field, mapping("lt", value)),
            _ => mapping(&field, mapping("lte", value)),
        })
    }

    fn value(&mut self) -> Result<Y, Failure> {
        match self.next() {
            Some(Tok::Quoted(s)) => Ok(Y::String(s)),
            Some(Tok::Word(w)) => Ok(scalar(&w)),
            Some(t) => Err(self.there(format!(
                "expected a value, found {} (quote a value that holds one: 'a=b')",
                t.describe()
            ))),
            None => Err(self.here("the condition ends where a value was expected".into())),
        }
    }
}

/// A bare value as YAML would read it: numbers and booleans are themselves.
fn scalar(word: &str) -> Y {
    if let Ok(n) = word.parse::<i64>() {
        return Y::Number(n.into());
    }
    match word {
        "true" => Y::Bool(true),
        "false" => Y::Bool(false),
        _ => Y::String(word.to_owned()),
    }
}

fn mapping(key: &str, value: Y) -> Y {
    let mut m = serde_yaml::Mapping::new();
    m.insert(Y::String(key.to_owned()), value);
    Y::Mapping(m)
}

fn join(how: &str, mut parts: Vec<Y>) -> Y {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    mapping(how, Y::Sequence(parts))
}

/// The library at `paths` plus the condition as the single-event rule `RULE_ID`.
pub fn rules_with(paths: &[PathBuf], condition: Y) -> Result<RuleSet, LoadErrors> {
    // Built as YAML, not with `json!`: a condition given as YAML may have keys JSON has no
    // room for (`{&a: 1}`'s null key, `{[a]: b}`), and `json!` panics on them. The loader
    // reports them as it reports any other bad field.
    let rule: serde_yaml::Mapping = [
        ("id", Y::from(RULE_ID)),
        ("title", Y::from("Matched the hunt's condition")),
        ("severity", Y::from("info")),
        ("condition", condition),
        (
            "summary",
            Y::from("{user.username} ran `{verb}` on {objectRef.resource|requestURI}."),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (Y::from(k), v))
    .collect();
    let file = mapping("rules", Y::Sequence(vec![Y::Mapping(rule)]));
    let text =
        serde_yaml::to_string(&file).map_err(|e| LoadErrors(vec![format!("--where: {e}")]))?;
    RuleSet::load_with(paths, vec![(PathBuf::from("--where"), text)]).map_err(|LoadErrors(e)| {
        LoadErrors(e.into_iter().map(|m| about_the_expression(&m)).collect())
    })
}

/// A loader's message about the generated rule, told about the expression instead: not
/// `--where:3:5: rules[0] (id hunt.match).condition.verb.regex: …` but `--where: verb.regex: …`.
fn about_the_expression(message: &str) -> String {
    let marker = format!("(id {RULE_ID}).condition");
    match message.split_once(&marker) {
        Some((_, rest)) if message.starts_with("--where") => {
            format!("--where: {}", rest.trim_start_matches(['.', ':', ' ']))
        }
        _ => message.to_owned(),
    }
}

/// One matching event, as `hunt` prints it.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub time: &'a str,
    pub cluster: &'a str,
    pub audit_id: &'a str,
    pub user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<&'a str>,
    pub verb: &'a str,
    pub resource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub subresource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    pub source_ips: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
    pub request_uri: &'a str,
}

impl<'a> Row<'a> {
    pub fn of(a: &'a Alert) -> Row<'a> {
        Row {
            time: &a.time,
            cluster: &a.cluster,
            audit_id: a.evidence.audit_ids.first().map_or("", String::as_str),
            user: &a.actor.username,
            impersonated_user: a.actor.impersonated_user.as_deref(),
            credential_id: a.actor.credential_id.as_deref(),
            verb: &a.target.verb,
            resource: &a.target.resource,
            subresource: &a.target.subresource,
            namespace: &a.target.namespace,
            name: &a.target.name,
            status_code: a.outcome.status_code,
            source_ips: &a.actor.source_ips,
            user_agent: a.actor.user_agent.as_deref(),
            request_uri: &a.target.request_uri,
        }
    }
}

/// How `hunt` and `timeline` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// A table on a terminal, JSON lines in a pipe.
    Auto,
    /// Always the table: time, verb, object, outcome, source, client.
    Table,
    /// Always JSON lines, one per event (or timeline step).
    Json,
}

impl Layout {
    pub fn table(self) -> bool {
        use std::io::IsTerminal;
        match self {
            Layout::Auto => std::io::stdout().is_terminal(),
            Layout::Table => true,
            Layout::Json => false,
        }
    }
}

/// `text` cut to `width` characters, `…` marking the cut.
fn cell(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return format!("{text:<width$}");
    }
    let cut: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn object(namespace: &str, name: &str) -> String {
    match (namespace.is_empty(), name.is_empty()) {
        (false, false) => format!("{namespace}/{name}"),
        (true, false) => name.to_owned(),
        // A list or watch of the whole namespace.
        (false, true) => format!("{namespace}/*"),
        (true, true) => String::new(),
    }
}

/// Prints the events the hunt's rule matched as they come (in event-time order); other
/// records are passed to `also` (a report).
pub struct HuntSink<W, S> {
    pub out: W,
    pub table: bool,
    pub matched: u64,
    pub also: S,
}

impl<W: Write, S: AlertSink> HuntSink<W, S> {
    pub fn header(&mut self) -> std::io::Result<()> {
        if self.table {
            writeln!(
                self.out,
                "{:<20}  {:<28}  {:<8} {:<24} {:<36} {:>4}  {:<15}  AGENT",
                "TIME", "USER", "VERB", "RESOURCE", "NAMESPACE/NAME", "CODE", "SOURCE"
            )?;
        }
        Ok(())
    }
}

impl<W: Write, S: AlertSink> AlertSink for HuntSink<W, S> {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        if let Record::Alert(a) = record {
            if a.rule.id == RULE_ID {
                self.matched += 1;
                let row = Row::of(a);
                if self.table {
                    let resource = if row.subresource.is_empty() {
                        row.resource.to_owned()
                    } else {
                        format!("{}/{}", row.resource, row.subresource)
                    };
                    writeln!(
                        self.out,
                        "{}  {}  {} {} {} {:>4}  {}  {}",
                        cell(row.time.get(..19).unwrap_or(row.time), 20),
                        cell(row.user, 28),
                        cell(row.verb, 8),
                        cell(&resource, 24),
                        cell(&object(row.namespace, row.name), 36),
                        row.status_code.map_or(String::new(), |c| c.to_string()),
                        cell(row.source_ips.first().map_or("", String::as_str), 15),
                        row.user_agent.unwrap_or("")
                    )?;
                } else {
                    serde_json::to_writer(&mut self.out, &row)?;
                    self.out.write_all(b"\n")?;
                }
                return Ok(());
            }
        }
        self.also.send(record)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        self.also.flush()
    }
}

/// Rules' marks waiting for the request they were raised on (the timeline's own match of the
/// same event comes right after them): a few thousand at most.
const PENDING_MARKS: usize = 4096;

/// Builds the timeline of the requests the timeline's rule matched, marked with the alerts
/// raised on them; other records are passed to `also` (a report).
pub struct TimelineSink<S> {
    pub story: Story,
    pub cap: usize,
    pending: VecDeque<(String, String)>,
    pub also: S,
}

impl<S> TimelineSink<S> {
    pub fn new(cap: usize, also: S) -> Self {
        TimelineSink {
            story: Story::default(),
            cap,
            pending: VecDeque::new(),
            also,
        }
    }
}

impl<S: AlertSink> AlertSink for TimelineSink<S> {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        if let Record::Alert(a) = record {
            if a.rule.id == RULE_ID {
                let audit_id = a.evidence.audit_ids.first().cloned().unwrap_or_default();
                let marks: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|(id, _)| *id == audit_id)
                    .map(|(_, rule)| rule.clone())
                    .collect();
                self.pending.retain(|(id, _)| *id != audit_id);
                self.story.alert_request(a, marks, self.cap);
                return Ok(());
            }
            // A later report of an episode is not a new mark. An alert marks its requests
            // already in the timeline; those yet to come (the one that tipped a threshold is
            // matched right after the alert) wait for it.
            let opening = a.status.is_none_or(|s| s == crate::alert::Status::Open);
            if opening {
                for id in self.story.mark(&a.evidence.audit_ids, &a.rule.id) {
                    if self.pending.len() == PENDING_MARKS {
                        self.pending.pop_front();
                    }
                    self.pending.push_back((id.clone(), a.rule.id.clone()));
                }
            }
        }
        self.also.send(record)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.also.flush()
    }
}

/// Prints a timeline: a table (with the blast radius after it) or JSON lines of its steps.
pub fn print_timeline(out: &mut dyn Write, story: &Story, table: bool) -> std::io::Result<()> {
    let timeline = story.timeline();
    if !table {
        for step in &timeline.steps {
            serde_json::to_writer(&mut *out, step)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<20}  {:>5}  {:<8} {:<24} {:<36} {:>4}  {:<15}  {:<24}  ALERTS",
        "TIME", "COUNT", "VERB", "RESOURCE", "NAMESPACE/NAME", "CODE", "SOURCE", "AGENT"
    )?;
    for s in &timeline.steps {
        writeln!(
            out,
            "{}  {:>5}  {} {} {} {:>4}  {}  {}  {}",
            cell(s.time.get(..19).unwrap_or(&s.time), 20),
            s.count,
            cell(&s.verb, 8),
            cell(&s.resource, 24),
            cell(&object(&s.namespace, &s.name), 36),
            s.status_code.map_or(String::new(), |c| c.to_string()),
            cell(&s.source_ip, 15),
            cell(&s.user_agent, 24),
            s.alerts.join(", ")
        )?;
    }
    let shown: u64 = timeline.steps.iter().map(|s| s.count).sum();
    if timeline.total > shown {
        writeln!(out, "… and {} more requests", timeline.total - shown)?;
    }
    let b = story.blast_radius();
    writeln!(out)?;
    for (what, list) in [
        ("Secrets read", &b.secrets_read),
        ("sessions into pods", &b.sessions),
        ("created", &b.created),
        ("changed", &b.changed),
        ("deleted", &b.deleted),
        ("namespaces", &b.namespaces),
        ("source addresses", &b.source_ips),
        ("clients", &b.user_agents),
        ("credentials", &b.credentials),
    ] {
        if list.total == 0 {
            continue;
        }
        let more = list.total.saturating_sub(list.items.len() as u64);
        let more = if more > 0 {
            format!(" … and {more} more")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{what} ({}): {}{more}",
            list.total,
            list.items.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Y {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn one_line_conditions_become_the_rule_language() {
        assert_eq!(
            parse_where("user.username=mallory@corp and objectRef.resource=secrets").unwrap(),
            yaml("{all: [{user.username: mallory@corp}, {objectRef.resource: secrets}]}")
        );
        assert_eq!(
            parse_where("verb in (get, list) or not responseStatus.code<400").unwrap(),
            yaml("{any: [{verb: [get, list]}, {not: {responseStatus.code: {lt: 400}}}]}")
        );
        assert_eq!(
            parse_where("(userAgent~'curl/*' or userAgent=~^python) and objectRef.namespace!=$system_namespaces")
                .unwrap(),
            yaml("{all: [{any: [{userAgent: {glob: 'curl/*'}}, {userAgent: {regex: ^python}}]}, {not: {objectRef.namespace: $system_namespaces}}]}")
        );
        assert_eq!(
            parse_where("requestObject.spec exists and macro:control_plane").unwrap(),
            yaml("{all: [{requestObject.spec: {exists: true}}, {macro: control_plane}]}")
        );
        assert_eq!(
            parse_where(r#"user.extra."authentication.kubernetes.io/credential-id"='JTI=1'"#)
                .unwrap(),
            yaml(r#"{'user.extra."authentication.kubernetes.io/credential-id"': JTI=1}"#)
        );
        assert_eq!(
            parse_where("{verb: delete}").unwrap(),
            yaml("{verb: delete}")
        );
        for bad in [
            "verb",
            "verb =",
            "(verb=get",
            "verb=get and",
            "verb in get",
            "verb=get)",
        ] {
            assert!(parse_where(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_condition_is_pointed_at_in_words() {
        let e = parse_where("verb==get").unwrap_err();
        assert_eq!(
            e,
            "--where: expected a value, found the operator `=` (quote a value that holds one: 'a=b')\n  verb==get\n       ^"
        );
        let e = parse_where("verb=get or or verb=list").unwrap_err();
        assert!(e.contains("found the keyword `or`"), "{e}");
        assert!(e.ends_with("\n              ^"), "{e}");
        let e = parse_where("verb=get extra").unwrap_err();
        assert!(
            e.starts_with("--where: `extra` after a whole condition"),
            "{e}"
        );
        let e = rules_with(
            &[PathBuf::from("detectors")],
            parse_where("objectRef.resourc=secrets").unwrap(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("--where: objectRef.resourc: unknown field"),
            "{e}"
        );
        assert!(e.contains("did you mean \"objectRef.resource\"?"), "{e}");
    }

    #[test]
    fn a_hunt_rule_sees_the_library_s_lists_and_macros() {
        let cond =
            parse_where("objectRef.namespace=$system_namespaces and not macro:control_plane")
                .unwrap();
        let set = rules_with(&[PathBuf::from("builtin")], cond).unwrap();
        assert!(set.get(RULE_ID).is_some());
        let only = set.retain(|r| r.id == RULE_ID);
        assert_eq!(only.rules.len(), 1);
        assert!(rules_with(
            &[PathBuf::from("builtin")],
            parse_where("user.nope=1").unwrap()
        )
        .is_err());
    }

    /// Found by the `condition` fuzz target: a YAML condition whose key is no string (an
    /// anchor with no value, a list) panicked in `json!` instead of being refused.
    #[test]
    fn a_condition_with_a_key_that_is_no_string_is_refused_not_a_panic() {
        for text in [
            "[{verb: get}, {&ourceIPs: {cidr: 10.0.0.0/8}}]",
            "{[a]: b}",
            "{~: x}",
        ] {
            let cond = parse_where(text).unwrap();
            assert!(rules_with(&[], cond).is_err(), "{text}");
        }
        // A number is a key YAML and JSON share: the field `1`, which does not exist.
        assert!(rules_with(&[], parse_where("{1: x}").unwrap()).is_err());
    }
}
