//! `audithound run --config audithound.toml`: the service's configuration, validated as a whole
//! before anything starts (unknown keys are errors, with line and column).
//!
//! ```toml
//! [detection]
//! rules = ["detectors", "site-overrides"]
//! revocations = "offboarded.yaml"     # re-read on change and on SIGHUP
//! cluster = "prod-eu"                 # for events whose envelope names none
//! impersonation_proxies = ["system:serviceaccount:pinniped-concierge:pinniped-concierge-impersonation-proxy"]
//!
//! [reputation]                        # IP lists and GeoIP for sourceIP.*; re-read on change and SIGHUP
//! lists = { tor = "/etc/audithound/tor-exits.txt", threat = "/etc/audithound/threat.csv" }
//! geoip = "/var/lib/GeoIP/GeoLite2-ASN.mmdb"
//!
//! [webhook]
//! listen = "0.0.0.0:8443"
//! max_body_bytes = 16777216
//! queue = 64                          # bodies waiting for the engine; beyond it: 429
//! bearer_token = "${WEBHOOK_TOKEN}"  # optional: required as `Authorization: Bearer …`
//! # bearer_token_file = "/etc/audithound/token"   # or read from a file
//! tls_cert = "tls.crt"                # optional HTTPS (PEM), with tls_key
//! tls_key = "tls.key"
//! client_ca = "api-server-ca.crt"     # optional: require client certificates signed by it
//!
//! [files]                             # and/or follow log files (tail -F, rotation-aware)
//! follow = ["/var/log/kube-apiserver/audit.log"]
//!
//! [kafka]                             # and/or a Kafka consumer group
//! brokers = "kafka-1:9092"
//! topics = ["k8s-audit"]
//! rebuild = "1h"                      # state re-read on partition assignment
//!
//! [ops]                               # plain HTTP: /healthz, /readyz, /metrics
//! listen = "0.0.0.0:9090"
//!
//! [[sink]]
//! type = "file"                       # or "stdout", "http", "kafka": see `sink::SinkConfig`
//! path = "/var/lib/audithound/alerts.jsonl"   # appended, rotated past rotate_mib (100)
//! format = "ocsf"                     # or "native"
//! ```
//!
//! String values expand `${VAR}` from the environment and `${file:/path}` from a file
//! (`settings`); tokens, passwords and header values never print.

use crate::settings::{Secret, Text};
use crate::sink::SinkConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn default_outbox_mib() -> u64 {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the service keeps what must survive a restart: the webhook's journal, followed
    /// files' checkpoints, detector snapshots, sinks' undelivered alerts. Without it, a crash
    /// loses what was accepted but not yet processed.
    pub state_dir: Option<PathBuf>,
    /// How often detector state is snapshotted under `state_dir` (and at every stop): "5m".
    pub snapshot_every: Option<String>,
    /// With `state_dir`: undelivered alerts each remote sink (http, kafka) may hold on disk
    /// before the engine waits for it.
    #[serde(default = "default_outbox_mib")]
    pub outbox_max_mib: u64,
    #[serde(default)]
    pub detection: Detection,
    #[serde(default)]
    pub reputation: Reputation,
    pub webhook: Option<Webhook>,
    pub files: Option<Files>,
    pub kafka: Option<Kafka>,
    pub ops: Option<Ops>,
    #[serde(
        default,
        rename = "sink",
        deserialize_with = "crate::sink::deserialize_sinks"
    )]
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    /// Rule directories or files; empty: the library built into the binary.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    pub revocations: Option<PathBuf>,
    #[serde(default = "default_cluster")]
    pub cluster: String,
    pub threads: Option<usize>,
    pub max_keys: Option<usize>,
    /// How late (event time) an event may arrive and still reach the stateful detectors in
    /// order, e.g. "10s" (the default).
    pub lateness: Option<String>,
    /// Group alerts into incidents (default true), closed this long after their last alert
    /// (default "1h").
    #[serde(default = "yes")]
    pub incidents: bool,
    pub incident_gap: Option<String>,
    /// Items an episode or incident list holds (true totals beyond it); default 1000.
    pub episode_cap: Option<usize>,
    /// Incidents open at once; past it, the least recently active close early; default 10000.
    pub max_open_incidents: Option<usize>,
    /// Usernames of impersonation proxies (Pinniped's concierge, kube-oidc-proxy): when one
    /// acts for a user, rules see that user as the actor.
    #[serde(default)]
    pub impersonation_proxies: Vec<String>,
}

/// `[reputation]`: named IP lists (`sourceIP.lists`) and a MaxMind-format database
/// (`sourceIP.asn`, `.asOrg`, `.country`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reputation {
    /// List name → file (one IP or CIDR a line, or CSV with it first). The shipped rules read
    /// `tor`, `threat` and `custom`.
    #[serde(default)]
    pub lists: std::collections::BTreeMap<String, PathBuf>,
    pub geoip: Option<PathBuf>,
}

impl Reputation {
    pub fn sources(&self) -> crate::reputation::Sources {
        crate::reputation::Sources {
            lists: self
                .lists
                .iter()
                .map(|(n, p)| (n.clone(), p.clone()))
                .collect(),
            geoip: self.geoip.clone(),
        }
    }
}

fn yes() -> bool {
    true
}

impl Detection {
    /// `incident_gap` in microseconds.
    pub fn incident_gap_micros(&self) -> Result<Option<i64>, String> {
        self.incident_gap
            .as_deref()
            .map(crate::event::time::parse_duration)
            .transpose()
            .map_err(|e| format!("detection.incident_gap: {e}"))
    }

    /// `lateness` in microseconds.
    pub fn lateness_micros(&self) -> Result<Option<i64>, String> {
        self.lateness
            .as_deref()
            .map(crate::event::time::parse_duration)
            .transpose()
            .map_err(|e| format!("detection.lateness: {e}"))
    }
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            rules: Vec::new(),
            revocations: None,
            cluster: default_cluster(),
            threads: None,
            max_keys: None,
            lateness: None,
            incidents: true,
            incident_gap: None,
            episode_cap: None,
            max_open_incidents: None,
            impersonation_proxies: Vec::new(),
        }
    }
}

fn default_cluster() -> String {
    "default".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `host:port` to listen on.
    pub listen: String,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// With `state_dir`: unprocessed input the journal may hold before answering 429.
    #[serde(default = "default_journal_mib")]
    pub journal_max_mib: u64,
    /// When set, POSTs must carry `Authorization: Bearer <token>` (the webhook kubeconfig's
    /// user token); others get 401. Or `bearer_token_file`, read at start.
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<PathBuf>,
    /// HTTPS: certificate chain and private key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// HTTPS with client certificates: only clients whose certificate this CA (PEM) signed.
    pub client_ca: Option<PathBuf>,
    /// Listen beyond loopback with neither `client_ca` nor a bearer token (something in front
    /// authenticates). Without it such a webhook refuses to start.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Connections served at once; more are closed as they arrive.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A client must send a request's headers (and finish a TLS handshake) within this.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// … and its body within this.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: String,
    /// A kept-alive connection quiet this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
}

fn default_max_connections() -> usize {
    512
}
fn default_header_timeout() -> String {
    "10s".into()
}
fn default_body_timeout() -> String {
    "30s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}

impl Webhook {
    /// How slow clients are cut off, checked.
    pub fn limits(&self) -> Result<crate::source::webhook::Limits, String> {
        let d = |key: &str, v: &str| {
            crate::event::time::parse_duration(v)
                .ok()
                .filter(|m| *m > 0)
                .map(|m| std::time::Duration::from_micros(m as u64))
                .ok_or_else(|| {
                    format!("webhook.{key} {v:?}: expected a duration above 0, e.g. \"10s\"")
                })
        };
        if self.max_connections == 0 {
            return Err("webhook.max_connections must be above 0".into());
        }
        Ok(crate::source::webhook::Limits {
            max_connections: self.max_connections,
            header_timeout: d("header_timeout", &self.header_timeout)?,
            body_timeout: d("body_timeout", &self.body_timeout)?,
            idle_timeout: d("idle_timeout", &self.idle_timeout)?,
        })
    }

    /// A webhook anyone who reaches it may post to is refused unless it only listens on
    /// loopback or `allow_unauthenticated` says something in front authenticates.
    fn check_authentication(&self) -> Result<(), String> {
        let loopback = self
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        let authenticated = self.client_ca.is_some() || self.token()?.is_some();
        if loopback || authenticated || self.allow_unauthenticated {
            return Ok(());
        }
        Err(format!(
            "webhook.listen {:?} takes audit events from anyone who can reach it: set client_ca \
             (the API server's client certificate) or bearer_token, or allow_unauthenticated = \
             true if something in front of it authenticates",
            self.listen
        ))
    }

    /// The token POSTs must carry, inline or from its file.
    pub fn token(&self) -> Result<Option<Secret>, String> {
        crate::settings::secret_from(
            self.bearer_token.as_ref(),
            self.bearer_token_file.as_deref(),
            "webhook.bearer_token",
        )
    }
}

/// Audit log files followed as they grow (`tail -F`, rotation-aware).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    pub follow: Vec<PathBuf>,
    /// Read what the files already hold first (default: only what is appended from now on).
    #[serde(default)]
    pub from_start: bool,
}

/// A Kafka consumer group reading raw audit events; offsets are committed only after the alerts
/// the messages caused were delivered to every sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    pub brokers: Text,
    pub topics: Vec<String>,
    #[serde(default = "default_group")]
    pub group: String,
    /// Where a new group starts: "earliest" or "latest".
    #[serde(default = "default_start")]
    pub start: String,
    /// Passed to librdkafka as they are (security.protocol, sasl.*, ssl.*); never printed.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, Secret>,
    /// Where each message names its cluster: "key" (up to the first `/`) or "header:<name>".
    pub cluster_from: Option<String>,
    /// How far back (message time) a newly assigned partition is re-read to rebuild detector
    /// state before its first uncommitted message; "0s" turns it off. Windows longer than
    /// this (the 7-day sequences) only see what it reaches.
    #[serde(default = "default_rebuild")]
    pub rebuild: String,
}

impl Kafka {
    /// `rebuild` in milliseconds.
    pub fn rebuild_ms(&self) -> Result<i64, String> {
        crate::event::time::parse_duration(&self.rebuild)
            .map(|micros| micros / 1000)
            .map_err(|e| format!("kafka.rebuild {:?}: {e}", self.rebuild))
    }

    /// The librdkafka properties with their values.
    pub fn properties(&self) -> std::collections::BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect()
    }
}

/// The operations listener: plain HTTP for probes and Prometheus, apart from the webhook
/// (whose client-certificate or token auth a kubelet probe or a scraper does not have).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    /// `host:port`: `/healthz`, `/readyz` and `/metrics`.
    pub listen: String,
}

fn default_rebuild() -> String {
    "1h".into()
}

fn default_group() -> String {
    "audithound".into()
}

fn default_start() -> String {
    "earliest".into()
}

fn default_max_body() -> usize {
    16 << 20
}

fn default_queue() -> usize {
    64
}

fn default_journal_mib() -> u64 {
    1024
}

/// Reads and validates `path`; every problem names the file (and line and column when TOML
/// parsing found it, or the key when a `${VAR}` or `${file:…}` did not expand).
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and validates a configuration's text.
pub fn parse(text: &str) -> Result<Config, String> {
    let config: Config = toml::from_str(text).map_err(|e| {
        if let Some(at) = sink_line(text, e.message()) {
            return format!("line {at}: {}", e.message());
        }
        let e = e.to_string();
        unexpanded_keys(text, &e).unwrap_or(e)
    })?;
    config.validate()?;
    Ok(config)
}

/// The line of the `[[sink]]` an error message names (`[[sink]] #2: …`): TOML itself points
/// every sink's error at the first one.
fn sink_line(text: &str, message: &str) -> Option<usize> {
    let n: usize = message
        .strip_prefix("[[sink]] #")?
        .split(':')
        .next()?
        .parse()
        .ok()?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[sink]]"))
        .nth(n.checked_sub(1)?)
        .map(|(i, _)| i + 1)
}

/// When `error` is an expansion failing, the keys whose values it failed in
/// (`kafka.properties.sasl.password: environment variable KAFKA_PASSWORD is not set …`): TOML
/// points a key inside a table at the table, not at the key.
fn unexpanded_keys(text: &str, error: &str) -> Option<String> {
    fn walk(value: &toml::Value, key: &str, error: &str, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => {
                if let Err(e) = crate::settings::expand(s, &|name| std::env::var(name).ok()) {
                    if error.contains(&e) {
                        out.push(format!("{key}: {e}"));
                    }
                }
            }
            toml::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{key}[{i}]"), error, out);
                }
            }
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if key.is_empty() {
                        k.clone()
                    } else {
                        format!("{key}.{k}")
                    };
                    walk(v, &key, error, out);
                }
            }
            _ => {}
        }
    }
    let table: toml::Table = toml::from_str(text).ok()?;
    let mut keys = Vec::new();
    walk(&toml::Value::Table(table), "", error, &mut keys);
    (!keys.is_empty()).then(|| keys.join("; "))
}

fn socket_addr(key: &str, listen: &str) -> Result<(), String> {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{key} {listen:?}: expected host:port, e.g. \"0.0.0.0:8443\""
        )),
    }
}

impl Config {
    /// `snapshot_every` (five minutes by default).
    pub fn snapshot_every(&self) -> Result<std::time::Duration, String> {
        let micros = match &self.snapshot_every {
            Some(d) => {
                crate::event::time::parse_duration(d).map_err(|e| format!("snapshot_every: {e}"))?
            }
            None => 300_000_000,
        };
        Ok(std::time::Duration::from_micros(micros.max(0) as u64))
    }

    fn validate(&self) -> Result<(), String> {
        self.snapshot_every()?;
        if self.webhook.is_none() && self.files.is_none() && self.kafka.is_none() {
            return Err("no source configured: add a [webhook], [files] or [kafka] section".into());
        }
        self.detection.lateness_micros()?;
        self.detection.incident_gap_micros()?;
        if let Some(name) = self
            .reputation
            .lists
            .keys()
            .find(|n| !crate::reputation::valid_name(n))
        {
            return Err(format!(
                "reputation.lists: {name:?} is no list name (letters, digits, '-' and '_')"
            ));
        }
        if self
            .detection
            .impersonation_proxies
            .iter()
            .any(String::is_empty)
        {
            return Err("detection.impersonation_proxies: an empty username".into());
        }
        if let Some(k) = &self.kafka {
            if k.brokers.is_empty() || k.topics.is_empty() {
                return Err("kafka: name brokers and at least one topic".into());
            }
            if !matches!(k.start.as_str(), "earliest" | "latest") {
                return Err(format!("kafka.start {:?}: earliest or latest", k.start));
            }
            if let Some(c) = &k.cluster_from {
                crate::source::kafka::ClusterFrom::parse(c)
                    .map_err(|e| format!("kafka.cluster_from {e}"))?;
            }
            k.rebuild_ms()?;
        }
        if self.outbox_max_mib > 1 << 30 {
            return Err("outbox_max_mib: at most 1073741824".into());
        }
        if let Some(w) = &self.webhook {
            socket_addr("webhook.listen", &w.listen)?;
            if w.queue == 0 || w.max_body_bytes == 0 {
                return Err("webhook.queue and webhook.max_body_bytes must be above 0".into());
            }
            if w.max_body_bytes > crate::source::journal::MAX_RECORD {
                return Err("webhook.max_body_bytes: at most 1 GiB".into());
            }
            if w.journal_max_mib > 1 << 30 {
                return Err("webhook.journal_max_mib: at most 1073741824".into());
            }
            if w.tls_cert.is_some() != w.tls_key.is_some() {
                return Err("webhook: tls_cert and tls_key go together".into());
            }
            if w.client_ca.is_some() && w.tls_cert.is_none() {
                return Err(
                    "webhook.client_ca needs tls_cert and tls_key (client certificates need HTTPS)"
                        .into(),
                );
            }
            w.token()?;
            w.limits()?;
            w.check_authentication()?;
        }
        if let Some(o) = &self.ops {
            socket_addr("ops.listen", &o.listen)?;
        }
        if self.files.as_ref().is_some_and(|f| f.follow.is_empty()) {
            return Err("files.follow: name at least one file".into());
        }
        for (i, s) in self.sinks.iter().enumerate() {
            s.validate()
                .map_err(|e| format!("[[sink]] #{}: {e}", i + 1))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_with_precise_errors() {
        let ok = parse(
            "[webhook]\nlisten = \"127.0.0.1:8443\"\n[[sink]]\ntype = \"file\"\npath = \"a.jsonl\"\nformat = \"ocsf\"\n",
        )
        .unwrap();
        assert_eq!(ok.detection.cluster, "default");
        assert_eq!(ok.webhook.unwrap().queue, 64);
        let typo = parse("[webhook]\nlisten = \"127.0.0.1:1\"\nqueu = 3\n").unwrap_err();
        assert!(typo.contains("line 3") && typo.contains("queu"), "{typo}");
        assert!(parse("[detection]\ncluster = \"x\"\n")
            .unwrap_err()
            .contains("no source"));
        let rep = parse("[webhook]\nlisten = \"127.0.0.1:1\"\n[reputation]\nlists = { tor = \"tor.txt\", threat = \"t.csv\" }\ngeoip = \"asn.mmdb\"\n[detection]\nimpersonation_proxies = [\"system:serviceaccount:pinniped-concierge:p\"]\n").unwrap();
        assert_eq!(rep.reputation.sources().lists.len(), 2);
        assert_eq!(rep.detection.impersonation_proxies.len(), 1);
        let typo =
            parse("[webhook]\nlisten = \"127.0.0.1:1\"\n[reputation]\nlist = {}\n").unwrap_err();
        assert!(typo.contains("unknown field `list`"), "{typo}");
        assert!(parse(
            "[webhook]\nlisten = \"127.0.0.1:1\"\n[reputation]\nlists = { \"a b\" = \"x\" }\n"
        )
        .unwrap_err()
        .contains("no list name"));
        assert!(parse("[webhook]\nlisten = \"8443\"\n")
            .unwrap_err()
            .contains("host:port"));
        let no_path =
            parse("[webhook]\nlisten = \"127.0.0.1:1\"\n[[sink]]\ntype = \"file\"\n").unwrap_err();
        assert!(no_path.contains("missing field `path`"), "{no_path}");
        let http_key_on_file = parse(
            "[webhook]\nlisten = \"127.0.0.1:1\"\n[[sink]]\ntype = \"file\"\npath = \"a\"\ngzip = true\n",
        )
        .unwrap_err();
        assert!(
            http_key_on_file.contains("unknown field `gzip`"),
            "{http_key_on_file}"
        );
        let bad_url = parse(
            "[webhook]\nlisten = \"127.0.0.1:1\"\n[[sink]]\ntype = \"http\"\nurl = \"splunk:8088\"\n",
        )
        .unwrap_err();
        assert!(
            bad_url.contains("[[sink]] #1") && bad_url.contains("https://"),
            "{bad_url}"
        );
        let missing_var = parse(
            "[webhook]\nlisten = \"127.0.0.1:1\"\n[[sink]]\ntype = \"http\"\nurl = \"https://siem\"\nheaders = { Authorization = \"Splunk ${AUDITHOUND_TEST_UNSET_TOKEN}\" }\n",
        )
        .unwrap_err();
        assert!(
            missing_var.starts_with("line 3: [[sink]] #1: type = \"http\", key `headers`: ")
                && missing_var.contains("AUDITHOUND_TEST_UNSET_TOKEN is not set"),
            "{missing_var}"
        );
        // A mistake in the second sink: its line, and the key even where serde names none.
        let two = "[webhook]\nlisten = \"127.0.0.1:1\"\n[[sink]]\ntype = \"file\"\npath = \"a\"\n\n[[sink]]\ntype = \"http\"\nurl = \"https://siem\"\n";
        let e = parse(&format!("{two}protocol = \"splunk\"\n")).unwrap_err();
        assert!(
            e.starts_with(
                "line 7: [[sink]] #2: type = \"http\", key `protocol`: unknown variant `splunk`"
            ),
            "{e}"
        );
        let e = parse(&format!("{two}batch = \"x\"\n")).unwrap_err();
        assert!(e.contains("key `batch`: invalid type"), "{e}");
        let missing_file = parse(
            "[webhook]\nlisten = \"127.0.0.1:1\"\nbearer_token = \"${file:/does/not/exist}\"\n",
        )
        .unwrap_err();
        assert!(
            missing_file.contains("webhook.bearer_token: /does/not/exist: "),
            "{missing_file}"
        );
    }
}
