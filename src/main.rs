//! The `audithound` command line: parses arguments and calls the library. Nothing else.

use anyhow::Context;
use audithound::alert::OutputFormat;
use audithound::engine::{self, EngineOptions, Files};
use audithound::event::{time, DecodeOptions, Format, Stage};
use audithound::rules::{library, RuleSet, Severity};
use audithound::sink::JsonLines;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// `--version`: the program's, and its built-in rule library's.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rule library ",
    env!("AUDITHOUND_LIBRARY_DIGEST"),
    ", ",
    env!("AUDITHOUND_LIBRARY_FILES"),
    " files)"
);

#[derive(Parser)]
#[command(
    name = "audithound",
    version = VERSION,
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
    /// Log lines on stderr as text or as JSON objects (for log collectors).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
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
    /// Stream the archived events that match a condition, in event-time order.
    #[command(
        long_about = "Stream the archived events that match a condition, in event-time order across all\n\
            files and formats, at replay speed. The condition is the rule language's, on one line:\n\
            `field=value`, `!=`, `>`, `>=`, `<`, `<=`, `~` (glob), `=~` (regex), `field in (a, b)`,\n\
            `field exists`, `macro:name`, joined by `and`, `or`, `not` and parentheses; values may be\n\
            quoted, and `$list` names a list of the rule library. A YAML flow mapping works too.",
        after_help = "Examples:\n  audithound hunt archive/ --where 'user.username=mallory@corp and verb=get'\n  audithound hunt archive/ --from -24h \\\n    --where 'verb=delete and objectRef.namespace=$system_namespaces'\n  audithound hunt archive/ --format json > hits.jsonl \\\n    --where 'userAgent~\"curl/*\" and responseStatus.code<400'"
    )]
    Hunt(Box<HuntArgs>),
    /// What one identity, credential or source address did, or who touched one object.
    #[command(
        long_about = "What one identity, credential or source address did, or who touched one object: its\n\
            requests in event-time order (repeated read-only ones folded into counts) with the alerts\n\
            raised on each, then the blast radius (Secrets read, objects written, addresses, clients).",
        after_help = "Examples:\n  audithound timeline archive/ --user mallory@example.com\n  audithound timeline archive/ --credential X509SHA256=9d2c7be1…\n  audithound timeline archive/ --object secrets/payments/db-credentials --from 2025-03-04\n  audithound timeline archive/ --source-ip 198.51.100.77 --format json"
    )]
    Timeline(Box<TimelineArgs>),
    /// Work with detection rules: list, validate, self-test.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run as a service: receive audit events live (audit webhook) and deliver alerts to sinks.
    #[command(
        long_about = "Run as a service: events arrive from the API server's audit webhook backend \
            ([webhook]), from followed log files ([files] follow) or from Kafka topics ([kafka]); \
            alerts go to the configured sinks as they fire, with the same detectors and the same \
            results as `replay` on the same events. With state_dir, nothing acknowledged is lost \
            across a crash. SIGTERM or SIGINT stops intake, drains what was accepted, flushes the \
            sinks and exits 0.\n\n\
            The config file is TOML: the README's \"Service configuration\" section lists every \
            key, and deploy/audithound.toml is a commented example.",
        after_help = "Examples:\n  audithound run --config audithound.toml\n  audithound run --config audithound.toml --check-config"
    )]
    Run(RunArgs),
    /// Score the detectors on a labelled scenario suite: precision and recall per detector.
    #[command(
        long_about = "Score the detectors on a labelled scenario suite.\n\n\
            Every log file in DIR is replayed on its own (fresh detector state) and its alerts are\n\
            compared with DIR/expected.labels, JSON lines of {\"file\", \"rule\", \"audit_id\"}. A label is\n\
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

/// How events are seen: source reputation and impersonation proxies (replay, hunt, timeline).
#[derive(Args)]
struct LensArgs {
    /// A named IP list for the `sourceIP.lists` field: NAME=FILE, the file one IP address or
    /// CIDR a line (`#` comments) or a CSV whose first column is one; repeatable. The shipped
    /// rules read the lists named tor, threat and custom. Example: --ip-list tor=tor-exits.txt
    #[arg(long = "ip-list", value_name = "NAME=FILE")]
    ip_lists: Vec<String>,
    /// A MaxMind-format database (GeoLite2-ASN, -Country or -City .mmdb) for the
    /// `sourceIP.asn`, `sourceIP.asOrg` and `sourceIP.country` fields.
    #[arg(long, value_name = "FILE")]
    geoip: Option<PathBuf>,
    /// An impersonation proxy (e.g. Pinniped's concierge service account); repeatable. When it
    /// acts for a user (impersonatedUser), rules see that user as the actor, and alerts name
    /// the proxy beside them.
    #[arg(long = "impersonation-proxy", value_name = "USERNAME")]
    impersonation_proxies: Vec<String>,
}

impl LensArgs {
    /// Loads the lists and the database into `opts` (watched while the run lasts).
    fn apply(&self, opts: &mut EngineOptions) -> anyhow::Result<Option<audithound::reload::Watch>> {
        opts.impersonation_proxies = self.impersonation_proxies.clone();
        let mut sources = audithound::reputation::Sources {
            geoip: self.geoip.clone(),
            ..Default::default()
        };
        for arg in &self.ip_lists {
            let list = usage(
                audithound::reputation::Sources::parse_list_arg(arg)
                    .map_err(|e| anyhow::anyhow!("--ip-list {e}")),
            )?;
            sources.lists.push(list);
        }
        if sources.is_empty() {
            return Ok(None);
        }
        let live = usage(
            audithound::reputation::LiveReputation::load(&sources).map_err(anyhow::Error::msg),
        )?;
        tracing::debug!(loaded = ?live.describe(), "reputation loaded");
        let watch = live.watch()?;
        opts.reputation = live;
        Ok(Some(watch))
    }
}

/// What `hunt` and `timeline` read.
#[derive(Args)]
struct ArchiveArgs {
    /// Audit log files, directories (searched recursively) or quoted globs.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// Only events at or after this time: RFC 3339, a date, or relative to now (-24h).
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    from: Option<i64>,
    /// Only events before this time (same forms as --from).
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    to: Option<i64>,
    /// Rule directories or files (their lists and macros, and for a timeline its alerts).
    /// Default: the built-in library (`builtin`).
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// A table on a terminal and JSON lines in a pipe (auto), or always one of them.
    #[arg(long, value_enum, default_value = "auto")]
    format: audithound::hunt::Layout,
    /// Also write a self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Decode/detect worker threads. Default: all cores.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// Cluster name for events whose envelope names none.
    #[arg(long, default_value = "default", value_name = "NAME")]
    cluster: String,
    #[command(flatten)]
    lens: LensArgs,
}

#[derive(Args)]
struct HuntArgs {
    #[command(flatten)]
    archive: ArchiveArgs,
    /// The condition events must meet (see above).
    #[arg(long = "where", value_name = "EXPR")]
    condition: String,
}

#[derive(Args)]
#[group(required = true, multiple = false, id = "who")]
struct Subject {
    /// A username (`alice@example.com`, `system:serviceaccount:ns:name`): as actor or impersonated.
    #[arg(long, group = "who", value_name = "USERNAME")]
    user: Option<String>,
    /// A credential id (`X509SHA256=…`, `JTI=…`), whatever username carried it.
    #[arg(long, group = "who", value_name = "ID")]
    credential: Option<String>,
    /// A source address.
    #[arg(long, group = "who", value_name = "IP", value_parser = parse_ip)]
    source_ip: Option<String>,
    /// An object: RESOURCE/NAMESPACE/NAME, or RESOURCE/NAME when cluster-scoped.
    #[arg(long, group = "who", value_name = "RESOURCE/NS/NAME")]
    object: Option<String>,
}

#[derive(Args)]
struct TimelineArgs {
    #[command(flatten)]
    archive: ArchiveArgs,
    #[command(flatten)]
    subject: Subject,
    /// Timeline lines kept (the rest counted).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    limit: usize,
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
    /// Scenario directory: log files plus expected.labels (and episodes.labels).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Rule directory or file; repeat to add more. Default: the built-in library (`builtin`).
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Also write the full report (per file, rule and detector) as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Decode/detect worker threads per file. Default: all cores.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
}

#[derive(Args)]
struct ReplayArgs {
    /// Audit log files, directories (searched recursively) or quoted globs.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// Rule directory or file; repeat to add more. Default: the built-in library; `builtin` names
    /// it, so `--rules builtin --rules site/` extends it.
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Where alerts go, one JSON object per line; `-` is stdout. Example: --out alerts.jsonl
    #[arg(long, default_value = "-", value_name = "FILE|-")]
    out: String,
    /// Alert format: native (audithound JSON), ocsf (OCSF 1.1 Detection Finding, class 2004;
    /// incidents as Incident Findings) or text (a line per alert for a person).
    #[arg(long, value_enum, default_value = "native")]
    format: OutputFormat,
    /// Only alerts and incidents at least this severe: info, low, medium, high, critical.
    #[arg(long, value_name = "LEVEL", value_parser = parse_severity)]
    min_severity: Option<Severity>,
    /// Decode/detect worker threads. Default: all cores. Output is identical for any value.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// Only events at or after this time: RFC 3339, a date (its midnight UTC) or relative to
    /// now. Examples: --from 2025-03-01T00:00:00Z, --from 2025-03-01, --from -24h
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    from: Option<i64>,
    /// Only events before this time (same forms as --from). Example: --to 2025-03-02
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
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
    #[command(flatten)]
    lens: LensArgs,
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
    /// Also write a self-contained HTML report here (summary, incidents with timelines and
    /// blast radius, charts, rejected input); it opens offline from disk.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Do not group alerts into incidents (no incident records, a little less work).
    #[arg(long)]
    no_incidents: bool,
    /// Event time after an incident's last alert that closes it (30m, 1h, 1d…).
    #[arg(long, default_value = "1h", value_parser = parse_lateness, value_name = "DURATION")]
    incident_gap: i64,
    /// Values and audit IDs an episode lists, and items each incident list holds; the true
    /// totals are counted beyond it.
    #[arg(long, default_value_t = audithound::detect::episode::DEFAULT_EPISODE_CAP, value_name = "N")]
    episode_cap: usize,
    /// Incidents open at once; past it, the least recently active close early (each closing
    /// report says so, and the summary counts them).
    #[arg(long, default_value_t = audithound::incident::DEFAULT_MAX_OPEN, value_name = "N")]
    max_open_incidents: usize,
    /// Reject records that only an export's repairs would make readable (no auditID, no stage,
    /// time only in an export field, renamed keys) instead of repairing and counting them.
    #[arg(long)]
    strict: bool,
    /// Exit with status 3 when an alert at or above this severity was raised (for CI and
    /// scripts): info, low, medium, high or critical.
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    fail_on: Option<Severity>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Write the built-in rule library out (to edit it, or to read it).
    #[command(
        after_help = "Example:\n  audithound rules dump my-rules/\n  audithound replay logs/ --rules my-rules/   # the edited copy replaces the built-in library"
    )]
    Dump {
        /// Directory to write the files into (created if missing; existing files are not overwritten).
        dir: PathBuf,
    },
    /// List the loaded rules: id, severity, title.
    #[command(after_help = "Example:\n  audithound rules list detectors/")]
    List(RulesDir),
    /// Validate rule files; every problem is reported with its file and place. With
    /// --audit-policy, also warn about each rule whose events the API server's audit policy
    /// logs below the level the rule needs (Request for request bodies, RequestResponse for
    /// responses, Metadata for the rest) or not at all.
    #[command(
        after_help = "Examples:\n  audithound rules check detectors/ my-overrides/\n  audithound rules check --audit-policy /etc/kubernetes/audit-policy.yaml\n  audithound rules check my-rules/ --audit-policy deploy/audit-policy.yaml --strict-policy"
    )]
    Check(CheckArgs),
    /// Run each rule's `tests:` (events that must fire, near-misses that must not).
    #[command(after_help = "Example:\n  audithound rules test detectors/")]
    Test(RulesDir),
    /// Show why a rule does or does not match an event, matcher by matcher.
    #[command(
        after_help = "Examples:\n  audithound rules explain k8s.rbac.admin_binding event.json\n  audithound rules explain k8s.exec.into_pod audit.log.gz --line 1200\n  (one event, an EventList, or a file of records in any supported format, compressed or\n  not; every event is explained, or only the record at --line. Exit status 1 when no\n  event could be read.)"
    )]
    Explain(ExplainArgs),
}

#[derive(Args)]
struct ExplainArgs {
    /// Rule id, as `rules list` shows it.
    rule: String,
    /// File holding the event(s).
    event: PathBuf,
    /// Only the record that starts on this line (from 1).
    #[arg(long, value_name = "N")]
    line: Option<u64>,
    /// Rule directories or files. Default: the built-in library (`builtin`).
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    rules: RulesDir,
    /// The API server's audit policy (--audit-policy-file): warn about rules whose events it
    /// logs below what they read.
    #[arg(long, value_name = "POLICY.yaml")]
    audit_policy: Option<PathBuf>,
    /// Exit with status 1 when the audit policy check warns.
    #[arg(long, requires = "audit_policy")]
    strict_policy: bool,
}

#[derive(Args)]
struct RulesDir {
    /// Rule directories or files. Default: the built-in library (`builtin`).
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

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of threads")),
    }
}

/// An address as the API server logs it (v4 or v6), written back in its canonical form.
fn parse_ip(s: &str) -> Result<String, String> {
    s.parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// `--from` must come before `--to`: a reversed window would read everything and show nothing.
fn check_window(from: Option<i64>, to: Option<i64>) -> anyhow::Result<()> {
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return usage(Err(anyhow::anyhow!(
                "--from must be before --to (the window is empty)"
            )));
        }
    }
    Ok(())
}

fn parse_time(s: &str) -> Result<i64, String> {
    time::parse_time_arg(s, time::now_micros())
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s)
        .ok_or_else(|| format!("{s:?} is not a severity (info, low, medium, high, critical)"))
}

fn parse_lateness(s: &str) -> Result<i64, String> {
    audithound::event::time::parse_duration(s)
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    Stage::parse(s).ok_or_else(|| {
        format!("{s:?} is not a stage (RequestReceived, ResponseStarted, ResponseComplete, Panic)")
    })
}

/// Exit statuses a pipeline can rely on (README, "Exit status").
const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_ALERTS: u8 = 3;

/// A problem with what the user asked for (arguments, configuration, rules): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct UsageError(anyhow::Error);

/// Marks an error as the user's to fix.
fn usage<T, E: Into<anyhow::Error>>(r: Result<T, E>) -> anyhow::Result<T> {
    r.map_err(|e| UsageError(e.into()).into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service says what it is doing; one-shot commands speak only of problems.
    let default_level = match cli.command {
        Command::Run(_) | Command::Route(_) => "info",
        _ => "warn",
    };
    init_logging(cli.verbose, cli.quiet, cli.log_format, default_level);
    match run(cli) {
        Ok(code) => code,
        // `audithound … | head`: the reader has what it wanted.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            let usage = e.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_RUNTIME })
        }
    }
}

fn init_logging(verbose: u8, quiet: bool, format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => default_level,
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // ureq's debug lines write out request URLs and every header but Authorization and
    // Cookie: an HTTP sink's API key would reach the log at -v. That module logs nothing above
    // debug, so this only ever hides those lines.
    let filter = match "ureq::unit=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => logs.json().init(),
        // Colour only for a person at a terminal: log files stay free of escape codes.
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay(args) => replay(*args, cli.quiet),
        Command::Rules(cmd) => rules(cmd),
        Command::Eval(args) => eval(args, cli.quiet),
        Command::Run(args) => run_service(args, cli.quiet),
        Command::Route(args) => route(args),
        Command::Hunt(args) => hunt(*args, cli.quiet),
        Command::Timeline(args) => timeline(*args, cli.quiet),
    }
}

fn run_service(args: RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    use audithound::{config, service};
    let cfg = usage(config::load(&args.config).map_err(|e| anyhow::anyhow!("configuration: {e}")))?;
    let paths = rule_paths(cfg.detection.rules.clone());
    let set = Arc::new(usage(RuleSet::load(&paths))?);
    // The built-in library does not change while the service runs: nothing to watch.
    let builtin_only = paths.iter().all(|p| p.as_os_str() == library::BUILTIN);
    let rules = service::Rules {
        set,
        paths: if builtin_only { Vec::new() } else { paths },
    };
    if args.check_config {
        let lines = usage(service::check(&cfg, &rules))?;
        println!("configuration ok:");
        for line in lines {
            println!("  {line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stats = service::run(&cfg, rules)?;
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
        runtime.block_on(audithound::source::webhook::termination());
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
    let mut opts = EngineOptions {
        progress: false,
        ..EngineOptions::default()
    };
    if let Some(n) = args.threads {
        opts.threads = n.max(1);
    }
    let revocations = args.dir.join("revocations.yaml");
    if revocations.is_file() {
        opts.revocations = usage(
            audithound::revocation::LiveRevocations::load(&revocations)
                .map_err(|e| anyhow::anyhow!("revocation list: {e}")),
        )?;
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
    let clean = report.clean();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The rule paths to load: the built-in library unless others are given.
fn rule_paths(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    if dirs.is_empty() {
        vec![PathBuf::from(library::BUILTIN)]
    } else {
        dirs
    }
}

fn load_rules(dirs: Vec<PathBuf>) -> anyhow::Result<RuleSet> {
    usage(RuleSet::load(&rule_paths(dirs)))
}

fn replay(args: ReplayArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    check_window(args.from, args.to)?;
    let rules = Arc::new(load_rules(args.rules)?);
    tracing::debug!(rules = rules.rules.len(), "rules loaded");
    let mut opts = EngineOptions {
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
            strict: args.strict,
        },
        progress: !args.no_progress && !quiet,
        incidents: !args.no_incidents,
        incident_gap: args.incident_gap,
        episode_cap: args.episode_cap.max(1),
        max_open_incidents: args.max_open_incidents.max(1),
        ..EngineOptions::default()
    };
    let mut input = Files::new(args.paths);
    // Reloaded when the file changes or on SIGHUP, for long replays and followed inputs.
    let mut _watch = None;
    if let Some(path) = &args.revocations {
        let live = usage(
            audithound::revocation::LiveRevocations::load(path)
                .map_err(|e| anyhow::anyhow!("revocation list: {e}")),
        )?;
        tracing::debug!(
            entries = live.current().entries.len(),
            "revocation list loaded"
        );
        _watch = Some(live.watch()?);
        opts.revocations = live;
    }
    let _reputation_watch = args.lens.apply(&mut opts)?;
    if let Some(n) = args.threads {
        opts.threads = n.max(1);
    }
    if !args.include.is_empty() {
        input.include = args.include;
    }
    let out = JsonLines::open(&args.out, args.format)?;
    let out: Box<dyn audithound::sink::AlertSink> = match args.min_severity {
        Some(min) => Box::new(audithound::sink::MinSeverity { inner: out, min }),
        None => Box::new(out),
    };
    let mut sink = audithound::report::Keep::new(out);
    // Created above (and below), so they can be recognised and skipped if they sit among the inputs.
    input.exclude = [
        Some(PathBuf::from(&args.out)),
        args.dead_letter.clone(),
        args.summary_json.clone(),
        args.report.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Written after the run: a path that cannot be written fails now, not hours later.
    for p in [&args.summary_json, &args.report].into_iter().flatten() {
        writable(p)?;
    }
    let mut dead_letter = match &args.dead_letter {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create dead-letter file {}", p.display()))?,
        )),
        None => None,
    };
    let stats = engine::replay(
        &opts,
        &input,
        rules,
        &mut sink,
        dead_letter.as_mut().map(|w| w as &mut dyn std::io::Write),
    )?;
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&stats)?)
            .with_context(|| format!("cannot write summary {}", p.display()))?;
    }
    if let Some(p) = &args.report {
        let title = format!("audithound replay {}", input.paths.join(" "));
        audithound::report::write(
            p,
            &audithound::report::ReportInput {
                title,
                stats: &stats,
                alerts: &sink.alerts,
                alerts_dropped: sink.alerts_dropped,
                incidents: &sink.incidents,
            },
        )?;
    }
    if !quiet {
        eprint!("{}", stats.render());
    }
    if stats.events == 0 {
        anyhow::bail!(
            "no audit events could be read from {}: {} rejected ({})",
            plural(stats.files, "file", "files"),
            plural(stats.rejected_total(), "record", "records"),
            stats
                .rejected
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(at_least) = args.fail_on {
        let raised = stats
            .alerts_by_severity
            .keys()
            .filter_map(|s| Severity::parse(s))
            .any(|s| s >= at_least);
        if raised {
            return Ok(ExitCode::from(EXIT_ALERTS));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Engine options and input for `hunt` and `timeline`.
fn archive_run(
    a: &ArchiveArgs,
    quiet: bool,
) -> anyhow::Result<(EngineOptions, Files, Option<audithound::reload::Watch>)> {
    check_window(a.from, a.to)?;
    let mut opts = EngineOptions {
        from: a.from,
        to: a.to,
        default_cluster: a.cluster.clone(),
        progress: !quiet,
        incidents: false,
        ..EngineOptions::default()
    };
    if let Some(n) = a.threads {
        opts.threads = n.max(1);
    }
    let watch = a.lens.apply(&mut opts)?;
    let mut input = Files::new(a.paths.clone());
    input.exclude = a.report.iter().cloned().collect();
    if let Some(p) = &a.report {
        writable(p)?;
    }
    Ok((opts, input, watch))
}

/// Creates (or opens, keeping what it holds) a file the run writes at its end.
fn writable(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .with_context(|| format!("cannot write {}", path.display()))
}

use audithound::incident::plural;

/// `N matching events of M read (K files)`, and the records passed over that a user may be
/// looking for (a request's other stages).
fn read_line(found: String, stats: &audithound::metrics::RunStats) -> String {
    let mut line = format!(
        "{found} of {} read ({})",
        stats.events,
        plural(stats.files, "file", "files")
    );
    if stats.skipped_stage > 0 {
        line.push_str(&format!(
            "; {} records of the same requests at other stages passed over",
            stats.skipped_stage
        ));
    }
    line
}

/// Writes `--report` for a hunt or timeline.
fn archive_report(
    a: &ArchiveArgs,
    what: &str,
    stats: &audithound::metrics::RunStats,
    kept: &audithound::report::Keep<audithound::sink::Collect>,
) -> anyhow::Result<()> {
    if let Some(p) = &a.report {
        audithound::report::write(
            p,
            &audithound::report::ReportInput {
                title: format!("audithound {what} {}", a.paths.join(" ")),
                stats,
                alerts: &kept.alerts,
                alerts_dropped: kept.alerts_dropped,
                incidents: &kept.incidents,
            },
        )?;
    }
    Ok(())
}

fn hunt(args: HuntArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    use audithound::hunt;
    let condition = usage(hunt::parse_where(&args.condition).map_err(anyhow::Error::msg))?;
    let a = &args.archive;
    let rules = usage(hunt::rules_with(&rule_paths(a.rules.clone()), condition))?;
    let rules = Arc::new(rules.retain(|r| r.id == hunt::RULE_ID));
    let (opts, input, _watch) = archive_run(a, quiet)?;
    let mut sink = hunt::HuntSink {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        table: a.format.table(),
        matched: 0,
        also: audithound::report::Keep::new(audithound::sink::Collect::default()),
    };
    sink.header()?;
    let stats = engine::replay(&opts, &input, rules, &mut sink, None)?;
    use audithound::sink::AlertSink;
    sink.flush()?;
    if !quiet {
        eprintln!(
            "{}",
            read_line(
                plural(sink.matched, "matching event", "matching events"),
                &stats
            )
        );
    }
    archive_report(a, "hunt", &stats, &sink.also)?;
    Ok(ExitCode::SUCCESS)
}

fn timeline(args: TimelineArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    use audithound::hunt;
    let s = &args.subject;
    // Who it is about, as a condition of the rule language.
    let condition = if let Some(user) = &s.user {
        serde_json::json!({"any": [{"user.username": user}, {"impersonatedUser.username": user}]})
    } else if let Some(id) = &s.credential {
        serde_json::json!({"credentialID": id})
    } else if let Some(ip) = &s.source_ip {
        serde_json::json!({"sourceIPs": ip})
    } else {
        let object = s.object.as_deref().unwrap_or_default();
        let parts: Vec<&str> = object.split('/').collect();
        match parts.as_slice() {
            [resource, namespace, name] => serde_json::json!({"all": [
                {"objectRef.resource": resource}, {"objectRef.namespace": namespace}, {"objectRef.name": name}]}),
            [resource, name] => serde_json::json!({"all": [
                {"objectRef.resource": resource}, {"objectRef.name": name}]}),
            _ => {
                return usage(Err(anyhow::anyhow!(
                    "--object {object:?}: write RESOURCE/NAMESPACE/NAME (secrets/payments/db) or RESOURCE/NAME"
                )))
            }
        }
    };
    let condition: serde_yaml::Value = serde_json::from_value(condition)?;
    let a = &args.archive;
    let rules = Arc::new(usage(hunt::rules_with(
        &rule_paths(a.rules.clone()),
        condition,
    ))?);
    let (opts, input, _watch) = archive_run(a, quiet)?;
    let kept = audithound::report::Keep::new(audithound::sink::Collect::default());
    let mut sink = hunt::TimelineSink::new(args.limit.max(1), kept);
    let stats = engine::replay(&opts, &input, rules, &mut sink, None)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    hunt::print_timeline(&mut out, &sink.story, a.format.table())?;
    use std::io::Write;
    out.flush()?;
    if !quiet {
        let requests = sink.story.timeline().total;
        eprintln!(
            "{}",
            read_line(plural(requests, "request", "requests"), &stats)
        );
    }
    archive_report(a, "timeline", &stats, &sink.also)?;
    Ok(ExitCode::SUCCESS)
}

fn explain(args: ExplainArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    use audithound::event::EventView;
    use audithound::event::{decode_record, Item};
    use audithound::source::lines::{LineReader, Next};
    let set = load_rules(args.rules)?;
    let Some(rule) = set.get(&args.rule) else {
        return usage(Err(anyhow::anyhow!(
            "no rule {:?}; `audithound rules list` shows the ids",
            args.rule
        )));
    };
    let path = &args.event;
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let file = audithound::source::file::InputFile {
        path: path.clone(),
        name: path.to_string_lossy().into(),
        size,
    };
    let reader = audithound::source::file::open(&file, Default::default())
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = LineReader::new(reader, 64 << 20);
    let (mut events, mut records) = (0u64, 0u64);
    loop {
        match lines.next_record() {
            Next::Record => {}
            Next::Eof => break,
            Next::TooLong { len } => {
                writeln!(
                    out,
                    "{}:{}: a line of {len} bytes is over the cap, skipped",
                    file.name,
                    lines.line()
                )?;
                continue;
            }
            Next::Failed(e) => anyhow::bail!(
                "{}: cannot read on from line {}: {e}",
                file.name,
                lines.line()
            ),
        }
        let line = lines.line();
        if args.line.is_some_and(|want| want != line) {
            continue;
        }
        records += 1;
        let mut report = String::new();
        decode_record(
            lines.record(),
            &DecodeOptions::default(),
            "default",
            &mut |item| match item {
                Item::Event(ev, format) => {
                    events += 1;
                    report.push_str(&format!(
                        "{}:{line}: event {} ({}):\n",
                        file.name,
                        ev.audit_id.as_deref().unwrap_or("?"),
                        format.name()
                    ));
                    report
                        .push_str(&rule.explain(&EventView::new(ev, ev.event_time().unwrap_or(0))));
                }
                Item::Rejected(e) => report.push_str(&format!(
                    "{}:{line}: rejected [{}]: {e}\n",
                    file.name,
                    e.reason()
                )),
                Item::Skipped(why) => {
                    report.push_str(&format!("{}:{line}: skipped: {why}\n", file.name))
                }
            },
        );
        out.write_all(report.as_bytes())?;
    }
    if events > 0 {
        return Ok(ExitCode::SUCCESS);
    }
    match (args.line, records) {
        (Some(n), 0) => eprintln!("error: {}: no record starts on line {n}", file.name),
        _ => eprintln!("error: {}: no audit event could be read", file.name),
    }
    Ok(ExitCode::from(1))
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
        RulesCommand::Check(args) => {
            let policy = match &args.audit_policy {
                Some(path) => Some(usage(
                    audithound::rules::policy::Policy::load(path)
                        .map_err(|e| anyhow::anyhow!("audit policy {e}")),
                )?),
                None => None,
            };
            let set = load_rules(args.rules.dirs)?;
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
                "ok: {} ({} switched off)",
                plural(
                    (set.rules.len() + set.disabled.len()) as u64,
                    "rule",
                    "rules"
                ),
                set.disabled.len()
            )?;
            if let (Some(policy), Some(path)) = (&policy, &args.audit_policy) {
                // Rules switched off read nothing; only the running ones are checked.
                let warnings = audithound::rules::policy::check(policy, &set);
                for w in &warnings {
                    writeln!(out, "warning: {w}")?;
                }
                let rules: std::collections::BTreeSet<&str> =
                    warnings.iter().map(|w| w.rule.as_str()).collect();
                if warnings.is_empty() {
                    writeln!(
                        out,
                        "audit policy {}: logs what every rule reads, at the level it needs",
                        path.display()
                    )?;
                } else {
                    writeln!(
                        out,
                        "audit policy {}: {} of {} rules would miss what they read ({} warning{})",
                        path.display(),
                        rules.len(),
                        set.rules.len(),
                        warnings.len(),
                        if warnings.len() == 1 { "" } else { "s" }
                    )?;
                    if args.strict_policy {
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
        RulesCommand::Explain(args) => return explain(args, &mut out),
        RulesCommand::Dump { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, text) in library::files() {
                let path = dir.join(name);
                if path.exists() {
                    return usage(Err(anyhow::anyhow!(
                        "{} exists: dump into an empty directory",
                        path.display()
                    )));
                }
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            writeln!(
                out,
                "wrote {} files ({}) to {}",
                library::files().len(),
                library::VERSION,
                dir.display()
            )?;
        }
        RulesCommand::Test(d) => {
            // Rules shipped switched off are tested too: enabling them must be safe.
            let set = load_rules(d.dirs)?.with_disabled_enabled();
            let report = audithound::eval::rule_tests::run(&set);
            for f in &report.failures {
                writeln!(out, "FAIL {f}")?;
            }
            let failed_rules = report.failed_rules();
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
