//! Sources: where records come from. Files, directories and globs (plain, gzip, zstd), merged
//! in event time and cut into batches (`merge`); live intake from the audit webhook (`webhook`),
//! followed files (`follow`) and Kafka (`kafka`), queued into batches by `live`.

pub mod file;
pub mod follow;
pub mod journal;
pub mod kafka;
pub mod lines;
pub mod live;
pub mod merge;
pub mod webhook;

/// Anything that cuts its input into numbered batches for the engine.
pub trait BatchSource: Send {
    /// The next batch, or None at the end of input. A spent batch can be handed back so that
    /// its buffers are reused.
    fn next_batch(&mut self, recycled: Option<Batch>) -> Option<Batch>;
}

use std::sync::Arc;

/// Where a record came from, in its source's own terms. The engine does not look inside: it
/// hands a batch's positions back to the source's `Acknowledge` once every alert the batch
/// caused is delivered to every sink, so that a position never advances past an undelivered
/// alert.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Position {
    /// A Kafka message: its offset is committed.
    Kafka(kafka::Position),
    /// A record of the webhook's journal: the journal is acknowledged up to it.
    Journal(u64),
    /// A followed file's line: the file's checkpoint advances past it.
    File(follow::Checkpoint),
}

/// Told, in input order, the positions of batches whose alerts are all delivered.
pub trait Acknowledge: Send + Sync {
    fn acknowledge(&self, positions: &[Position]);
}

/// Where every source has been processed to: the latest position of each (a snapshot of
/// detector state is consistent with these).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Positions {
    /// The journal's last record.
    pub journal: Option<u64>,
    /// Each followed file's checkpoint, by input.
    pub files: std::collections::BTreeMap<u32, follow::Checkpoint>,
    /// Each Kafka partition's last offset.
    pub kafka: Vec<kafka::Position>,
}

impl Positions {
    pub fn add(&mut self, positions: &[Position]) {
        for p in positions {
            match p {
                Position::Journal(seq) => {
                    self.journal = Some(self.journal.map_or(*seq, |j| j.max(*seq)))
                }
                Position::File(cp) => {
                    self.files.insert(cp.input, *cp);
                }
                Position::Kafka(k) => {
                    let same =
                        |o: &&mut kafka::Position| o.topic == k.topic && o.partition == k.partition;
                    match self.kafka.iter_mut().find(same) {
                        Some(o) => o.offset = o.offset.max(k.offset),
                        None => self.kafka.push(k.clone()),
                    }
                }
            }
        }
    }
}

/// Several sources' acknowledgements: each takes the positions that are its own.
impl Acknowledge for Vec<Arc<dyn Acknowledge>> {
    fn acknowledge(&self, positions: &[Position]) {
        for each in self {
            each.acknowledge(positions);
        }
    }
}

/// A run of records copied into one buffer, so workers get one allocation per batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Position in the input stream; output is re-sequenced by it, whatever the thread count.
    pub seq: u64,
    pub data: Vec<u8>,
    pub records: Vec<RecordMeta>,
    /// Problems the source met while cutting this batch (oversize lines, corrupt archives…).
    pub rejections: Vec<Rejection>,
    /// Live sources: when the batch's first record was received (for ingest-time latency).
    pub received: Option<std::time::Instant>,
    /// Where the batch's records came from, acknowledged once its alerts are delivered.
    pub positions: Vec<Position>,
    /// Cluster names records carry themselves (a Kafka header or key), see `RecordMeta::cluster`.
    pub clusters: Vec<std::sync::Arc<str>>,
    /// Records re-read only to rebuild detector state (Kafka, after a partition is assigned):
    /// their events feed the detectors but raise no alerts and commit nothing.
    pub warmup: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    /// Index into the run's file table.
    pub file: u32,
    pub line: u64,
    pub offset: u64,
    pub start: usize,
    pub end: usize,
    /// Index into `Batch::clusters` when the record names its own cluster; otherwise its
    /// input's cluster applies.
    pub cluster: Option<u32>,
    /// A context copy from `audithound route` (see `detect::Origin::context`).
    pub context: bool,
}

/// One piece of input that was not analysed, and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: &'static str,
    pub file: Arc<str>,
    /// 1-based line where the record starts (0 when the problem concerns the whole file).
    pub line: u64,
    /// Byte offset of the record in the (decompressed) file.
    pub offset: u64,
    pub detail: String,
    /// The record's bytes (possibly cut), for the dead-letter output.
    pub raw: Vec<u8>,
}
