//! HTTP sinks for SIEMs: a generic JSON array, Splunk HEC events or an Elasticsearch/OpenSearch
//! `_bulk` body, gzip-compressed, in batches. A failed delivery is retried with exponential
//! backoff and jitter; while it is retried the engine waits, so sources slow down (the webhook
//! answers 429) instead of alerts being dropped. Alert ids are stable (`_id` for Elasticsearch),
//! so a redelivered batch de-duplicates downstream.

use super::AlertSink;
use crate::alert::{OutputFormat, Record};
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `[alert, alert, …]`
    Json,
    /// `{"event": alert, "time": …, "sourcetype": "audithound"}` objects, back to back.
    SplunkHec,
    /// `{"index": {"_index": …, "_id": alert id}}` + alert, one pair per line.
    Elasticsearch,
}

/// `type = "http"`: `url`, `protocol` (json, splunk_hec, elasticsearch), `format`, `headers`
/// (values may hold secrets: `${VAR}` expands them, and they never print), alerts per request
/// (`batch`, 500), `gzip` (true), Elasticsearch `index` ("audithound-alerts") and how long to
/// retry before failing loudly (`max_retry_seconds`, 300).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: crate::settings::Text,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, crate::settings::Secret>,
    #[serde(default = "default_batch")]
    pub batch: usize,
    #[serde(default = "yes")]
    pub gzip: bool,
    #[serde(default = "default_index")]
    pub index: String,
    #[serde(default = "default_max_retry")]
    pub max_retry_seconds: u64,
    /// Only alerts and incidents at least this severe go to this sink.
    #[serde(default)]
    pub min_severity: Option<crate::rules::Severity>,
}

fn default_protocol() -> Protocol {
    Protocol::Json
}
fn default_batch() -> usize {
    500
}
fn yes() -> bool {
    true
}
fn default_index() -> String {
    "audithound-alerts".into()
}
fn default_max_retry() -> u64 {
    300
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "an http sink needs `url = \"https://…\"`, not {:?}",
                &*self.url
            ));
        }
        if self.batch == 0 {
            return Err("http sink: batch must be above 0".into());
        }
        Ok(())
    }

    pub fn build(&self) -> HttpSink {
        HttpSink::new(HttpOptions {
            url: self.url.to_string(),
            protocol: self.protocol,
            format: self.format,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            batch: self.batch,
            gzip: self.gzip,
            index: self.index.clone(),
            max_retry: Duration::from_secs(self.max_retry_seconds),
        })
    }
}

pub struct HttpOptions {
    pub url: String,
    pub protocol: Protocol,
    pub format: OutputFormat,
    /// Extra request headers (`Authorization: Splunk <token>`, `Authorization: ApiKey …`).
    pub headers: Vec<(String, String)>,
    pub batch: usize,
    pub gzip: bool,
    /// Index name for Elasticsearch.
    pub index: String,
    /// Give up (and fail the run, loudly) after retrying this long.
    pub max_retry: Duration,
}

pub struct HttpSink {
    opts: HttpOptions,
    agent: ureq::Agent,
    pending: Vec<String>,
    /// Deliveries retried so far (for the summary and tests).
    pub retries: u64,
    seed: u64,
}

impl HttpSink {
    pub fn new(opts: HttpOptions) -> HttpSink {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
        HttpSink {
            opts,
            agent,
            pending: Vec::new(),
            retries: 0,
            seed,
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.opts.protocol {
            Protocol::Json => {
                out.push(b'[');
                for (i, a) in self.pending.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(a.as_bytes());
                }
                out.push(b']');
            }
            Protocol::SplunkHec | Protocol::Elasticsearch => {
                for a in &self.pending {
                    out.extend_from_slice(a.as_bytes());
                    out.push(b'\n');
                }
            }
        }
        if !self.opts.gzip {
            return out;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        match gz.write_all(&out).and_then(|_| gz.finish()) {
            Ok(z) => z,
            Err(_) => out,
        }
    }

    /// Sends what is pending until it is accepted (2xx) or `max_retry` has passed.
    fn deliver(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let body = self.body();
        let content_type = match self.opts.protocol {
            Protocol::Json | Protocol::SplunkHec => "application/json",
            Protocol::Elasticsearch => "application/x-ndjson",
        };
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let mut req = self
                .agent
                .post(&self.opts.url)
                .set("Content-Type", content_type);
            if self.opts.gzip {
                req = req.set("Content-Encoding", "gzip");
            }
            for (k, v) in &self.opts.headers {
                req = req.set(k, v);
            }
            let outcome = match req.send_bytes(&body) {
                Ok(resp) if self.opts.protocol == Protocol::Elasticsearch => {
                    // _bulk answers 200 even when items failed.
                    let text = resp.into_string().unwrap_or_default();
                    if text.contains("\"errors\":true") {
                        Err("Elasticsearch reported item errors".to_string())
                    } else {
                        Ok(())
                    }
                }
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code}")),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    self.pending.clear();
                    return Ok(());
                }
                Err(why) if started.elapsed() < self.opts.max_retry => {
                    self.retries += 1;
                    let wait = jitter(delay, &mut self.seed);
                    tracing::warn!(url = %self.opts.url, alerts = self.pending.len(), "delivery failed ({why}); retrying in {wait:?}");
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(why) => anyhow::bail!(
                    "alerts could not be delivered to {} for {:?} ({why}); {} alerts undelivered",
                    self.opts.url,
                    self.opts.max_retry,
                    self.pending.len()
                ),
            }
        }
    }
}

/// Between half and all of `d`, so that many instances do not retry in step.
fn jitter(d: Duration, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let frac = 0.5 + (*seed % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

impl AlertSink for HttpSink {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        let doc = self.opts.format.render(record)?;
        let item = match self.opts.protocol {
            Protocol::Json => doc,
            // Alerts keep the sourcetype they always had; incidents get their own.
            Protocol::SplunkHec => format!(
                "{{\"time\":{:.6},\"sourcetype\":\"{}\",\"event\":{doc}}}",
                record.time_micros() as f64 / 1e6,
                match record {
                    Record::Alert(_) => "audithound",
                    Record::Incident(_) => "audithound:incident",
                }
            ),
            // The same `_id` for every report of a finding: Elasticsearch keeps the latest.
            Protocol::Elasticsearch => format!(
                "{}\n{doc}",
                serde_json::json!({"index": {"_index": self.opts.index, "_id": record.id()}})
            ),
        };
        self.pending.push(item);
        if self.pending.len() >= self.opts.batch.max(1) {
            self.deliver()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.deliver()
    }
}
