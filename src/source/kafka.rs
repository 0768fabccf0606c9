//! Kafka input: a consumer-group member reading raw audit events (one event, EventList or
//! envelope per message) into the live queue. Offsets are committed by the engine, per batch,
//! only after every alert those messages caused was flushed to every sink (at-least-once):
//! `enable.auto.commit` is off and each record carries its (topic, partition, offset).
//!
//! When a partition is assigned (a start, a restart, a rebalance), detector state for its
//! identities is rebuilt first: the partition is re-read from `rebuild` before the first
//! uncommitted message (by message timestamp) up to it, as warm-up records that feed the
//! detectors but raise no alerts: those were delivered before the offset was committed.
//!
//! A revoked partition's state is kept, with the last offset this process fed its detectors.
//! Eager rebalancing revokes every partition whenever a member joins or leaves and mostly hands
//! the same ones back: re-reading what the state already holds would count those events twice
//! (a threshold reached by duplicates). So a partition assigned again is re-read only from
//! after that offset (the part another member read meanwhile), and messages up to it that come
//! again (delivered here, not yet committed) are skipped. State left behind by a partition that
//! moved for good gets no more events, expires with its windows and is bounded by the key cap.

use super::live::{Chunk, LiveQueue};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The consumer audithound runs: a group member that hears of its partition assignments.
pub type GroupConsumer = BaseConsumer<Assignments>;

/// Partitions assigned or revoked since the poll loop last looked (librdkafka calls this
/// from inside `poll`, on the polling thread).
pub struct Assignments {
    changed: Mutex<Vec<(String, i32)>>,
    /// Set with `changed`, so that the poll loop takes the lock only after a rebalance.
    any_changed: AtomicBool,
    gauges: Arc<Gauges>,
}

/// What `/metrics` shows of the consumer.
pub struct Gauges {
    /// Partitions held now.
    pub partitions: AtomicI64,
    /// Messages on them not yet committed (high watermark − committed offset), refreshed every
    /// few seconds; -1 until first measured.
    pub lag: AtomicI64,
}

impl Default for Gauges {
    fn default() -> Self {
        Gauges {
            partitions: AtomicI64::new(0),
            lag: AtomicI64::new(-1),
        }
    }
}

impl ClientContext for Assignments {}

impl ConsumerContext for Assignments {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let list = match rebalance {
            Rebalance::Assign(l) | Rebalance::Revoke(l) => l,
            Rebalance::Error(e) => {
                tracing::warn!("kafka rebalance: {e}");
                return;
            }
        };
        if let Ok(mut changed) = self.changed.lock() {
            for e in list.elements() {
                changed.push((e.topic().to_owned(), e.partition()));
            }
            self.any_changed.store(true, Ordering::Release);
        }
        // Eager rebalancing: an assignment is the whole new set, a revocation takes it all.
        let held = match rebalance {
            Rebalance::Assign(_) => list.count() as i64,
            _ => 0,
        };
        self.gauges.partitions.store(held, Ordering::Relaxed);
        tracing::info!(
            partitions = list.count(),
            "kafka partitions {}",
            match rebalance {
                Rebalance::Assign(_) => "assigned",
                _ => "revoked",
            }
        );
    }
}

/// What this process knows of a partition it holds or has held.
struct Held {
    /// Where reading stands since the partition was last assigned; None until its first
    /// message after that.
    phase: Option<Phase>,
    /// The last offset delivered to the detectors (live or warm-up), -1 before any, and that
    /// message's time.
    fed_through: (i64, i64),
}

/// Where a partition's reading stands since it was assigned.
enum Phase {
    /// Re-reading for state up to `resume_at` (the first uncommitted offset), skipping
    /// messages older than `from_ms`.
    Rebuilding { resume_at: i64, from_ms: i64 },
    /// Reading live; messages up to `skip_through` (offset, time) reached the detectors before
    /// the partition was last revoked and are not fed twice.
    Live { skip_through: (i64, i64) },
}

impl Phase {
    const LIVE: Phase = Phase::Live {
        skip_through: (-1, i64::MIN),
    };
}

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

    pub(crate) fn of<'m>(&self, m: &'m rdkafka::message::BorrowedMessage<'_>) -> Option<&'m str> {
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

/// Marks a context copy written by `audithound route` (see `detect::Origin::context`).
pub const CONTEXT_HEADER: &str = "audithound-context";

fn has_header(m: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> bool {
    use rdkafka::message::Headers;
    m.headers().is_some_and(|h| h.iter().any(|h| h.key == name))
}

/// Where a record came from in Kafka.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// A consumer from `brokers`, `group` and passthrough librdkafka `properties`; `gauges` follow
/// its assignment and lag.
pub fn consumer(
    brokers: &str,
    group: &str,
    start: &str,
    properties: &BTreeMap<String, String>,
    gauges: Arc<Gauges>,
) -> anyhow::Result<GroupConsumer> {
    Ok(
        consumer_config(brokers, group, start, properties).create_with_context(Assignments {
            changed: Mutex::default(),
            any_changed: AtomicBool::new(false),
            gauges,
        })?,
    )
}

/// Checks the consumer's settings as librdkafka would take them, without connecting: an
/// unknown property, or a value this build does not support (a security protocol, a SASL
/// mechanism), is refused.
pub fn check_consumer(
    brokers: &str,
    group: &str,
    start: &str,
    properties: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    consumer_config(brokers, group, start, properties).create_native_config()?;
    Ok(())
}

fn consumer_config(
    brokers: &str,
    group: &str,
    start: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", start)
        .set("enable.partition.eof", "false")
        // Alerts are wanted within a second: do not let a quiet partition's fetch wait the
        // default 500 ms (properties below may set it back).
        .set("fetch.wait.max.ms", "100");
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

/// Polls `consumer` (subscribed to `topics`) on a thread until `stop`, offering each message
/// to `queue` as input `input` (waiting while the queue is full: Kafka keeps the rest). Each
/// newly assigned partition is first re-read `rebuild_ms` back for detector state.
pub fn spawn(
    consumer: Arc<GroupConsumer>,
    topics: &[String],
    cluster_from: ClusterFrom,
    rebuild_ms: i64,
    input: u32,
    queue: LiveQueue,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut topic_names: BTreeMap<String, Arc<str>> = BTreeMap::new();
    let mut clusters: BTreeMap<String, Arc<str>> = BTreeMap::new();
    let mut held: HashMap<(Arc<str>, i32), Held> = HashMap::new();
    Ok(std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || {
            let mut lag_checked = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if lag_checked.elapsed() > Duration::from_secs(5) {
                    lag_checked = std::time::Instant::now();
                    measure_lag(&consumer);
                }
                let polled = consumer.poll(Duration::from_millis(200));
                // A partition assigned again is looked at afresh on its next message.
                let context = consumer.context();
                let any_changed = context.any_changed.swap(false, Ordering::Acquire);
                if let (true, Ok(mut changed)) = (any_changed, context.changed.lock()) {
                    for (topic, partition) in changed.drain(..) {
                        for ((t, p), h) in held.iter_mut() {
                            if **t == *topic && *p == partition {
                                h.phase = None;
                            }
                        }
                    }
                }
                let m = match polled {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!("kafka consumer: {e}");
                        continue;
                    }
                    None => continue,
                };
                let topic = topic_names
                    .entry(m.topic().to_owned())
                    .or_insert_with(|| Arc::from(m.topic()))
                    .clone();
                let time_ms = m.timestamp().to_millis().unwrap_or(0);
                let h = held.entry((topic.clone(), m.partition())).or_insert(Held {
                    phase: None,
                    fed_through: (-1, i64::MIN),
                });
                let phase = match &mut h.phase {
                    Some(phase) => phase,
                    None => {
                        let phase = h.phase.insert(rewind(
                            &consumer,
                            &topic,
                            m.partition(),
                            (m.offset(), time_ms),
                            rebuild_ms,
                            h.fed_through,
                        ));
                        if matches!(phase, Phase::Rebuilding { .. }) {
                            continue; // read again once the warm-up reaches it
                        }
                        phase
                    }
                };
                let warmup = match phase {
                    Phase::Live { skip_through: (last, last_ms) } if m.offset() <= *last => {
                        if time_ms <= *last_ms {
                            continue;
                        }
                        // Newer than what was fed at a later offset: not the same log (the
                        // topic was recreated, the broker lost its data). Nothing is skipped.
                        tracing::warn!(topic = %topic, partition = m.partition(), "offsets went back to {} under newer messages: reading them all", m.offset());
                        *phase = Phase::LIVE;
                        false
                    }
                    Phase::Live { .. } => false,
                    Phase::Rebuilding { resume_at, .. } if m.offset() >= *resume_at => {
                        tracing::info!(topic = %topic, partition = m.partition(), "state rebuilt; live from offset {resume_at}");
                        *phase = Phase::LIVE;
                        false
                    }
                    Phase::Rebuilding { from_ms, .. } if time_ms < *from_ms => continue,
                    Phase::Rebuilding { .. } => true,
                };
                if !deliver(&mut clusters, &cluster_from, &m, topic, warmup, input, &queue) {
                    return;
                }
                h.fed_through = (m.offset(), time_ms);
            }
        })?)
}

/// High watermark minus committed offset, summed over the held partitions, into the gauge.
fn measure_lag(consumer: &GroupConsumer) {
    let timeout = Duration::from_secs(2);
    let Ok(committed) = consumer.committed(timeout) else {
        return;
    };
    let mut lag = 0;
    for e in committed.elements() {
        let Ok((low, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout) else {
            return;
        };
        let done = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += (high - done).max(0);
    }
    consumer.context().gauges.lag.store(lag, Ordering::Relaxed);
}

/// Offers one message to the engine; false once the engine has gone.
fn deliver(
    clusters: &mut BTreeMap<String, Arc<str>>,
    cluster_from: &ClusterFrom,
    m: &rdkafka::message::BorrowedMessage<'_>,
    topic: Arc<str>,
    warmup: bool,
    input: u32,
    queue: &LiveQueue,
) -> bool {
    let cluster = cluster_from.of(m).map(|c| {
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
        // Warm-up records are before the committed offset: nothing to commit.
        position: (!warmup).then(|| {
            super::Position::Kafka(Position {
                topic,
                partition: m.partition(),
                offset: m.offset(),
            })
        }),
        warmup,
        context: has_header(m, CONTEXT_HEADER),
    };
    queue.send(chunk).is_ok()
}

/// The first message read from a newly assigned partition is at `offset` (its first
/// uncommitted one) and of `time_ms`: seeks back `rebuild_ms` of message time, but not to
/// what this process fed its detectors already (through `fed_through`: offset and time), for
/// warm-up when there is anything there, else reads on live.
fn rewind(
    consumer: &GroupConsumer,
    topic: &str,
    partition: i32,
    (offset, time_ms): (i64, i64),
    rebuild_ms: i64,
    fed_through: (i64, i64),
) -> Phase {
    let live = Phase::Live {
        skip_through: fed_through,
    };
    let fed_through = fed_through.0;
    if rebuild_ms <= 0 || fed_through >= offset - 1 {
        return live;
    }
    let from_ms = time_ms.saturating_sub(rebuild_ms);
    let timeout = Duration::from_secs(10);
    let mut wanted = TopicPartitionList::new();
    let start = wanted
        .add_partition_offset(topic, partition, Offset::Offset(from_ms))
        .ok()
        .and_then(|()| consumer.offsets_for_times(wanted, timeout).ok())
        .and_then(|found| {
            found
                .find_partition(topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        });
    // A broker that cannot look offsets up by time: from the start (or from after what was fed
    // here), skipping older messages.
    let start = match (start, fed_through) {
        (Some(o), f) => Offset::Offset(o.max(f + 1)),
        (None, -1) => Offset::Beginning,
        (None, f) => Offset::Offset(f + 1),
    };
    if matches!(start, Offset::Offset(o) if o >= offset) {
        return live;
    }
    match consumer.seek(topic, partition, start, timeout) {
        Ok(()) => {
            tracing::info!(
                topic,
                partition,
                "rebuilding detector state: re-reading up to offset {offset}"
            );
            Phase::Rebuilding {
                resume_at: offset,
                from_ms,
            }
        }
        Err(e) => {
            tracing::warn!(
                topic,
                partition,
                "cannot re-read for detector state ({e}); reading on"
            );
            live
        }
    }
}

/// Commits a batch's Kafka positions once its alerts are delivered.
pub struct Committer(pub Arc<GroupConsumer>);

impl super::Acknowledge for Committer {
    fn acknowledge(&self, positions: &[super::Position]) {
        let kafka: Vec<Position> = positions
            .iter()
            .filter_map(|p| match p {
                super::Position::Kafka(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        commit(&self.0, &kafka);
    }
}

/// Commits, for each partition, the offset after the last of `positions`.
pub fn commit(consumer: &GroupConsumer, positions: &[Position]) {
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
