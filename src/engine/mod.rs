//! The run loop: source → parallel decode/detect workers → in-order collector → sinks.
//!
//! ```text
//!  reader thread ──batches──► N workers ──results──► collector (this thread)
//!      ▲                                                │ re-sequences by batch number,
//!      └──────────── in-flight permits ◄────────────────┘ dedupes, writes alerts & dead letters
//! ```
//! Batches are cut by the reader independently of the thread count and the collector emits
//! them in input order, so output is byte-identical for any `--threads`. A fixed number of
//! in-flight batches bounds memory whatever the input size.

mod reorder;
pub mod snapshot;
mod worker;

use crate::alert::{Record, Status};
use crate::detect::episode::{Clock, EpisodeOptions};
use crate::detect::{Stateful, Suppressor, DEFAULT_MAX_KEYS};
use crate::event::{DecodeOptions, Stage};
use crate::incident::{IncidentOptions, Incidents};
use crate::metrics::RunStats;
use crate::revocation::LiveRevocations;
use crate::rules::RuleSet;
use crate::sink::AlertSink;
use crate::source::file::{self, InputFile};
use crate::source::merge::{MergeOptions, Merger};
use crate::source::{Batch, BatchSource, Rejection};
use crossbeam_channel::bounded;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use worker::{Output, Processed, WorkerContext};

/// How the engine reads, decodes and detects: the same for a replay and a live service.
#[derive(Clone)]
pub struct EngineOptions {
    pub threads: usize,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub stages: Vec<Stage>,
    pub max_record_bytes: usize,
    pub batch_records: usize,
    pub default_cluster: String,
    /// Regex over each file's path whose first capture group names its cluster.
    pub cluster_from_path: Option<regex::Regex>,
    pub decode: DecodeOptions,
    /// For the built-in `revoked` rule; empty when no list is given.
    pub revocations: Arc<LiveRevocations>,
    /// IP lists and GeoIP for the `sourceIP.*` fields; empty when none is given.
    pub reputation: Arc<crate::reputation::LiveReputation>,
    /// Impersonation proxies (`impersonation_proxies`, `--impersonation-proxy`): when one acts
    /// for a user, rules and alerts see that user as the actor.
    pub impersonation_proxies: Vec<String>,
    pub progress: bool,
    pub top_actors: usize,
    /// Per stateful rule, keys kept before the least recently seen are evicted.
    pub max_keys: usize,
    /// How far behind the newest event time an event may arrive and still reach the stateful
    /// detectors in event-time order (microseconds).
    pub lateness: i64,
    /// Values and audit IDs an episode lists, and items an incident's lists hold (true
    /// totals are counted beyond it).
    pub episode_cap: usize,
    /// Group alerts into incidents by who raised them.
    pub incidents: bool,
    /// Event time after an incident's last alert that closes it (microseconds).
    pub incident_gap: i64,
    /// Incidents open at once; past it, the least recently active close early (counted).
    pub max_open_incidents: usize,
}

/// Default allowed lateness: the disorder between API servers' webhook batches.
pub const DEFAULT_LATENESS: i64 = 10_000_000;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            from: None,
            to: None,
            stages: vec![Stage::ResponseComplete, Stage::Panic],
            max_record_bytes: 16 << 20,
            batch_records: 2048,
            default_cluster: "default".into(),
            cluster_from_path: None,
            decode: DecodeOptions::default(),
            revocations: LiveRevocations::fixed(Default::default()),
            reputation: crate::reputation::LiveReputation::fixed(Default::default()),
            impersonation_proxies: Vec::new(),
            progress: true,
            top_actors: 10,
            max_keys: DEFAULT_MAX_KEYS,
            lateness: DEFAULT_LATENESS,
            episode_cap: crate::detect::episode::DEFAULT_EPISODE_CAP,
            incidents: true,
            incident_gap: crate::incident::DEFAULT_GAP,
            max_open_incidents: crate::incident::DEFAULT_MAX_OPEN,
        }
    }
}

/// Archived files to replay.
#[derive(Clone)]
pub struct Files {
    /// Files, directories (searched recursively) and globs.
    pub paths: Vec<String>,
    /// File-name globs picked up inside directories.
    pub include: Vec<String>,
    /// Files never read as input (this run's own outputs, when written beside the logs).
    pub exclude: Vec<std::path::PathBuf>,
}

impl Files {
    pub fn new(paths: Vec<String>) -> Files {
        Files {
            paths,
            include: file::DEFAULT_INCLUDE
                .iter()
                .map(|s| s.to_string())
                .collect(),
            exclude: Vec::new(),
        }
    }
}

/// What a live service adds: alerts go out as they fire (flushed after every batch), sources
/// hear when a batch is done, rules reload, and counters feed /metrics.
#[derive(Clone)]
pub struct Live {
    pub metrics: Option<Arc<crate::metrics::Live>>,
    /// Told a batch's positions once its alerts are delivered to every sink.
    pub acknowledge: Option<Arc<dyn crate::source::Acknowledge>>,
    /// The rules, reloaded while the service runs (the `rules` argument is their first set).
    pub rules: Option<Arc<crate::rules::reload::LiveRules>>,
    /// When no batch has come for this long, observations still waiting for the watermark
    /// are applied anyway (a quiet stream does not hold its alerts back).
    pub idle_flush: std::time::Duration,
    /// An open episode reports how it grew at most this often (event time, microseconds).
    pub episode_updates: i64,
    /// Snapshots of detector state (with a state directory).
    pub snapshot: Option<snapshot::SnapshotPlan>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            metrics: None,
            acknowledge: None,
            rules: None,
            idle_flush: std::time::Duration::from_secs(2),
            episode_updates: 60_000_000,
            snapshot: None,
        }
    }
}

/// Alert ids remembered for de-duplication (the same event read twice gives the same id).
const DEDUPE_WINDOW: usize = 1 << 20;

struct Dedupe {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Dedupe {
    fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= DEDUPE_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// Replays files through the rules; alerts go to `sink`, rejected input to `dead_letter`.
pub fn replay(
    opts: &EngineOptions,
    input: &Files,
    rules: Arc<RuleSet>,
    sink: &mut dyn AlertSink,
    mut dead_letter: Option<&mut dyn Write>,
) -> anyhow::Result<RunStats> {
    let started = Instant::now();
    let mut stats = RunStats::default();
    let include = file::include_set(&input.include)?;
    let (mut files, problems) = file::discover(&input.paths, &include);
    file::exclude(&mut files, &input.exclude);
    for p in &problems {
        tracing::warn!(path = %p.path, "cannot read input: {}", p.detail);
        stats.reject("unreadable_path", &p.path, 0, 0, &p.detail);
        write_dead_letter(
            &mut dead_letter,
            "unreadable_path",
            &p.path,
            0,
            0,
            &p.detail,
            &[],
        )?;
    }
    stats.files = files.len() as u64;
    if files.is_empty() {
        anyhow::bail!(
            "no input files found in {:?} (directories are searched for {})",
            input.paths,
            input.include.join(", ")
        );
    }
    let total_bytes: u64 = files.iter().map(|f: &InputFile| f.size).sum();
    let disk_bytes = Arc::new(AtomicU64::new(0));
    let merge_opts = MergeOptions {
        max_record_bytes: opts.max_record_bytes,
        batch_records: opts.batch_records,
        batch_bytes: 4 << 20,
    };
    let file_clusters: Vec<String> = files.iter().map(|f| cluster_of(opts, &f.name)).collect();
    let merger = Merger::new(files, merge_opts, disk_bytes.clone());
    let input = Input {
        names: merger.file_names(),
        clusters: file_clusters,
        total_bytes,
        disk_bytes,
    };
    let run = Run {
        opts,
        live: None,
        rules,
        input,
        stats,
        started,
        restore: None,
    };
    run.go(merger, sink, dead_letter)
}

/// What the engine needs to know about a source besides its batches.
pub struct Input {
    /// Name of each input (file path, `webhook`), indexed by `RecordMeta::file`.
    pub names: Vec<Arc<str>>,
    /// Cluster of each input's events when their envelope names none.
    pub clusters: Vec<String>,
    /// For the progress bar: total bytes expected (0 when unknown) and bytes read so far.
    pub total_bytes: u64,
    pub disk_bytes: Arc<AtomicU64>,
}

/// Runs a live source through the engine until it ends; alerts go to `sink` as they fire.
/// `restore`: the state a snapshot left (the sources resume from its positions).
pub fn run_live(
    opts: &EngineOptions,
    live: &Live,
    rules: Arc<RuleSet>,
    source: impl BatchSource,
    input: Input,
    sink: &mut dyn AlertSink,
    restore: Option<snapshot::Snapshot>,
) -> anyhow::Result<RunStats> {
    let run = Run {
        opts,
        live: Some(live),
        rules,
        input,
        stats: RunStats::default(),
        started: Instant::now(),
        restore,
    };
    run.go(source, sink, None)
}

/// One run of the engine over a source.
struct Run<'o> {
    opts: &'o EngineOptions,
    /// Live sources only.
    live: Option<&'o Live>,
    rules: Arc<RuleSet>,
    input: Input,
    stats: RunStats,
    started: Instant,
    restore: Option<snapshot::Snapshot>,
}

impl Run<'_> {
    /// Runs batches from `source` through decode workers, rules and stateful detectors into `sink`,
    /// in input order. Shared by `replay` (files) and `run` (live sources).
    fn go(
        self,
        mut source: impl BatchSource,
        sink: &mut dyn AlertSink,
        mut dead_letter: Option<&mut dyn Write>,
    ) -> anyhow::Result<RunStats> {
        let Run {
            opts,
            live,
            rules,
            input,
            mut stats,
            started,
            restore,
        } = self;
        // Live: alerts go out as they fire and are flushed per batch; a replay orders them by
        // event time.
        let flush_every_batch = live.is_some();
        let (total_bytes, disk_bytes) = (input.total_bytes, input.disk_bytes);
        let mut detectors = Detectors {
            stateful: Stateful::new(&rules, opts.max_keys).with_episodes(EpisodeOptions {
                cap: opts.episode_cap,
                update_every: live.map(|l| l.episode_updates),
            }),
            suppressor: Suppressor::default(),
            dedupe: Dedupe {
                seen: HashSet::new(),
                order: VecDeque::new(),
            },
            rules: rules.clone(),
            live_metrics: live.and_then(|l| l.metrics.clone()),
            reorder: reorder::Reorder::new(opts.lateness),
            incidents: opts.incidents.then(|| {
                Incidents::new(IncidentOptions {
                    gap: opts.incident_gap,
                    cap: opts.episode_cap,
                    update_every: live.map(|l| l.episode_updates),
                    max_open: opts.max_open_incidents.max(1),
                })
            }),
            held: VecDeque::new(),
            order_alerts: live.is_none(),
            positions: crate::source::Positions::default(),
            spare_outputs: None,
        };
        if let Some(snapshot) = restore {
            detectors.restore(snapshot, opts, live);
        }
        let names: Vec<Arc<str>> = input.names.clone();
        let mut last_snapshot = Instant::now();
        // Spent batches' output lists go back to the workers, so that the next batches fill
        // them instead of allocating (and faulting in) lists of their own.
        let (spare_tx, spare_rx) = bounded(opts.threads.max(1) * 4 + HOLD_BATCHES);
        detectors.spare_outputs = Some(spare_tx);
        let ctx = Arc::new(WorkerContext {
            rules,
            live_rules: live.and_then(|l| l.rules.clone()),
            revocations: opts.revocations.clone(),
            reputation: opts.reputation.clone(),
            proxies: opts.impersonation_proxies.clone().into(),
            decode: opts.decode.clone(),
            files: input.names.into(),
            file_clusters: input.clusters.into(),
            stages: opts.stages.clone(),
            from: opts.from,
            to: opts.to,
            keep_raw: dead_letter.is_some(),
            all_actors: opts.incidents,
            watched: detectors.incidents.as_ref().map(Incidents::watched),
            spare_outputs: Some(spare_rx),
        });

        let threads = opts.threads.max(1);
        // Batches the collector holds for observations waiting on the watermark take permits too.
        let in_flight = threads * 4 + HOLD_BATCHES;
        let (batch_tx, batch_rx) = bounded(threads * 2);
        let (result_tx, result_rx) = bounded::<Processed>(in_flight);
        let (permit_tx, permit_rx) = bounded::<()>(in_flight);
        // Spent batches go back to the reader so their buffers are reused.
        let (spent_tx, spent_rx) = bounded(in_flight);
        for _ in 0..in_flight {
            permit_tx.send(())?;
        }
        let progress = progress_bar(opts.progress, total_bytes);

        std::thread::scope(|scope| -> anyhow::Result<()> {
            // Owned here so that an early error return hangs up on the reader and the workers.
            let permit_tx = permit_tx;
            scope.spawn(move || {
                while let Some(batch) = source.next_batch(spent_rx.try_recv().ok()) {
                    if permit_rx.recv().is_err() || batch_tx.send(batch).is_err() {
                        break; // the collector stopped (error); stop reading
                    }
                }
            });
            for _ in 0..threads {
                let (rx, tx, ctx) = (batch_rx.clone(), result_tx.clone(), ctx.clone());
                scope.spawn(move || {
                    for batch in rx {
                        if tx.send(worker::process(&ctx, batch)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(result_tx);
            drop(batch_rx);

            let mut pending = BTreeMap::new();
            let mut next_seq = 0u64;
            let release = |spent: Vec<Batch>,
                           stats: &RunStats,
                           positions: &mut crate::source::Positions|
             -> anyhow::Result<()> {
                for spent in spent {
                    positions.add(&spent.positions);
                    if let Some(ack) = live.and_then(|l| l.acknowledge.as_ref()) {
                        // Every alert this batch caused is delivered to every sink by now.
                        ack.acknowledge(&spent.positions);
                    }
                    let _ = spent_tx.try_send(spent);
                    // The reader may be gone already at the end of input.
                    let _ = permit_tx.send(());
                }
                if let Some(m) = live.and_then(|l| l.metrics.as_ref()) {
                    m.update(stats);
                }
                Ok(())
            };
            loop {
                let result = match live.map(|l| l.idle_flush) {
                    Some(idle) if !detectors.reorder.is_empty() => {
                        match result_rx.recv_timeout(idle) {
                            Ok(r) => r,
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                                // A quiet stream: what waits for the watermark goes now.
                                let spent = detectors.drain(&mut stats, sink)?;
                                detectors.tick(false, &mut stats, sink)?;
                                sink.flush()?;
                                release(spent, &stats, &mut detectors.positions)?;
                                // Everything is applied: a snapshot due is taken now.
                                let plan = live.and_then(|l| l.snapshot.as_ref());
                                if let Some(plan) =
                                    plan.filter(|p| last_snapshot.elapsed() >= p.every)
                                {
                                    detectors.snapshot(plan, &names, &mut stats);
                                    last_snapshot = Instant::now();
                                }
                                continue;
                            }
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    _ => match result_rx.recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    },
                };
                pending.insert(result.seq, result);
                while let Some(done) = pending.remove(&next_seq) {
                    next_seq += 1;
                    let spent = emit(done, &mut stats, &mut detectors, sink, &mut dead_letter)?;
                    if flush_every_batch {
                        sink.flush()?;
                    }
                    release(spent, &stats, &mut detectors.positions)?;
                    // Snapshot at a batch boundary, everything held applied and delivered.
                    let plan = live.and_then(|l| l.snapshot.as_ref());
                    if let Some(plan) = plan.filter(|p| last_snapshot.elapsed() >= p.every) {
                        let spent = detectors.drain(&mut stats, sink)?;
                        detectors.tick(false, &mut stats, sink)?;
                        sink.flush()?;
                        release(spent, &stats, &mut detectors.positions)?;
                        detectors.snapshot(plan, &names, &mut stats);
                        last_snapshot = Instant::now();
                    }
                    progress.set_position(disk_bytes.load(Ordering::Relaxed));
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    progress.set_message(format!(
                        "{:.0} events/s, {} alerts",
                        stats.events as f64 / secs,
                        stats.alerts
                    ));
                }
            }
            // End of input: nothing more can come before what is held. Its alerts are delivered
            // before the batches are acknowledged.
            let spent = detectors.drain(&mut stats, sink)?;
            // A replay's end closes every episode; a service stopping does not end them (its
            // state carries on when it restarts).
            detectors.tick(live.is_none(), &mut stats, sink)?;
            sink.flush()?;
            release(spent, &stats, &mut detectors.positions)?;
            // A service stopping leaves its state for the next start.
            if let Some(plan) = live.and_then(|l| l.snapshot.as_ref()) {
                detectors.snapshot(plan, &names, &mut stats);
            }
            Ok(())
        })?;
        progress.finish_and_clear();
        sink.flush()?;
        if let Some(w) = dead_letter.as_mut() {
            w.flush()?;
        }
        stats.disk_bytes = disk_bytes.load(Ordering::Relaxed);
        stats.finish(started.elapsed().as_secs_f64(), opts.top_actors);
        Ok(stats)
    }
}

/// The cluster a file's events belong to unless their envelope says otherwise.
fn cluster_of(opts: &EngineOptions, path: &str) -> String {
    opts.cluster_from_path
        .as_ref()
        .and_then(|re| re.captures(path))
        .and_then(|c| c.get(1))
        .map_or_else(|| opts.default_cluster.clone(), |m| m.as_str().to_owned())
}

/// Batches the collector may hold while their observations wait for the watermark; beyond it
/// the oldest batch's observations are applied (a fixed number, so that the output does not
/// depend on the thread count).
const HOLD_BATCHES: usize = 8;

/// What the collector owns: stateful detector state and the alert filters, fed in event-time
/// order (within the allowed lateness) through `reorder`.
struct Detectors {
    rules: Arc<RuleSet>,
    live_metrics: Option<Arc<crate::metrics::Live>>,
    stateful: Stateful,
    /// Alerts grouped by who raised them (None: `--no-incidents`).
    incidents: Option<Incidents>,
    suppressor: Suppressor,
    dedupe: Dedupe,
    /// Observations (and, with `order_alerts`, alerts) waiting for the watermark: their batch
    /// number and place among its outputs (the outputs stay where the worker put them).
    reorder: reorder::Reorder<Due>,
    /// The batches, in order, with their outputs and how many of them still wait.
    held: VecDeque<HeldBatch>,
    order_alerts: bool,
    /// Where each source has been processed to (what a snapshot reflects).
    positions: crate::source::Positions,
    /// Where the output lists of released batches go back to the workers.
    spare_outputs: Option<crossbeam_channel::Sender<Vec<Output>>>,
}

/// What waits for the watermark: a batch's output (its batch number and place among the
/// batch's outputs, which stay where the worker put them), or a delivered alert for the
/// incidents, which take alerts and requests in event-time order.
enum Due {
    Output(u64, u32),
    Incident(Box<crate::alert::Alert>),
}

struct HeldBatch {
    batch: Batch,
    lens: crate::event::Lens,
    outputs: Vec<Output>,
    waiting: usize,
}

impl Detectors {
    /// Writes the state (everything held applied already) with the positions it reflects. A
    /// snapshot that cannot be written is logged and counted: the service goes on.
    fn snapshot(
        &mut self,
        plan: &snapshot::SnapshotPlan,
        names: &[Arc<str>],
        stats: &mut RunStats,
    ) {
        let out = snapshot::Out {
            format: snapshot::FORMAT_NAME,
            version: snapshot::VERSION,
            inputs: names.iter().map(|n| &**n).collect(),
            positions: &self.positions,
            stateful: self.stateful.snapshot(&self.rules),
            incidents: self.incidents.as_ref(),
            suppressor: &self.suppressor,
        };
        match snapshot::write(&plan.path, &out) {
            Ok(bytes) => {
                stats.snapshots_written += 1;
                tracing::debug!(bytes, path = %plan.path.display(), "snapshot written");
                if let Some(written) = &plan.written {
                    written(&self.positions);
                }
            }
            Err(e) => {
                stats.snapshots_failed += 1;
                tracing::error!("snapshot not written (the next one is tried later): {e:#}");
            }
        }
    }

    /// Takes the state a snapshot left.
    fn restore(&mut self, s: snapshot::Snapshot, opts: &EngineOptions, live: Option<&Live>) {
        let (kept, fresh) = self.stateful.restore(&self.rules, s.stateful);
        self.suppressor = s.suppressor;
        if let (Some(incidents), true) = (s.incidents, self.incidents.is_some()) {
            self.incidents = Some(incidents.restored(IncidentOptions {
                gap: opts.incident_gap,
                cap: opts.episode_cap,
                update_every: live.map(|l| l.episode_updates),
                max_open: opts.max_open_incidents.max(1),
            }));
        }
        self.positions = s.positions;
        tracing::info!(
            rules_restored = kept,
            rules_fresh = fresh,
            "detector state restored from the snapshot"
        );
    }

    /// Sends an alert on unless it is a duplicate, suppressed, or completed by warm-up events
    /// (`warmup`: its batch's); `received` is when its batch arrived (live sources).
    fn deliver(
        &mut self,
        mut alert: crate::alert::Alert,
        warmup: bool,
        received: Option<std::time::Instant>,
        stats: &mut RunStats,
        sink: &mut dyn AlertSink,
    ) -> anyhow::Result<()> {
        // An episode's updates share its id: each report is told apart by its status and
        // count (the same events read twice still give the same report).
        let first_time = match alert.status {
            Some(status) if status != Status::Open => {
                let report = format!("{}/{}/{}", alert.id, status.name(), alert.evidence.count);
                self.dedupe.first_time(&report)
            }
            _ => self.dedupe.first_time(&alert.id),
        };
        if !first_time {
            stats.duplicate_alerts += 1;
            return Ok(());
        }
        let period = self.rules.get(&alert.rule.id).and_then(|r| r.suppress);
        if !self.suppressor.admit(&mut alert, period) {
            stats.suppressed_alerts += 1;
            return Ok(());
        }
        if warmup {
            // Completed by events before the committed offset: delivered before the restart or
            // rebalance; the state it leaves is what was wanted.
            stats.warmup_alerts += 1;
            return Ok(());
        }
        stats.count_alert(&alert);
        sink.send(Record::Alert(&alert))?;
        if let (Some(m), None | Some(Status::Open)) = (&self.live_metrics, alert.status) {
            m.alert_delivered(alert.time_micros, received);
        }
        if self.incidents.is_some() {
            // Incidents take it in event-time order, among the requests.
            let time = alert.time_micros;
            self.reorder.insert(time, Due::Incident(Box::new(alert)));
        }
        Ok(())
    }

    /// Event time has moved on to the watermark (or the input ended): episodes that are over
    /// close, and live ones report.
    fn tick(
        &mut self,
        end: bool,
        stats: &mut RunStats,
        sink: &mut dyn AlertSink,
    ) -> anyhow::Result<()> {
        let clock = Clock {
            now: self.reorder.watermark(),
            end,
        };
        let mut fired = Vec::new();
        self.stateful.tick(&self.rules, clock, &mut fired);
        for alert in fired {
            self.deliver(alert, false, None, stats, sink)?;
        }
        if self.incidents.is_none() {
            return Ok(());
        }
        // The closing reports just delivered update their incidents first.
        if end {
            while let Some(due) = self.reorder.pop_oldest() {
                self.apply(due, stats, sink)?;
            }
        }
        let mut reports = Vec::new();
        if let Some(incidents) = self.incidents.as_mut() {
            incidents.tick(clock.now, end, &mut reports);
        }
        for incident in reports {
            stats.count_incident(&incident);
            sink.send(Record::Incident(&incident))?;
        }
        Ok(())
    }

    /// Applies one held observation to the state and delivers what it completes (or delivers
    /// a held alert).
    fn apply(
        &mut self,
        due: Due,
        stats: &mut RunStats,
        sink: &mut dyn AlertSink,
    ) -> anyhow::Result<()> {
        let (seq, at) = match due {
            Due::Output(seq, at) => (seq, at),
            Due::Incident(alert) => return self.join_incident(&alert, stats, sink),
        };
        let first = self.held.front().map_or(seq, |h| h.batch.seq);
        // A batch is held until its observations are applied, so it is there.
        let Some(held) = self.held.get_mut((seq - first) as usize) else {
            return Ok(());
        };
        let Some(output) = held.outputs.get_mut(at as usize) else {
            return Ok(());
        };
        held.waiting -= 1;
        // Events are decoded again through the lens their batch was evaluated with.
        if !self.stateful.lens.same(&held.lens) {
            self.stateful.lens = held.lens.clone();
        }
        let lens = &held.lens;
        let mut fired = Vec::new();
        if let Output::FollowUp(follow_up, request) = output {
            if follow_up.checks.is_empty() {
                // Nearly every event's: it only names its actor. Handled in place.
                let data = &held.batch.data;
                record_request(
                    self.incidents.as_mut(),
                    follow_up,
                    request.take(),
                    lens,
                    data,
                );
                *output = Output::Done;
                return Ok(());
            }
        }
        match std::mem::replace(output, Output::Done) {
            Output::Observation(obs) => {
                self.stateful
                    .observe(&self.rules, *obs, &held.batch.data, &mut fired)
            }
            Output::FollowUp(follow_up, request) => {
                let data = &held.batch.data;
                record_request(self.incidents.as_mut(), &follow_up, request, lens, data);
                self.stateful
                    .follow_up(&self.rules, follow_up, &held.batch.data, &mut fired)
            }
            Output::Alert(alert) => fired.push(*alert),
            Output::Done => {}
        }
        let (warmup, received) = (held.batch.warmup, held.batch.received);
        for alert in fired {
            self.deliver(alert, warmup, received, stats, sink)?;
        }
        Ok(())
    }

    /// Joins a delivered alert to its incident; delivers what that reports.
    fn join_incident(
        &mut self,
        alert: &crate::alert::Alert,
        stats: &mut RunStats,
        sink: &mut dyn AlertSink,
    ) -> anyhow::Result<()> {
        let Some(incidents) = self.incidents.as_mut() else {
            return Ok(());
        };
        let family = self
            .rules
            .get(&alert.rule.id)
            .map_or("other", |r| r.family());
        let mut reports = Vec::new();
        incidents.alert(alert, family, &mut reports);
        for incident in reports {
            stats.count_incident(&incident);
            sink.send(Record::Incident(&incident))?;
        }
        Ok(())
    }

    /// Applies what the watermark has passed.
    fn apply_due(&mut self, stats: &mut RunStats, sink: &mut dyn AlertSink) -> anyhow::Result<()> {
        while let Some(due) = self.reorder.pop_due() {
            self.apply(due, stats, sink)?;
        }
        Ok(())
    }

    /// Applies every held observation; returns the batches it frees.
    fn drain(
        &mut self,
        stats: &mut RunStats,
        sink: &mut dyn AlertSink,
    ) -> anyhow::Result<Vec<Batch>> {
        while let Some(held) = self.reorder.pop_oldest() {
            self.apply(held, stats, sink)?;
        }
        Ok(self.release(stats))
    }

    /// The batches at the front whose observations have all been applied, in order.
    fn release(&mut self, stats: &mut RunStats) -> Vec<Batch> {
        stats.late_observations = self.reorder.late;
        stats.state_evictions = self.stateful.stats.evictions;
        stats.state_keys = self.stateful.key_count();
        if let Some(incidents) = &self.incidents {
            stats.incidents_open = incidents.open_count() as u64;
            stats.incidents_closed_early = incidents.stats.closed_early;
        }
        let mut out = Vec::new();
        while self.held.front().is_some_and(|h| h.waiting == 0) {
            if let Some(mut held) = self.held.pop_front() {
                out.push(held.batch);
                if let Some(spare) = &self.spare_outputs {
                    held.outputs.clear();
                    let _ = spare.try_send(held.outputs);
                }
            }
        }
        out
    }
}

/// Takes a processed batch: delivers its single-event alerts, queues its observations for the
/// watermark and applies those now due; returns the batches whose work is complete.
fn emit(
    done: Processed,
    stats: &mut RunStats,
    det: &mut Detectors,
    sink: &mut dyn AlertSink,
    dead_letter: &mut Option<&mut dyn Write>,
) -> anyhow::Result<Vec<Batch>> {
    if done.batch.warmup {
        stats.warmup_events += done.stats.events;
    }
    if let Some(t) = done.stats.first_time {
        det.stateful.saw(t);
    }
    stats.merge_batch(done.stats);
    for r in &done.rejections {
        report_rejection(stats, r, dead_letter)?;
    }
    let mut spent = Vec::new();
    if !Arc::ptr_eq(&done.rules, &det.rules) {
        // Held observations name the old rules: they go first. Then the state moves over,
        // carried by rule id.
        spent = det.drain(stats, sink)?;
        det.stateful.adopt(&det.rules, &done.rules);
        det.rules = done.rules.clone();
        tracing::info!(
            rules = det.rules.rules.len(),
            "detector state moved to the reloaded rules"
        );
    }
    let (warmup, received) = (done.batch.warmup, done.batch.received);
    let seq = done.batch.seq;
    // Alerts that need not wait go now; the rest wait in place for the watermark.
    let mut outputs = done.outputs;
    let mut waiting = Vec::new();
    for (at, output) in outputs.iter_mut().enumerate() {
        let time = match output {
            Output::Alert(a) if !det.order_alerts => {
                if let Output::Alert(a) = std::mem::replace(output, Output::Done) {
                    det.deliver(*a, warmup, received, stats, sink)?;
                }
                continue;
            }
            Output::Alert(a) => a.time_micros,
            Output::Observation(o) => o.time,
            Output::FollowUp(f, _) => f.time,
            Output::Done => continue,
        };
        waiting.push((at as u32, time));
    }
    det.held.push_back(HeldBatch {
        batch: done.batch,
        lens: done.lens,
        outputs,
        waiting: waiting.len(),
    });
    let mut placements = done.placements.iter().peekable();
    for (at, time) in waiting {
        // The input reached a new record: the watermark moves, and what it passed goes.
        let mut moved = false;
        while let Some((_, t)) = placements.next_if(|(p, _)| *p <= at) {
            det.reorder.advance(*t);
            moved = true;
        }
        if moved {
            det.apply_due(stats, sink)?;
        }
        det.reorder.push(time, Due::Output(seq, at));
    }
    for (_, t) in placements {
        det.reorder.advance(*t);
    }
    det.apply_due(stats, sink)?;
    det.tick(false, stats, sink)?;
    // Too many batches held: the oldest one's observations go now, oldest first.
    while det.held.len() > HOLD_BATCHES && det.held.front().is_some_and(|h| h.waiting > 0) {
        match det.reorder.pop_oldest() {
            Some(held) => det.apply(held, stats, sink)?,
            None => break,
        }
    }
    spent.extend(det.release(stats));
    Ok(spent)
}

/// Records a request of an actor whose incident is open: as its worker described it, or decoded
/// again when the worker ran ahead of the incident (it did not know to describe it).
fn record_request(
    incidents: Option<&mut Incidents>,
    follow_up: &crate::detect::FollowUp,
    request: Option<Box<crate::incident::Request>>,
    lens: &crate::event::Lens,
    data: &[u8],
) {
    let Some(incidents) = incidents else { return };
    if !incidents.watches(follow_up.actor) {
        return;
    }
    let (time, actor) = (follow_up.time, follow_up.actor);
    match request {
        Some(request) => incidents.described(actor, *request),
        None => follow_up
            .seed
            .with_view(lens, time, data, |view| incidents.request(actor, view)),
    }
}

fn report_rejection(
    stats: &mut RunStats,
    r: &Rejection,
    dead_letter: &mut Option<&mut dyn Write>,
) -> anyhow::Result<()> {
    if stats.reject(r.reason, &r.file, r.line, r.offset, &r.detail) {
        tracing::warn!(file = %r.file, line = r.line, reason = r.reason, "rejected: {}", r.detail);
    }
    write_dead_letter(
        dead_letter,
        r.reason,
        &r.file,
        r.line,
        r.offset,
        &r.detail,
        &r.raw,
    )
}

fn write_dead_letter(
    out: &mut Option<&mut dyn Write>,
    reason: &str,
    file: &str,
    line: u64,
    offset: u64,
    detail: &str,
    raw: &[u8],
) -> anyhow::Result<()> {
    let Some(w) = out.as_mut() else { return Ok(()) };
    let mut rec = serde_json::json!({
        "reason": reason,
        "file": file,
        "line": line,
        "offset": offset,
        "detail": detail,
    });
    // The bytes as they were: text when they are UTF-8, else base64 (never replaced by U+FFFD).
    match std::str::from_utf8(raw) {
        Ok(text) => rec["raw"] = text.into(),
        Err(_) => {
            use base64::Engine;
            rec["raw_base64"] = base64::engine::general_purpose::STANDARD.encode(raw).into();
        }
    }
    serde_json::to_writer(&mut *w, &rec)?;
    w.write_all(b"\n")?;
    Ok(())
}

fn progress_bar(enabled: bool, total: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !enabled {
        return ProgressBar::hidden();
    }
    // indicatif draws nothing when stderr is not a terminal.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}") {
        bar.set_style(style);
    }
    bar
}
