//! Record → events: detects the envelope of one input record and hands each audit event in it
//! to a callback, or says precisely why it could not.
//!
//! Callback style keeps the borrowed events valid: an event may borrow from the record itself or
//! from a buffer this module owns (a JSON-encoded `properties.log` string, a mapped GKE entry).
//! `decode_record_with` hands over by value the events that borrow only from the record and
//! from an arena the caller keeps (native lines, EventList items, AKS and CloudWatch events), so
//! that it can hold several before working on them; ACK and GKE mappings still go by reference.
//! The provider envelopes themselves are unwrapped in `providers`.

use super::providers::{self, Encoded};
use super::{raw_entry, AuditEvent, JStr};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The shape a record arrived in (counted in the summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// One `audit.k8s.io` Event per record (the log backend), v1 or v1beta1.
    Native,
    /// An `EventList` or a JSON array of events (the webhook backend's batches).
    EventList,
    /// Alibaba Cloud ACK via SLS: flat records whose nested objects are JSON-encoded strings.
    Ack,
    /// Amazon EKS via CloudWatch Logs: subscription batches, exports, timestamp-prefixed S3 lines.
    Eks,
    /// Google Cloud Audit Logs `LogEntry` with a `protoPayload`.
    Gke,
    /// Azure diagnostic settings / Event Hub export (`properties.log`).
    Aks,
}

impl Format {
    /// The managed Kubernetes service a format comes from, when it says: `aks`, `gke`, `eks`,
    /// `ack` (the `provider` field of rules). None for the API server's own formats.
    pub fn provider(self) -> Option<&'static str> {
        match self {
            Format::Native | Format::EventList => None,
            Format::Ack => Some("ack"),
            Format::Eks => Some("eks"),
            Format::Gke => Some("gke"),
            Format::Aks => Some("aks"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::EventList => "eventlist",
            Format::Ack => "ack",
            Format::Eks => "eks",
            Format::Gke => "gke",
            Format::Aks => "aks",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Read only what the API server wrote (`--strict`): no derived audit IDs, assumed stages,
    /// times borrowed from an export or envelope, or renamed keys; such records are rejected or
    /// skipped as they always were. Off: each repair is made and counted (`Repair`).
    pub strict: bool,
    /// Accept only this format (`--input-format`); other records are rejected as
    /// `format_mismatch` instead of being auto-detected. None: auto-detect every record.
    pub expect: Option<Format>,
    /// Top-level key of flat (ACK) records that names the cluster.
    pub cluster_field: Option<String>,
}

/// Something the decoder filled in or renamed because an export dropped or renamed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// No `auditID`: `derived-` and a hash of the event's text, so alerts show it is not the
    /// API server's and the same record read twice gets the same one.
    DerivedAuditId,
    /// No `stage`: exports keep one stage per request, the complete one.
    MissingStage,
    /// No time of its own: taken from a field the export added beside the event.
    ExportTimestamp,
    /// No time of its own: taken from the envelope it came in (AKS record, CloudWatch event,
    /// Elastic document).
    EnvelopeTimestamp,
    /// Keys renamed by the export mapped back (Defender's capitalised keys, BigQuery's payload
    /// column, Elastic's underscored annotation keys).
    RenamedKeys,
}

impl Repair {
    pub const ALL: [Repair; 5] = [
        Repair::DerivedAuditId,
        Repair::MissingStage,
        Repair::ExportTimestamp,
        Repair::EnvelopeTimestamp,
        Repair::RenamedKeys,
    ];

    /// Stable key used in the summary and on /metrics.
    pub fn name(self) -> &'static str {
        match self {
            Repair::DerivedAuditId => "derived_audit_id",
            Repair::MissingStage => "missing_stage",
            Repair::ExportTimestamp => "export_timestamp",
            Repair::EnvelopeTimestamp => "envelope_timestamp",
            Repair::RenamedKeys => "renamed_keys",
        }
    }
}

/// The repairs made to one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs(u8);

impl Repairs {
    pub fn add(&mut self, r: Repair) {
        self.0 |= 1 << r as u8;
    }

    pub fn contains(self, r: Repair) -> bool {
        self.0 & (1 << r as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Repair> {
        Repair::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

/// Why a record (or one item of a batch) was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    InvalidUtf8,
    /// The JSON ended early: a line cut by rotation or a crash.
    Truncated(String),
    InvalidJson(String),
    /// Valid JSON, but a field has the wrong type (e.g. `"user": 7`).
    WrongType(String),
    /// Valid JSON that is not an audit event (no `auditID`, unknown `kind`, unknown envelope).
    NotAuditEvent(String),
    /// An audit event without a usable timestamp: it cannot be placed in event time.
    BadTimestamp(String),
    /// The shipper cut the event (CloudWatch's `[Truncated...]` marker): known loss upstream.
    TruncatedUpstream(String),
    /// `--input-format` names one format and the record is another.
    FormatMismatch(String),
}

impl DecodeError {
    /// Stable reason key used in counters, summaries and the dead-letter output.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::Truncated(_) => "truncated_json",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::WrongType(_) => "wrong_type",
            DecodeError::NotAuditEvent(_) => "not_audit_event",
            DecodeError::BadTimestamp(_) => "bad_timestamp",
            DecodeError::TruncatedUpstream(_) => "truncated_upstream",
            DecodeError::FormatMismatch(_) => "format_mismatch",
        }
    }

    pub(super) fn from_json(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let m = readable(e);
        match e.classify() {
            Category::Eof => DecodeError::Truncated(m),
            Category::Data => DecodeError::WrongType(m),
            Category::Syntax | Category::Io => DecodeError::InvalidJson(m),
        }
    }
}

/// serde_json's message in the input's terms: `expected an object`, not `expected struct
/// UserInfo` (a type of ours), and the place within the record (`at column 571`), not `at
/// line 1` of a record whose file line is given beside it.
fn readable(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let what = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(what, _)| what);
    let what = match what.split_once("expected struct ") {
        Some((before, _)) => format!("{before}expected an object"),
        None => what.to_owned(),
    };
    match (e.line(), e.column()) {
        (0, _) => what,
        (1, column) => format!("{what} at column {column} of the record"),
        (line, column) => format!("{what} at line {line}, column {column} of the record"),
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidUtf8 => f.write_str("record is not valid UTF-8"),
            DecodeError::Truncated(m)
            | DecodeError::InvalidJson(m)
            | DecodeError::WrongType(m)
            | DecodeError::NotAuditEvent(m)
            | DecodeError::BadTimestamp(m)
            | DecodeError::TruncatedUpstream(m)
            | DecodeError::FormatMismatch(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DecodeError {}

/// What the decoder found in a record.
pub enum Item<'e, 'a> {
    Event(&'e AuditEvent<'a>, Format),
    Rejected(DecodeError),
    /// A well-formed record that is deliberately not analysed (e.g. an AKS `kube-apiserver`
    /// log line beside the audit categories); the string says what it was.
    Skipped(&'static str),
}

/// Text the decoder makes out of a record (an unescaped `properties.log` or CloudWatch
/// message, a cluster name), kept as long as the events that borrow it.
pub type Arena = typed_arena::Arena<String>;

/// Decoding state handed down through nested envelopes.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'o> {
    pub opts: &'o DecodeOptions,
    /// Cluster for events whose envelope names none.
    pub cluster: &'o str,
    pub arena: &'o Arena,
    /// The time of the envelope the event came in, for an event without one of its own.
    pub envelope_time: Option<i64>,
    /// The event came in an Elastic document: its annotation keys have `_` for `.`.
    pub elastic: bool,
}

impl<'o> Ctx<'o> {
    /// `text`, kept in the arena unless it is borrowed for as long already.
    pub fn keep(&self, text: impl Into<Cow<'o, str>>) -> &'o str {
        match text.into() {
            Cow::Borrowed(t) => t,
            Cow::Owned(t) => self.arena.alloc(t).as_str(),
        }
    }
}

pub(super) type Sink<'f> = dyn FnMut(Item<'_, '_>) + 'f;

/// What `decode_record_with` hands over.
// Not boxed: a box would cost an allocation per event, where the move costs one copy.
#[allow(clippy::large_enum_variant)]
pub enum Decoded<'e, 'b, 'a> {
    /// An event that borrows only from the record and the arena (`'a`): it may be kept.
    Owned(AuditEvent<'a>, Format),
    /// Anything else, as `decode_record` gives it.
    Item(Item<'e, 'b>),
}

pub type OwnedSink<'f, 'a> = dyn FnMut(Decoded<'_, '_, 'a>) + 'f;

/// Decodes one record (a line, or a whole JSON document) and calls `f` once per item.
/// `cluster` names the cluster when the record's envelope does not.
pub fn decode_record(bytes: &[u8], opts: &DecodeOptions, cluster: &str, f: &mut Sink) {
    let arena = Arena::new();
    decode_record_with(bytes, opts, cluster, &arena, &mut |d| match d {
        Decoded::Owned(ev, format) => f(Item::Event(&ev, format)),
        Decoded::Item(item) => f(item),
    });
}

/// `decode_record`, handing the events that borrow only from `bytes` and `arena` over by value.
pub fn decode_record_with<'a>(
    bytes: &'a [u8],
    opts: &'a DecodeOptions,
    cluster: &'a str,
    arena: &'a Arena,
    f: &mut OwnedSink<'_, 'a>,
) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return f(Decoded::Item(Item::Rejected(DecodeError::InvalidUtf8)));
    };
    let ctx = Ctx {
        opts,
        cluster,
        arena,
        envelope_time: None,
        elastic: false,
    };
    let text = text.trim_ascii();
    let reject = |f: &mut OwnedSink<'_, 'a>, why: &str| {
        f(Decoded::Item(Item::Rejected(DecodeError::InvalidJson(
            why.into(),
        ))))
    };
    let not_an_event = |f: &mut OwnedSink<'_, 'a>, what: &str| {
        f(Decoded::Item(Item::Rejected(DecodeError::NotAuditEvent(
            format!("{what}, not an object: no audit event"),
        ))))
    };
    match text.as_bytes().first() {
        Some(b'{') => decode_object_with(text, Format::Native, ctx, f),
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => {
                for item in items {
                    decode_object_with(item.get(), Format::EventList, ctx, f);
                }
            }
            Err(e) => f(Decoded::Item(Item::Rejected(DecodeError::from_json(&e)))),
        },
        Some(b'0'..=b'9') => match providers::strip_timestamp_prefix(text) {
            Some(rest) => decode_object_with(rest, Format::Eks, ctx, f),
            None if serde_json::from_str::<&RawValue>(text).is_ok() => {
                not_an_event(f, "a JSON number")
            }
            None => reject(
                f,
                "record starts with a digit but not with an RFC 3339 timestamp and a JSON object",
            ),
        },
        // JSON, only not an object: a value no envelope holds an event in.
        Some(b'"' | b'n' | b't' | b'f' | b'-')
            if serde_json::from_str::<&RawValue>(text).is_ok() =>
        {
            let what = match text.as_bytes()[0] {
                b'"' => "a JSON string",
                b'n' => "JSON null",
                b't' | b'f' => "a JSON boolean",
                _ => "a JSON number",
            };
            not_an_event(f, what)
        }
        Some(_) => reject(f, "record does not start with '{' or '['"),
        None => {}
    }
}

/// Decodes one JSON object; `format` is the shape of the container it was found in (native for
/// a bare line). The events that borrow only from `text` and the arena are handed over by value.
pub(super) fn decode_object_with<'a>(
    text: &'a str,
    format: Format,
    ctx: Ctx<'a>,
    g: &mut OwnedSink<'_, 'a>,
) {
    // Records carrying encoded JSON in a string take their own paths up front: a native parse
    // would fail on ACK's at a serde error that quotes the whole encoded object, and would scan
    // an AKS `properties.log` string once only to unescape it again.
    if matches!(format, Format::Native | Format::Aks) {
        let done = match providers::find_encoded(text) {
            // ACK's and GKE's mapped events borrow what their decoders made: passed on as items.
            Encoded::Ack => {
                format == Format::Native
                    && providers::decode_ack(text, ctx, &mut |i| g(Decoded::Item(i)))
            }
            Encoded::AksLog(quote) => providers::decode_aks_inline(text, quote, ctx, g),
            Encoded::None => false,
        };
        if done {
            return;
        }
    }
    let ev: AuditEvent = match serde_json::from_str(text) {
        Ok(ev) => ev,
        Err(e) => {
            // ACK's flat records fail here on their first JSON-encoded object (`"user": "{…}"`).
            let is_type_error = e.classify() == serde_json::error::Category::Data;
            if is_type_error
                && format == Format::Native
                && providers::decode_ack(text, ctx, &mut |i| g(Decoded::Item(i)))
            {
                return;
            }
            return g(Decoded::Item(Item::Rejected(DecodeError::from_json(&e))));
        }
    };
    if let Some(items) = &ev.envelope_items {
        for item in items {
            decode_object_with(item.get(), Format::EventList, ctx, g);
        }
        return;
    }
    if let Some(records) = &ev.envelope_records {
        for record in records {
            decode_object_with(record.get(), Format::Aks, ctx, g);
        }
        return;
    }
    if ev.envelope_properties.is_some() {
        return providers::decode_aks(ev, None, ctx, g);
    }
    if let Some(payload) = &ev.envelope_proto_payload {
        return providers::decode_gke(&ev, payload, false, ctx, &mut |i| g(Decoded::Item(i)));
    }
    if ev.envelope_log_events.is_some() || ev.envelope_message_type.is_some() {
        return providers::decode_eks_batch(ev, ctx, g);
    }
    let export_time = ev.export_time();
    if let Some(message) = ev.envelope_at_message {
        let ctx = Ctx {
            envelope_time: export_time,
            ..ctx
        };
        return providers::decode_eks_message(ctx.keep(message.0), Format::Eks, ctx, g);
    }
    // The remaining envelopes are told by one key that an event could also carry: only a
    // record that is no event itself is taken for one.
    if ev.audit_id.is_none() && ev.verb.is_none() {
        if let Some(audit) = ev.envelope_kubernetes.and_then(|k| raw_entry(k, "audit")) {
            let ctx = Ctx {
                envelope_time: export_time,
                elastic: true,
                ..ctx
            };
            return decode_object_with(audit.get(), Format::Native, ctx, g);
        }
        // CloudWatch's own pair: a `message` alone is any JSON with a message.
        if let (Some(message), Some(stamp)) = (ev.envelope_message, ev.timestamp) {
            let envelope_time = super::time::parse_export_json(stamp);
            return providers::decode_message(
                message,
                Ctx {
                    envelope_time,
                    ..ctx
                },
                g,
            );
        }
        if let (Some(payload), false) = (&ev.envelope_bigquery_payload, ctx.opts.strict) {
            return providers::decode_gke(&ev, payload, true, ctx, &mut |i| g(Decoded::Item(i)));
        }
    }
    // Changed in place: the event is large, and moves copy it.
    let mut ev = ev;
    ev.source = Some(text);
    match check(&mut ev, format, ctx) {
        Ok(()) => g(Decoded::Owned(ev, format)),
        Err(e) => g(Decoded::Item(Item::Rejected(e))),
    }
}

/// Last checks on a decoded event, then hands it over.
pub(super) fn finish_event<'a>(mut ev: AuditEvent<'a>, format: Format, ctx: Ctx<'a>, f: &mut Sink) {
    match check(&mut ev, format, ctx) {
        Ok(()) => f(Item::Event(&ev, format)),
        Err(e) => f(Item::Rejected(e)),
    }
}

/// `finish_event` for an event that borrows only from the record and the arena.
pub(super) fn finish_owned<'a>(
    mut ev: AuditEvent<'a>,
    format: Format,
    ctx: Ctx<'a>,
    g: &mut OwnedSink<'_, 'a>,
) {
    match check(&mut ev, format, ctx) {
        Ok(()) => g(Decoded::Owned(ev, format)),
        Err(e) => g(Decoded::Item(Item::Rejected(e))),
    }
}

/// Whether the event passes the last checks, repairing what an export dropped unless strict;
/// gives it its cluster if so.
fn check<'a>(ev: &mut AuditEvent<'a>, format: Format, ctx: Ctx<'a>) -> Result<(), DecodeError> {
    ev.provider = format.provider();
    match ev.kind.as_deref() {
        None | Some("Event") => {}
        Some(other) => {
            return Err(DecodeError::NotAuditEvent(format!(
                "kind {other:?} is not an audit Event"
            )))
        }
    }
    let repair = !ctx.opts.strict;
    if ev.audit_id.is_none() {
        if !(repair && ev.recognisable()) {
            return Err(DecodeError::NotAuditEvent(
                "object has no auditID and no known envelope (native, EventList, ACK, EKS, GKE, AKS), nor a verb, objectRef or requestURI and user"
                    .into(),
            ));
        }
        ev.audit_id = Some(JStr(Cow::Owned(derived_audit_id(ev))));
        ev.repairs.add(Repair::DerivedAuditId);
    }
    if let Some(expected) = ctx.opts.expect {
        let native_family = matches!(format, Format::Native | Format::EventList);
        if format != expected && !(expected == Format::Native && native_family) {
            return Err(DecodeError::FormatMismatch(format!(
                "--input-format {} but the record is {}",
                expected.name(),
                format.name()
            )));
        }
    }
    ev.time = ev.event_time();
    if ev.time.is_none() && repair {
        let (time, kind) = match ev.export_time() {
            Some(t) => (Some(t), Repair::ExportTimestamp),
            None => (ctx.envelope_time, Repair::EnvelopeTimestamp),
        };
        if let Some(t) = time {
            // Written where the API server writes it, so that the event carries it everywhere
            // (rules, a mapping sent on by `route`).
            ev.stage_timestamp = Some(JStr(Cow::Owned(super::time::format_micros(t))));
            ev.time = time;
            ev.repairs.add(kind);
        }
    }
    if ev.time.is_none() {
        return Err(DecodeError::BadTimestamp(
            "no parseable stageTimestamp, requestReceivedTimestamp or timestamp".into(),
        ));
    }
    if ev.stage.is_none() && repair {
        ev.stage = Some(JStr::borrowed("ResponseComplete"));
        ev.repairs.add(Repair::MissingStage);
    }
    if ctx.elastic && repair {
        undo_elastic_keys(ev, ctx);
    }
    if !ev.repairs.is_empty() {
        // The event's text lacks what was added: whoever needs the event again (an alert's
        // seed, `route`) decodes the record again or takes the repaired mapping.
        ev.source = None;
    }
    ev.cluster = Some(JStr(Cow::Borrowed(ctx.cluster)));
    Ok(())
}

/// `derived-` and the xxh3-128 of the event's own text (or of its mapping, for mapped formats):
/// stable, so the same record read twice (or decoded again for an alert) gets the same ID.
fn derived_audit_id(ev: &AuditEvent) -> String {
    let hash = match ev.source {
        Some(text) => xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
        None => {
            xxhash_rust::xxh3::xxh3_128(serde_json::to_string(ev).unwrap_or_default().as_bytes())
        }
    };
    format!("derived-{hash:032x}")
}

/// Elastic writes annotation keys with `_` for `.` (`authorization_k8s_io/decision`). The part
/// before the `/` is a DNS name, which has no `_`: mapped back exactly.
fn undo_elastic_keys<'a>(ev: &mut AuditEvent<'a>, ctx: Ctx<'a>) {
    let Some(raw) = ev.annotations else { return };
    let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get())
    else {
        return;
    };
    let renamed = |k: &str| match k.split_once('/') {
        Some((prefix, rest)) if prefix.contains('_') => {
            Some(format!("{}/{rest}", prefix.replace('_', ".")))
        }
        _ => None,
    };
    if !map.iter().any(|(k, _)| renamed(k).is_some()) {
        return;
    }
    let out: serde_json::Map<String, serde_json::Value> = map
        .into_iter()
        .map(|(k, v)| (renamed(&k).unwrap_or(k), v))
        .collect();
    let text = ctx.keep(serde_json::Value::Object(out).to_string());
    if let Ok(raw) = serde_json::from_str::<&RawValue>(text) {
        ev.annotations = Some(raw);
        ev.repairs.add(Repair::RenamedKeys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_that_is_no_object_is_no_audit_event_not_bad_json() {
        for (text, reason) in [
            ("null", "not_audit_event"),
            ("\"str\"", "not_audit_event"),
            ("-4", "not_audit_event"),
            ("true", "not_audit_event"),
            ("nope", "invalid_json"),
        ] {
            let mut got = Vec::new();
            decode_record(
                text.as_bytes(),
                &DecodeOptions::default(),
                "c",
                &mut |item| {
                    if let Item::Rejected(e) = item {
                        got.push(e.reason());
                    }
                },
            );
            assert_eq!(got, [reason], "{text}");
        }
    }

    #[test]
    fn a_json_error_is_told_in_the_input_s_terms() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct UserInfo {
            username: String,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Ev {
            user: UserInfo,
        }
        let e = serde_json::from_str::<Ev>(r#"{"user": 42}"#).unwrap_err();
        assert_eq!(
            DecodeError::from_json(&e).to_string(),
            "invalid type: integer `42`, expected an object at column 11 of the record"
        );
        let e = serde_json::from_str::<Ev>("{\n\"user\": {\"username\": \"a").unwrap_err();
        let m = DecodeError::from_json(&e).to_string();
        assert!(m.ends_with("at line 2, column 23 of the record"), "{m}");
    }

    fn decode_all(line: &str) -> (Vec<(String, Format, String)>, Vec<&'static str>) {
        let opts = DecodeOptions::default();
        let (mut events, mut errs) = (Vec::new(), Vec::new());
        decode_record(line.as_bytes(), &opts, "dflt", &mut |item| match item {
            Item::Event(ev, fmt) => events.push((
                ev.audit_id.as_deref().unwrap_or("").to_owned(),
                fmt,
                ev.cluster.as_deref().unwrap_or("").to_owned(),
            )),
            Item::Rejected(e) => errs.push(e.reason()),
            Item::Skipped(why) => errs.push(why),
        });
        (events, errs)
    }

    const EV: &str = r#"{"kind":"Event","auditID":"a1","stage":"ResponseComplete","verb":"get","user":{"username":"u"},"stageTimestamp":"2025-01-01T00:00:00Z"}"#;

    #[test]
    fn native_line() {
        let (ev, errs) = decode_all(EV);
        assert_eq!(ev, vec![("a1".into(), Format::Native, "dflt".into())]);
        assert!(errs.is_empty());
    }

    #[test]
    fn event_list_and_bare_array() {
        let list = format!(r#"{{"kind":"EventList","items":[{EV},{EV}]}}"#);
        assert_eq!(decode_all(&list).0.len(), 2);
        assert_eq!(decode_all(&format!("[{EV}]")).0[0].1, Format::EventList);
    }

    #[test]
    fn aks_object_and_string_logs() {
        let obj = format!(
            r#"{{"category":"kube-audit","resourceId":"/S/1/MANAGEDCLUSTERS/PROD-AKS","properties":{{"log":{EV}}}}}"#
        );
        assert_eq!(
            decode_all(&obj).0,
            vec![("a1".into(), Format::Aks, "prod-aks".into())]
        );
        let s = format!(
            r#"{{"category":"kube-audit-admin","properties":{{"log":{}}}}}"#,
            serde_json::to_string(EV).unwrap()
        );
        assert_eq!(decode_all(&s).0[0].0, "a1");
        let other = r#"{"category":"kube-apiserver","properties":{"log":"I0101 started"}}"#;
        assert_eq!(decode_all(other).1, vec!["aks_non_audit_category"]);
    }

    #[test]
    fn aks_string_fast_path_only_takes_properties_log() {
        let encoded = serde_json::to_string(EV).unwrap();
        // Another `log` key holding encoded JSON comes first: the fast path must step aside.
        let decoy = format!(
            r#"{{"tags":{{"log":"{{\"x\":1}}"}},"category":"kube-audit","properties":{{"log":{encoded}}}}}"#
        );
        assert_eq!(decode_all(&decoy).0[0].0, "a1");
        // A native event whose ConfigMap carries such a key stays native.
        let native = EV.replacen(
            r#""verb":"get","#,
            r#""verb":"create","requestObject":{"data":{"log":"{\"level\":1}"}},"#,
            1,
        );
        assert_eq!(
            decode_all(&native).0,
            vec![("a1".into(), Format::Native, "dflt".into())]
        );
        // Cut inside the string: reported by the general path, not lost in the fast one.
        let cut = format!(r#"{{"category":"kube-audit","properties":{{"log":{encoded}"#);
        let cut = &cut[..cut.len() - 20];
        assert_eq!(decode_all(cut).1, vec!["truncated_json"]);
    }

    #[test]
    fn gke_entry_maps_onto_event() {
        let line = r#"{"protoPayload":{"serviceName":"k8s.io","methodName":"io.k8s.core.v1.pods.exec.create","resourceName":"core/v1/namespaces/prod/pods/web-1/exec","authenticationInfo":{"principalEmail":"eve@example.com"},"requestMetadata":{"callerIp":"1.2.3.4"},"status":{"code":7}},"insertId":"g1","resource":{"labels":{"cluster_name":"gke-1"}},"timestamp":"2025-01-01T00:00:00Z"}"#;
        let opts = DecodeOptions::default();
        let mut seen = false;
        decode_record(line.as_bytes(), &opts, "dflt", &mut |item| {
            let Item::Event(ev, Format::Gke) = item else {
                panic!("not an event")
            };
            seen = true;
            assert_eq!(ev.verb.as_deref(), Some("create"));
            assert_eq!(ev.username(), "eve@example.com");
            assert_eq!(ev.status_code(), Some(403));
            let o = ev.object_ref.as_ref().unwrap();
            assert_eq!(o.resource.as_deref(), Some("pods"));
            assert_eq!(o.subresource.as_deref(), Some("exec"));
            assert_eq!(o.namespace.as_deref(), Some("prod"));
            assert_eq!(o.name.as_deref(), Some("web-1"));
            assert_eq!(ev.cluster.as_deref(), Some("gke-1"));
        });
        assert!(seen);
    }

    #[test]
    fn gke_non_resource_request_has_no_object() {
        // As GKE logs its master health checks (from the real sample in ../shared/realdata).
        let line = r#"{"protoPayload":{"serviceName":"k8s.io","methodName":"io.k8s.get","resourceName":"readyz","authenticationInfo":{"principalEmail":"system:anonymous"},"status":{"code":0}},"insertId":"g2","timestamp":"2025-01-01T00:00:00Z"}"#;
        let mut seen = false;
        decode_record(
            line.as_bytes(),
            &DecodeOptions::default(),
            "d",
            &mut |item| {
                let Item::Event(ev, Format::Gke) = item else {
                    panic!("not an event")
                };
                seen = true;
                assert_eq!(ev.verb.as_deref(), Some("get"));
                assert_eq!(ev.request_uri.as_deref(), Some("/readyz"));
                assert!(ev.object_ref.is_none());
            },
        );
        assert!(seen);
    }

    #[test]
    fn bad_records_are_classified() {
        assert_eq!(decode_all(&EV[..40]).1, vec!["truncated_json"]);
        assert_eq!(decode_all("{\"a\":}").1, vec!["invalid_json"]);
        assert_eq!(
            decode_all(r#"{"auditID":"x","user":7}"#).1,
            vec!["wrong_type"]
        );
        assert_eq!(
            decode_all(r#"{"hello":"world"}"#).1,
            vec!["not_audit_event"]
        );
        assert_eq!(
            decode_all(r#"{"auditID":"x","stageTimestamp":"yesterday"}"#).1,
            vec!["bad_timestamp"]
        );
        assert_eq!(decode_all("hello").1, vec!["invalid_json"]);
        let mut invalid = EV.as_bytes().to_vec();
        invalid[30] = 0xff;
        let opts = DecodeOptions::default();
        let mut reasons = Vec::new();
        decode_record(&invalid, &opts, "dflt", &mut |i| {
            if let Item::Rejected(e) = i {
                reasons.push(e.reason())
            }
        });
        assert_eq!(reasons, vec!["invalid_utf8"]);
    }

    /// An event's auditID, stage, time and repairs.
    type Seen = (String, String, i64, Vec<&'static str>);

    /// Each event as `Seen`, and the reasons of the rest.
    fn repaired(line: &str, strict: bool) -> (Vec<Seen>, Vec<&'static str>) {
        let opts = DecodeOptions {
            strict,
            ..DecodeOptions::default()
        };
        let (mut events, mut errs) = (Vec::new(), Vec::new());
        decode_record(line.as_bytes(), &opts, "d", &mut |item| match item {
            Item::Event(ev, _) => events.push((
                ev.audit_id.as_deref().unwrap_or("").to_owned(),
                ev.stage.as_deref().unwrap_or("").to_owned(),
                ev.time.unwrap_or(0),
                ev.repairs.iter().map(Repair::name).collect(),
            )),
            Item::Rejected(e) => errs.push(e.reason()),
            Item::Skipped(why) => errs.push(why),
        });
        (events, errs)
    }

    const T0: i64 = 1_735_689_600_000_000; // 2025-01-01T00:00:00Z

    #[test]
    fn trimmed_events_are_repaired_and_counted() {
        let line = r#"{"verb":"get","objectRef":{"resource":"pods"},"user":{"username":"u"},"p_event_time":"2025-01-01 00:00:00.000000000"}"#;
        let (ev, errs) = repaired(line, false);
        assert!(errs.is_empty(), "{errs:?}");
        let (id, stage, time, repairs) = &ev[0];
        assert!(id.starts_with("derived-") && id.len() == 8 + 32, "{id}");
        assert_eq!(stage, "ResponseComplete");
        assert_eq!(*time, T0);
        assert_eq!(
            repairs,
            &["derived_audit_id", "missing_stage", "export_timestamp"]
        );
        // Stable: the same record gets the same ID.
        assert_eq!(repaired(line, false).0[0].0, *id);
        // Strict: rejected as before.
        assert_eq!(repaired(line, true).1, vec!["not_audit_event"]);
    }

    #[test]
    fn what_is_not_an_audit_event_stays_rejected() {
        for line in [
            r#"{"level":"info","msg":"started","time":"2025-01-01T00:00:00Z"}"#,
            r#"{"verb":"get","user":{"username":"u"},"time":"2025-01-01T00:00:00Z"}"#,
            r#"{"verb":"get","requestURI":"/api","time":"2025-01-01T00:00:00Z"}"#,
        ] {
            assert_eq!(repaired(line, false).1, vec!["not_audit_event"], "{line}");
        }
        // An event with no time anywhere cannot be placed.
        let no_time = r#"{"auditID":"a","verb":"get","requestURI":"/api","user":{"username":"u"}}"#;
        assert_eq!(repaired(no_time, false).1, vec!["bad_timestamp"]);
    }

    #[test]
    fn envelope_times_fill_events_without_their_own() {
        let log = r#"{"auditID":"a1","stage":"ResponseComplete","verb":"get","requestURI":"/api","user":{"username":"u"}}"#;
        let aks = format!(
            r#"{{"time":"2025-01-01T00:00:00.0000000Z","category":"kube-audit","properties":{{"log":{}}}}}"#,
            serde_json::to_string(log).unwrap()
        );
        let (ev, errs) = repaired(&aks, false);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ev[0].2, T0);
        assert_eq!(ev[0].3, vec!["envelope_timestamp"]);
        assert_eq!(repaired(&aks, true).1, vec!["bad_timestamp"]);
        // The event's own time wins over the envelope's.
        let own = log.replacen('{', r#"{"stageTimestamp":"2025-01-01T00:00:01Z","#, 1);
        let aks = aks.replace(
            &serde_json::to_string(log).unwrap(),
            &serde_json::to_string(&own).unwrap(),
        );
        assert_eq!(repaired(&aks, false).0[0].2, T0 + 1_000_000);
        assert!(repaired(&aks, false).0[0].3.is_empty());
    }

    #[test]
    fn cloudwatch_events_as_shippers_deliver_them() {
        let shipped = format!(r#"{{"timestamp":1735689600000,"message":{EV}}}"#);
        assert_eq!(
            decode_all(&shipped).0,
            vec![("a1".into(), Format::Eks, "dflt".into())]
        );
        let as_string = format!(
            r#"{{"timestamp":1735689600000,"message":{}}}"#,
            serde_json::to_string(EV).unwrap()
        );
        assert_eq!(decode_all(&as_string).0[0].0, "a1");
        let text = r#"{"timestamp":1735689600000,"message":"I0101 00:00:00.000 1 get.go:245] Starting watch"}"#;
        assert_eq!(decode_all(text).1, vec!["non_audit_log_line"]);
        // Without CloudWatch's timestamp it is just JSON with a message.
        assert_eq!(
            decode_all(r#"{"message":"hello"}"#).1,
            vec!["not_audit_event"]
        );
        // The same in a subscription batch.
        let batch = r#"{"messageType":"DATA_MESSAGE","logGroup":"/aws/eks/p/cluster","logEvents":[{"timestamp":1735689600000,"message":"time=\"2025-01-01T00:00:00Z\" level=info msg=\"access granted\""}]}"#;
        assert_eq!(decode_all(batch).1, vec!["non_audit_log_line"]);
    }

    #[test]
    fn defender_rows_map_their_capitalised_keys() {
        let row = r#"{"time":"2025-01-01T00:00:05Z","category":"AdvancedHunting-CloudAuditEvents","properties":{"DataSource":"Azure Kubernetes Service","RawEventData":{"AuditID":"d1","Stage":"ResponseComplete","Verb":"get","RequestURI":"/api/v1/namespaces/n/secrets/s","User":{"username":"u","groups":["g"]},"ObjectRef":{"resource":"secrets","namespace":"n","name":"s"},"ResponseStatus":{"code":200},"RequestObject":null,"StageTimestamp":"2025-01-01T00:00:00Z","AzureResourceId":"/subscriptions/x/resourceGroups/r/providers/Microsoft.ContainerService/managedClusters/Blue"}}}"#;
        let mut seen = false;
        decode_record(
            row.as_bytes(),
            &DecodeOptions::default(),
            "d",
            &mut |item| {
                let Item::Event(ev, Format::Aks) = item else {
                    panic!("not an event")
                };
                seen = true;
                assert_eq!(ev.audit_id.as_deref(), Some("d1"));
                assert_eq!(ev.username(), "u");
                assert_eq!(ev.resource(), "secrets");
                assert_eq!(ev.status_code(), Some(200));
                assert_eq!(ev.time, Some(T0));
                assert_eq!(ev.cluster.as_deref(), Some("blue"));
                assert!(ev.repairs.contains(Repair::RenamedKeys));
            },
        );
        assert!(seen);
        // Strict: skipped for its category, as before.
        assert_eq!(repaired(row, true).1, vec!["aks_non_audit_category"]);
        // A row about another cloud's control plane.
        let other = r#"{"category":"AdvancedHunting-CloudAuditEvents","properties":{"RawEventData":{"eventName":"ConsoleLogin"}}}"#;
        assert_eq!(repaired(other, false).1, vec!["cloud_audit_non_kubernetes"]);
    }

    #[test]
    fn elastic_documents_get_their_annotation_keys_back() {
        let doc = r#"{"@timestamp":"2025-01-01T00:00:00Z","kubernetes":{"audit":{"auditID":"e1","stage":"ResponseComplete","verb":"get","requestURI":"/api","user":{"username":"u"},"annotations":{"authorization_k8s_io/decision":"forbid","x":"y"}}}}"#;
        let mut decision = None;
        decode_record(
            doc.as_bytes(),
            &DecodeOptions::default(),
            "d",
            &mut |item| {
                if let Item::Event(ev, _) = item {
                    let view = crate::event::EventView::new(ev, 0);
                    decision = view
                        .annotation(crate::event::DECISION_KEY)
                        .map(str::to_owned);
                    assert_eq!(ev.time, Some(T0));
                }
            },
        );
        assert_eq!(decision.as_deref(), Some("forbid"));
        let (_, _, _, repairs) = &repaired(doc, false).0[0];
        assert_eq!(repairs, &["envelope_timestamp", "renamed_keys"]);
    }
}
