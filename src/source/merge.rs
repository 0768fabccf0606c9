//! Reads many files as one stream in event-time order, cut into batches.
//!
//! An HA control plane writes one log per API server, each roughly sorted, and rotation splits
//! each log into consecutive files. Every file is probed once for its first timestamp; a file is
//! opened only when the merge reaches that time, so rotated chains cost one open file each and
//! memory stays bounded however large the archive.

use super::file::{self, InputFile};
use super::lines::{LineReader, Next};
use super::{Batch, RecordMeta, Rejection};
use memchr::memmem::Finder;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

pub struct MergeOptions {
    pub max_record_bytes: usize,
    pub batch_records: usize,
    pub batch_bytes: usize,
}

struct OpenFile {
    index: u32,
    reader: LineReader,
    /// Event time of the record in `reader` (or of the last one that had a time).
    head_time: i64,
}

pub struct Merger {
    files: Vec<InputFile>,
    opts: MergeOptions,
    disk_bytes: Arc<AtomicU64>,
    /// Files not yet opened, sorted by first timestamp, latest first (so `pop` gives the next).
    pending: Vec<(i64, u32)>,
    open: Vec<Option<OpenFile>>,
    heap: BinaryHeap<Reverse<(i64, u32)>>,
    /// Problems met outside any batch (probing), flushed into the next batch.
    carry: Vec<Rejection>,
    seq: u64,
}

impl Merger {
    pub fn new(files: Vec<InputFile>, opts: MergeOptions, disk_bytes: Arc<AtomicU64>) -> Self {
        let mut m = Merger {
            open: (0..files.len()).map(|_| None).collect(),
            files,
            opts,
            disk_bytes,
            pending: Vec::new(),
            heap: BinaryHeap::new(),
            carry: Vec::new(),
            seq: 0,
        };
        m.probe_all();
        m
    }

    pub fn file_names(&self) -> Vec<Arc<str>> {
        self.files.iter().map(|f| f.name.clone()).collect()
    }

    /// Reads each file's first record for its time; empty and unreadable files are reported here.
    fn probe_all(&mut self) {
        let scratch = Arc::new(AtomicU64::new(0));
        for i in 0..self.files.len() {
            match self.open_reader(i as u32, scratch.clone()) {
                Ok(mut reader) => match reader.next_record() {
                    Next::Record => {
                        let t = sniff_time(reader.record()).unwrap_or(i64::MIN);
                        self.pending.push((t, i as u32));
                    }
                    // Let the real pass report these with their line numbers.
                    Next::TooLong { .. } | Next::Failed(_) => {
                        self.pending.push((i64::MIN, i as u32))
                    }
                    Next::Eof => self.carry.push(self.file_problem(
                        i,
                        "empty_file",
                        "file has no records".into(),
                    )),
                },
                Err(e) => {
                    let reason = match e.kind() {
                        std::io::ErrorKind::Unsupported => "unsupported_compression",
                        _ => "unreadable_file",
                    };
                    self.carry.push(self.file_problem(i, reason, e.to_string()))
                }
            }
        }
        self.pending.sort_by_key(|&(t, i)| Reverse((t, i)));
    }

    fn open_reader(&self, index: u32, counter: Arc<AtomicU64>) -> std::io::Result<LineReader> {
        let r = file::open(&self.files[index as usize], counter)?;
        Ok(LineReader::new(r, self.opts.max_record_bytes))
    }

    fn file_problem(&self, i: usize, reason: &'static str, detail: String) -> Rejection {
        Rejection {
            reason,
            file: self.files[i].name.clone(),
            line: 0,
            offset: 0,
            detail,
            raw: Vec::new(),
        }
    }

    /// Opens every pending file whose first record is not later than the earliest open head.
    fn open_due(&mut self) {
        while let Some(&(t, index)) = self.pending.last() {
            let due = match self.heap.peek() {
                Some(Reverse((head, _))) => t <= *head,
                None => true,
            };
            if !due {
                break;
            }
            self.pending.pop();
            match self.open_reader(index, self.disk_bytes.clone()) {
                Ok(reader) => {
                    let mut of = OpenFile {
                        index,
                        reader,
                        head_time: t,
                    };
                    if self.advance(&mut of) {
                        self.heap.push(Reverse((of.head_time, index)));
                        self.open[index as usize] = Some(of);
                    }
                }
                Err(e) => {
                    let p = self.file_problem(index as usize, "unreadable_file", e.to_string());
                    self.carry.push(p);
                }
            }
        }
    }

    /// Moves a file to its next record, reporting oversize lines and stream failures on the way.
    /// Returns false at the end of the file.
    fn advance(&mut self, of: &mut OpenFile) -> bool {
        loop {
            match of.reader.next_record() {
                Next::Record => {
                    if let Some(t) = sniff_time(of.reader.record()) {
                        of.head_time = t;
                    }
                    return true;
                }
                Next::TooLong { len } => {
                    let detail = format!(
                        "record of {len} bytes exceeds --max-line-bytes {}",
                        self.opts.max_record_bytes
                    );
                    let mut problem = self.reader_problem(of, "line_too_long", detail);
                    problem.raw = of.reader.record().to_vec();
                    self.carry.push(problem);
                }
                Next::Failed(e) => {
                    let detail = format!("stream failed, rest of file unreadable: {e}");
                    self.carry
                        .push(self.reader_problem(of, "corrupt_archive", detail));
                    return false;
                }
                Next::Eof => return false,
            }
        }
    }

    fn reader_problem(&self, of: &OpenFile, reason: &'static str, detail: String) -> Rejection {
        Rejection {
            reason,
            file: self.files[of.index as usize].name.clone(),
            line: of.reader.line(),
            offset: of.reader.offset(),
            detail,
            raw: Vec::new(),
        }
    }

    /// The next batch in event-time order, or None when every file is exhausted. A spent batch
    /// can be handed back for its buffers to be reused (saves page faults on fresh memory).
    pub fn next_batch(&mut self, recycled: Option<Batch>) -> Option<Batch> {
        let mut batch = recycled.unwrap_or_else(|| Batch {
            data: Vec::with_capacity(self.opts.batch_bytes.min(1 << 22) + 4096),
            records: Vec::with_capacity(self.opts.batch_records),
            ..Batch::default()
        });
        batch.seq = self.seq;
        batch.data.clear();
        batch.records.clear();
        batch.rejections.clear();
        batch.received = None;
        loop {
            self.open_due();
            batch.rejections.append(&mut self.carry);
            let Some(Reverse((_, index))) = self.heap.pop() else {
                break;
            };
            let Some(mut of) = self.open[index as usize].take() else {
                continue;
            };
            let start = batch.data.len();
            batch.data.extend_from_slice(of.reader.record());
            batch.records.push(RecordMeta {
                file: of.index,
                line: of.reader.line(),
                offset: of.reader.offset(),
                start,
                end: batch.data.len(),
                cluster: None,
                context: false,
            });
            if self.advance(&mut of) {
                self.heap.push(Reverse((of.head_time, index)));
                self.open[index as usize] = Some(of);
            }
            batch.rejections.append(&mut self.carry);
            if batch.records.len() >= self.opts.batch_records
                || batch.data.len() >= self.opts.batch_bytes
            {
                break;
            }
        }
        if batch.records.is_empty() && batch.rejections.is_empty() {
            return None;
        }
        self.seq += 1;
        Some(batch)
    }
}

/// Finds a record's event time without parsing it: good enough to order files, never trusted
/// for detection (the decoder reads the real timestamps). Handles keys inside JSON-encoded
/// strings (`\"stageTimestamp\":\"…`) as AKS exports have them.
pub fn sniff_time(record: &[u8]) -> Option<i64> {
    static KEYS: OnceLock<[Finder<'static>; 4]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [
            Finder::new("stageTimestamp"),
            Finder::new("requestReceivedTimestamp"),
            Finder::new("\"timestamp"),
            Finder::new("\"time"),
        ]
    });
    keys.iter().find_map(|k| {
        let at = k.find(record)? + k.needle().len();
        let rest = &record[at..];
        let skip = rest.iter().take(8).position(|b| b.is_ascii_digit())?;
        let value = &rest[skip..];
        let end = value
            .iter()
            .take(40)
            .position(|&b| b == b'"' || b == b'\\')?;
        crate::event::time::parse_rfc3339_micros(std::str::from_utf8(&value[..end]).ok()?)
    })
}

impl super::BatchSource for Merger {
    fn next_batch(&mut self, recycled: Option<Batch>) -> Option<Batch> {
        Merger::next_batch(self, recycled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_plain_and_escaped_timestamps() {
        let t = crate::event::time::parse_rfc3339_micros("2025-01-01T00:00:01Z");
        assert_eq!(
            sniff_time(br#"{"stageTimestamp":"2025-01-01T00:00:01Z"}"#),
            t
        );
        assert_eq!(
            sniff_time(br#"{"log":"{\"stageTimestamp\":\"2025-01-01T00:00:01Z\"}"}"#),
            t
        );
        assert_eq!(sniff_time(br#"{"timestamp":"2025-01-01T00:00:01Z"}"#), t);
        assert_eq!(sniff_time(br#"{"stageTimestamp":"nope"}"#), None);
        assert_eq!(sniff_time(b"garbage"), None);
    }
}
