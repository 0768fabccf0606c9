//! Kafka sink: alerts to a topic through an idempotent producer (`acks=all`), keyed by alert id
//! so that redeliveries land on the same partition and de-duplicate downstream. `flush` waits
//! until every alert sent so far is acknowledged by the brokers, which is what lets the Kafka
//! source commit its offsets afterwards.

use super::outbox::Refused;
use super::AlertSink;
use crate::alert::{OutputFormat, Record};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What the brokers made of the alerts sent: deliveries that failed and may succeed later
/// (counted, so that `flush` can fail instead of pretending: the default context drops them
/// silently), and those refused for good, by their index in the batch being delivered.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    refused: Mutex<Vec<(usize, String)>>,
}

impl Deliveries {
    fn refused(&self) -> std::sync::MutexGuard<'_, Vec<(usize, String)>> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Not part of a batch (`AlertSink::send`): a refusal only counts as a failure.
const NO_BATCH: usize = usize::MAX;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((e, _)) = result {
            tracing::error!("kafka sink: an alert was not delivered: {e}");
            if index != NO_BATCH && refused_for_good(e) {
                self.refused()
                    .push((index, format!("refused by the brokers: {e}")));
            } else {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Errors no retry can mend: the message itself is too large or malformed for the topic.
/// Everything else (brokers away, leaders moving, timeouts, authorisation not granted yet) is
/// retried.
fn refused_for_good(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::BadMessage
        )
    )
}

/// `type = "kafka"`: `brokers`, `topic`, `format` and passthrough librdkafka `properties`
/// (values may hold secrets: `${VAR}` expands them, and they never print).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: crate::settings::Text,
    pub topic: crate::settings::Text,
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default)]
    pub properties: BTreeMap<String, crate::settings::Secret>,
    /// Only alerts and incidents at least this severe go to this sink.
    #[serde(default)]
    pub min_severity: Option<crate::rules::Severity>,
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.is_empty() || self.topic.is_empty() {
            return Err("a kafka sink needs `brokers` and `topic`".into());
        }
        Ok(())
    }

    /// The producer's settings as librdkafka would take them, checked without connecting.
    pub fn check(&self) -> anyhow::Result<()> {
        let properties = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        producer_config(&self.brokers, &properties).create_native_config()?;
        Ok(())
    }

    pub fn build(&self) -> anyhow::Result<KafkaSink> {
        let properties = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        KafkaSink::new(&self.brokers, &self.topic, self.format, &properties)
    }

    /// The topic, for an outbox: each batch produced and waited for.
    pub fn transport(&self) -> anyhow::Result<KafkaSink> {
        self.build()
    }
}

impl super::outbox::Transport for KafkaSink {
    fn deliver(&mut self, items: &[super::outbox::Item]) -> Result<(), Refused> {
        // Nothing of an earlier attempt still in flight, so that every verdict heard from here
        // on is about this batch (a refusal names its item by index).
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| Refused::Retry(format!("earlier alerts not acknowledged: {e}")))?;
        let deliveries = self.producer.context();
        deliveries.failed.store(0, Ordering::Relaxed);
        deliveries.refused().clear();
        let mut refused = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.produce(&item.key, &item.doc, i) {
                Ok(()) => {}
                Err(e) if refused_for_good(&e) => {
                    refused.push((i, format!("refused by the producer: {e}")));
                }
                Err(e) => return Err(Refused::Retry(format!("kafka sink: {e}"))),
            }
        }
        // Shorter than librdkafka's own message timeout: the outbox retries the batch.
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| Refused::Retry(format!("not acknowledged: {e}")))?;
        // The batch again while any failure may mend; once none can, the rest was delivered
        // and only those refused for good are set aside.
        match deliveries.failed.swap(0, Ordering::Relaxed) {
            0 => {}
            n => return Err(Refused::Retry(format!("{n} refused by the brokers"))),
        }
        refused.append(&mut deliveries.refused());
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort_unstable_by_key(|r| r.0);
        Err(Refused::Rejected(refused))
    }

    fn target(&self) -> String {
        format!("kafka topic {}", self.topic)
    }
}

pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    format: OutputFormat,
}

impl KafkaSink {
    pub fn new(
        brokers: &str,
        topic: &str,
        format: OutputFormat,
        properties: &BTreeMap<String, String>,
    ) -> anyhow::Result<KafkaSink> {
        Ok(KafkaSink {
            producer: producer_config(brokers, properties)
                .create_with_context(Deliveries::default())?,
            topic: topic.to_owned(),
            format,
        })
    }
}

fn producer_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

impl KafkaSink {
    /// How a finding goes on the topic: keyed by its id.
    pub fn render(&self, finding: Record) -> anyhow::Result<super::outbox::Item> {
        Ok(super::outbox::Item {
            key: finding.id().to_owned(),
            doc: self.format.render(finding)?,
        })
    }

    /// Queues one message; `index` is its place in the batch being delivered.
    fn produce(&self, key: &str, payload: &str, index: usize) -> Result<(), KafkaError> {
        let mut record = BaseRecord::with_opaque_to(&self.topic, index)
            .key(key)
            .payload(payload);
        // A full local queue: wait for deliveries to make room rather than drop.
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

impl AlertSink for KafkaSink {
    fn send(&mut self, finding: Record) -> anyhow::Result<()> {
        let item = self.render(finding)?;
        self.produce(&item.key, &item.doc, NO_BATCH)
            .map_err(|e| anyhow::anyhow!("kafka sink: {e}"))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.producer
            .flush(Duration::from_secs(300))
            .map_err(|e| anyhow::anyhow!("kafka sink: alerts not acknowledged: {e}"))?;
        let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            anyhow::bail!("kafka sink: {failed} alert(s) refused by the brokers");
        }
        Ok(())
    }
}
