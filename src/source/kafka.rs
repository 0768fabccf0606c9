//! Kafka input: a consumer-group member reading raw audit events (one event, EventList or
//! envelope per message) into the live queue. Offsets are committed by the engine, per batch,
//! only after every alert those messages caused was flushed to every sink (at-least-once):
//! `enable.auto.commit` is off and each record carries its (topic, partition, offset).

use super::live::{Chunk, LiveQueue};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where a message names its cluster (fleets shipping every cluster's audit log to one topic).
#[derive(Debug, Clone)]
pub enum ClusterFrom {
    /// The configured default / the event's envelope.
    Nothing,
    /// A message header with this name.
    Header(String),
    /// The message key, up to its first `/` (keys like `prod-eu/alice`).
    Key,
}

impl ClusterFrom {
    /// `header:<name>` or `key`.
    pub fn parse(s: &str) -> Result<ClusterFrom, String> {
        match s {
            "key" => Ok(ClusterFrom::Key),
            _ => match s.strip_prefix("header:") {
                Some(h) if !h.is_empty() => Ok(ClusterFrom::Header(h.to_owned())),
                _ => Err(format!("{s:?}: use \"key\" or \"header:<name>\"")),
            },
        }
    }

    fn of<'m>(&self, m: &'m rdkafka::message::BorrowedMessage<'_>) -> Option<&'m str> {
        use rdkafka::message::Headers;
        let text = |b: &'m [u8]| std::str::from_utf8(b).ok().filter(|s| !s.is_empty());
        match self {
            ClusterFrom::Nothing => None,
            ClusterFrom::Key => m
                .key()
                .and_then(text)
                .map(|k| k.split('/').next().unwrap_or(k)),
            ClusterFrom::Header(name) => m
                .headers()?
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(text),
        }
    }
}

/// Where a record came from in Kafka.
#[derive(Debug, Clone)]
pub struct Position {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// A consumer from `brokers`, `group` and passthrough librdkafka `properties`.
pub fn consumer(
    brokers: &str,
    group: &str,
    start: &str,
    properties: &BTreeMap<String, String>,
) -> anyhow::Result<BaseConsumer> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", start)
        .set("enable.partition.eof", "false");
    for (k, v) in properties {
        cfg.set(k, v);
    }
    Ok(cfg.create()?)
}

/// Polls `consumer` (subscribed to `topics`) on a thread until `stop`, offering each message
/// to `queue` as input `input` (waiting while the queue is full: Kafka keeps the rest).
pub fn spawn(
    consumer: Arc<BaseConsumer>,
    topics: &[String],
    cluster_from: ClusterFrom,
    input: u32,
    queue: LiveQueue,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut topic_names: BTreeMap<String, Arc<str>> = BTreeMap::new();
    let mut clusters: BTreeMap<String, Arc<str>> = BTreeMap::new();
    Ok(std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        let topic = topic_names
                            .entry(m.topic().to_owned())
                            .or_insert_with(|| Arc::from(m.topic()))
                            .clone();
                        let cluster = cluster_from.of(&m).map(|c| {
                            clusters
                                .entry(c.to_owned())
                                .or_insert_with(|| Arc::from(c))
                                .clone()
                        });
                        let chunk = Chunk {
                            input,
                            body: m.payload().unwrap_or_default().to_vec(),
                            received: std::time::Instant::now(),
                            cluster,
                            position: Some(Position {
                                topic,
                                partition: m.partition(),
                                offset: m.offset(),
                            }),
                        };
                        if queue.send(chunk).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => tracing::warn!("kafka consumer: {e}"),
                    None => {}
                }
            }
        })?)
}

/// Commits, for each partition, the offset after the last of `positions` (the engine calls this
/// once a batch's alerts are delivered).
pub fn commit(consumer: &BaseConsumer, positions: &[Position]) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for p in positions {
        let e = next.entry((&p.topic, p.partition)).or_insert(p.offset + 1);
        *e = (*e).max(p.offset + 1);
    }
    if next.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!("kafka commit: {e}");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!("kafka commit failed (the messages will be read again): {e}");
    }
}
