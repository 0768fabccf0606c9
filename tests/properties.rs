//! Property tests (proptest): what must hold for every input, not only for the examples the
//! other tests pick. The decoder never panics and accounts for every record; a replay counts
//! every line of a file as events or as a rejection with that line's number; an event keeps
//! its fields through serialisation and through every envelope; a stream cut anywhere gives
//! the same records; the `--where` parser never panics and reads what its printer writes; the
//! condition compiler refuses what it cannot compile without a panic, and `explain` agrees
//! with `eval`; durations and times print back to themselves; revocation and IP lists never
//! panic and read what they write. The fuzz targets (fuzz/) search the same ground for far
//! longer.
//!
//! Kept fast: each property runs a few dozen to a few hundred cases (the whole file takes a
//! few seconds in a debug build; PROPTEST_CASES=N runs N cases of each). A failure prints the
//! smallest input proptest found: add it to the unit tests beside the code that failed.

use audithound::engine::{self, EngineOptions, Files};
use audithound::event::time::{
    format_micros, human_duration, parse_duration, parse_rfc3339_micros,
};
use audithound::event::{decode_record, AuditEvent, DecodeOptions, EventView, Item};
use audithound::hunt::parse_where;
use audithound::reputation::{parse_net, IpList};
use audithound::revocation::{Revocation, RevocationList};
use audithound::rules::condition::{Cond, Scope};
use audithound::rules::RuleSet;
use audithound::sink::Collect;
use audithound::source::lines::{LineReader, Next};
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::json;
use serde_yaml::Value as Y;
use std::collections::BTreeMap;
use std::io::{BufReader, Cursor};
use std::net::IpAddr;
use std::sync::Arc;

/// `cases` for a property, or PROPTEST_CASES for all of them when set (to search longer:
/// `PROPTEST_CASES=5000 cargo test --release --test properties`).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The items the decoder gives for one record: events (their audit IDs) and rejections or
/// skips (their reasons).
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    events: Vec<String>,
    rejected: Vec<&'static str>,
    skipped: Vec<&'static str>,
}

fn decode(bytes: &[u8], opts: &DecodeOptions) -> Outcome {
    let mut out = Outcome::default();
    decode_record(bytes, opts, "prop", &mut |item| match item {
        Item::Event(ev, _) => out
            .events
            .push(ev.audit_id.as_deref().unwrap_or("").to_owned()),
        Item::Rejected(e) => out.rejected.push(e.reason()),
        Item::Skipped(what) => out.skipped.push(what),
    });
    out
}

/// Whether a record may decode to nothing: blank, or a batch with no items.
fn may_be_empty(bytes: &[u8]) -> bool {
    let trimmed = bytes.trim_ascii();
    trimmed.is_empty()
        || matches!(serde_json::from_slice::<serde_json::Value>(trimmed),
            Ok(serde_json::Value::Array(a)) if a.is_empty())
        || matches!(serde_json::from_slice::<serde_json::Value>(trimmed),
            Ok(serde_json::Value::Object(o)) if o.get("items").is_some_and(|i| i.as_array().is_some_and(Vec::is_empty))
                || o.get("records").is_some_and(|i| i.as_array().is_some_and(Vec::is_empty))
                || o.get("logEvents").is_some_and(|i| i.as_array().is_some_and(Vec::is_empty)))
}

const SAMPLE: &str = include_str!("../samples/formats/native.log");

/// A real record with a run of bytes replaced: mostly valid JSON around a damaged spot, which
/// random bytes alone rarely reach.
fn damaged_record() -> impl Strategy<Value = Vec<u8>> {
    let line = SAMPLE.lines().next().unwrap().as_bytes().to_vec();
    let len = line.len();
    (0..len, 0..len, proptest::collection::vec(any::<u8>(), 0..8)).prop_map(move |(a, b, bytes)| {
        let (a, b) = (a.min(b), a.max(b).min(a + 16));
        let mut out = line.clone();
        out.splice(a..b, bytes);
        out
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_decoder_never_panics_and_accounts_for_every_record(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            damaged_record(),
            "[\\[\\]{}\",:0-9a-zA-Z \\\\]{0,80}".prop_map(String::into_bytes),
        ]
    ) {
        for opts in [
            DecodeOptions::default(),
            DecodeOptions { strict: true, ..DecodeOptions::default() },
        ] {
            let out = decode(&bytes, &opts);
            let items = out.events.len() + out.rejected.len() + out.skipped.len();
            prop_assert!(
                items > 0 || may_be_empty(&bytes),
                "{:?} gave no event, no rejection and no skip",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// One line of a file for the replay property: a real event, a damaged one, text, a blank line
/// or a line over the record cap.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let events: Vec<Vec<u8>> = SAMPLE.lines().map(|l| l.as_bytes().to_vec()).collect();
    prop_oneof![
        4 => proptest::sample::select(events),
        3 => damaged_record(),
        2 => "[\\[\\]{}\",:0-9a-z \\\\]{1,40}".prop_map(String::into_bytes),
        1 => "[ \t\r]{0,3}".prop_map(String::into_bytes),
        1 => (MAX_LINE + 1..MAX_LINE + 200).prop_map(|n| vec![b'x'; n]),
    ]
    // A line holds no line break; the file's first line is no lone `{` or `[` (which would make
    // the file one pretty-printed document, a case of its own).
    .prop_map(|mut l| {
        l.retain(|b| *b != b'\n');
        l
    })
}

/// `--max-line-bytes` for the replay property: above every sample line.
const MAX_LINE: usize = 1400;

/// What the decoder says of each line on its own: the events, skips and rejections (with
/// their line numbers) that a replay of the whole file must count.
#[derive(Debug, Default, PartialEq)]
struct Accounts {
    records: u64,
    events: u64,
    skipped: std::collections::BTreeMap<String, u64>,
    /// (line, reason), sorted.
    rejected: Vec<(u64, String)>,
}

fn expected(lines: &[Vec<u8>]) -> Accounts {
    let mut want = Accounts::default();
    for (i, l) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        if l.len() > MAX_LINE {
            want.rejected.push((n, "line_too_long".into()));
            continue;
        }
        if l.trim_ascii().is_empty() {
            continue;
        }
        want.records += 1;
        let out = decode(l, &DecodeOptions::default());
        want.events += out.events.len() as u64;
        for what in out.skipped {
            *want.skipped.entry(what.to_owned()).or_default() += 1;
        }
        want.rejected
            .extend(out.rejected.iter().map(|r| (n, r.to_string())));
    }
    if lines.iter().all(|l| l.trim_ascii().is_empty()) {
        want.rejected.push((0, "empty_file".into()));
    }
    want.rejected.sort();
    want
}

proptest! {
    #![proptest_config(config(48))]

    /// A replay of a file (cut into small batches over two workers) counts every line: each
    /// non-blank line is a record whose events are counted, or a rejection in the dead letters
    /// with its own line number and reason, as the decoder alone says of that line.
    #[test]
    fn a_replay_accounts_for_every_line_with_its_number(
        lines in proptest::collection::vec(line(), 0..24)
            .prop_filter("no document", |ls| ls.first().is_none_or(|l| !matches!(l.trim_ascii(), b"{" | b"["))),
        trailing_newline in any::<bool>(),
        batch_records in 1usize..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut text = lines.join(&b'\n');
        if trailing_newline && !lines.is_empty() {
            text.push(b'\n');
        }
        std::fs::write(&path, &text).unwrap();
        let opts = EngineOptions {
            threads: 2,
            progress: false,
            max_record_bytes: MAX_LINE,
            batch_records,
            ..EngineOptions::default()
        };
        let files = Files::new(vec![path.display().to_string()]);
        let mut dead = Vec::new();
        let stats = engine::replay(&opts, &files, Arc::new(RuleSet::default()), &mut Collect::default(), Some(&mut dead))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rejected: Vec<(u64, String)> = String::from_utf8(dead)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["line"].as_u64().unwrap(), v["reason"].as_str().unwrap().to_owned())
            })
            .collect();
        rejected.sort();
        let got = Accounts {
            records: stats.records,
            events: stats.events,
            skipped: stats.skipped.clone(),
            rejected,
        };
        let want = expected(&lines);
        let counted: u64 = stats.rejected.values().sum();
        prop_assert_eq!(counted, want.rejected.len() as u64, "rejections counted: {:?}", stats.rejected);
        prop_assert_eq!(got, want, "{}", String::from_utf8_lossy(&text));
    }
}

/// The fields of an event the property sets and reads back.
#[derive(Debug, Clone)]
struct Fields {
    audit_id: String,
    verb: String,
    username: String,
    groups: Vec<String>,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    user_agent: Option<String>,
    code: i64,
    time: i64,
    stage: &'static str,
    source_ip: String,
}

fn fields() -> impl Strategy<Value = Fields> {
    // Any text, escapes and non-ASCII included; IDs and names are never empty.
    let text = || "\\PC{1,12}|[a-z:./-]{1,12}";
    (
        (
            text(),
            "[a-z]{1,10}",
            text(),
            proptest::collection::vec(text(), 0..3),
        ),
        (
            proptest::option::of(text()),
            "[a-z]{1,12}",
            proptest::option::of(text()),
        ),
        (proptest::option::of(text()), 100i64..600),
        // 1970 to 2100, in microseconds.
        (
            0i64..4_102_444_800_000_000,
            prop_oneof![
                Just("ResponseComplete"),
                Just("ResponseStarted"),
                Just("RequestReceived"),
                Just("Panic")
            ],
        ),
        any::<[u8; 4]>().prop_map(|b| IpAddr::from(b).to_string()),
    )
        .prop_map(
            |(
                (audit_id, verb, username, groups),
                (namespace, resource, name),
                (user_agent, code),
                (time, stage),
                source_ip,
            )| Fields {
                audit_id,
                verb,
                username,
                groups,
                namespace,
                resource,
                name,
                user_agent,
                code,
                time,
                stage,
                source_ip,
            },
        )
}

fn event_json(f: &Fields) -> serde_json::Value {
    let mut object_ref = json!({"resource": f.resource, "apiVersion": "v1"});
    if let Some(ns) = &f.namespace {
        object_ref["namespace"] = json!(ns);
    }
    if let Some(name) = &f.name {
        object_ref["name"] = json!(name);
    }
    let mut ev = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f.audit_id,
        "stage": f.stage,
        "requestURI": "/api/v1/x",
        "verb": f.verb,
        "user": {"username": f.username, "groups": f.groups},
        "sourceIPs": [f.source_ip],
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": f.code},
        "requestReceivedTimestamp": format_micros(f.time),
        "stageTimestamp": format_micros(f.time),
    });
    if let Some(ua) = &f.user_agent {
        ev["userAgent"] = json!(ua);
    }
    ev
}

/// The same event in each envelope the decoder unwraps.
fn envelopes(ev: &serde_json::Value) -> Vec<(&'static str, String)> {
    let text = ev.to_string();
    vec![
        ("native", text.clone()),
        ("eventlist", json!({"kind": "EventList", "items": [ev]}).to_string()),
        ("array", json!([ev]).to_string()),
        ("aks", json!({
            "category": "kube-audit",
            "resourceId": "/SUBSCRIPTIONS/S/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/PROP",
            "properties": {"log": text},
        }).to_string()),
        ("aks-records", json!({"records": [{"category": "kube-audit", "properties": {"log": ev}}]}).to_string()),
        ("cloudwatch", json!({
            "messageType": "DATA_MESSAGE",
            "logGroup": "/aws/eks/prop/cluster",
            "logStream": "kube-apiserver-audit-1",
            "logEvents": [{"id": "1", "timestamp": 1, "message": text}],
        }).to_string()),
        ("cloudwatch-shipped", json!({"timestamp": 1, "message": ev}).to_string()),
        ("eks-s3", format!("2025-03-04T09:00:00.014213Z {text}")),
        ("elastic", json!({"@timestamp": "2025-03-04T09:00:00Z", "kubernetes": {"audit": ev}}).to_string()),
    ]
}

fn check_fields(ev: &AuditEvent, f: &Fields) -> Result<(), String> {
    let s = |v: &Option<audithound::event::JStr>| v.as_deref().map(str::to_owned);
    let groups: Option<Vec<String>> = ev
        .user
        .groups
        .map(|raw| serde_json::from_str(raw.get()).unwrap());
    let ips: Vec<String> = ev
        .source_ips
        .map(|raw| serde_json::from_str(raw.get()).unwrap())
        .unwrap_or_default();
    let object_ref = ev.object_ref.as_ref().ok_or("no objectRef")?;
    let got = (
        s(&ev.audit_id),
        s(&ev.verb),
        s(&ev.user.username),
        groups,
        s(&object_ref.namespace),
        s(&object_ref.resource),
        s(&object_ref.name),
        s(&ev.user_agent),
        ev.response_status.as_ref().and_then(|r| r.code),
        ev.event_time(),
        s(&ev.stage),
        ips,
    );
    let want = (
        Some(f.audit_id.clone()),
        Some(f.verb.clone()),
        Some(f.username.clone()),
        Some(f.groups.clone()),
        f.namespace.clone(),
        Some(f.resource.clone()),
        f.name.clone(),
        f.user_agent.clone(),
        Some(f.code),
        Some(f.time),
        Some(f.stage.to_owned()),
        vec![f.source_ip.clone()],
    );
    if got == want {
        Ok(())
    } else {
        Err(format!("decoded {got:?}, wrote {want:?}"))
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn an_event_keeps_its_fields_in_every_envelope(f in fields()) {
        let ev = event_json(&f);
        for (envelope, record) in envelopes(&ev) {
            let mut seen = 0;
            let mut problems = Vec::new();
            decode_record(record.as_bytes(), &DecodeOptions::default(), "prop", &mut |item| match item {
                Item::Event(ev, _) => {
                    seen += 1;
                    if let Err(e) = check_fields(ev, &f) {
                        problems.push(e);
                    }
                }
                Item::Rejected(e) => problems.push(format!("rejected: {e}")),
                Item::Skipped(what) => problems.push(format!("skipped: {what}")),
            });
            prop_assert!(problems.is_empty() && seen == 1, "{envelope}: {seen} events, {problems:?}\n{record}");
        }
    }

    #[test]
    fn a_decoded_event_serialised_decodes_to_the_same_fields(f in fields()) {
        let record = event_json(&f).to_string();
        let mut again = None;
        decode_record(record.as_bytes(), &DecodeOptions::default(), "prop", &mut |item| {
            if let Item::Event(ev, _) = item {
                again = Some(serde_json::to_string(ev).unwrap());
            }
        });
        let again = again.expect("the event decodes");
        let mut checked = false;
        decode_record(again.as_bytes(), &DecodeOptions::default(), "prop", &mut |item| {
            if let Item::Event(ev, _) = item {
                checked = true;
                assert_eq!(check_fields(ev, &f), Ok(()), "{again}");
            }
        });
        prop_assert!(checked, "the re-serialised event did not decode: {again}");
    }
}

/// What a `LineReader` gives for a stream: records with their line and offset, and the
/// lengths of the lines over the cap.
fn read_records(reader: Box<dyn std::io::BufRead + Send>, max: usize) -> Vec<(Vec<u8>, u64, u64)> {
    let mut lines = LineReader::new(reader, max);
    let mut out = Vec::new();
    loop {
        match lines.next_record() {
            Next::Record => out.push((lines.record().to_vec(), lines.line(), lines.offset())),
            Next::TooLong { len } => out.push((Vec::new(), lines.line(), len)),
            Next::Failed(e) => panic!("{e}"),
            Next::Eof => return out,
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// However the stream arrives (reads of any size, so that a line is split anywhere), the
    /// reader gives the same records, lines and offsets; and they are the stream's lines.
    #[test]
    fn a_stream_split_anywhere_gives_the_same_records(
        lines in proptest::collection::vec("[ a-z{}\\[\\]\"\r]{0,30}", 0..12),
        read in 1usize..40,
        max in 1usize..40,
    ) {
        let stream = lines.join("\n").into_bytes();
        let whole = read_records(Box::new(Cursor::new(stream.clone())), max);
        let split = read_records(Box::new(BufReader::with_capacity(read, Cursor::new(stream.clone()))), max);
        prop_assert_eq!(&whole, &split);
        // A lone `{` or `[` on the first line opens one document, unless that line is over the
        // cap; a bracket on any later line is a record of its own.
        let document = lines
            .first()
            .is_some_and(|l| matches!(l.trim(), "{" | "[") && l.len() <= max);
        if document {
            prop_assert_eq!(whole.len(), 1, "a document is one record: {:?}", whole);
        } else {
            let want: Vec<&[u8]> = lines
                .iter()
                .map(|l| l.as_bytes())
                .filter(|l| !l.trim_ascii().is_empty() && l.len() <= max)
                .collect();
            let got: Vec<&[u8]> = whole.iter().filter(|r| !r.0.is_empty()).map(|r| &r.0[..]).collect();
            prop_assert_eq!(got, want);
        }
    }
}

/// A `--where` condition as a tree, to print as one line and as YAML.
#[derive(Debug, Clone)]
enum Expr {
    Cmp(String, &'static str, String),
    In(String, Vec<String>),
    Exists(String),
    Macro(String),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

fn expr() -> impl Strategy<Value = Expr> {
    let field = "(verb|user\\.username|objectRef\\.(resource|namespace)|responseStatus\\.code|requestObject\\.spec\\.[a-z]{1,5})";
    // Values: bare words, numbers and text that needs quotes (spaces, operators, keywords).
    let value = "[a-z][a-z0-9:/.-]{0,8}|[0-9]{1,5}|[a-z ()=<>!~,]{1,10}|and|or|not|in|exists";
    let op = prop_oneof![
        Just("="),
        Just("!="),
        Just("~"),
        Just("=~"),
        Just(">"),
        Just(">="),
        Just("<"),
        Just("<=")
    ];
    let leaf = prop_oneof![
        (field, op, value).prop_map(|(f, o, v)| Expr::Cmp(f, o, v)),
        (field, proptest::collection::vec(value, 1..4)).prop_map(|(f, v)| Expr::In(f, v)),
        field.prop_map(Expr::Exists),
        "[a-z_]{1,10}".prop_map(Expr::Macro),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            proptest::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

/// A value as the one-line syntax writes it: bare when it reads back as itself, else quoted.
fn print_value(v: &str) -> String {
    let bare = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/.-".contains(c))
        && !matches!(v, "and" | "or" | "not" | "in" | "exists" | "true" | "false");
    if bare {
        v.to_owned()
    } else {
        format!("'{v}'")
    }
}

fn print(e: &Expr) -> String {
    match e {
        Expr::Cmp(f, op, v) => format!("{f}{op}{}", print_value(v)),
        Expr::In(f, vs) => format!(
            "{f} in ({})",
            vs.iter()
                .map(|v| print_value(v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Expr::Exists(f) => format!("{f} exists"),
        Expr::Macro(m) => format!("macro:{m}"),
        Expr::Not(e) => format!("not ({})", print(e)),
        Expr::And(es) => es
            .iter()
            .map(|e| format!("({})", print(e)))
            .collect::<Vec<_>>()
            .join(" and "),
        Expr::Or(es) => es
            .iter()
            .map(|e| format!("({})", print(e)))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// The rule language's YAML the condition means.
fn yaml(e: &Expr) -> serde_json::Value {
    let scalar = |v: &str| match v.parse::<i64>() {
        Ok(n) if print_value(v) == v => json!(n),
        _ => json!(v),
    };
    match e {
        Expr::Cmp(f, op, v) => {
            let v = scalar(v);
            match *op {
                "=" => json!({ f.as_str(): v }),
                "!=" => json!({"not": { f.as_str(): v }}),
                op => {
                    let key = match op {
                        "~" => "glob",
                        "=~" => "regex",
                        ">" => "gt",
                        ">=" => "gte",
                        "<" => "lt",
                        _ => "lte",
                    };
                    json!({ f.as_str(): { key: v } })
                }
            }
        }
        Expr::In(f, vs) => json!({ f.as_str(): vs.iter().map(|v| scalar(v)).collect::<Vec<_>>() }),
        Expr::Exists(f) => json!({ f.as_str(): {"exists": true} }),
        Expr::Macro(m) => json!({"macro": m}),
        Expr::Not(e) => json!({"not": yaml(e)}),
        Expr::And(es) => json!({"all": es.iter().map(yaml).collect::<Vec<_>>()}),
        Expr::Or(es) => json!({"any": es.iter().map(yaml).collect::<Vec<_>>()}),
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_where_parser_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[a-z.() ='\"!<>~,{}\\[\\]:$-]{0,40}",
            proptest::collection::vec(
                prop_oneof![Just("and"), Just("or"), Just("not"), Just("in"), Just("exists"), Just("("), Just(")"), Just(","), Just("="), Just("=~"), Just("'"), Just("\""), Just("verb"), Just("macro:x"), Just("a.\"b.c\""), Just(" ")],
                0..16,
            ).prop_map(|t| t.concat()),
        ]
    ) {
        let _ = parse_where(&text);
    }

    /// What the one-line printer writes parses back to the condition it printed, and that
    /// condition's YAML flow form (what `--where '{…}'` takes) parses to the same.
    #[test]
    fn a_printed_condition_parses_back_to_itself(e in expr()) {
        let line = print(&e);
        let parsed = parse_where(&line).map_err(|err| TestCaseError::fail(format!("{line}: {err}")))?;
        let want: serde_yaml::Value = serde_yaml::to_value(yaml(&e)).unwrap();
        prop_assert_eq!(&parsed, &want, "{}", line);
        let flow = serde_json::to_string(&parsed).unwrap();
        prop_assert_eq!(&parse_where(&flow).unwrap(), &parsed, "{}", flow);
    }
}

/// A condition in the rule language, as YAML, built from the language's own words (`all`,
/// `any`, `not`, `macro`, fields, operators, `$lists`) and from anything else: what the
/// compiler must refuse without a panic, or compile to something `eval` and `explain` agree
/// on.
fn condition_yaml() -> impl Strategy<Value = Y> {
    let key = prop_oneof![
        Just("all"),
        Just("any"),
        Just("not"),
        Just("macro"),
        Just("verb"),
        Just("user.username"),
        Just("user.groups"),
        Just("objectRef.namespace"),
        Just("responseStatus.code"),
        Just("sourceIPs"),
        Just("requestObject.spec.containers[*].securityContext.privileged"),
        Just("annotations.\"authorization.k8s.io/decision\""),
        Just("user.extra.\"a.b\""),
        Just("equals"),
        Just("in"),
        Just("glob"),
        Just("prefix"),
        Just("suffix"),
        Just("contains"),
        Just("regex"),
        Just("cidr"),
        Just("gt"),
        Just("gte"),
        Just("lt"),
        Just("lte"),
        Just("exists"),
        Just("same_as"),
        Just("icase"),
    ]
    .prop_map(Y::from)
    .boxed();
    let key = prop_oneof![
        8 => key,
        1 => "[a-z.\\[\\]*\"]{0,12}".prop_map(Y::from),
        1 => Just(Y::Null),
        1 => any::<i8>().prop_map(|n| Y::from(i64::from(n))),
    ];
    let leaf = prop_oneof![
        prop_oneof![
            Just("get"),
            Just("kube-system"),
            Just("$system_namespaces"),
            Just("$nope"),
            Just("control_plane"),
            Just("loop"),
            Just("10.0.0.0/8"),
            Just("2001:db8::/32"),
            Just("system:*"),
            Just("^(get|list)$"),
            Just("(["),
            Just("*"),
            Just("user.username"),
            Just("true"),
            Just("2025-03-04T09:00:00Z"),
        ]
        .prop_map(Y::from),
        "\\PC{0,8}".prop_map(Y::from),
        any::<bool>().prop_map(Y::from),
        any::<i64>().prop_map(Y::from),
        any::<f64>().prop_map(Y::from),
        Just(Y::Null),
    ];
    leaf.prop_recursive(5, 40, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Y::Sequence),
            proptest::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|kv| Y::Mapping(kv.into_iter().collect())),
        ]
    })
}

/// The events conditions are evaluated on: the native samples and a few attacks.
const EVAL_SAMPLES: &[&str] = &[
    SAMPLE,
    include_str!("../samples/attacks/privileged-pod.log"),
    include_str!("../samples/attacks/exec-system-pod.log"),
    include_str!("../samples/attacks/cluster-admin-binding.log"),
];

proptest! {
    #![proptest_config(config(256))]

    /// The condition compiler refuses what it cannot compile (unknown operators and macros, bad
    /// regexes and CIDRs, keys that are no strings, a macro that includes itself) with an error,
    /// never a panic; what compiles evaluates without one, and `explain` (what `rules explain`
    /// prints) reaches the same verdict as `eval` on every sample event.
    #[test]
    fn a_condition_compiles_or_is_refused_and_explain_agrees_with_eval(y in condition_yaml()) {
        let lists = BTreeMap::from([(
            "system_namespaces".to_string(),
            vec!["kube-system".to_string(), "kube-public".to_string()],
        )]);
        let macros = BTreeMap::from([
            ("control_plane".to_string(), serde_yaml::from_str("{user.username: {prefix: 'system:'}}").unwrap()),
            ("loop".to_string(), serde_yaml::from_str("{any: [{verb: get}, {macro: loop}]}").unwrap()),
        ]);
        let scope = Scope { lists: &lists, macros: &macros };
        let Ok(cond) = Cond::compile(&y, &scope, "prop") else {
            return Ok(());
        };
        let _ = (cond.cost(), cond.required_values("verb"));
        for text in EVAL_SAMPLES {
            for line in text.lines() {
                let mut verdicts = None;
                decode_record(line.as_bytes(), &DecodeOptions::default(), "prop", &mut |item| {
                    if let Item::Event(ev, _) = item {
                        let view = EventView::new(ev, ev.event_time().unwrap_or(0));
                        let mut why = String::new();
                        verdicts = Some((cond.eval(&view), cond.explain(&view, 0, &mut why), why));
                    }
                });
                let (eval, explain, why) = verdicts.expect("a sample event decodes");
                prop_assert_eq!(eval, explain, "{:?}\n{}", y, why);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn durations_print_and_parse_back(n in 0i64..100_000_000, unit in prop_oneof![Just(("s", 1i64)), Just(("m", 60)), Just(("h", 3600)), Just(("d", 86_400))]) {
        let micros = parse_duration(&format!("{n}{}", unit.0)).unwrap();
        prop_assert_eq!(micros, n * unit.1 * 1_000_000);
        // `human_duration` says it in the largest whole unit: read back, the same length.
        let human = human_duration(micros);
        let (count, word) = human.split_once(' ').unwrap();
        let per = match word.trim_end_matches('s') {
            "second" => 1,
            "minute" => 60,
            "hour" => 3600,
            "day" => 86_400,
            other => panic!("unit {other:?} in {human:?}"),
        };
        prop_assert_eq!(count.parse::<i64>().unwrap() * per * 1_000_000, micros, "{}", human);
        prop_assert_eq!(word.ends_with('s'), count != "1", "{}", human);
    }

    #[test]
    fn duration_and_time_parsers_never_panic(s in prop_oneof![any::<String>(), "[0-9smhd: .TZ+-]{0,30}"]) {
        if let Ok(d) = parse_duration(&s) {
            prop_assert!(d >= 0);
            let _ = human_duration(d);
        }
        if let Some(t) = parse_rfc3339_micros(&s) {
            prop_assert_eq!(parse_rfc3339_micros(&format_micros(t)), Some(t), "{}", s);
        }
    }

    #[test]
    fn times_print_and_parse_back(t in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
        let printed = format_micros(t);
        prop_assert_eq!(parse_rfc3339_micros(&printed), Some(t), "{}", printed);
    }
}

fn revocation() -> impl Strategy<Value = Revocation> {
    // No leading or trailing blanks (CSV cells are trimmed), no line breaks.
    let cell =
        || proptest::option::of("[a-zA-Z0-9@:=.]([a-zA-Z0-9@:=,\"'.# -]{0,10}[a-zA-Z0-9@:=.])?");
    (
        cell(),
        cell(),
        cell(),
        cell(),
        0i64..4_102_444_800,
        "[a-z ,\"]{0,12}",
    )
        .prop_filter("a selector", |(u, i, g, c, ..)| {
            u.is_some() || i.is_some() || g.is_some() || c.is_some()
        })
        .prop_map(
            |(username, uid, group, credential_id, secs, reason)| Revocation {
                username,
                uid,
                group,
                credential_id,
                revoked_at: format_micros(secs * 1_000_000),
                reason: reason.trim().to_owned(),
                revoked_at_micros: secs * 1_000_000,
                ..Revocation::default()
            },
        )
}

fn csv(entries: &[Revocation]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let o = |s: &Option<String>| q(s.as_deref().unwrap_or(""));
    let mut out = String::from("username,uid,group,credential_id,revoked_at,reason,ticket\n");
    for e in entries {
        out += &format!(
            "{},{},{},{},{},{},{}\n",
            o(&e.username),
            o(&e.uid),
            o(&e.group),
            o(&e.credential_id),
            q(&e.revoked_at),
            q(&e.reason),
            q(&e.ticket)
        );
    }
    out
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn revocation_lists_never_panic(text in prop_oneof![
        any::<String>(),
        "[a-z_:,\"\\n -]{0,80}",
        "(username|uid|group|credential_id|revoked_at)(,(username|uid|group|revoked_at|reason|ticket)){0,4}\n[a-z0-9:TZ\\-,\"]{0,60}",
    ], origin in prop_oneof![Just("r.yaml"), Just("r.json"), Just("r.csv")]) {
        let _ = RevocationList::parse(&text, origin);
    }

    /// A list written as JSON, YAML or CSV reads back as the same entries.
    #[test]
    fn revocation_lists_read_what_they_write(entries in proptest::collection::vec(revocation(), 0..5)) {
        for (origin, text) in [
            ("r.json", serde_json::to_string(&entries).unwrap()),
            ("r.yaml", serde_yaml::to_string(&entries).unwrap()),
            ("r.csv", csv(&entries)),
        ] {
            let list = RevocationList::parse(&text, origin).map_err(|e| TestCaseError::fail(format!("{origin}: {e}\n{text}")))?;
            let got: Vec<Revocation> = list.entries.iter().map(|e| (**e).clone()).collect();
            // CSV reads an empty cell as no selector.
            let want: Vec<Revocation> = entries
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if origin == "r.csv" {
                        for s in [&mut e.username, &mut e.uid, &mut e.group, &mut e.credential_id] {
                            if s.as_deref() == Some("") {
                                *s = None;
                            }
                        }
                    }
                    e
                })
                .collect();
            prop_assert_eq!(got, want, "{}\n{}", origin, text);
        }
    }

    /// An IP list holds exactly the addresses its networks hold, in one address space where
    /// IPv4 is IPv4-mapped IPv6 (`::ffff:0:0/96`, and so `::/0`, hold every IPv4 address), and
    /// an IPv4 address is looked up as its mapped form is.
    #[test]
    fn ip_lists_hold_what_their_networks_hold(
        nets in proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32), 0..8),
        nets6 in proptest::collection::vec((any::<[u8; 16]>(), 0u8..=128), 0..4),
        probes in proptest::collection::vec(any::<[u8; 4]>(), 1..16),
        probes6 in proptest::collection::vec(any::<[u8; 16]>(), 1..8),
    ) {
        let nets: Vec<IpNet> = nets
            .iter()
            .map(|(a, len)| IpNet::new(IpAddr::from(*a), *len).unwrap().trunc())
            .chain(nets6.iter().map(|(a, len)| IpNet::new(IpAddr::from(*a), *len).unwrap().trunc()))
            .collect();
        let text: String = nets.iter().map(|n| format!("{n}\n")).collect();
        let list = IpList::parse(&text, "list.txt").unwrap();
        prop_assert_eq!(list.len(), nets.len());
        for n in &nets {
            prop_assert_eq!(parse_net(&n.to_string()), Some(*n));
            prop_assert!(list.contains(n.network()) && list.contains(n.broadcast()), "{}", n);
        }
        let holds = |ip: IpAddr| {
            let mapped = match ip {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            };
            nets.iter().any(|n| n.contains(&ip) || n.contains(&mapped))
        };
        for p in probes {
            let ip = IpAddr::from(p);
            prop_assert_eq!(list.contains(ip), holds(ip), "{} in {:?}", ip, nets);
            let IpAddr::V4(v4) = ip else { unreachable!() };
            prop_assert_eq!(list.contains(IpAddr::V6(v4.to_ipv6_mapped())), list.contains(ip), "{}", ip);
        }
        for p in probes6 {
            let ip = IpAddr::from(p);
            prop_assert_eq!(list.contains(ip), holds(ip), "{} in {:?}", ip, nets);
        }
    }
}
