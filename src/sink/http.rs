//! HTTP sinks for SIEMs: a generic JSON array, Splunk HEC events or an Elasticsearch/OpenSearch
//! `_bulk` body, gzip-compressed, in batches. A failed delivery is retried with exponential
//! backoff and jitter: with `state_dir`, from the sink's outbox for as long as it takes
//! (`outbox`); without, in place for `max_retry_seconds` while the engine waits, so sources slow
//! down (the webhook answers 429) instead of alerts being dropped. Alert ids are stable (`_id` for Elasticsearch),
//! so a redelivered batch de-duplicates downstream.

use super::outbox::{Item, Refused, Transport};
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

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Json => "json",
            Protocol::SplunkHec => "splunk_hec",
            Protocol::Elasticsearch => "elasticsearch",
        })
    }
}

/// `type = "http"`: `url`, `protocol` (json, splunk_hec, elasticsearch), `format`, `headers`
/// (values may hold secrets: `${VAR}` expands them, and they never print), alerts per request
/// (`batch`, 500), `gzip` (true), Elasticsearch `index` ("audithound-alerts") and, without
/// `state_dir`, how long to retry before failing loudly (`max_retry_seconds`, 300).
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

    /// Turns a finding into what this sink sends.
    pub fn render(&self) -> HttpRender {
        HttpRender {
            protocol: self.protocol,
            format: self.format,
            index: self.index.clone(),
        }
    }

    /// The endpoint, without retries.
    pub fn transport(&self) -> HttpTransport {
        HttpTransport {
            url: self.url.to_string(),
            protocol: self.protocol,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            gzip: self.gzip,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// The sink without an outbox: retries in place, holding the engine, for
    /// `max_retry_seconds`.
    pub fn build(&self) -> HttpSink {
        HttpSink {
            render: self.render(),
            transport: self.transport(),
            batch: self.batch,
            max_retry: Duration::from_secs(self.max_retry_seconds),
            pending: Vec::new(),
            seed: std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15,
        }
    }
}

/// How findings are written for the sink's protocol.
#[derive(Clone)]
pub struct HttpRender {
    protocol: Protocol,
    format: OutputFormat,
    index: String,
}

impl HttpRender {
    pub fn render(&self, record: Record) -> anyhow::Result<Item> {
        let doc = self.format.render(record)?;
        let doc = match self.protocol {
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
                serde_json::json!({"index": {"_index": self.index, "_id": record.id()}})
            ),
        };
        Ok(Item {
            key: record.id().to_owned(),
            doc,
        })
    }
}

/// The SIEM's endpoint: one POST per batch.
pub struct HttpTransport {
    url: String,
    protocol: Protocol,
    /// Extra request headers (`Authorization: Splunk <token>`, `Authorization: ApiKey …`).
    headers: Vec<(String, String)>,
    gzip: bool,
    agent: ureq::Agent,
}

impl HttpTransport {
    fn body(&self, items: &[Item]) -> Vec<u8> {
        let mut out = Vec::new();
        match self.protocol {
            Protocol::Json => {
                out.push(b'[');
                for (i, a) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(a.doc.as_bytes());
                }
                out.push(b']');
            }
            Protocol::SplunkHec | Protocol::Elasticsearch => {
                for a in items {
                    out.extend_from_slice(a.doc.as_bytes());
                    out.push(b'\n');
                }
            }
        }
        if !self.gzip {
            return out;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        match gz.write_all(&out).and_then(|_| gz.finish()) {
            Ok(z) => z,
            Err(_) => out,
        }
    }
}

impl Transport for HttpTransport {
    fn deliver(&mut self, items: &[Item]) -> Result<(), Refused> {
        if items.is_empty() {
            return Ok(());
        }
        let body = self.body(items);
        let content_type = match self.protocol {
            Protocol::Json | Protocol::SplunkHec => "application/json",
            Protocol::Elasticsearch => "application/x-ndjson",
        };
        let mut req = self.agent.post(&self.url).set("Content-Type", content_type);
        if self.gzip {
            req = req.set("Content-Encoding", "gzip");
        }
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        match req.send_bytes(&body) {
            Ok(resp) if self.protocol == Protocol::Elasticsearch => {
                // _bulk answers 200 even when items failed.
                bulk_refusals(&resp.into_string().unwrap_or_default(), items.len())
            }
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) if permanent(code) => {
                let text = resp.into_string().unwrap_or_default();
                let why = format!(
                    "HTTP {code}: {}",
                    text.chars().take(200).collect::<String>()
                );
                Err(Refused::Rejected(
                    (0..items.len()).map(|i| (i, why.clone())).collect(),
                ))
            }
            Err(ureq::Error::Status(code, _)) => Err(Refused::Retry(format!("HTTP {code}"))),
            Err(e) => Err(Refused::Retry(e.to_string())),
        }
    }

    fn target(&self) -> String {
        self.url.clone()
    }
}

/// A status that says the documents themselves are wrong: trying again cannot help. Not 401,
/// 403 or 404 (a token or a URL the operator fixes), 408 or 429 (come back later).
fn permanent(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 401 | 403 | 404 | 408 | 429)
}

/// What an Elasticsearch `_bulk` answer says of each item: any busy or failing shard (429,
/// 5xx) means the batch is tried again (the documents carry their `_id`, so a second try
/// overwrites, never duplicates); otherwise the items refused for good.
fn bulk_refusals(text: &str, count: usize) -> Result<(), Refused> {
    #[derive(serde::Deserialize)]
    struct Bulk {
        #[serde(default)]
        errors: bool,
        #[serde(default)]
        items: Vec<std::collections::HashMap<String, BulkItem>>,
    }
    #[derive(serde::Deserialize)]
    struct BulkItem {
        #[serde(default)]
        status: u16,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    let Ok(bulk) = serde_json::from_str::<Bulk>(text) else {
        return Err(Refused::Retry(
            "an answer that is not a _bulk response".into(),
        ));
    };
    if !bulk.errors {
        return Ok(());
    }
    if bulk.items.len() != count {
        return Err(Refused::Retry(format!(
            "a _bulk answer for {} items, {count} sent",
            bulk.items.len()
        )));
    }
    let mut rejected = Vec::new();
    for (i, item) in bulk.items.iter().enumerate() {
        let Some(result) = item.values().next() else {
            continue;
        };
        if result.status == 429 || result.status >= 500 {
            return Err(Refused::Retry(format!(
                "Elasticsearch item status {}",
                result.status
            )));
        }
        if result.status >= 300 || result.error.is_some() {
            let why = result
                .error
                .as_ref()
                .map_or_else(String::new, |e| e.to_string());
            rejected.push((
                i,
                format!("Elasticsearch item status {}: {why}", result.status),
            ));
        }
    }
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(Refused::Rejected(rejected))
    }
}

/// An HTTP sink without an outbox: a batch is retried in place, the engine waiting, until it is
/// accepted or `max_retry` has passed (then the run fails, loudly).
pub struct HttpSink {
    render: HttpRender,
    transport: HttpTransport,
    batch: usize,
    max_retry: Duration,
    pending: Vec<Item>,
    seed: u64,
}

impl HttpSink {
    fn deliver(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            match self.transport.deliver(&self.pending) {
                Ok(()) => {
                    self.pending.clear();
                    return Ok(());
                }
                Err(Refused::Rejected(refused))
                    if refused.len() == self.pending.len() && refused.len() > 1 =>
                {
                    // Refused as a whole: one at a time, so that only the bad ones are lost.
                    for item in std::mem::take(&mut self.pending) {
                        self.pending.push(item);
                        self.deliver()?;
                    }
                    return Ok(());
                }
                Err(Refused::Rejected(refused)) => {
                    // Never accepted, however long we try; with state_dir they are set aside.
                    for (i, why) in refused {
                        if let Some(item) = self.pending.get(i) {
                            tracing::error!(url = %self.transport.url, finding = %item.key, "refused for good ({why}); dropped");
                        }
                    }
                    self.pending.clear();
                    return Ok(());
                }
                Err(Refused::Retry(why)) if started.elapsed() < self.max_retry => {
                    let wait = jitter(delay, &mut self.seed);
                    tracing::warn!(url = %self.transport.url, alerts = self.pending.len(), "delivery failed ({why}); retrying in {wait:?}");
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(Refused::Retry(why)) => anyhow::bail!(
                    "alerts could not be delivered to {} for {:?} ({why}); {} alerts undelivered (with state_dir they would wait in an outbox)",
                    self.transport.url,
                    self.max_retry,
                    self.pending.len()
                ),
            }
        }
    }
}

/// Between half and all of `d`, so that many instances do not retry in step.
pub(super) fn jitter(d: Duration, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let frac = 0.5 + (*seed % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

impl AlertSink for HttpSink {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        self.pending.push(self.render.render(record)?);
        if self.pending.len() >= self.batch.max(1) {
            self.deliver()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.deliver()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_that_no_retry_can_fix_are_told_from_outages() {
        for code in [400, 409, 413, 422] {
            assert!(permanent(code), "{code}");
        }
        for code in [401, 403, 404, 408, 429, 500, 503] {
            assert!(!permanent(code), "{code}");
        }
    }

    #[test]
    fn a_bulk_answer_sets_aside_bad_items_and_retries_busy_shards() {
        assert!(bulk_refusals(r#"{"errors":false,"items":[]}"#, 2).is_ok());
        let mapping = r#"{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#;
        match bulk_refusals(mapping, 2) {
            Err(Refused::Rejected(r)) => {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].0, 1);
                assert!(r[0].1.contains("mapper_parsing_exception"), "{}", r[0].1);
            }
            other => panic!("{other:?}"),
        }
        let busy = r#"{"errors":true,"items":[{"index":{"status":429}},{"index":{"status":400}}]}"#;
        assert!(matches!(bulk_refusals(busy, 2), Err(Refused::Retry(_))));
        assert!(matches!(
            bulk_refusals("<html>proxy error</html>", 2),
            Err(Refused::Retry(_))
        ));
    }
}
