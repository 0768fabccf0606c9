//! Kafka sink: alerts to a topic through an idempotent producer (`acks=all`), keyed by alert id
//! so that redeliveries land on the same partition and de-duplicate downstream. `flush` waits
//! until every alert sent so far is acknowledged by the brokers, which is what lets the Kafka
//! source commit its offsets afterwards.

use super::outbox::Refused;
use super::AlertSink;
use crate::alert::{OutputFormat, Record};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts deliveries the brokers finally refused, so that `flush` can fail instead of
/// pretending (the default context drops them silently).
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!("kafka sink: an alert was not delivered: {e}");
        }
    }
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
        for item in items {
            self.produce(&item.key, &item.doc)
                .map_err(|e| Refused::Retry(e.to_string()))?;
        }
        // Shorter than librdkafka's own message timeout: the outbox retries the batch.
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| Refused::Retry(format!("not acknowledged: {e}")))?;
        match self.producer.context().failed.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(Refused::Retry(format!("{n} refused by the brokers"))),
        }
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

    fn produce(&self, key: &str, payload: &str) -> anyhow::Result<()> {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        // A full local queue: wait for deliveries to make room rather than drop.
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => anyhow::bail!("kafka sink: {e}"),
            }
        }
    }
}

impl AlertSink for KafkaSink {
    fn send(&mut self, finding: Record) -> anyhow::Result<()> {
        let item = self.render(finding)?;
        self.produce(&item.key, &item.doc)
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
