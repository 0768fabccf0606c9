//! Run counters, the end-of-run summary and the Prometheus exposition of a running service
//! (`/metrics`: counters end in `_total`, latencies are summaries in seconds; `promtool check
//! metrics` accepts it, tests/live.rs has a real Prometheus scrape it).

use crate::alert::Alert;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Distinct actors tracked for the "top actors" table; the rest are counted as `(other)`.
const MAX_ACTORS: usize = 100_000;
/// Rejections kept with their location for the summary (all go to the dead-letter file).
const MAX_EXAMPLES_PER_REASON: usize = 5;

/// Counters a worker fills for one batch; merged in input order by the collector.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub records: u64,
    pub events: u64,
    pub analysed: u64,
    pub skipped_stage: u64,
    pub outside_time_range: u64,
    pub long_running_started: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub formats: BTreeMap<&'static str, u64>,
    pub repaired: BTreeMap<&'static str, u64>,
    pub actors: HashMap<String, u64>,
    /// The earliest time of the events analysed.
    pub first_time: Option<i64>,
}

impl BatchStats {
    pub fn count_actor(&mut self, username: &str) {
        match self.actors.get_mut(username) {
            Some(n) => *n += 1,
            None => {
                self.actors.insert(username.to_owned(), 1);
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectionExample {
    pub reason: String,
    pub file: String,
    pub line: u64,
    pub offset: u64,
    pub detail: String,
}

/// Everything the summary reports; also written as JSON with `--summary-json`.
#[derive(Debug, Default, Serialize)]
pub struct RunStats {
    pub files: u64,
    pub disk_bytes: u64,
    pub records: u64,
    /// Audit events decoded (an EventList record holds many).
    pub events: u64,
    /// Events the detectors saw (after the stage and time filters).
    pub analysed: u64,
    pub skipped_stage: u64,
    pub outside_time_range: u64,
    /// `ResponseStarted` events of long-running requests (exec, attach, port-forward, proxy,
    /// log, watch) run through the single-event rules as the session opened; the request is
    /// analysed in full at its `ResponseComplete` (see `engine::worker`). Events decoded are
    /// those analysed, skipped for their stage or time, and these.
    pub long_running_started: u64,
    /// Well-formed records deliberately not analysed, by kind.
    pub skipped: BTreeMap<String, u64>,
    pub formats: BTreeMap<String, u64>,
    /// Events the decoder repaired (an export dropped or renamed a field), by kind of repair
    /// (`event::Repair`); an event may count under several.
    pub repaired: BTreeMap<String, u64>,
    pub rejected: BTreeMap<String, u64>,
    pub rejected_examples: Vec<RejectionExample>,
    pub alerts: u64,
    /// Later reports of episodes (updated, closed), not counted in `alerts`.
    pub alert_updates: u64,
    /// Snapshots of detector state written, and failed (a live service with a state directory).
    pub snapshots_written: u64,
    pub snapshots_failed: u64,
    /// Incidents reported (their first report), and every incident report.
    pub incidents: u64,
    pub incident_reports: u64,
    pub duplicate_alerts: u64,
    /// Alerts held back by a rule's `suppress` period.
    pub suppressed_alerts: u64,
    /// Events re-read to rebuild detector state after a Kafka partition assignment, and the
    /// alerts they completed (delivered before, so not sent again).
    pub warmup_events: u64,
    pub warmup_alerts: u64,
    /// Stateful observations that reached the detectors behind the watermark (older than the
    /// newest event time by more than the allowed lateness): applied out of order.
    pub late_observations: u64,
    /// Keys held by stateful rules at the end, and keys evicted by the memory cap.
    pub state_keys: u64,
    pub state_evictions: u64,
    /// Incidents open at the end, and incidents closed early by the cap on open ones.
    pub incidents_open: u64,
    pub incidents_closed_early: u64,
    pub alerts_by_rule: BTreeMap<String, u64>,
    pub alerts_by_severity: BTreeMap<String, u64>,
    pub top_actors: Vec<(String, u64)>,
    /// The actors that raised the most alerts (new findings, not episode updates).
    pub top_actors_by_alerts: Vec<(String, u64)>,
    pub elapsed_secs: f64,
    #[serde(skip)]
    actors: HashMap<String, u64>,
    #[serde(skip)]
    alerting_actors: HashMap<String, u64>,
}

impl RunStats {
    pub fn merge_batch(&mut self, b: BatchStats) {
        self.records += b.records;
        self.events += b.events;
        self.analysed += b.analysed;
        self.skipped_stage += b.skipped_stage;
        self.outside_time_range += b.outside_time_range;
        self.long_running_started += b.long_running_started;
        for (k, n) in b.skipped {
            *self.skipped.entry(k.to_owned()).or_default() += n;
        }
        for (k, n) in b.repaired {
            *self.repaired.entry(k.to_owned()).or_default() += n;
        }
        for (k, n) in b.formats {
            *self.formats.entry(k.to_owned()).or_default() += n;
        }
        for (actor, n) in b.actors {
            if self.actors.len() < MAX_ACTORS || self.actors.contains_key(&actor) {
                *self.actors.entry(actor).or_default() += n;
            } else {
                *self.actors.entry("(other)".into()).or_default() += n;
            }
        }
    }

    /// Counts a rejection; returns true when it is among the first few of its reason.
    pub fn reject(
        &mut self,
        reason: &str,
        file: &str,
        line: u64,
        offset: u64,
        detail: &str,
    ) -> bool {
        let n = self.rejected.entry(reason.to_owned()).or_default();
        *n += 1;
        let first = *n as usize <= MAX_EXAMPLES_PER_REASON;
        if first {
            self.rejected_examples.push(RejectionExample {
                reason: reason.to_owned(),
                file: file.to_owned(),
                line,
                offset,
                detail: detail.chars().take(300).collect(),
            });
        }
        first
    }

    pub fn count_incident(&mut self, i: &crate::alert::Incident) {
        self.incident_reports += 1;
        if i.status == crate::alert::Status::Open {
            self.incidents += 1;
        }
    }

    pub fn count_alert(&mut self, a: &Alert) {
        if matches!(
            a.status,
            Some(crate::alert::Status::Updated | crate::alert::Status::Closed)
        ) {
            self.alert_updates += 1;
            return;
        }
        self.alerts += 1;
        *self
            .alerting_actors
            .entry(a.actor.username.clone())
            .or_default() += 1;
        *self.alerts_by_rule.entry(a.rule.id.clone()).or_default() += 1;
        *self
            .alerts_by_severity
            .entry(a.rule.severity.name().to_owned())
            .or_default() += 1;
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn finish(&mut self, elapsed_secs: f64, top: usize) {
        self.elapsed_secs = elapsed_secs;
        let top_of = |map: &mut HashMap<String, u64>| {
            let mut actors: Vec<(String, u64)> = map.drain().collect();
            actors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            actors.truncate(top);
            actors
        };
        self.top_actors_by_alerts = top_of(&mut self.alerting_actors);
        self.top_actors = top_of(&mut self.actors);
    }

    /// The human summary printed to stderr at the end of a run.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let secs = self.elapsed_secs.max(1e-9);
        let _ = writeln!(
            s,
            "── audithound summary ──────────────────────────────────────────"
        );
        let rows = [
            ("files", self.files.to_string()),
            ("bytes read (on disk)", human_bytes(self.disk_bytes)),
            ("records", self.records.to_string()),
            ("events decoded", self.events.to_string()),
            ("events analysed", self.analysed.to_string()),
            ("skipped: other stages", self.skipped_stage.to_string()),
            (
                "skipped: outside --from/--to",
                self.outside_time_range.to_string(),
            ),
            (
                "long-running, seen opening",
                self.long_running_started.to_string(),
            ),
            ("rejected", self.rejected_total().to_string()),
            ("alerts", self.alerts.to_string()),
            ("alerts suppressed", self.suppressed_alerts.to_string()),
            ("episode updates", self.alert_updates.to_string()),
            (
                "incidents (closed early: too many open)",
                format!("{} ({})", self.incidents, self.incidents_closed_early),
            ),
            (
                "re-read to rebuild state (alerts held)",
                format!("{} ({})", self.warmup_events, self.warmup_alerts),
            ),
            (
                "observations late for the detectors (beyond --lateness)",
                self.late_observations.to_string(),
            ),
            (
                "stateful keys (evicted)",
                format!("{} ({})", self.state_keys, self.state_evictions),
            ),
            ("elapsed", format!("{:.2} s", self.elapsed_secs)),
            (
                "throughput",
                format!(
                    "{:.0} events/s, {}/s",
                    self.events as f64 / secs,
                    human_bytes((self.disk_bytes as f64 / secs) as u64)
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<width$} {v:>14}");
        }
        section(&mut s, "formats", &self.formats);
        section(&mut s, "skipped records", &self.skipped);
        section(&mut s, "repaired events", &self.repaired);
        section(&mut s, "rejected by reason", &self.rejected);
        if !self.rejected_examples.is_empty() {
            let _ = writeln!(s, "  first rejections:");
            for e in &self.rejected_examples {
                let _ = writeln!(s, "    {}:{} [{}] {}", e.file, e.line, e.reason, e.detail);
            }
        }
        let mut sev: Vec<_> = self.alerts_by_severity.iter().collect();
        sev.sort_by_key(|(k, _)| severity_rank(k));
        if !sev.is_empty() {
            let _ = writeln!(s, "  alerts by severity:");
            for (k, v) in sev {
                let _ = writeln!(s, "    {k:<28} {v:>10}");
            }
        }
        section(&mut s, "alerts by rule", &self.alerts_by_rule);
        if !self.top_actors.is_empty() {
            let _ = writeln!(s, "  top actors (events analysed):");
            let width = self
                .top_actors
                .iter()
                .map(|(a, _)| a.len())
                .max()
                .unwrap_or(0)
                .max(28);
            for (a, n) in &self.top_actors {
                let _ = writeln!(s, "    {a:<width$} {n:>10}");
            }
        }
        if !self.top_actors_by_alerts.is_empty() {
            let _ = writeln!(s, "  top actors (alerts):");
            let width = self
                .top_actors_by_alerts
                .iter()
                .map(|(a, _)| a.len())
                .max()
                .unwrap_or(0)
                .max(28);
            for (a, n) in &self.top_actors_by_alerts {
                let _ = writeln!(s, "    {a:<width$} {n:>10}");
            }
        }
        s
    }
}

fn severity_rank(s: &str) -> usize {
    ["critical", "high", "medium", "low", "info"]
        .iter()
        .position(|x| *x == s)
        .unwrap_or(9)
}

fn section(s: &mut String, title: &str, m: &BTreeMap<String, u64>) {
    if m.is_empty() {
        return;
    }
    let _ = writeln!(s, "  {title}:");
    let width = m.keys().map(String::len).max().unwrap_or(0).max(28);
    for (k, v) in m {
        let _ = writeln!(s, "    {k:<width$} {v:>10}");
    }
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// What a running service exposes on `/metrics` (Prometheus text format): the run's counters,
/// refreshed after every batch, and how late alerts are relative to their event time.
#[derive(Default)]
pub struct Live {
    snapshot: std::sync::Mutex<RunStats>,
    /// Milliseconds from an alert's event time to its delivery to the sinks.
    latency: std::sync::Mutex<Latency>,
    /// Microseconds from receiving the alert's event to delivering the alert.
    ingest_latency: std::sync::Mutex<Latency>,
    /// The Kafka consumer's partitions and lag.
    pub kafka: std::sync::Arc<crate::source::kafka::Gauges>,
    /// Snapshots that could not be read at start (a fresh start each).
    pub snapshots_rejected: std::sync::atomic::AtomicU64,
    /// The webhook's journal and the followers' counters, when the service has them.
    journal: std::sync::OnceLock<crate::source::journal::Journal>,
    follow: std::sync::OnceLock<std::sync::Arc<crate::source::follow::FollowStats>>,
    /// Remote sinks' outboxes, by name.
    outboxes: std::sync::Mutex<Vec<(String, std::sync::Arc<crate::sink::outbox::Gauges>)>>,
}

/// Latencies in whole units (milliseconds or microseconds): their distribution and exact sum.
#[derive(Default)]
struct Latency {
    histogram: Option<hdrhistogram::Histogram<u64>>,
    sum: u64,
}

fn record(slot: &std::sync::Mutex<Latency>, max: u64, v: u64) {
    if let Ok(mut slot) = slot.lock() {
        if slot.histogram.is_none() {
            slot.histogram = hdrhistogram::Histogram::new_with_bounds(1, max, 3).ok();
        }
        slot.sum = slot.sum.saturating_add(v);
        if let Some(h) = slot.histogram.as_mut() {
            h.saturating_record(v.max(1));
        }
    }
}

/// A Prometheus summary in seconds (the base unit `promtool check metrics` asks for) of
/// latencies recorded in `per_second`ths of a second.
fn summary(
    out: &mut String,
    name: &str,
    help: &str,
    slot: &std::sync::Mutex<Latency>,
    per_second: f64,
) {
    use std::fmt::Write as _;
    let Ok(slot) = slot.lock() else { return };
    let Some(h) = slot.histogram.as_ref() else {
        return;
    };
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} summary\n");
    for q in [0.5, 0.9, 0.99] {
        let v = h.value_at_quantile(q) as f64 / per_second;
        let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v}");
    }
    let _ = writeln!(out, "{name}_sum {}", slot.sum as f64 / per_second);
    let _ = writeln!(out, "{name}_count {}", h.len());
}

impl Live {
    pub fn update(&self, stats: &RunStats) {
        if let Ok(mut s) = self.snapshot.lock() {
            s.events = stats.events;
            s.analysed = stats.analysed;
            s.records = stats.records;
            s.skipped_stage = stats.skipped_stage;
            s.long_running_started = stats.long_running_started;
            s.rejected.clone_from(&stats.rejected);
            s.repaired.clone_from(&stats.repaired);
            s.alerts = stats.alerts;
            s.suppressed_alerts = stats.suppressed_alerts;
            s.warmup_events = stats.warmup_events;
            s.duplicate_alerts = stats.duplicate_alerts;
            s.alerts_by_rule.clone_from(&stats.alerts_by_rule);
            s.state_keys = stats.state_keys;
            s.state_evictions = stats.state_evictions;
            s.incidents_open = stats.incidents_open;
            s.incidents_closed_early = stats.incidents_closed_early;
            s.late_observations = stats.late_observations;
        }
    }

    /// An alert delivered now for an event at `event_micros`, received at `received`.
    pub fn alert_delivered(&self, event_micros: i64, received: Option<std::time::Instant>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        // 1 ms to a week, 3 significant digits.
        let ms = ((now - event_micros).max(0) / 1000) as u64;
        record(&self.latency, 7 * 24 * 3_600_000, ms);
        if let Some(at) = received {
            record(
                &self.ingest_latency,
                3_600_000_000,
                at.elapsed().as_micros() as u64,
            );
        }
    }

    /// Prometheus text exposition.
    /// A snapshot could not be read at start: the service started with empty state.
    pub fn snapshot_rejected(&self) {
        self.snapshots_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The webhook's journal to expose.
    pub fn set_journal(&self, journal: crate::source::journal::Journal) {
        let _ = self.journal.set(journal);
    }

    /// The followed files' counters to expose.
    pub fn set_follow(&self, stats: std::sync::Arc<crate::source::follow::FollowStats>) {
        let _ = self.follow.set(stats);
    }

    fn render_durability(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        };
        one(
            "audithound_snapshots_rejected_total",
            "counter",
            "Snapshots that could not be read at start (each a start with empty state).",
            self.snapshots_rejected.load(Relaxed),
        );
        if let Some(j) = self.journal.get() {
            let s = j.stats();
            one(
                "audithound_journal_appended_total",
                "counter",
                "Webhook batches written to the journal.",
                s.appended.load(Relaxed),
            );
            one(
                "audithound_journal_bytes_waiting",
                "gauge",
                "Journal bytes not yet processed.",
                s.bytes_waiting.load(Relaxed),
            );
            one(
                "audithound_journal_refused_full_total",
                "counter",
                "Webhook batches refused (429) because the journal was full.",
                s.refused_full.load(Relaxed),
            );
            one("audithound_journal_torn_bytes_total", "counter", "Bytes of a record cut by a crash mid-write, dropped at start (never acknowledged).", s.torn_bytes.load(Relaxed));
        }
        if let Some(f) = self.follow.get() {
            one(
                "audithound_follow_rotations_total",
                "counter",
                "Followed files rotated (renamed and replaced).",
                f.rotations.load(Relaxed),
            );
            one(
                "audithound_follow_truncations_total",
                "counter",
                "Followed files truncated (copytruncate), read again from the start.",
                f.truncations.load(Relaxed),
            );
        }
    }

    /// The sinks' outboxes to expose.
    pub fn set_outboxes(
        &self,
        outboxes: Vec<(String, std::sync::Arc<crate::sink::outbox::Gauges>)>,
    ) {
        if let Ok(mut o) = self.outboxes.lock() {
            *o = outboxes;
        }
    }

    fn render_outboxes(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(outboxes) = self.outboxes.lock() else {
            return;
        };
        if outboxes.is_empty() {
            return;
        }
        type Read = fn(&crate::sink::outbox::Gauges) -> u64;
        let families: [(&str, &str, &str, Read); 6] = [
            (
                "audithound_outbox_pending",
                "gauge",
                "Findings waiting in a sink's outbox.",
                |g| g.pending.load(Relaxed),
            ),
            (
                "audithound_outbox_bytes",
                "gauge",
                "Bytes a sink's outbox holds on disk.",
                |g| g.bytes.load(Relaxed),
            ),
            (
                "audithound_outbox_delivered_total",
                "counter",
                "Findings a sink accepted from its outbox.",
                |g| g.delivered.load(Relaxed),
            ),
            (
                "audithound_outbox_retries_total",
                "counter",
                "Failed deliveries from a sink's outbox (each retried).",
                |g| g.retries.load(Relaxed),
            ),
            (
                "audithound_outbox_full_waits_total",
                "counter",
                "Times the engine waited because a sink's outbox was full (backpressure).",
                |g| g.full_waits.load(Relaxed),
            ),
            (
                "audithound_outbox_rejected_total",
                "counter",
                "Findings a sink refused for good, set aside in its outbox's .rejected.jsonl.",
                |g| g.rejected.load(Relaxed),
            ),
        ];
        for (name, kind, help, read) in families {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for (sink, g) in outboxes.iter() {
                let _ = writeln!(out, "{name}{{sink=\"{sink}\"}} {}", read(g));
            }
        }
    }

    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        self.render_outboxes(&mut out);
        self.render_durability(&mut out);
        let Ok(s) = self.snapshot.lock() else {
            return out;
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            &mut out,
            "audithound_records_total",
            "Records received.",
            s.records,
        );
        counter(
            &mut out,
            "audithound_events_total",
            "Audit events decoded.",
            s.events,
        );
        counter(
            &mut out,
            "audithound_events_analysed_total",
            "Events run through the detectors.",
            s.analysed,
        );
        counter(
            &mut out,
            "audithound_events_skipped_stage_total",
            "Events of stages not analysed.",
            s.skipped_stage,
        );
        counter(
            &mut out,
            "audithound_long_running_started_total",
            "ResponseStarted events of long-running requests checked by the single-event rules as they opened.",
            s.long_running_started,
        );
        counter(
            &mut out,
            "audithound_alerts_total",
            "Alerts delivered to the sinks.",
            s.alerts,
        );
        counter(
            &mut out,
            "audithound_alerts_suppressed_total",
            "Alerts held back by suppress.",
            s.suppressed_alerts,
        );
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            );
        };
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        gauge(
            &mut out,
            "audithound_kafka_partitions_assigned",
            "Kafka partitions this member holds.",
            self.kafka.partitions.load(relaxed),
        );
        gauge(
            &mut out,
            "audithound_kafka_lag",
            "Messages on the held partitions not yet committed (refreshed every 5 s; -1: not yet measured).",
            self.kafka.lag.load(relaxed),
        );
        counter(
            &mut out,
            "audithound_warmup_events_total",
            "Events re-read to rebuild detector state after a partition assignment.",
            s.warmup_events,
        );
        counter(
            &mut out,
            "audithound_late_observations_total",
            "Stateful observations that arrived behind the watermark (beyond the allowed lateness).",
            s.late_observations,
        );
        let _ = write!(out, "# HELP audithound_rejected_total Records rejected, by reason.\n# TYPE audithound_rejected_total counter\n");
        for (reason, n) in &s.rejected {
            let _ = writeln!(out, "audithound_rejected_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = write!(out, "# HELP audithound_repaired_total Events repaired by the decoder (an export dropped or renamed a field), by kind.\n# TYPE audithound_repaired_total counter\n");
        for (kind, n) in &s.repaired {
            let _ = writeln!(out, "audithound_repaired_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = write!(out, "# HELP audithound_rule_alerts_total Alerts by rule.\n# TYPE audithound_rule_alerts_total counter\n");
        for (rule, n) in &s.alerts_by_rule {
            let _ = writeln!(out, "audithound_rule_alerts_total{{rule=\"{rule}\"}} {n}");
        }
        let _ = write!(out, "# HELP audithound_state_keys Keys held by stateful rules.\n# TYPE audithound_state_keys gauge\naudithound_state_keys {}\n", s.state_keys);
        counter(
            &mut out,
            "audithound_state_evictions_total",
            "Stateful keys evicted by the cap on keys (max_keys).",
            s.state_evictions,
        );
        let _ = write!(out, "# HELP audithound_incidents_open Incidents open.\n# TYPE audithound_incidents_open gauge\naudithound_incidents_open {}\n", s.incidents_open);
        counter(
            &mut out,
            "audithound_incidents_closed_early_total",
            "Incidents closed early because too many were open (max_open_incidents).",
            s.incidents_closed_early,
        );
        summary(
            &mut out,
            "audithound_alert_latency_seconds",
            "Event time to alert delivery (millisecond resolution).",
            &self.latency,
            1e3,
        );
        summary(
            &mut out,
            "audithound_alert_ingest_latency_seconds",
            "Receipt of the event to alert delivery (microsecond resolution).",
            &self.ingest_latency,
            1e6,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_summaries_in_seconds_with_their_sum() {
        let live = Live::default();
        assert!(
            !live.render().contains("latency"),
            "no summary before an alert"
        );
        record(&live.latency, 7 * 24 * 3_600_000, 250);
        record(&live.latency, 7 * 24 * 3_600_000, 750);
        let text = live.render();
        for line in [
            "# TYPE audithound_alert_latency_seconds summary",
            "audithound_alert_latency_seconds{quantile=\"0.99\"} 0.75",
            "audithound_alert_latency_seconds_sum 1\n",
            "audithound_alert_latency_seconds_count 2\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // Every family has its HELP and TYPE, and every counter ends in _total.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut words = line.split(' ').skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(kind != "counter" || name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn repairs_and_long_running_openings_reach_the_summary_and_metrics() {
        let mut stats = RunStats::default();
        for _ in 0..2 {
            let mut b = BatchStats {
                long_running_started: 1,
                ..BatchStats::default()
            };
            b.repaired.insert("derived_audit_id", 2);
            b.repaired.insert("envelope_timestamp", 1);
            stats.merge_batch(b);
        }
        assert_eq!(stats.repaired["derived_audit_id"], 4);
        assert_eq!(stats.long_running_started, 2);
        let text = stats.render();
        assert!(text.contains("repaired events:"), "{text}");
        let live = Live::default();
        live.update(&stats);
        let metrics = live.render();
        for line in [
            "audithound_repaired_total{kind=\"derived_audit_id\"} 4",
            "audithound_repaired_total{kind=\"envelope_timestamp\"} 2",
            "audithound_long_running_started_total 2",
        ] {
            assert!(metrics.contains(line), "{line} in {metrics}");
        }
    }
}
