//! Live input: bodies pushed by a receiver (the audit webhook) through a bounded queue, cut into
//! batches for the engine. Each body is one record (an `EventList`, an array or one event); the
//! decoder unwraps it as it does in files. The queue's bound is the backpressure: a receiver that
//! cannot enqueue answers "try later" instead of buffering without limit.

use super::{Batch, BatchSource, RecordMeta};
use crossbeam_channel::{Receiver, Sender, TrySendError};

/// One accepted body and where it came from (index into the run's input names).
pub struct Chunk {
    pub input: u32,
    pub body: Vec<u8>,
    pub received: std::time::Instant,
    /// Where the body came from, acknowledged once processed (see `source::Position`).
    pub position: Option<super::Position>,
    /// The cluster the record names itself (a Kafka header or key), if any.
    pub cluster: Option<std::sync::Arc<str>>,
    /// Re-read to rebuild detector state only (see `Batch::warmup`).
    pub warmup: bool,
    /// A context copy from `audithound route` (see `detect::Origin::context`).
    pub context: bool,
}

/// The receiving end: the engine's source.
pub struct LiveSource {
    rx: Receiver<Chunk>,
    seq: u64,
    /// Received bytes and records (per input) so far, for line/offset in rejections.
    records: Vec<u64>,
    offsets: Vec<u64>,
    batch_bytes: usize,
    /// A body that did not fit the previous batch (warm-up and live bodies never share one).
    held: Option<Chunk>,
}

/// The sending end, for receivers.
#[derive(Clone)]
pub struct LiveQueue {
    tx: Sender<Chunk>,
}

/// Why a body was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: ask the sender to retry later.
    Busy,
    /// The pipeline is shutting down.
    Closed,
}

impl LiveQueue {
    /// Waits for room (file followers: reading slows down with the engine).
    pub fn send(&self, chunk: Chunk) -> Result<(), Refused> {
        self.tx.send(chunk).map_err(|_| Refused::Closed)
    }

    /// Never waits (receivers that can tell their sender to retry).
    pub fn offer(&self, chunk: Chunk) -> Result<(), Refused> {
        self.tx.try_send(chunk).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Busy,
            TrySendError::Disconnected(_) => Refused::Closed,
        })
    }
}

/// A queue of `capacity` bodies.
pub fn channel(capacity: usize) -> (LiveQueue, LiveSource) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let source = LiveSource {
        rx,
        seq: 0,
        records: Vec::new(),
        offsets: Vec::new(),
        batch_bytes: 4 << 20,
        held: None,
    };
    (LiveQueue { tx }, source)
}

impl BatchSource for LiveSource {
    /// Waits for the first body, then takes whatever else is already queued (up to a batch's
    /// worth), so a busy receiver gets large batches and a quiet one low latency.
    fn next_batch(&mut self, recycled: Option<Batch>) -> Option<Batch> {
        let first = match self.held.take() {
            Some(chunk) => chunk,
            None => self.rx.recv().ok()?,
        };
        let mut batch = recycled.unwrap_or_default();
        batch.seq = self.seq;
        self.seq += 1;
        batch.data.clear();
        batch.records.clear();
        batch.rejections.clear();
        batch.received = Some(first.received);
        batch.positions.clear();
        batch.clusters.clear();
        batch.warmup = first.warmup;
        let mut next = Some(first);
        while let Some(chunk) = next {
            let input = chunk.input as usize;
            batch.positions.extend(chunk.position);
            let cluster = chunk.cluster.map(|c| {
                let at = batch.clusters.iter().position(|k| *k == c);
                at.unwrap_or_else(|| {
                    batch.clusters.push(c);
                    batch.clusters.len() - 1
                }) as u32
            });
            let start = batch.data.len();
            batch.data.extend_from_slice(&chunk.body);
            if input >= self.records.len() {
                self.records.resize(input + 1, 0);
                self.offsets.resize(input + 1, 0);
            }
            let (n, off) = (&mut self.records[input], &mut self.offsets[input]);
            *n += 1;
            batch.records.push(RecordMeta {
                file: chunk.input,
                line: *n,
                offset: *off,
                start,
                end: batch.data.len(),
                cluster,
                context: chunk.context,
            });
            *off += chunk.body.len() as u64;
            next = if batch.data.len() < self.batch_bytes {
                self.rx.try_recv().ok()
            } else {
                None
            };
            if next.as_ref().is_some_and(|c| c.warmup != batch.warmup) {
                self.held = next.take();
            }
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_numbered_batches_and_a_full_queue_refuses() {
        let (queue, mut source) = channel(2);
        let body = |s: &str| Chunk {
            input: 0,
            body: s.as_bytes().to_vec(),
            received: std::time::Instant::now(),
            position: None,
            cluster: None,
            warmup: false,
            context: false,
        };
        queue.offer(body("{\"a\":1}")).unwrap();
        queue.offer(body("{\"b\":2}")).unwrap();
        assert_eq!(queue.offer(body("{}")), Err(Refused::Busy));
        let batch = source.next_batch(None).unwrap();
        assert_eq!(batch.seq, 0);
        assert_eq!(batch.records.len(), 2);
        let second = &batch.data[batch.records[1].start..batch.records[1].end];
        assert_eq!(second, b"{\"b\":2}");
        assert_eq!(batch.records[1].line, 2);
        queue.offer(body("{}")).unwrap();
        assert_eq!(source.next_batch(Some(batch)).unwrap().seq, 1);
        drop(queue);
        assert!(source.next_batch(None).is_none(), "closed and drained");
    }

    #[test]
    fn warm_up_and_live_bodies_never_share_a_batch() {
        let (queue, mut source) = channel(8);
        for warmup in [true, true, false, true] {
            queue
                .send(Chunk {
                    input: 0,
                    body: b"{}".to_vec(),
                    received: std::time::Instant::now(),
                    position: None,
                    cluster: None,
                    warmup,
                    context: false,
                })
                .unwrap();
        }
        drop(queue);
        let mut cuts = Vec::new();
        while let Some(batch) = source.next_batch(None) {
            cuts.push((batch.warmup, batch.records.len()));
        }
        assert_eq!(cuts, [(true, 2), (false, 1), (true, 1)]);
    }
}
