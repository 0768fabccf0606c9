//! Sinks: where alerts go. JSON lines to stdout or a file (the service's rotates: `file`), HTTP
//! for SIEMs (`http`), a Kafka topic (`kafka`), several at once (`Fanout`).

pub mod file;
pub mod http;
pub mod kafka;
pub mod outbox;

use crate::alert::{Alert, Incident, OutputFormat, Record};
use crate::rules::Severity;
use serde::Deserialize;
use std::io::Write;

/// One `[[sink]]` of the service's configuration: `type` picks the sink, whose own keys follow
/// (unknown keys are errors).
#[derive(Debug)]
pub enum SinkConfig {
    Stdout(StdoutConfig),
    File(file::FileConfig),
    Http(http::HttpConfig),
    Kafka(kafka::KafkaConfig),
}

/// By hand rather than `#[serde(tag = "type")]`: an internally tagged enum is read through a
/// buffer that loses the TOML position, so a mistake in any sink was reported at line 1 with
/// no key. Read as a table, an error names the sink's type and the key at fault.
impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SinkConfig::from_table(toml::Table::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl SinkConfig {
    /// A sink from its `[[sink]]` table.
    pub fn from_table(mut table: toml::Table) -> Result<SinkConfig, String> {
        let kind = match table.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            _ => {
                return Err(
                    "a [[sink]] needs `type = \"stdout\"`, \"file\", \"http\" or \"kafka\"".into(),
                )
            }
        };
        let read = |table: &toml::Table| {
            let rest = toml::Value::Table(table.clone());
            match kind.as_str() {
                "stdout" => rest.try_into().map(SinkConfig::Stdout),
                "file" => rest.try_into().map(SinkConfig::File),
                "http" => rest.try_into().map(SinkConfig::Http),
                "kafka" => rest.try_into().map(SinkConfig::Kafka),
                other => Err(serde::de::Error::custom(format!(
                    "unknown sink type {other:?}: expected \"stdout\", \"file\", \"http\" or \"kafka\""
                ))),
            }
        };
        let error = match read(&table) {
            Ok(sink) => return Ok(sink),
            Err(e) => e.message().to_owned(),
        };
        // serde names the key only for unknown and missing fields: the key at fault is the one
        // whose absence makes this error go away.
        let culprit = table.keys().find(|key| {
            let mut without = table.clone();
            without.remove(*key);
            read(&without).map_or_else(|e| e.message() != error, |_| true)
        });
        Err(match culprit {
            Some(key) if !error.contains(&format!("`{key}`")) => {
                format!("type = {kind:?}, key `{key}`: {error}")
            }
            _ => format!("type = {kind:?}: {error}"),
        })
    }
}

/// The `[[sink]]` tables, each read by `SinkConfig::from_table`; an error says which one
/// (`[[sink]] #2`, counted from 1 in the file's order).
pub fn deserialize_sinks<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<SinkConfig>, D::Error> {
    let tables = Vec::<toml::Table>::deserialize(d)?;
    tables
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            SinkConfig::from_table(t)
                .map_err(|e| serde::de::Error::custom(format!("[[sink]] #{}: {e}", i + 1)))
        })
        .collect()
}

/// `type = "stdout"`: JSON lines on standard output.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    #[serde(default)]
    pub format: OutputFormat,
    /// Only alerts and incidents at least this severe go to this sink.
    #[serde(default)]
    pub min_severity: Option<crate::rules::Severity>,
}

impl SinkConfig {
    /// Checks what can be checked without touching the world.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SinkConfig::Http(c) => c.validate(),
            SinkConfig::Kafka(c) => c.validate(),
            SinkConfig::Stdout(_) | SinkConfig::File(_) => Ok(()),
        }
    }

    /// Opens the sink; a remote one (http, kafka) behind an outbox when `outboxes` is given.
    pub fn build(&self, outboxes: Option<&mut Outboxes>) -> anyhow::Result<Box<dyn AlertSink>> {
        let sink: Box<dyn AlertSink> = match (self, outboxes) {
            (SinkConfig::Stdout(c), _) => Box::new(JsonLines::open("-", c.format)?),
            (SinkConfig::File(c), _) => Box::new(c.build()?),
            (SinkConfig::Http(c), None) => Box::new(c.build()),
            (SinkConfig::Kafka(c), None) => Box::new(c.build()?),
            (SinkConfig::Http(c), Some(o)) => {
                let render = c.render();
                o.open(
                    &format!("http-{}", short_hash(&c.url)),
                    Box::new(c.transport()),
                    Box::new(move |r| render.render(r)),
                    c.batch,
                )?
            }
            (SinkConfig::Kafka(c), Some(o)) => {
                let format = c.format;
                o.open(
                    &format!(
                        "kafka-{}",
                        short_hash(&format!("{} {}", &*c.brokers, &*c.topic))
                    ),
                    Box::new(c.transport()?),
                    Box::new(move |r| {
                        Ok(outbox::Item {
                            key: r.id().to_owned(),
                            doc: format.render(r)?,
                        })
                    }),
                    500,
                )?
            }
        };
        Ok(match self.min_severity() {
            Some(min) => Box::new(MinSeverity { inner: sink, min }),
            None => sink,
        })
    }

    fn min_severity(&self) -> Option<Severity> {
        match self {
            SinkConfig::Stdout(c) => c.min_severity,
            SinkConfig::File(c) => c.min_severity,
            SinkConfig::Http(c) => c.min_severity,
            SinkConfig::Kafka(c) => c.min_severity,
        }
    }

    /// Where alerts go, for the start-up log (no secrets).
    pub fn describe(&self) -> String {
        match self {
            SinkConfig::Stdout(c) => format!("stdout ({})", c.format),
            SinkConfig::File(c) => format!("file {} ({})", &*c.path, c.format),
            SinkConfig::Http(c) => format!("http {} ({}, {})", c.url, c.protocol, c.format),
            SinkConfig::Kafka(c) => {
                format!("kafka {} topic {} ({})", &*c.brokers, &*c.topic, c.format)
            }
        }
    }
}

/// Where remote sinks keep their outboxes (`state_dir/outbox`), and the outboxes opened.
pub struct Outboxes {
    pub dir: std::path::PathBuf,
    pub max_bytes: u64,
    /// How long a stopping service keeps delivering before leaving the rest for its next start.
    pub drain: std::time::Duration,
    /// Each outbox's name and gauges, for `/metrics`.
    pub opened: Vec<(String, std::sync::Arc<outbox::Gauges>)>,
}

impl Outboxes {
    fn open(
        &mut self,
        name: &str,
        transport: Box<dyn outbox::Transport>,
        render: Box<dyn FnMut(Record) -> anyhow::Result<outbox::Item> + Send>,
        batch: usize,
    ) -> anyhow::Result<Box<dyn AlertSink>> {
        // Two sinks with the same target (say, two formats to one SIEM) each get their own.
        let name = (1..)
            .map(|n| match n {
                1 => name.to_owned(),
                n => format!("{name}-{n}"),
            })
            .find(|candidate| self.opened.iter().all(|(taken, _)| taken != candidate))
            .unwrap_or_default();
        let name = name.as_str();
        let gauges = std::sync::Arc::new(outbox::Gauges::default());
        let options = outbox::OutboxOptions {
            batch,
            max_bytes: self.max_bytes,
            drain: self.drain,
        };
        let sink =
            outbox::Outbox::open(&self.dir, name, transport, render, options, gauges.clone())?;
        self.opened.push((name.to_owned(), gauges));
        Ok(Box::new(sink))
    }
}

impl Outboxes {
    /// Warns of outboxes under `dir` that no configured sink opened but that still hold
    /// findings (a sink removed or renamed with deliveries pending): they are not sent.
    pub fn warn_orphans(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
            else {
                continue;
            };
            if name.ends_with(".rejected") || self.opened.iter().any(|(n, _)| n == name) {
                continue;
            }
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            let done = std::fs::read_to_string(path.with_extension("done"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            if len > done {
                tracing::warn!(
                    outbox = %path.display(),
                    bytes = len - done,
                    "an outbox no configured sink uses holds undelivered findings: they are not sent (restore the sink, or deliver or delete the file by hand)"
                );
            }
        }
    }
}

/// A stable name for an outbox from its sink's target.
fn short_hash(s: &str) -> String {
    format!("{:08x}", crate::keyed::stable_hash(s.as_bytes()) >> 32)
}

pub trait AlertSink {
    fn send(&mut self, record: Record) -> anyhow::Result<()>;
    fn flush(&mut self) -> anyhow::Result<()>;
}

/// One document per line: native or OCSF JSON, or text for a person.
pub struct JsonLines {
    out: Box<dyn Write + Send>,
    format: OutputFormat,
    /// Text lines in colour (a terminal, and NO_COLOR not set).
    color: bool,
}

impl JsonLines {
    pub fn new(out: Box<dyn Write + Send>, format: OutputFormat) -> Self {
        JsonLines {
            out,
            format,
            color: false,
        }
    }

    /// `-` is stdout; anything else is a file, created or truncated.
    pub fn open(target: &str, format: OutputFormat) -> anyhow::Result<Self> {
        use std::io::IsTerminal;
        let (out, terminal): (Box<dyn Write + Send>, bool) = if target == "-" {
            let terminal = std::io::stdout().is_terminal();
            (
                Box::new(std::io::BufWriter::new(std::io::stdout())),
                terminal,
            )
        } else {
            let f = std::fs::File::create(target)
                .map_err(|e| anyhow::anyhow!("cannot create alert output {target:?}: {e}"))?;
            (Box::new(std::io::BufWriter::new(f)), false)
        };
        let color = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Ok(JsonLines { out, format, color })
    }
}

impl AlertSink for JsonLines {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        let line = match self.format {
            OutputFormat::Text => crate::alert::text_line(record, self.color),
            format => format.render(record)?,
        };
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.out.flush()?)
    }
}

/// Collects alerts (and incidents) in memory (tests, evaluation, reports).
#[derive(Default)]
pub struct Collect(pub Vec<Alert>, pub Vec<Incident>);

impl AlertSink for Collect {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        match record {
            Record::Alert(a) => self.0.push(a.clone()),
            Record::Incident(i) => self.1.push(i.clone()),
        }
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Passes on only what is at least `min` severe (alerts by their rule's severity, incidents by
/// theirs).
pub struct MinSeverity<S> {
    pub inner: S,
    pub min: Severity,
}

impl<S: AlertSink> AlertSink for MinSeverity<S> {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        let severity = match record {
            Record::Alert(a) => a.rule.severity,
            Record::Incident(i) => i.severity,
        };
        if severity >= self.min {
            self.inner.send(record)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush()
    }
}

impl AlertSink for Box<dyn AlertSink> {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        (**self).send(record)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        (**self).flush()
    }
}

/// Every alert to every sink, in order.
pub struct Fanout(pub Vec<Box<dyn AlertSink>>);

impl AlertSink for Fanout {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.send(record))
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }
}
