//! The webhook's journal, under `state_dir/journal/`: every body the webhook accepts is
//! appended and synced to disk before the API server hears 200, then read back into the engine
//! from there. What the engine has fully processed (every alert it caused delivered) is
//! acknowledged and, once no snapshot needs it either, deleted. After a crash the journal is
//! read again from the last acknowledged record, so nothing acknowledged to the API server is
//! lost.
//!
//! Appends are group-committed: one writer thread takes every body waiting, writes them all
//! and syncs once. Records are framed `[len u32][crc32 u32][seq u64][body]` in segment files
//! named by their first sequence number; a record cut by a crash (it was never acknowledged)
//! is dropped at start and counted.

use super::live::{Chunk, LiveQueue};
use super::Position;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Frame header: length, checksum, sequence number.
const HEADER: usize = 16;
/// The largest body a record may hold (`webhook.max_body_bytes` is kept below it).
pub const MAX_RECORD: usize = 1 << 30;

/// Why a body was not journaled.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The journal holds as much unprocessed input as it may: the sender should retry later.
    #[error("the journal is full ({0} bytes waiting for the engine)")]
    Full(u64),
    #[error("the journal cannot be written: {0}")]
    Io(String),
}

/// Counters for /metrics and the summary.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub appended: AtomicU64,
    pub bytes_waiting: AtomicU64,
    pub refused_full: AtomicU64,
    /// Bytes of records cut by a crash mid-write (never acknowledged), dropped at start.
    pub torn_bytes: AtomicU64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Bytes of whole, synced records: the reader reads no further.
    bytes: u64,
    /// A failed write may have left bytes past `bytes` that could not be cut off: nothing more
    /// is appended here.
    sealed: bool,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    /// Segments oldest first, and the sequence number the next record gets.
    segments: Mutex<(Vec<Segment>, u64)>,
    appended: Condvar,
    /// Highest record acknowledged, and the lowest a snapshot still needs (records after it).
    committed: AtomicU64,
    keep_from: AtomicU64,
    stats: JournalStats,
    closed: AtomicBool,
}

type Pending = (
    Vec<u8>,
    tokio::sync::oneshot::Sender<Result<u64, AppendError>>,
);

/// The journal: appends from the webhook, reads into the engine, acknowledgements.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
    writer: crossbeam_channel::Sender<Pending>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, holding at most `max_bytes` of unprocessed
    /// input. A record cut by a crash at the end is dropped.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create the journal {}: {e}", dir.display()))?;
        let mut segments: Vec<Segment> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                let first = path.file_stem()?.to_str()?.parse::<u64>().ok();
                (path.extension()? == "seg").then_some(())?;
                Some(Segment {
                    sealed: false,
                    first: first?,
                    bytes: e.metadata().ok()?.len(),
                    path,
                })
            })
            .collect();
        segments.sort_by_key(|s| s.first);
        let stats = JournalStats::default();
        // The last segment's tail may be a record a crash cut short: it was never synced,
        // so never acknowledged; it goes.
        let mut next = 1;
        if let Some(last) = segments.last_mut() {
            let (end, last_seq) = scan(&last.path, last.first)?;
            if end < last.bytes {
                stats.torn_bytes.store(last.bytes - end, Ordering::Relaxed);
                let f = OpenOptions::new().write(true).open(&last.path)?;
                f.set_len(end)?;
                f.sync_all()?;
                tracing::warn!(
                    segment = %last.path.display(),
                    bytes = last.bytes - end,
                    "journal: dropped a record cut short by a crash (never acknowledged)"
                );
                last.bytes = end;
            }
            next = last_seq.map_or(last.first, |s| s + 1);
        }
        let committed = read_committed(dir).unwrap_or(0);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            max_bytes,
            segments: Mutex::new((segments, next)),
            appended: Condvar::new(),
            committed: AtomicU64::new(committed),
            keep_from: AtomicU64::new(committed),
            stats,
            closed: AtomicBool::new(false),
        });
        let (writer, requests) = crossbeam_channel::unbounded::<Pending>();
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_loop(&for_writer, &requests))?;
        let journal = Journal { shared, writer };
        journal.update_waiting();
        Ok(journal)
    }

    /// Appends `body` and resolves once it is on disk, with its sequence number.
    pub async fn append(&self, body: Vec<u8>) -> Result<u64, AppendError> {
        let waiting = self.shared.stats.bytes_waiting.load(Ordering::Relaxed);
        if waiting + body.len() as u64 > self.shared.max_bytes {
            self.shared
                .stats
                .refused_full
                .fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::Full(waiting));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer
            .send((body, tx))
            .map_err(|_| AppendError::Io("the journal writer has stopped".into()))?;
        rx.await
            .map_err(|_| AppendError::Io("the journal writer has stopped".into()))?
    }

    /// The highest record acknowledged so far (0: none).
    pub fn committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Relaxed)
    }

    /// Every record up to `seq` is processed and its alerts delivered.
    pub fn commit(&self, seq: u64) {
        let previous = self.shared.committed.fetch_max(seq, Ordering::Relaxed);
        if seq <= previous {
            return;
        }
        // A lost update only means reading a little more again after a crash.
        if let Err(e) = write_committed(&self.shared.dir, seq) {
            tracing::warn!("journal: cannot record the acknowledged position: {e}");
        }
        self.update_waiting();
        self.truncate();
    }

    /// Records after `seq` must be kept (a snapshot reflects the input up to it).
    pub fn keep_from(&self, seq: u64) {
        self.shared.keep_from.store(seq, Ordering::Relaxed);
        self.truncate();
    }

    pub fn stats(&self) -> &JournalStats {
        &self.shared.stats
    }

    /// No more appends: readers stop once they have read everything.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.appended.notify_all();
    }

    /// Deletes the segments every record of which is acknowledged and older than what a
    /// snapshot needs.
    fn truncate(&self) {
        let upto = self
            .shared
            .committed
            .load(Ordering::Relaxed)
            .min(self.shared.keep_from.load(Ordering::Relaxed));
        let Ok(mut guard) = self.shared.segments.lock() else {
            return;
        };
        let segments = &mut guard.0;
        // A segment can go when the next one starts at or before `upto + 1`.
        while segments.len() > 1 && segments[1].first <= upto + 1 {
            let old = segments.remove(0);
            if let Err(e) = std::fs::remove_file(&old.path) {
                tracing::warn!(segment = %old.path.display(), "journal: cannot delete: {e}");
            }
        }
    }

    /// Bytes of the segments holding records not acknowledged yet (whole segments: a close
    /// enough bound for refusing more).
    fn update_waiting(&self) {
        let committed = self.shared.committed.load(Ordering::Relaxed);
        let Ok(guard) = self.shared.segments.lock() else {
            return;
        };
        let (segments, next) = &*guard;
        let waiting: u64 = segments
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let last = segments.get(i + 1).map_or(*next, |s| s.first) - 1;
                last > committed
            })
            .map(|(_, s)| s.bytes)
            .sum();
        self.shared
            .stats
            .bytes_waiting
            .store(waiting, Ordering::Relaxed);
    }

    /// Reads the records after `after` into `queue` as input `input`, following new appends,
    /// until the journal is closed and read to its end, or `stop` is set.
    pub fn spawn_reader(
        &self,
        after: u64,
        input: u32,
        queue: LiveQueue,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("journal-reader".into())
            .spawn(move || {
                if let Err(e) = read_loop(&shared, after, input, &queue, &stop) {
                    tracing::error!("journal: reading stopped: {e}");
                }
            })
    }
}

impl super::Acknowledge for Journal {
    fn acknowledge(&self, positions: &[Position]) {
        let done = positions
            .iter()
            .filter_map(|p| match p {
                Position::Journal(seq) => Some(*seq),
                _ => None,
            })
            .max();
        if let Some(seq) = done {
            self.commit(seq);
        }
    }
}

fn write_loop(shared: &Shared, requests: &crossbeam_channel::Receiver<Pending>) {
    let mut file: Option<(File, u64)> = None;
    while let Ok(first) = requests.recv() {
        // Group commit: everything waiting now goes in one write and one sync.
        let mut group = vec![first];
        group.extend(requests.try_iter());
        let result = write_group(shared, &mut file, &group);
        for ((_, reply), r) in group.into_iter().zip(result) {
            let _ = reply.send(r);
        }
        shared.appended.notify_all();
    }
}

/// Writes a group of bodies; each one's sequence number, or the error.
fn write_group(
    shared: &Shared,
    file: &mut Option<(File, u64)>,
    group: &[Pending],
) -> Vec<Result<u64, AppendError>> {
    let io = |e: std::io::Error| AppendError::Io(e.to_string());
    let Ok(mut guard) = shared.segments.lock() else {
        return group
            .iter()
            .map(|_| Err(AppendError::Io("journal state poisoned".into())))
            .collect();
    };
    let (segments_before, next_before) = (guard.0.len(), guard.1);
    let attempt = (|| -> Result<Vec<u64>, AppendError> {
        let (segments, next) = &mut *guard;
        let mut seqs = Vec::with_capacity(group.len());
        let mut buf = Vec::new();
        for (body, _) in group {
            let seq = *next;
            *next += 1;
            frame(seq, body, &mut buf);
            seqs.push(seq);
        }
        let needs_new = match (segments.last(), &*file) {
            (Some(last), Some(_)) => last.bytes >= SEGMENT_BYTES,
            _ => true,
        };
        if needs_new {
            // Whatever handle was open belongs to a full segment: never cut or append to it again.
            *file = None;
            let reuse = segments
                .last()
                .filter(|l| l.bytes < SEGMENT_BYTES && file.is_none() && !l.sealed)
                .map(|l| (l.path.clone(), l.first));
            let reused = reuse.is_some();
            let (path, first) = match reuse {
                Some(found) => found,
                None => {
                    let first = seqs[0];
                    let path = shared.dir.join(format!("{first:020}.seg"));
                    segments.push(Segment {
                        first,
                        path: path.clone(),
                        bytes: 0,
                        sealed: false,
                    });
                    (path, first)
                }
            };
            // A new segment may have a name a failed write left behind: it starts empty.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|f| {
                    if reused {
                        Ok(f)
                    } else {
                        f.set_len(0).map(|()| f)
                    }
                })
                .map_err(io)?;
            if !reused {
                // A new file is durable only once its directory entry is.
                if let Ok(d) = File::open(&shared.dir) {
                    let _ = d.sync_all();
                }
            }
            *file = Some((f, first));
        }
        let Some((f, _)) = file.as_mut() else {
            return Err(AppendError::Io("no segment open".into()));
        };
        f.write_all(&buf).map_err(io)?;
        f.sync_data().map_err(io)?;
        if let Some(last) = segments.last_mut() {
            last.bytes += buf.len() as u64;
        }
        shared
            .stats
            .appended
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        shared
            .stats
            .bytes_waiting
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(seqs)
    })();
    match attempt {
        Ok(seqs) => seqs.into_iter().map(Ok).collect(),
        Err(e) => {
            // Nothing of the group stays: what it wrote is cut off the open segment (the last),
            // a segment it could not open is forgotten, and its sequence numbers are given
            // again. If the cut fails the segment is sealed and the numbers are not reused, so
            // a record the failed write left whole is at worst read once more, never mistaken
            // for a later one.
            let (segments, next) = &mut *guard;
            let cut = match file.as_ref() {
                Some((f, _)) => segments
                    .last()
                    .is_some_and(|last| f.set_len(last.bytes).and_then(|()| f.sync_data()).is_ok()),
                None => {
                    segments.truncate(segments_before);
                    true
                }
            };
            if cut {
                *next = next_before;
            } else if let Some(last) = segments.last_mut() {
                last.sealed = true;
            }
            *file = None;
            let text = e.to_string();
            group
                .iter()
                .map(|_| Err(AppendError::Io(text.clone())))
                .collect()
        }
    }
}

/// Appends the record `seq` holding `body` to `buf`.
fn frame(seq: u64, body: &[u8], buf: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(body);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(body);
}

/// The valid length of a segment and its last sequence number.
fn scan(path: &Path, _first: u64) -> std::io::Result<(u64, Option<u64>)> {
    let mut r = BufReader::new(File::open(path)?);
    let (mut end, mut last) = (0u64, None);
    while let Some((seq, body)) = read_record(&mut r)? {
        end += (HEADER + body.len()) as u64;
        last = Some(seq);
    }
    Ok((end, last))
}

/// One record, or None at the end (or at a record cut short or corrupt).
fn read_record(r: &mut impl Read) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    let mut header = [0u8; HEADER];
    if let Err(e) = r.read_exact(&mut header) {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(e),
        };
    }
    let field = |at: usize, len: usize| header[at..at + len].to_vec();
    let len = u32::from_le_bytes(field(0, 4).try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(field(4, 4).try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(field(8, 8).try_into().unwrap_or_default());
    // A length no body can have is a corrupt header, not an allocation to attempt.
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return Ok(None);
    }
    let mut check = crc32fast::Hasher::new();
    check.update(&seq.to_le_bytes());
    check.update(&body);
    if check.finalize() != crc {
        return Ok(None);
    }
    Ok(Some((seq, body)))
}

fn read_loop(
    shared: &Shared,
    after: u64,
    input: u32,
    queue: &LiveQueue,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut next = after + 1;
    // Where the last pass stopped, so that a segment is not read again from its start.
    let mut cursor: Option<(PathBuf, u64)> = None;
    loop {
        // The segment holding `next`, and where it starts.
        let (path, segment_end, following) = {
            let Ok(guard) = shared.segments.lock() else {
                return Ok(());
            };
            let (segments, next_seq) = &*guard;
            let at = segments.partition_point(|s| s.first <= next);
            let segment = at.checked_sub(1).and_then(|i| segments.get(i));
            let following = segments.get(at).map(|s| s.first);
            // Caught up, or at the end of the last segment (numbers a failed write used up are
            // never written): wait for more, or stop when closed.
            let read_to_end = segment.is_some_and(
                |s| matches!(&cursor, Some((p, end)) if *p == s.path && *end >= s.bytes),
            );
            if next >= *next_seq || (following.is_none() && read_to_end) {
                if shared.closed.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let _ = shared
                    .appended
                    .wait_timeout(guard, std::time::Duration::from_millis(200));
                continue;
            }
            let Some(segment) = segment else {
                // Deleted already (acknowledged): skip to the oldest kept.
                next = segments.first().map_or(*next_seq, |s| s.first);
                continue;
            };
            (segment.path.clone(), segment.bytes, following)
        };
        let mut offset = match &cursor {
            Some((p, at)) if *p == path => *at,
            _ => 0,
        };
        let mut r = BufReader::new(File::open(&path)?);
        r.seek(SeekFrom::Start(offset))?;
        while offset < segment_end {
            let Some((seq, body)) = read_record(&mut r)? else {
                break;
            };
            offset += (HEADER + body.len()) as u64;
            if seq < next {
                continue;
            }
            next = seq + 1;
            let chunk = Chunk {
                input,
                body,
                received: std::time::Instant::now(),
                position: Some(Position::Journal(seq)),
                cluster: None,
                warmup: false,
                context: false,
            };
            if queue.send(chunk).is_err() {
                return Ok(()); // the engine has stopped
            }
        }
        if let Some(first) = following {
            // Past this segment: a record cut short or corrupt inside it (a failed write that
            // could not be cut off) must not hold the reader here.
            if next < first {
                tracing::warn!(segment = %path.display(), offset, "journal: unreadable record; going on with the next segment");
                next = first;
            }
        }
        cursor = Some((path, offset));
    }
}

fn read_committed(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("committed"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn write_committed(dir: &Path, seq: u64) -> std::io::Result<()> {
    let tmp = dir.join("committed.tmp");
    std::fs::write(&tmp, seq.to_string())?;
    std::fs::rename(tmp, dir.join("committed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Reads everything after `after` from a closed journal.
    fn read_all(j: &Journal, after: u64) -> Vec<(u64, Vec<u8>)> {
        let (queue, mut source) = super::super::live::channel(1024);
        j.close();
        j.spawn_reader(after, 0, queue, Arc::new(AtomicBool::new(false)))
            .unwrap()
            .join()
            .unwrap();
        use super::super::BatchSource;
        let mut out = Vec::new();
        while let Some(batch) = source.next_batch(None) {
            for (rec, pos) in batch.records.iter().zip(&batch.positions) {
                let Position::Journal(seq) = pos else {
                    panic!()
                };
                out.push((*seq, batch.data[rec.start..rec.end].to_vec()));
            }
        }
        out
    }

    #[test]
    fn appended_bodies_survive_a_restart_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let j = Journal::open(dir.path(), 1 << 20).unwrap();
            for i in 0..5 {
                let seq = rt
                    .block_on(j.append(format!("body {i}").into_bytes()))
                    .unwrap();
                assert_eq!(seq, i + 1);
            }
            j.commit(2);
        }
        // A crash mid-write leaves half a record at the end.
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let j = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(j.committed(), 2);
        assert_eq!(j.stats().torn_bytes.load(Ordering::Relaxed), 6);
        // Appends go on after the last whole record.
        assert_eq!(rt.block_on(j.append(b"body 5".to_vec())).unwrap(), 6);
        let got = read_all(&j, j.committed());
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [3, 4, 5, 6]);
        assert_eq!(got[0].1, b"body 2");
    }

    #[test]
    fn a_reader_following_appends_reads_each_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let j = Journal::open(dir.path(), 1 << 20).unwrap();
        let (queue, mut source) = super::super::live::channel(1024);
        let reader = j
            .spawn_reader(0, 0, queue, Arc::new(AtomicBool::new(false)))
            .unwrap();
        for i in 0..50u64 {
            rt.block_on(j.append(format!("body {i}").into_bytes()))
                .unwrap();
            if i % 7 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        j.close();
        reader.join().unwrap();
        use super::super::BatchSource;
        let mut seqs = Vec::new();
        while let Some(batch) = source.next_batch(None) {
            for pos in &batch.positions {
                let Position::Journal(seq) = pos else {
                    panic!()
                };
                seqs.push(*seq);
            }
        }
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn a_corrupt_record_inside_an_older_segment_does_not_hold_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Vec::new();
        frame(1, b"one", &mut a);
        frame(2, b"two", &mut a);
        // A header claiming more than any body may hold, and a few bytes of it.
        a.extend_from_slice(&u32::MAX.to_le_bytes());
        a.extend_from_slice(&[0; 8]);
        let mut b = Vec::new();
        frame(4, b"four", &mut b);
        std::fs::write(dir.path().join(format!("{:020}.seg", 1)), &a).unwrap();
        std::fs::write(dir.path().join(format!("{:020}.seg", 4)), &b).unwrap();
        let j = Journal::open(dir.path(), 1 << 20).unwrap();
        let got: Vec<u64> = read_all(&j, 0).into_iter().map(|(s, _)| s).collect();
        assert_eq!(got, [1, 2, 4]);
    }

    #[test]
    fn a_full_journal_refuses_and_acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let j = Journal::open(dir.path(), 100).unwrap();
        assert!(rt.block_on(j.append(vec![b'x'; 60])).is_ok());
        match rt.block_on(j.append(vec![b'x'; 60])) {
            Err(AppendError::Full(_)) => {}
            other => panic!("{other:?}"),
        }
        j.commit(1);
        assert!(rt.block_on(j.append(vec![b'y'; 60])).is_ok(), "room again");
    }
}
