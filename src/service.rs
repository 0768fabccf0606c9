//! `audithound run`: the live service, assembled from its configuration. Sources (the audit
//! webhook, followed files, a Kafka group) feed one queue; the engine runs the same detectors
//! as a replay; alerts go to every configured sink, and a source's positions are acknowledged
//! only once the alerts they caused are delivered. The ops listener answers probes and
//! Prometheus apart from the webhook. Each listener, source and sink logs one line when it
//! starts; SIGTERM or SIGINT stops intake, drains what was accepted and flushes the sinks.

use crate::config::Config;
use crate::engine::{self, snapshot, EngineOptions, Input, Live};
use crate::metrics::{self, RunStats};
use crate::revocation::LiveRevocations;
use crate::rules::reload::LiveRules;
use crate::rules::RuleSet;
use crate::sink::{AlertSink, Fanout, JsonLines};
use crate::source::journal::Journal;
use crate::source::webhook::{self, Intake, WebhookStats};
use crate::source::{follow, kafka, live};
use anyhow::Context;
use axum::Router;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The rules a service starts with, and where they are reloaded from (none: the built-in
/// library, which does not change).
pub struct Rules {
    pub set: Arc<RuleSet>,
    pub paths: Vec<PathBuf>,
}

/// Everything that can be checked before starting, without binding or connecting: TLS files,
/// tokens, the revocation list, sinks' settings. One line per component, for `--check-config`.
pub fn check(cfg: &Config, rules: &Rules) -> anyhow::Result<Vec<String>> {
    let mut lines = vec![format!("rules: {} loaded", rules.set.rules.len())];
    if let Some(path) = &cfg.detection.revocations {
        let live =
            LiveRevocations::load(path).map_err(|e| anyhow::anyhow!("revocation list: {e}"))?;
        lines.push(format!(
            "revocation list: {} ({} entries)",
            path.display(),
            live.current().entries.len()
        ));
    }
    let reputation = cfg.reputation.sources();
    if !reputation.is_empty() {
        let live = crate::reputation::LiveReputation::load(&reputation)
            .map_err(|e| anyhow::anyhow!("reputation: {e}"))?;
        lines.extend(live.describe());
    }
    for proxy in &cfg.detection.impersonation_proxies {
        lines.push(format!("impersonation proxy: {proxy}"));
    }
    if let Some(h) = &cfg.webhook {
        if let (Some(cert), Some(key)) = (&h.tls_cert, &h.tls_key) {
            webhook::tls_config(cert, key, h.client_ca.as_deref())
                .context("configuration: webhook TLS")?;
        }
        lines.push(format!("webhook: {} ({})", h.listen, webhook_auth(h)?));
    }
    if let Some(o) = &cfg.ops {
        lines.push(format!(
            "ops: http://{}/ (healthz, readyz, metrics)",
            o.listen
        ));
    }
    for path in cfg.files.iter().flat_map(|f| &f.follow) {
        lines.push(format!("follow: {}", path.display()));
    }
    if let Some(k) = &cfg.kafka {
        kafka::check_consumer(&k.brokers, &k.group, &k.start, &k.properties())
            .context("configuration: kafka")?;
        lines.push(format!(
            "kafka: {} topics {} group {}",
            &*k.brokers,
            k.topics.join(", "),
            k.group
        ));
    }
    for (i, s) in cfg.sinks.iter().enumerate() {
        if let crate::sink::SinkConfig::Kafka(c) = s {
            c.check()
                .with_context(|| format!("configuration: sink {} (kafka)", i + 1))?;
        }
        lines.push(format!("sink: {}", s.describe()));
    }
    if cfg.sinks.is_empty() {
        lines.push("sink: stdout (native), none configured".into());
    }
    Ok(lines)
}

/// How the webhook authenticates its clients, for the start-up line.
fn webhook_auth(h: &crate::config::Webhook) -> anyhow::Result<String> {
    let tls = if h.tls_cert.is_some() {
        "HTTPS"
    } else {
        "plain HTTP"
    };
    let clients = match (&h.client_ca, h.token().map_err(anyhow::Error::msg)?) {
        (Some(_), Some(_)) => "client certificates and a bearer token",
        (Some(_), None) => "client certificates",
        (None, Some(_)) => "a bearer token",
        (None, None) => "no client authentication",
    };
    Ok(format!("{tls}, {clients}"))
}

/// The names of the run's inputs, indexed by `RecordMeta::file`: each source takes its own.
#[derive(Default)]
struct Inputs(Vec<Arc<str>>);

impl Inputs {
    fn add(&mut self, name: &str) -> u32 {
        self.0.push(Arc::from(name));
        (self.0.len() - 1) as u32
    }
}

/// Runs the service until SIGTERM or SIGINT (or until every source has ended).
pub fn run(cfg: &Config, rules: Rules) -> anyhow::Result<RunStats> {
    let mut opts = EngineOptions {
        progress: false,
        default_cluster: cfg.detection.cluster.clone(),
        ..EngineOptions::default()
    };
    if let Some(n) = cfg.detection.threads {
        opts.threads = n.max(1);
    }
    if let Some(n) = cfg.detection.max_keys {
        opts.max_keys = n;
    }
    opts.incidents = cfg.detection.incidents;
    if let Some(gap) = cfg
        .detection
        .incident_gap_micros()
        .map_err(anyhow::Error::msg)?
    {
        opts.incident_gap = gap;
    }
    if let Some(n) = cfg.detection.episode_cap {
        opts.episode_cap = n.max(1);
    }
    if let Some(n) = cfg.detection.max_open_incidents {
        opts.max_open_incidents = n.max(1);
    }
    if let Some(l) = cfg
        .detection
        .lateness_micros()
        .map_err(anyhow::Error::msg)?
    {
        opts.lateness = l;
    }
    let live_metrics = Arc::new(metrics::Live::default());
    let mut live = Live {
        metrics: Some(live_metrics.clone()),
        ..Live::default()
    };
    tracing::info!(rules = rules.set.rules.len(), "rules loaded");
    // Rule directories (and overrides) reloaded on change and on SIGHUP.
    let _rules_watch = if rules.paths.is_empty() {
        None
    } else {
        let live_rules = LiveRules::new(rules.paths.clone(), rules.set.clone());
        let watch = live_rules.watch()?;
        live.rules = Some(live_rules);
        Some(watch)
    };
    let _revocations_watch = match &cfg.detection.revocations {
        Some(path) => {
            let list =
                LiveRevocations::load(path).map_err(|e| anyhow::anyhow!("revocation list: {e}"))?;
            tracing::info!(path = %path.display(), entries = list.current().entries.len(), "revocation list loaded");
            let watch = list.watch()?;
            opts.revocations = list;
            Some(watch)
        }
        None => None,
    };
    // IP lists and GeoIP, reloaded like the revocation list.
    let reputation = cfg.reputation.sources();
    let _reputation_watch = if reputation.is_empty() {
        None
    } else {
        let live = crate::reputation::LiveReputation::load(&reputation)
            .map_err(|e| anyhow::anyhow!("reputation: {e}"))?;
        tracing::info!(loaded = ?live.describe(), "reputation loaded");
        let watch = live.watch()?;
        opts.reputation = live;
        Some(watch)
    };
    opts.impersonation_proxies = cfg.detection.impersonation_proxies.clone();

    // What must survive a restart lives under the state directory.
    let state_dir = cfg.state_dir.as_deref();
    if let Some(dir) = state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "state directory");
    }
    // Remote sinks deliver from an outbox on disk when there is a state directory.
    let mut outboxes = state_dir.map(|dir| crate::sink::Outboxes {
        dir: dir.join("outbox"),
        max_bytes: cfg.outbox_max_mib << 20,
        drain: std::time::Duration::from_secs(10),
        opened: Vec::new(),
    });
    let mut sinks: Vec<Box<dyn AlertSink>> = Vec::new();
    for s in &cfg.sinks {
        sinks.push(s.build(outboxes.as_mut())?);
        tracing::info!(sink = %s.describe(), "sink ready");
    }
    if sinks.is_empty() {
        sinks.push(Box::new(JsonLines::open("-", Default::default())?));
        tracing::info!("no sink configured: alerts go to stdout");
    }
    if let Some(o) = outboxes {
        o.warn_orphans();
        live_metrics.set_outboxes(o.opened);
    }

    let mut inputs = Inputs::default();
    let mut acks: Vec<Arc<dyn crate::source::Acknowledge>> = Vec::new();
    // The state a snapshot left, and the positions the sources resume from.
    let snapshot_path = state_dir.map(|d| d.join("snapshot.json.zst"));
    let restore = match &snapshot_path {
        Some(path) => match snapshot::read(path) {
            Ok(found) => {
                if let Some(s) = &found {
                    tracing::info!(path = %path.display(), journal = ?s.positions.journal, files = s.positions.files.len(), "snapshot found: state and positions resume from it");
                }
                found
            }
            Err(e) => {
                tracing::error!("{e}; starting with empty detector state");
                live_metrics.snapshot_rejected();
                None
            }
        },
        None => None,
    };
    let queue_len = cfg.webhook.as_ref().map_or(64, |h| h.queue);
    let (queue, source) = live::channel(queue_len);
    let hook_stats = Arc::new(WebhookStats::default());
    let ready = Arc::new(AtomicBool::new(false));
    let ops_routes = ops_router(live_metrics.clone(), hook_stats.clone(), ready.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // SIGTERM/SIGINT: the listeners stop taking requests and the readers stop reading; once
    // every sender of the queue is gone, the engine drains what was accepted and returns.
    // The ops listener stays up until the engine has drained, answering /readyz 503 from the
    // signal on: probes and a last scrape still reach it while the sinks flush.
    let stop = Arc::new(AtomicBool::new(false));
    let (stopping, _) = tokio::sync::watch::channel(false);
    let stopping = Arc::new(stopping);
    let (finished, _) = tokio::sync::watch::channel(false);
    let finished = Arc::new(finished);
    {
        let (stop, stopping, ready) = (stop.clone(), stopping.clone(), ready.clone());
        runtime.spawn(async move {
            webhook::termination().await;
            tracing::info!("stopping: intake closed, draining what was accepted");
            ready.store(false, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            let _ = stopping.send(true);
        });
    }
    let follow_stats = Arc::new(follow::FollowStats::default());
    live_metrics.set_follow(follow_stats.clone());
    let shutdown = |stopping: &Arc<tokio::sync::watch::Sender<bool>>| {
        let mut rx = stopping.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut servers = Vec::new();
    if let Some(o) = &cfg.ops {
        let listener = std::net::TcpListener::bind(&o.listen)
            .with_context(|| format!("cannot listen on {} (ops)", o.listen))?;
        tracing::info!(addr = %webhook::display_addr(listener.local_addr().ok()), "ops listener: /healthz, /readyz, /metrics (plain HTTP)");
        servers.push(runtime.spawn(webhook::serve(
            listener,
            None,
            ops_routes.clone(),
            Arc::default(),
            webhook::Limits::default(),
            shutdown(&finished),
        )));
    }
    let mut readers = Vec::new();
    let mut journal = None;
    if let Some(hook) = &cfg.webhook {
        let input = inputs.add("webhook");
        if let Some(dir) = state_dir {
            let j = Journal::open(&dir.join("journal"), hook.journal_max_mib << 20)?;
            // The journal keeps every record after the last snapshot's: a restart reads them
            // again into the state the snapshot left (or, with none, into empty state). Alerts
            // they raise again repeat ids already delivered; none is lost.
            let after = restore
                .as_ref()
                .and_then(|s| s.positions.journal)
                .unwrap_or(0);
            j.keep_from(after);
            tracing::info!(
                committed = j.committed(),
                reading_after = after,
                max_mib = hook.journal_max_mib,
                "webhook journal: batches are on disk before the 200"
            );
            readers.push(j.spawn_reader(after, input, queue.clone(), stop.clone())?);
            acks.push(Arc::new(j.clone()));
            live_metrics.set_journal(j.clone());
            journal = Some(j);
        }
        let intake = Intake {
            queue: queue.clone(),
            journal: journal.clone(),
            input,
            max_body: hook.max_body_bytes,
            bearer_token: hook.token().map_err(anyhow::Error::msg)?,
            stats: hook_stats.clone(),
        };
        // Probes and metrics stay on the webhook too, for setups without an ops listener.
        let app = webhook::router(intake, ops_routes.clone());
        let auth = webhook_auth(hook)?;
        let tls = match (&hook.tls_cert, &hook.tls_key) {
            (Some(cert), Some(key)) => {
                Some(webhook::tls_config(cert, key, hook.client_ca.as_deref())?)
            }
            _ => None,
        };
        let listener = std::net::TcpListener::bind(&hook.listen)
            .with_context(|| format!("cannot listen on {} (webhook)", hook.listen))?;
        tracing::info!(addr = %webhook::display_addr(listener.local_addr().ok()), "audit webhook listening ({auth})");
        servers.push(runtime.spawn(webhook::serve(
            listener,
            tls,
            app,
            hook_stats.clone(),
            hook.limits().map_err(anyhow::Error::msg)?,
            shutdown(&stopping),
        )));
    }
    if let Some(files) = &cfg.files {
        let followed: Vec<(PathBuf, u32)> = files
            .follow
            .iter()
            .map(|p| (p.clone(), inputs.add(&p.to_string_lossy())))
            .collect();
        let checkpoints = match state_dir {
            Some(dir) => {
                let store = follow::Checkpoints::new(&dir.join("files"), &followed)?;
                // A snapshot's positions win over the saved checkpoints: the state reflects them.
                let from_snapshot: Vec<(PathBuf, follow::Checkpoint)> = followed
                    .iter()
                    .filter_map(|(p, _)| {
                        let cp = restore.as_ref()?.file_position(p)?;
                        Some((p.clone(), cp))
                    })
                    .collect();
                let store = Arc::new(store.starting_at(from_snapshot));
                acks.push(store.clone());
                Some(store)
            }
            None => None,
        };
        for (path, _) in &followed {
            let resume = checkpoints.as_ref().and_then(|c| c.load(path));
            tracing::info!(path = %path.display(), from_start = files.from_start, resume_at = ?resume.map(|c| c.offset), "following file");
        }
        readers.push(follow::spawn(
            followed,
            files.from_start,
            checkpoints,
            follow_stats.clone(),
            queue.clone(),
            stop.clone(),
        )?);
    }
    if let Some(k) = &cfg.kafka {
        let consumer = Arc::new(kafka::consumer(
            &k.brokers,
            &k.group,
            &k.start,
            &k.properties(),
            live_metrics.kafka.clone(),
        )?);
        acks.push(Arc::new(kafka::Committer(consumer.clone())));
        let cluster_from = match &k.cluster_from {
            Some(c) => kafka::ClusterFrom::parse(c)
                .map_err(|e| anyhow::anyhow!("kafka.cluster_from {e}"))?,
            None => kafka::ClusterFrom::Nothing,
        };
        tracing::info!(brokers = %&*k.brokers, topics = ?k.topics, group = %k.group, "consuming from Kafka");
        readers.push(kafka::spawn(
            consumer,
            &k.topics,
            cluster_from,
            k.rebuild_ms().map_err(|e| anyhow::anyhow!(e))?,
            inputs.add("kafka"),
            queue.clone(),
            stop.clone(),
        )?);
    }
    drop(queue);
    if !acks.is_empty() {
        live.acknowledge = Some(Arc::new(acks));
    }
    if let Some(path) = snapshot_path {
        let journal = journal.clone();
        live.snapshot = Some(snapshot::SnapshotPlan {
            path,
            every: cfg.snapshot_every().map_err(anyhow::Error::msg)?,
            // The journal keeps the records after the snapshot's: a restart reads them again.
            written: Some(Arc::new(move |positions: &crate::source::Positions| {
                if let (Some(j), Some(seq)) = (&journal, positions.journal) {
                    j.keep_from(seq);
                }
            })),
        });
    }
    // Unless a signal came during start-up.
    ready.store(!stop.load(Ordering::Relaxed), Ordering::Relaxed);
    let input = Input {
        clusters: vec![cfg.detection.cluster.clone(); inputs.0.len()],
        names: inputs.0,
        total_bytes: 0,
        disk_bytes: Arc::default(),
    };
    let mut sink = Fanout(sinks);
    let result = engine::run_live(&opts, &live, rules.set, source, input, &mut sink, restore);
    ready.store(false, Ordering::Relaxed);
    // The engine ended (end of every source, or an error): stop the listeners either way.
    let _ = stopping.send(true);
    let _ = finished.send(true);
    for server in servers {
        runtime
            .block_on(server)
            .context("listener task")?
            .context("listener")?;
    }
    for reader in readers {
        let _ = reader.join();
    }
    let stats = result?;
    tracing::info!(
        webhook_batches = hook_stats.accepted.load(Ordering::Relaxed),
        refused_busy = hook_stats.busy.load(Ordering::Relaxed),
        events = stats.events,
        alerts = stats.alerts,
        "stopped"
    );
    Ok(stats)
}

/// `/healthz` (alive), `/readyz` (rules and state loaded, sources started; 503 again once a
/// signal stopped intake) and `/metrics`.
fn ops_router(
    metrics: Arc<metrics::Live>,
    hook: Arc<WebhookStats>,
    ready: Arc<AtomicBool>,
) -> Router {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let exposition = move || {
        let (metrics, hook) = (metrics.clone(), hook.clone());
        async move {
            let mut text = metrics.render();
            text.push_str(&hook.render());
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
        }
    };
    let readiness = move || {
        let ready = ready.load(Ordering::Relaxed);
        async move {
            if ready {
                (StatusCode::OK, "ready\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "starting or stopping\n")
            }
        }
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .route("/metrics", get(exposition))
}
