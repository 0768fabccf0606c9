//! The `audithound` command line: parses arguments and calls the library. Nothing else.

use anyhow::Context;
use audithound::alert::OutputFormat;
use audithound::engine::{self, ReplayOptions};
use audithound::event::{time, DecodeOptions, Format, Stage};
use audithound::rules::{testing, RuleSet};
use audithound::sink::JsonLines;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "audithound",
    version,
    about = "Find revoked credentials in use, privilege escalation and anomalous Secret access in Kubernetes audit logs.",
    after_help = "Examples:\n  audithound replay samples/                       replay a directory with the shipped detectors\n  audithound replay 'logs/*.gz' --out alerts.jsonl  alerts to a file, summary on stderr\n  audithound rules test detectors/                 run every rule's own tests\n  audithound eval samples/scenarios                precision and recall on the scenario suite"
)]
struct Cli {
    /// More log output on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr: no warnings, progress bar or summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse archived audit logs (files, directories, globs; plain, .gz, .zst) in event-time order.
    #[command(
        after_help = "Examples:\n  audithound replay samples/\n  audithound replay /var/log/kube-apiserver/ --threads 4 --format ocsf --out findings.jsonl\n  audithound replay 'archive/*/audit-*.log.gz' --from 2025-03-01T00:00:00Z --to 2025-03-02T00:00:00Z\n  audithound replay audit.log --dead-letter rejected.jsonl --summary-json summary.json"
    )]
    Replay(Box<ReplayArgs>),
    /// Work with detection rules: list, validate, self-test.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run as a service: receive audit events live (audit webhook) and deliver alerts to sinks.
    #[command(
        long_about = "Run as a service: the API server's audit webhook backend posts EventList batches to\n\
            the [webhook] listener; alerts go to the configured sinks as they fire, with the same\n\
            detectors and the same results as `replay` on the same events. SIGTERM or SIGINT stops\n\
            intake, drains what was accepted, flushes the sinks and exits 0. The config file is\n\
            TOML; see src/config.rs or the README for every key.",
        after_help = "Examples:\n  audithound run --config audithound.toml\n  audithound run --config audithound.toml --check-config"
    )]
    Run(RunArgs),
    /// Score the detectors on a labelled scenario suite: precision and recall per detector.
    #[command(
        long_about = "Score the detectors on a labelled scenario suite.\n\n\
            Every log file in DIR is replayed on its own (fresh detector state) and its alerts are\n\
            compared with DIR/expected.jsonl, lines of {\"file\", \"rule\", \"audit_id\"}. A label is\n\
            found when an alert of that rule carries the audit ID in its evidence; an alert no label\n\
            accounts for is a false positive. DIR/revocations.yaml, if present, is the revocation list.\n\
            Exit status 1 when any label is missed or any alert is unexpected.",
        after_help = "Examples:\n  audithound eval samples/scenarios\n  audithound eval samples/scenarios --json report.json --rules detectors/ --rules my-overrides/"
    )]
    Eval(EvalArgs),
    /// Re-key a raw audit topic by identity, for several `run` members in one group.
    #[command(
        long_about = "Re-key a raw audit topic by identity so that several `audithound run` members of one\n\
            consumer group can share a fleet's stream.\n\n\
            Each message (one event, an EventList or a provider envelope) is split into single events,\n\
            written to TO keyed `cluster/username` (one identity, one partition) with a `cluster`\n\
            header. Binding changes and service-account deletions, which other identities' state\n\
            depends on, are also copied to every other partition marked as context. Offsets on\n\
            FROM are committed once every copy is acknowledged. Members read TO with\n\
            cluster_from = \"header:cluster\".",
        after_help = "Examples:\n  audithound route --brokers kafka:9092 --from k8s-audit --to k8s-audit-by-identity\n  audithound route --brokers kafka:9092 --from k8s-audit --to keyed --cluster-from key --property security.protocol=SSL"
    )]
    Route(RouteArgs),
}

#[derive(Args)]
struct RouteArgs {
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT,...")]
    brokers: String,
    /// Raw audit topic to read; repeat for several.
    #[arg(long, required = true, value_name = "TOPIC")]
    from: Vec<String>,
    /// Keyed topic to write (it must exist; its partition count is read once at start).
    #[arg(long, value_name = "TOPIC")]
    to: String,
    /// Consumer group on the raw topics.
    #[arg(long, default_value = "audithound-route", value_name = "NAME")]
    group: String,
    /// Where raw messages name their cluster: "key" (up to its first /) or "header:<name>".
    #[arg(long, value_name = "WHERE")]
    cluster_from: Option<String>,
    /// Cluster for events that name none.
    #[arg(long, default_value = "default", value_name = "NAME")]
    cluster: String,
    /// A librdkafka property for both clients (security.protocol=SASL_SSL, …); repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Service configuration (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration, the rules and the revocation list, then exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// Scenario directory: log files plus expected.jsonl.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Rule directory or file; repeat to add more. Default: ./detectors.
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Also write the full report (per file, rule and detector) as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Decode/detect worker threads per file. Default: all cores.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Args)]
struct ReplayArgs {
    /// Audit log files, directories (searched recursively) or quoted globs.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// Rule directory or file; repeat to add more. Default: ./detectors (the shipped library).
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Where alerts go, one JSON object per line; `-` is stdout. Example: --out alerts.jsonl
    #[arg(long, default_value = "-", value_name = "FILE|-")]
    out: String,
    /// Alert format: native (audithound JSON) or ocsf (OCSF 1.1 Detection Finding, class 2004).
    #[arg(long, value_enum, default_value = "native")]
    format: OutputFormat,
    /// Decode/detect worker threads. Default: all cores. Output is identical for any value.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Only events at or after this RFC 3339 time. Example: --from 2025-03-01T00:00:00Z
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<i64>,
    /// Only events before this RFC 3339 time. Example: --to 2025-03-02T00:00:00Z
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<i64>,
    /// Stages the detectors see; other stages of the same request are counted, not analysed.
    #[arg(long, value_delimiter = ',', default_value = "ResponseComplete,Panic", value_parser = parse_stage)]
    stages: Vec<Stage>,
    /// Records longer than this are rejected as line_too_long (without being buffered whole).
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    max_line_bytes: usize,
    /// Keys (identities, terms…) each stateful rule remembers; beyond it the least recently seen
    /// are evicted and counted in the summary. About 160 bytes per key and rule.
    #[arg(long, default_value_t = audithound::detect::DEFAULT_MAX_KEYS, value_name = "N")]
    max_keys: usize,
    /// How far behind the newest event time an event may arrive and still reach the stateful
    /// detectors in event-time order (30s, 2m…). Later ones are applied at once and counted as
    /// late in the summary. Several API servers' logs disagree by a few seconds.
    #[arg(long, default_value = "10s", value_parser = parse_lateness, value_name = "DURATION")]
    lateness: i64,
    /// Revocation list (YAML, JSON or CSV) for the built-in revoked-credential detector: entries
    /// with username, uid, group and/or credential_id, and revoked_at. Example: --revocations offboarded.yaml
    #[arg(long, value_name = "FILE")]
    revocations: Option<PathBuf>,
    /// Write every rejected record (reason, file, line, offset, raw bytes) here as JSON lines.
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// Write the run summary (counts, rejections by reason, alerts by rule) here as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Cluster name for events whose envelope (AKS resource id, GKE cluster_name, EKS log group,
    /// ACK logstore) and path name none.
    #[arg(long, default_value = "default", value_name = "NAME")]
    cluster: String,
    /// Regex over each file's path; its first capture group is the cluster of that file's events.
    /// Example: --cluster-from-path 'clusters/([^/]+)/'
    #[arg(long, value_name = "REGEX")]
    cluster_from_path: Option<regex::Regex>,
    /// Top-level field of flat ACK/SLS records that names the cluster. Example: --cluster-field cluster_id
    #[arg(long, value_name = "KEY")]
    cluster_field: Option<String>,
    /// Input format: auto detects each record (native, EventList, ACK, EKS, GKE, AKS); naming one
    /// rejects records of any other format as format_mismatch.
    #[arg(long, value_enum, default_value = "auto")]
    input_format: InputFormat,
    /// File-name glob picked up inside directories; repeat for more. Replaces the default set.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Never draw the progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List the loaded rules: id, severity, title.
    #[command(after_help = "Example:\n  audithound rules list detectors/")]
    List(RulesDir),
    /// Validate rule files; every problem is reported with its file and place.
    #[command(after_help = "Example:\n  audithound rules check detectors/ my-overrides/")]
    Check(RulesDir),
    /// Run each rule's `tests:` (events that must fire, near-misses that must not).
    #[command(after_help = "Example:\n  audithound rules test detectors/")]
    Test(RulesDir),
    /// Show why a rule does or does not match an event, matcher by matcher.
    #[command(
        after_help = "Example:\n  audithound rules explain k8s.rbac.admin_binding event.json\n  (the file may hold one event, a line of any supported format, or an EventList)"
    )]
    Explain(ExplainArgs),
}

#[derive(Args)]
struct ExplainArgs {
    /// Rule id, as `rules list` shows it.
    rule: String,
    /// File holding the event(s).
    event: PathBuf,
    /// Rule directories or files. Default: ./detectors
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
}

#[derive(Args)]
struct RulesDir {
    /// Rule directories or files. Default: ./detectors
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InputFormat {
    Auto,
    Native,
    Ack,
    Eks,
    Gke,
    Aks,
}

impl InputFormat {
    fn expected(self) -> Option<Format> {
        match self {
            InputFormat::Auto => None,
            InputFormat::Native => Some(Format::Native),
            InputFormat::Ack => Some(Format::Ack),
            InputFormat::Eks => Some(Format::Eks),
            InputFormat::Gke => Some(Format::Gke),
            InputFormat::Aks => Some(Format::Aks),
        }
    }
}

fn parse_time(s: &str) -> Result<i64, String> {
    time::parse_rfc3339_micros(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time like 2025-03-01T00:00:00Z"))
}

fn parse_lateness(s: &str) -> Result<i64, String> {
    audithound::rules::kind::parse_duration(s)
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    Stage::parse(s).ok_or_else(|| {
        format!("{s:?} is not a stage (RequestReceived, ResponseStarted, ResponseComplete, Panic)")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay(args) => replay(*args, cli.quiet),
        Command::Rules(cmd) => rules(cmd),
        Command::Eval(args) => eval(args, cli.quiet),
        Command::Run(args) => run_service(args, cli.quiet),
        Command::Route(args) => route(args),
    }
}

fn run_service(args: RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    use audithound::{config, source::live, webhook};
    let cfg = config::load(&args.config).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let rules = Arc::new(load_rules(cfg.detection.rules.clone())?);
    let mut opts = ReplayOptions {
        progress: false,
        flush_every_batch: true,
        default_cluster: cfg.detection.cluster.clone(),
        ..ReplayOptions::default()
    };
    if let Some(n) = cfg.detection.threads {
        opts.threads = n.max(1);
    }
    if let Some(n) = cfg.detection.max_keys {
        opts.max_keys = n;
    }
    if let Some(l) = cfg
        .detection
        .lateness_micros()
        .map_err(anyhow::Error::msg)?
    {
        opts.lateness = l;
    }
    // A quiet stream's stateful alerts do not wait for events that may never come.
    opts.idle_flush = Some(std::time::Duration::from_secs(2));
    // Alerts go out as they fire; a replay orders them by event time.
    opts.order_alerts = false;
    // detectors/ (and overrides) reloaded on change and on SIGHUP.
    let rule_dirs = if cfg.detection.rules.is_empty() {
        default_rules()
    } else {
        cfg.detection.rules.clone()
    };
    let live_rules = audithound::rules::reload::LiveRules::new(rule_dirs, rules.clone());
    let _rules_watch = live_rules.watch()?;
    opts.live_rules = Some(live_rules);
    let mut _watch = None;
    if let Some(path) = &cfg.detection.revocations {
        let live = audithound::detect::reload::LiveRevocations::load(path)
            .map_err(|e| anyhow::anyhow!("revocation list: {e}"))?;
        _watch = Some(live.watch()?);
        opts.revocations = live;
    }
    let mut sinks: Vec<Box<dyn audithound::sink::AlertSink>> = Vec::new();
    for s in &cfg.sinks {
        sinks.push(s.open()?);
    }
    if sinks.is_empty() {
        sinks.push(Box::new(JsonLines::open("-", OutputFormat::Native)?));
    }
    let follow = cfg
        .files
        .as_ref()
        .map(|f| f.follow.clone())
        .unwrap_or_default();
    if let Some(h) = &cfg.webhook {
        if let (Some(cert), Some(key)) = (&h.tls_cert, &h.tls_key) {
            webhook::tls_config(cert, key, h.client_ca.as_deref())
                .context("configuration: webhook TLS")?;
        }
    }
    if args.check_config {
        let hook = cfg
            .webhook
            .as_ref()
            .map_or("no webhook".into(), |h| format!("webhook on {}", h.listen));
        println!(
            "configuration ok: {} rules, {hook}, {} followed file(s), {} sink(s)",
            rules.rules.len(),
            follow.len(),
            sinks.len()
        );
        return Ok(ExitCode::SUCCESS);
    }

    // Inputs: 0 is the webhook, 1 Kafka, then the followed files.
    let mut names: Vec<Arc<str>> = vec![Arc::from("webhook"), Arc::from("kafka")];
    names.extend(
        follow
            .iter()
            .map(|p| Arc::from(p.to_string_lossy().as_ref())),
    );
    let clusters = vec![cfg.detection.cluster.clone(); names.len()];
    let queue_len = cfg.webhook.as_ref().map_or(64, |h| h.queue);
    let (queue, source) = live::channel(queue_len, names.len());
    let live_metrics = Arc::new(audithound::metrics::Live::default());
    let kafka_gauges = live_metrics.kafka.clone();
    opts.live_metrics = Some(live_metrics.clone());
    let hook_stats = Arc::new(webhook::WebhookStats::default());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // SIGTERM/SIGINT: the webhook stops taking requests and the followers stop reading; once
    // every sender of the queue is gone, the engine drains what was accepted and returns.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_signal = {
        let stop = stop.clone();
        async move {
            webhook::termination().await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let server = match &cfg.webhook {
        Some(hook) => {
            let app = webhook::router(
                queue.clone(),
                0,
                hook.max_body_bytes,
                hook.bearer_token.as_deref(),
                hook_stats.clone(),
                live_metrics,
            );
            match (&hook.tls_cert, &hook.tls_key) {
                (Some(cert), Some(key)) => {
                    let tls = webhook::tls_config(cert, key, hook.client_ca.as_deref())?;
                    let listener = std::net::TcpListener::bind(&hook.listen)
                        .with_context(|| format!("cannot listen on {}", hook.listen))?;
                    listener.set_nonblocking(true)?;
                    tracing::info!(addr = ?listener.local_addr().ok(), client_certificates = hook.client_ca.is_some(), "audit webhook listening (HTTPS)");
                    Some(runtime.spawn(webhook::serve_tls(listener, tls, app, on_signal)))
                }
                _ => {
                    let listener = runtime
                        .block_on(tokio::net::TcpListener::bind(&hook.listen))
                        .with_context(|| format!("cannot listen on {}", hook.listen))?;
                    tracing::info!(addr = ?webhook::local_addr(&listener), "audit webhook listening (plain HTTP)");
                    Some(runtime.spawn(webhook::serve(listener, app, on_signal)))
                }
            }
        }
        None => {
            runtime.spawn(on_signal);
            None
        }
    };
    let follower = if follow.is_empty() {
        None
    } else {
        let from_start = cfg.files.as_ref().is_some_and(|f| f.from_start);
        Some(audithound::source::follow::spawn(
            follow,
            2,
            from_start,
            queue.clone(),
            stop.clone(),
        )?)
    };
    let kafka_reader = match &cfg.kafka {
        Some(k) => {
            use audithound::source::kafka;
            let consumer = Arc::new(kafka::consumer(
                &k.brokers,
                &k.group,
                &k.start,
                &k.properties,
                kafka_gauges.clone(),
            )?);
            let committer = consumer.clone();
            opts.on_batch_done = Some(Arc::new(move |positions: &[kafka::Position]| {
                kafka::commit(&committer, positions)
            }));
            tracing::info!(brokers = %k.brokers, topics = ?k.topics, group = %k.group, "consuming from Kafka");
            let cluster_from = match &k.cluster_from {
                Some(c) => kafka::ClusterFrom::parse(c)
                    .map_err(|e| anyhow::anyhow!("kafka.cluster_from {e}"))?,
                None => kafka::ClusterFrom::Nothing,
            };
            Some(kafka::spawn(
                consumer,
                &k.topics,
                cluster_from,
                k.rebuild_ms().map_err(|e| anyhow::anyhow!(e))?,
                1,
                queue.clone(),
                stop.clone(),
            )?)
        }
        None => None,
    };
    drop(queue);
    let input = engine::Input {
        names,
        clusters,
        total_bytes: 0,
        disk_bytes: Arc::default(),
    };
    let mut sink = audithound::sink::Fanout(sinks);
    let stats = engine::run(
        &opts,
        rules,
        source,
        input,
        Default::default(),
        std::time::Instant::now(),
        &mut sink,
        None,
    )?;
    if let Some(server) = server {
        runtime
            .block_on(server)
            .context("webhook server task")?
            .context("webhook server")?;
    }
    for reader in [follower, kafka_reader].into_iter().flatten() {
        let _ = reader.join();
    }
    let accepted = hook_stats
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let busy = hook_stats.busy.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(webhook_batches = accepted, refused_busy = busy, "stopped");
    if !quiet {
        eprint!("{}", stats.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn route(args: RouteArgs) -> anyhow::Result<ExitCode> {
    use audithound::route::RouteOptions;
    use audithound::source::kafka::ClusterFrom;
    let cluster_from = match &args.cluster_from {
        Some(c) => ClusterFrom::parse(c).map_err(|e| anyhow::anyhow!("--cluster-from {e}"))?,
        None => ClusterFrom::Nothing,
    };
    let mut properties = std::collections::BTreeMap::new();
    for p in &args.properties {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--property {p:?}: expected KEY=VALUE"))?;
        properties.insert(k.to_owned(), v.to_owned());
    }
    let opts = RouteOptions {
        brokers: args.brokers,
        from: args.from,
        to: args.to,
        group: args.group,
        cluster_from,
        cluster: args.cluster,
        properties,
    };
    // SIGTERM/SIGINT: finish the batch in hand (flush, commit), then exit.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let flag = stop.clone();
    let signals = std::thread::spawn(move || {
        runtime.block_on(audithound::webhook::termination());
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let stats = audithound::route::route(&opts, &stop)?;
    drop(signals);
    tracing::info!(
        messages = stats.messages,
        events = stats.events,
        context_copies = stats.copies,
        passed_through = stats.passed_through,
        "route stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn eval(args: EvalArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let rules = Arc::new(load_rules(args.rules)?);
    let mut opts = ReplayOptions {
        progress: false,
        ..ReplayOptions::default()
    };
    if let Some(n) = args.threads {
        opts.threads = n.max(1);
    }
    let revocations = args.dir.join("revocations.yaml");
    if revocations.is_file() {
        opts.revocations = audithound::detect::reload::LiveRevocations::load(&revocations)
            .map_err(|e| anyhow::anyhow!("revocation list: {e}"))?;
    }
    let report = audithound::eval::run(&args.dir, rules, &opts, |file| {
        if !quiet {
            tracing::info!("replaying {file}");
        }
    })?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let clean = report.total.found == report.total.expected && report.total.false_positives == 0;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The shipped library: ./detectors when run from a checkout, else the one this binary was built from.
fn default_rules() -> Vec<PathBuf> {
    let local = PathBuf::from("detectors");
    if local.is_dir() {
        return vec![local];
    }
    vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("detectors")]
}

fn load_rules(dirs: Vec<PathBuf>) -> anyhow::Result<RuleSet> {
    let dirs = if dirs.is_empty() {
        default_rules()
    } else {
        dirs
    };
    Ok(RuleSet::load(&dirs)?)
}

fn replay(args: ReplayArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let rules = Arc::new(load_rules(args.rules)?);
    tracing::debug!(rules = rules.rules.len(), "rules loaded");
    let mut opts = ReplayOptions {
        paths: args.paths,
        from: args.from,
        to: args.to,
        stages: args.stages,
        max_record_bytes: args.max_line_bytes,
        max_keys: args.max_keys,
        lateness: args.lateness,
        default_cluster: args.cluster,
        cluster_from_path: args.cluster_from_path,
        decode: DecodeOptions {
            expect: args.input_format.expected(),
            cluster_field: args.cluster_field,
            ..DecodeOptions::default()
        },
        progress: !args.no_progress && !quiet,
        ..ReplayOptions::default()
    };
    // Reloaded when the file changes or on SIGHUP, for long replays and followed inputs.
    let mut _watch = None;
    if let Some(path) = &args.revocations {
        let live = audithound::detect::reload::LiveRevocations::load(path)
            .map_err(|e| anyhow::anyhow!("revocation list: {e}"))?;
        tracing::debug!(
            entries = live.current().entries.len(),
            "revocation list loaded"
        );
        _watch = Some(live.watch()?);
        opts.revocations = live;
    }
    if let Some(n) = args.threads {
        opts.threads = n.max(1);
    }
    if !args.include.is_empty() {
        opts.include = args.include;
    }
    let mut sink = JsonLines::open(&args.out, args.format)?;
    // Created above (and below), so they can be recognised and skipped if they sit among the inputs.
    opts.exclude = [
        Some(PathBuf::from(&args.out)),
        args.dead_letter.clone(),
        args.summary_json.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut dead_letter = match &args.dead_letter {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create dead-letter file {}", p.display()))?,
        )),
        None => None,
    };
    let stats = engine::replay(
        &opts,
        rules,
        &mut sink,
        dead_letter.as_mut().map(|w| w as &mut dyn std::io::Write),
    )?;
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&stats)?)
            .with_context(|| format!("cannot write summary {}", p.display()))?;
    }
    if !quiet {
        eprint!("{}", stats.render());
    }
    if stats.events == 0 {
        anyhow::bail!(
            "no audit events could be read from {} file(s): {} record(s) rejected ({})",
            stats.files,
            stats.rejected_total(),
            stats
                .rejected
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn explain(args: ExplainArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    use audithound::event::{decode_record, Item};
    use audithound::rules::field::EventView;
    let set = load_rules(args.rules)?;
    let Some(rule) = set.get(&args.rule) else {
        anyhow::bail!(
            "no rule {:?}; `audithound rules list` shows the ids",
            args.rule
        );
    };
    let bytes = std::fs::read(&args.event)
        .with_context(|| format!("cannot read {}", args.event.display()))?;
    let mut report = String::new();
    decode_record(
        &bytes,
        &DecodeOptions::default(),
        "default",
        &mut |item| match item {
            Item::Event(ev, format) => {
                report.push_str(&format!(
                    "event {} ({}):\n",
                    ev.audit_id.as_deref().unwrap_or("?"),
                    format.name()
                ));
                report.push_str(&rule.explain(&EventView::new(ev, ev.event_time().unwrap_or(0))));
            }
            Item::Rejected(e) => report.push_str(&format!("rejected [{}]: {e}\n", e.reason())),
            Item::Skipped(why) => report.push_str(&format!("skipped: {why}\n")),
        },
    );
    out.write_all(report.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn rules(cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match cmd {
        RulesCommand::List(d) => {
            let set = load_rules(d.dirs)?;
            for r in &set.rules {
                writeln!(out, "{:<48} {:<9} {}", r.id, r.severity.name(), r.title)?;
            }
            for r in &set.disabled {
                writeln!(
                    out,
                    "{:<48} {:<9} {} (off)",
                    r.id,
                    r.severity.name(),
                    r.title
                )?;
            }
        }
        RulesCommand::Check(d) => {
            let set = load_rules(d.dirs)?;
            // Tests are built only when run; check them too.
            let broken: Vec<String> = set
                .rules
                .iter()
                .chain(&set.disabled)
                .filter_map(|r| {
                    let e = r.tests.get().err()?;
                    Some(format!("{}: rule {}: tests.{e}", r.source.display(), r.id))
                })
                .collect();
            if !broken.is_empty() {
                return Err(audithound::rules::LoadErrors(broken).into());
            }
            writeln!(
                out,
                "ok: {} rules ({} switched off)",
                set.rules.len() + set.disabled.len(),
                set.disabled.len()
            )?;
        }
        RulesCommand::Explain(args) => return explain(args, &mut out),
        RulesCommand::Test(d) => {
            // Rules shipped switched off are tested too: enabling them must be safe.
            let set = load_rules(d.dirs)?.with_disabled_enabled();
            let report = testing::run(&set);
            for f in &report.failures {
                writeln!(out, "FAIL {f}")?;
            }
            let failed_rules = report
                .failures
                .iter()
                .filter_map(|f| f.split(':').next())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            writeln!(
                out,
                "{} passed, {} failed",
                report.rules - failed_rules,
                failed_rules
            )?;
            if !report.failures.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
