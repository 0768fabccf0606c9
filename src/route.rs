//! `audithound route`: re-publishes a raw audit topic as single events keyed by
//! `cluster/username`, so that each identity's events land on one partition and several
//! `audithound run` members of one group can share a fleet's stream.
//!
//! Most detectors keep state per identity, which keying preserves. A few need an event on the
//! partition of someone other than its actor: a (Cluster)RoleBinding written or deleted (it
//! grants or removes the rights of whoever it names, users, service accounts or groups, whose
//! members nobody knows here) and a ServiceAccount deleted (its later use is the alert). Those
//! rare events are also copied to every other partition with an `audithound-context` header;
//! detector members take from a copy only the state it gives identities other than its actor
//! (`detect::Origin::context`), so nothing is counted twice.
//!
//! At-least-once: the raw offsets are committed only after the producer (idempotent,
//! `acks=all`) has every routed copy acknowledged.

use crate::event::EventView;
use crate::event::{decode_record, DecodeOptions, Item};
use crate::source::kafka::{self, ClusterFrom, Position, CONTEXT_HEADER};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct RouteOptions {
    pub brokers: String,
    pub from: Vec<String>,
    pub to: String,
    pub group: String,
    pub cluster_from: ClusterFrom,
    /// For events that name no cluster themselves.
    pub cluster: String,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct RouteStats {
    pub messages: u64,
    pub events: u64,
    /// Context copies written to other partitions.
    pub copies: u64,
    /// Records that decoded to nothing usable: passed through to partition 0 as they are, so
    /// that the detector members report them (with line, offset and dead letter).
    pub passed_through: u64,
}

/// Routes until `stop`; returns what it did.
pub fn route(opts: &RouteOptions, stop: &Arc<AtomicBool>) -> anyhow::Result<RouteStats> {
    let consumer = kafka::consumer(
        &opts.brokers,
        &opts.group,
        "earliest",
        &opts.properties,
        Arc::default(),
    )?;
    let names: Vec<&str> = opts.from.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &opts.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for (k, v) in &opts.properties {
        cfg.set(k, v);
    }
    let producer: BaseProducer = cfg.create()?;
    let partitions = partition_count(&producer, &opts.to)?;
    tracing::info!(from = ?opts.from, to = %opts.to, partitions, "routing");
    let mut stats = RouteStats::default();
    let decode = DecodeOptions::default();
    let mut topic: Option<Arc<str>> = None;
    while !stop.load(Ordering::Relaxed) {
        // A batch: what arrives within 200 ms (at most 1000 messages), then flush and commit.
        let mut positions = Vec::new();
        let started = Instant::now();
        while positions.len() < 1000 && started.elapsed() < Duration::from_millis(200) {
            let m = match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!("kafka consumer: {e}");
                    continue;
                }
                None => continue,
            };
            stats.messages += 1;
            let payload = m.payload().unwrap_or_default();
            let cluster = opts.cluster_from.of(&m).unwrap_or(&opts.cluster);
            let mut usable = false;
            decode_record(payload, &decode, cluster, &mut |item| {
                if let Item::Event(ev, _) = item {
                    usable = true;
                    stats.events += 1;
                    // The event's own text when it has one (no copy), else its mapping.
                    let text = match ev.source {
                        Some(json) => std::borrow::Cow::Borrowed(json),
                        None => serde_json::to_string(ev).unwrap_or_default().into(),
                    };
                    let cluster = ev.cluster.as_deref().unwrap_or(cluster);
                    let key = format!("{cluster}/{}", ev.username());
                    let home = partition_of(&key, partitions);
                    send(&producer, &opts.to, home, &key, &text, cluster, false);
                    if concerns_others(&EventView::new(ev, 0)) {
                        for p in (0..partitions).filter(|p| *p != home) {
                            send(&producer, &opts.to, p, &key, &text, cluster, true);
                            stats.copies += 1;
                        }
                    }
                }
            });
            if !usable {
                tracing::warn!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "no event in this record; passed through for the detectors to report"
                );
                send_raw(&producer, &opts.to, payload);
                stats.passed_through += 1;
            }
            if topic.as_deref() != Some(m.topic()) {
                topic = Some(Arc::from(m.topic()));
            }
            positions.push(Position {
                topic: topic.clone().unwrap_or_else(|| Arc::from(m.topic())),
                partition: m.partition(),
                offset: m.offset(),
            });
        }
        if positions.is_empty() {
            continue;
        }
        producer.flush(Duration::from_secs(60))?;
        kafka::commit(&consumer, &positions);
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(stats)
}

/// An event another identity's state depends on: a binding written or deleted, a service
/// account deleted.
fn concerns_others(view: &EventView) -> bool {
    if crate::detect::rbac::binding_change(view).is_some() {
        return true;
    }
    let o = view.event.object_ref.as_ref();
    view.event.verb.as_deref() == Some("delete")
        && o.and_then(|o| o.resource.as_deref()) == Some("serviceaccounts")
        && o.is_some_and(|o| o.subresource.is_none())
}

/// A key's partition: the same for every router and every run.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % partitions.max(1) as u64) as i32
}

fn partition_count(producer: &BaseProducer, topic: &str) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let n = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32);
        if n > 0 {
            return Ok(n);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "topic {topic:?} has no partitions (does it exist?)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn send(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &str,
    cluster: &str,
    context: bool,
) {
    let mut headers = OwnedHeaders::new().insert(Header {
        key: "cluster",
        value: Some(cluster),
    });
    if context {
        headers = headers.insert(Header {
            key: CONTEXT_HEADER,
            value: Some("1"),
        });
    }
    let mut record = BaseRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload)
        .headers(headers);
    // A full local queue: serve delivery reports until there is room.
    while let Err((e, back)) = producer.send(record) {
        tracing::debug!("producer queue full ({e}); waiting");
        producer.poll(Duration::from_millis(50));
        record = back;
    }
    producer.poll(Duration::ZERO);
}

fn send_raw(producer: &BaseProducer, topic: &str, payload: &[u8]) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(0)
        .payload(payload);
    while let Err((_, back)) = producer.send(record) {
        producer.poll(Duration::from_millis(50));
        record = back;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_and_service_account_deletions_concern_others() {
        let concerns = |json: &str| {
            let ev: crate::event::AuditEvent = serde_json::from_str(json).unwrap();
            concerns_others(&EventView::new(&ev, 0))
        };
        assert!(concerns(
            r#"{"verb":"create","objectRef":{"resource":"rolebindings"}}"#
        ));
        assert!(concerns(
            r#"{"verb":"delete","objectRef":{"resource":"clusterrolebindings"}}"#
        ));
        assert!(concerns(
            r#"{"verb":"delete","objectRef":{"resource":"serviceaccounts"}}"#
        ));
        assert!(!concerns(
            r#"{"verb":"get","objectRef":{"resource":"rolebindings"}}"#
        ));
        assert!(!concerns(
            r#"{"verb":"create","objectRef":{"resource":"serviceaccounts","subresource":"token"}}"#
        ));
        assert!(!concerns(
            r#"{"verb":"delete","objectRef":{"resource":"pods"}}"#
        ));
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        for key in ["prod/alice", "prod/system:serviceaccount:ci:deployer", ""] {
            let p = partition_of(key, 3);
            assert!((0..3).contains(&p));
            assert_eq!(p, partition_of(key, 3));
        }
        assert_eq!(partition_of("x", 0), 0);
    }
}
