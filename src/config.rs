//! `audithound run --config audithound.toml`: the service's configuration, validated as a whole
//! before anything starts (unknown keys are errors, with line and column).
//!
//! ```toml
//! [detection]
//! rules = ["detectors", "site-overrides"]
//! revocations = "offboarded.yaml"     # re-read on change and on SIGHUP
//! cluster = "prod-eu"                 # for events whose envelope names none
//!
//! [webhook]
//! listen = "0.0.0.0:8443"
//! max_body_bytes = 16777216
//! queue = 64                          # bodies waiting for the engine; beyond it: 429
//! bearer_token = "…"                  # optional: required as `Authorization: Bearer …`
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
//! [[sink]]
//! type = "file"                       # or "stdout", "http", "kafka"
//! path = "/var/lib/audithound/alerts.jsonl"   # appended, rotated past rotate_mib (100)
//! format = "ocsf"                     # or "native"
//! ```

use crate::alert::OutputFormat;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub detection: Detection,
    pub webhook: Option<Webhook>,
    pub files: Option<Files>,
    pub kafka: Option<Kafka>,
    #[serde(default, rename = "sink")]
    pub sinks: Vec<Sink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    #[serde(default = "default_rules")]
    pub rules: Vec<PathBuf>,
    pub revocations: Option<PathBuf>,
    #[serde(default = "default_cluster")]
    pub cluster: String,
    pub threads: Option<usize>,
    pub max_keys: Option<usize>,
    /// How late (event time) an event may arrive and still reach the stateful detectors in
    /// order, e.g. "10s" (the default).
    pub lateness: Option<String>,
}

impl Detection {
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
            rules: default_rules(),
            revocations: None,
            cluster: default_cluster(),
            threads: None,
            max_keys: None,
            lateness: None,
        }
    }
}

fn default_rules() -> Vec<PathBuf> {
    vec![PathBuf::from("detectors")]
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
    /// When set, POSTs must carry `Authorization: Bearer <token>` (the webhook kubeconfig's
    /// user token); others get 401.
    pub bearer_token: Option<String>,
    /// HTTPS: certificate chain and private key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// HTTPS with client certificates: only clients whose certificate this CA (PEM) signed.
    pub client_ca: Option<PathBuf>,
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
    pub brokers: String,
    pub topics: Vec<String>,
    #[serde(default = "default_group")]
    pub group: String,
    /// Where a new group starts: "earliest" or "latest".
    #[serde(default = "default_start")]
    pub start: String,
    /// Passed to librdkafka as they are (security.protocol, sasl.*, ssl.*).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// file: where; appended to, rotated past `rotate_mib` (default 100) keeping `keep` old
    /// files (default 5: `alerts.jsonl.1` … `.5`).
    pub path: Option<PathBuf>,
    pub rotate_mib: Option<u64>,
    pub keep: Option<usize>,
    #[serde(default)]
    pub format: Format,
    /// http: where, and in which shape (json, splunk_hec, elasticsearch).
    pub url: Option<String>,
    pub protocol: Option<crate::sink::http::Protocol>,
    /// http: extra headers, e.g. `{ Authorization = "Splunk 0000-…" }`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// http: alerts per request (default 500), gzip (default true), Elasticsearch index
    /// (default "audithound-alerts"), and how long to keep retrying before failing loudly
    /// (default 300 s).
    pub batch: Option<usize>,
    pub gzip: Option<bool>,
    pub index: Option<String>,
    pub max_retry_seconds: Option<u64>,
    /// kafka: brokers, topic and passthrough librdkafka properties.
    pub brokers: Option<String>,
    pub topic: Option<String>,
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Stdout,
    File,
    Http,
    Kafka,
}

impl Sink {
    /// Opens the sink this entry describes.
    pub fn open(&self) -> anyhow::Result<Box<dyn crate::sink::AlertSink>> {
        use crate::sink::{http, JsonLines};
        Ok(match self.kind {
            SinkKind::Stdout => Box::new(JsonLines::open("-", self.format.into())?),
            SinkKind::File => {
                let path = self.path.as_deref().unwrap_or(Path::new("alerts.jsonl"));
                Box::new(crate::sink::file::RotatingFile::open(
                    path,
                    self.rotate_mib.unwrap_or(100) << 20,
                    self.keep.unwrap_or(5),
                    self.format.into(),
                )?)
            }
            SinkKind::Http => Box::new(http::HttpSink::new(http::HttpOptions {
                url: self.url.clone().unwrap_or_default(),
                protocol: self.protocol.unwrap_or(http::Protocol::Json),
                format: self.format.into(),
                headers: self.headers.clone().into_iter().collect(),
                batch: self.batch.unwrap_or(500),
                gzip: self.gzip.unwrap_or(true),
                index: self
                    .index
                    .clone()
                    .unwrap_or_else(|| "audithound-alerts".into()),
                max_retry: std::time::Duration::from_secs(self.max_retry_seconds.unwrap_or(300)),
            })),
            SinkKind::Kafka => Box::new(crate::sink::kafka::KafkaSink::new(
                self.brokers.as_deref().unwrap_or_default(),
                self.topic.as_deref().unwrap_or_default(),
                self.format.into(),
                &self.properties,
            )?),
        })
    }
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Native,
    Ocsf,
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Native => OutputFormat::Native,
            Format::Ocsf => OutputFormat::Ocsf,
        }
    }
}

/// Reads and validates `path`; every problem names the file (and line and column when TOML
/// parsing found it).
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    config
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(config)
}

impl Config {
    fn validate(&self) -> Result<(), String> {
        if self.webhook.is_none() && self.files.is_none() && self.kafka.is_none() {
            return Err("no source configured: add a [webhook], [files] or [kafka] section".into());
        }
        self.detection.lateness_micros()?;
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
        if let Some(w) = &self.webhook {
            if w.listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "webhook.listen {:?}: expected host:port, e.g. \"0.0.0.0:8443\"",
                    w.listen
                ));
            }
            if w.queue == 0 || w.max_body_bytes == 0 {
                return Err("webhook.queue and webhook.max_body_bytes must be above 0".into());
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
        }
        if self.files.as_ref().is_some_and(|f| f.follow.is_empty()) {
            return Err("files.follow: name at least one file".into());
        }
        for (i, s) in self.sinks.iter().enumerate() {
            let http_only = s.url.is_some()
                || s.protocol.is_some()
                || !s.headers.is_empty()
                || s.batch.is_some()
                || s.gzip.is_some()
                || s.index.is_some()
                || s.max_retry_seconds.is_some();
            match s.kind {
                SinkKind::File if s.path.is_none() => {
                    return Err(format!("sink[{i}]: a file sink needs `path`"))
                }
                SinkKind::Stdout if s.path.is_some() => {
                    return Err(format!("sink[{i}]: a stdout sink takes no `path`"))
                }
                SinkKind::Kafka if s.brokers.is_none() || s.topic.is_none() => {
                    return Err(format!("sink[{i}]: a kafka sink needs `brokers` and `topic`"))
                }
                SinkKind::Kafka => {}
                SinkKind::Http => {
                    let url = s.url.as_deref().unwrap_or("");
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(format!(
                            "sink[{i}]: an http sink needs `url = \"https://…\"`"
                        ));
                    }
                }
                _ if http_only => {
                    return Err(format!(
                        "sink[{i}]: url, protocol, headers, batch, gzip, index and max_retry_seconds belong to http sinks"
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

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
        assert!(parse("[webhook]\nlisten = \"8443\"\n")
            .unwrap_err()
            .contains("host:port"));
        assert!(
            parse("[webhook]\nlisten = \"127.0.0.1:1\"\n[[sink]]\ntype = \"file\"\n")
                .unwrap_err()
                .contains("needs `path`")
        );
    }
}
