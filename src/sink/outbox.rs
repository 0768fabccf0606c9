//! A sink's durable outbox (with `state_dir`): what the engine hands a remote sink is appended
//! to a file under `state_dir/outbox/` and synced at every flush, so the sources may advance
//! their positions past it; a thread of the sink's own delivers it in batches and retries, with
//! backoff, for as long as it takes. What was not delivered when the service stops (or dies) is
//! read back at the next start. The file is bounded: when it is full, `send` waits for
//! deliveries to make room, which holds the engine and so the sources (backpressure).
//!
//! On disk: `NAME.jsonl`, one `[key, document]` JSON array per line, and `NAME.done`, the byte
//! offset up to which lines were delivered and the file it counts in (its inode). A line torn
//! by a crash is dropped (it was never synced, so the engine had not advanced past it). Once
//! enough is delivered, what is left is written to a new file that replaces the old one: a
//! `.done` naming the old file then counts for nothing, so a crash at any point of the swap
//! never skips an undelivered finding. Findings the far side refuses for good (a malformed
//! document, not an outage) are set aside in `NAME.rejected.jsonl` with the reason, counted,
//! so that one bad finding cannot hold back every later one.

use super::AlertSink;
use crate::alert::Record;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One rendered finding: the key a keyed transport uses (the record id) and the document.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Item {
    pub key: String,
    pub doc: String,
}

/// Why a batch was not (wholly) accepted.
#[derive(Debug)]
pub enum Refused {
    /// The far side is down, busy or not letting us in: the batch is tried again later.
    Retry(String),
    /// The far side took the batch except these findings (by index), which it will never
    /// accept (e.g. HTTP 400, an Elasticsearch mapping error).
    Rejected(Vec<(usize, String)>),
}

/// The far side of a sink: one attempt at handing over a batch.
pub trait Transport: Send + 'static {
    fn deliver(&mut self, items: &[Item]) -> Result<(), Refused>;
    /// Where to, for logs (no secrets).
    fn target(&self) -> String;
}

/// What `/metrics` shows of an outbox.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Findings waiting (not yet accepted by the far side).
    pub pending: AtomicU64,
    /// Bytes they take on disk.
    pub bytes: AtomicU64,
    /// Findings delivered.
    pub delivered: AtomicU64,
    /// Failed delivery attempts.
    pub retries: AtomicU64,
    /// Times `send` had to wait because the outbox was full.
    pub full_waits: AtomicU64,
    /// Findings the far side refused for good, set aside in `NAME.rejected.jsonl`.
    pub rejected: AtomicU64,
}

/// How an outbox behaves.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Findings per delivery.
    pub batch: usize,
    /// Bytes on disk before `send` waits.
    pub max_bytes: u64,
    /// How long the delivering thread keeps trying once the sink is closed; what is left stays
    /// on disk for the next start.
    pub drain: Duration,
}

struct Queue {
    file: std::io::BufWriter<File>,
    /// The file's identity, recorded beside the delivered offset.
    ino: u64,
    /// Bytes written to the file (its length once flushed).
    len: u64,
    /// Offset up to which lines were delivered.
    done: u64,
    items: Waiting,
    /// How many of `items` (from the front) are synced and may be delivered.
    durable: usize,
    /// Written since the last sync.
    dirty: bool,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when findings become deliverable, when room is made, and at close.
    changed: Condvar,
    path: PathBuf,
    done_path: PathBuf,
    rejected_path: PathBuf,
    gauges: Arc<Gauges>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sink whose findings wait on disk until its transport accepts them.
pub struct Outbox {
    shared: Arc<Shared>,
    render: Box<dyn FnMut(Record) -> anyhow::Result<Item> + Send>,
    max_bytes: u64,
    thread: Option<std::thread::JoinHandle<()>>,
    name: String,
}

impl Outbox {
    /// Opens (or creates) the outbox `dir/name.jsonl`, reads back what an earlier run left
    /// undelivered, and starts delivering.
    pub fn open(
        dir: &Path,
        name: &str,
        transport: Box<dyn Transport>,
        render: Box<dyn FnMut(Record) -> anyhow::Result<Item> + Send>,
        options: OutboxOptions,
        gauges: Arc<Gauges>,
    ) -> anyhow::Result<Outbox> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create the outbox {}: {e}", dir.display()))?;
        let path = dir.join(format!("{name}.jsonl"));
        let done_path = dir.join(format!("{name}.done"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the outbox {}: {e}", path.display()))?;
        let ino = inode(&file)?;
        let (items, done, len) = read_back(&path, &done_path, ino)?;
        // Drops a torn last line: the next line starts where the last whole one ended.
        file.set_len(len)?;
        file.seek(std::io::SeekFrom::End(0))?;
        // Records the offset again if it was clamped or counted in another file.
        write_done(&done_path, done, ino)?;
        if !items.is_empty() {
            tracing::info!(
                outbox = %path.display(),
                findings = items.len(),
                "findings left undelivered by the last run are delivered first"
            );
        }
        gauges.pending.store(items.len() as u64, Ordering::Relaxed);
        gauges.bytes.store(len - done, Ordering::Relaxed);
        let durable = items.len();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                file: std::io::BufWriter::new(file),
                ino,
                len,
                done,
                items,
                durable,
                dirty: false,
                closing: false,
            }),
            changed: Condvar::new(),
            rejected_path: dir.join(format!("{name}.rejected.jsonl")),
            path,
            done_path,
            gauges,
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("outbox-{name}"))
            .spawn(move || deliver_loop(&worker, transport, options.batch, options.drain))?;
        Ok(Outbox {
            shared,
            render,
            max_bytes: options.max_bytes,
            thread: Some(thread),
            name: name.to_owned(),
        })
    }
}

/// Waiting findings, each with the offset its line ends at.
type Waiting = VecDeque<(Item, u64)>;

/// The findings after the delivered offset, the offset, and the length of the whole lines.
fn read_back(path: &Path, done_path: &Path, ino: u64) -> anyhow::Result<(Waiting, u64, u64)> {
    let mut items = VecDeque::new();
    let file = File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read the outbox {}: {e}", path.display()))?;
    // `OFFSET INODE`; an offset counted in another file (the one a compaction replaced) is 0.
    let done: u64 = std::fs::read_to_string(done_path)
        .ok()
        .and_then(|s| {
            let mut fields = s.split_whitespace();
            let done = fields.next()?.parse().ok()?;
            match fields.next().map(str::parse::<u64>) {
                Some(Ok(i)) if i != ino => Some(0),
                _ => Some(done),
            }
        })
        .unwrap_or(0);
    let mut reader = std::io::BufReader::new(file);
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            if n > 0 {
                tracing::warn!(outbox = %path.display(), offset, "a torn last line is dropped (it was never synced)");
            }
            break;
        }
        let end = offset + n as u64;
        if offset >= done {
            match serde_json::from_slice::<(String, String)>(&line) {
                Ok((key, doc)) => items.push_back((Item { key, doc }, end)),
                Err(e) => {
                    tracing::error!(outbox = %path.display(), offset, "an unreadable line is skipped: {e}")
                }
            }
        }
        offset = end;
    }
    let done = done.min(offset);
    Ok((items, done, offset))
}

#[cfg(unix)]
fn inode(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.ino())
}

#[cfg(not(unix))]
fn inode(_: &File) -> std::io::Result<u64> {
    Ok(0)
}

/// Records the delivered offset. Not synced: after a crash an older offset may be read,
/// which only delivers some findings again.
fn write_done(path: &Path, done: u64, ino: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("done.tmp");
    std::fs::write(&tmp, format!("{done} {ino}\n"))?;
    std::fs::rename(&tmp, path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Delivered bytes at which the file is rewritten with only what is left: a little for a
/// drained outbox, half the file for one that never drains (steady load, a long backlog).
const COMPACT_AT: u64 = 1 << 20;

/// Replaces the file with one holding only the undelivered findings (all of them synced by
/// then). Until the rename, the old file and its offset stand; after it, the new file is read
/// from its start whatever `.done` says, since that names the old file.
fn compact(q: &mut Queue, shared: &Shared) -> std::io::Result<()> {
    let tmp = shared.path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)?,
    );
    let mut len = 0u64;
    let mut ends = Vec::with_capacity(q.items.len());
    for (item, _) in &q.items {
        let mut line = serde_json::to_vec(&(&item.key, &item.doc))?;
        line.push(b'\n');
        out.write_all(&line)?;
        len += line.len() as u64;
        ends.push(len);
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    let ino = inode(out.get_ref())?;
    std::fs::rename(&tmp, &shared.path)?;
    // From here on the new file is the outbox, whatever fails next.
    q.ino = ino;
    q.file = out;
    for ((_, end), new) in q.items.iter_mut().zip(ends) {
        *end = new;
    }
    q.len = len;
    q.done = 0;
    q.durable = q.items.len();
    q.dirty = false;
    sync_dir(&shared.path)?;
    write_done(&shared.done_path, 0, q.ino)
}

/// Sets refused findings aside, one `{key, reason, target, document}` line each.
fn set_aside(shared: &Shared, target: &str, refused: &[(&Item, String)]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&shared.rejected_path)?;
    let mut buf = Vec::new();
    for (item, why) in refused {
        serde_json::to_writer(
            &mut buf,
            &serde_json::json!({"key": item.key, "reason": why, "target": target, "document": item.doc}),
        )?;
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    f.sync_data()
}

fn deliver_loop(shared: &Shared, mut transport: Box<dyn Transport>, batch: usize, drain: Duration) {
    let target = transport.target();
    let mut delay = Duration::from_millis(200);
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut failing_since: Option<Instant> = None;
    let mut closed_at: Option<Instant> = None;
    // After a batch was refused as a whole for good, findings go one at a time until past it,
    // so that only the bad one is set aside.
    let mut singly = 0usize;
    loop {
        let batch_items: Vec<Item> = {
            let mut q = shared.lock();
            while q.durable == 0 && !q.closing {
                q = shared.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.durable == 0 {
                return;
            }
            if q.closing {
                let at = *closed_at.get_or_insert_with(Instant::now);
                if at.elapsed() >= drain {
                    tracing::error!(
                        sink = %target,
                        findings = q.items.len(),
                        "stopping with findings undelivered: they stay in the outbox and go out after the next start"
                    );
                    return;
                }
            }
            let size = if singly > 0 { 1 } else { batch.max(1) };
            q.items
                .iter()
                .take(q.durable.min(size))
                .map(|(item, _)| item.clone())
                .collect()
        };
        let refused = match transport.deliver(&batch_items) {
            Ok(()) => Vec::new(),
            Err(Refused::Rejected(r)) if r.len() == batch_items.len() && r.len() > 1 => {
                tracing::warn!(sink = %target, findings = r.len(), "a batch was refused as a whole: sending its findings one at a time to find the bad ones");
                singly = r.len();
                continue;
            }
            Err(Refused::Rejected(r)) => r,
            Err(Refused::Retry(why)) => {
                shared.gauges.retries.fetch_add(1, Ordering::Relaxed);
                let wait = super::http::jitter(delay, &mut seed);
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::warn!(sink = %target, findings = batch_items.len(), failing_for = ?since.elapsed(), "delivery failed ({why}); retrying in {wait:?}");
                delay = (delay * 2).min(Duration::from_secs(30));
                // Sleeps out the backoff (new findings do not shorten it), but wakes at close
                // to honour the drain deadline.
                let deadline = Instant::now() + wait;
                let mut q = shared.lock();
                while !q.closing {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    q = shared
                        .changed
                        .wait_timeout(q, left)
                        .map_or_else(|e| e.into_inner().0, |r| r.0);
                }
                continue;
            }
        };
        if let Some(since) = failing_since.take() {
            tracing::info!(sink = %target, after = ?since.elapsed(), "delivering again");
        }
        delay = Duration::from_millis(200);
        singly = singly.saturating_sub(batch_items.len());
        if !refused.is_empty() {
            let aside: Vec<(&Item, String)> = refused
                .iter()
                .filter_map(|(i, why)| Some((batch_items.get(*i)?, why.clone())))
                .collect();
            for (item, why) in &aside {
                tracing::error!(sink = %target, finding = %item.key, "refused for good ({why}): set aside in {}", shared.rejected_path.display());
            }
            if let Err(e) = set_aside(shared, &target, &aside) {
                tracing::error!(sink = %target, "cannot write the refused findings aside: {e}");
            }
            shared
                .gauges
                .rejected
                .fetch_add(aside.len() as u64, Ordering::Relaxed);
        }
        let mut q = shared.lock();
        let n = batch_items.len();
        let mut end = q.done;
        for _ in 0..n {
            if let Some((_, e)) = q.items.pop_front() {
                end = e;
            }
        }
        q.durable -= n;
        q.done = end;
        let written = if q.done >= COMPACT_AT && q.done * 2 >= q.len {
            compact(&mut q, shared)
        } else {
            write_done(&shared.done_path, q.done, q.ino)
        };
        if let Err(e) = written {
            tracing::warn!(sink = %target, "cannot record delivered findings: {e}");
        }
        let g = &shared.gauges;
        g.delivered
            .fetch_add((n - refused.len()) as u64, Ordering::Relaxed);
        g.pending.store(q.items.len() as u64, Ordering::Relaxed);
        g.bytes.store(q.len - q.done, Ordering::Relaxed);
        shared.changed.notify_all();
    }
}

impl AlertSink for Outbox {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        let item = (self.render)(record)?;
        let mut line = serde_json::to_vec(&(&item.key, &item.doc))?;
        line.push(b'\n');
        let mut q = self.shared.lock();
        if q.len - q.done + line.len() as u64 > self.max_bytes && !q.items.is_empty() {
            self.shared
                .gauges
                .full_waits
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(outbox = %self.name, "the outbox is full: waiting for deliveries");
            // What is written but not synced cannot be delivered: sync it so that room is made.
            sync(&mut q, &self.shared)?;
            while q.len - q.done + line.len() as u64 > self.max_bytes && !q.items.is_empty() {
                q = self
                    .shared
                    .changed
                    .wait(q)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        q.file.write_all(&line)?;
        q.len += line.len() as u64;
        let end = q.len;
        q.items.push_back((item, end));
        q.dirty = true;
        let g = &self.shared.gauges;
        g.pending.store(q.items.len() as u64, Ordering::Relaxed);
        g.bytes.store(q.len - q.done, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs what was sent: from here on it survives a crash, and the sources may move on.
    fn flush(&mut self) -> anyhow::Result<()> {
        let mut q = self.shared.lock();
        sync(&mut q, &self.shared)
    }
}

fn sync(q: &mut Queue, shared: &Shared) -> anyhow::Result<()> {
    if q.dirty {
        q.file.flush()?;
        q.file.get_ref().sync_data()?;
        q.dirty = false;
        q.durable = q.items.len();
        shared.changed.notify_all();
    }
    Ok(())
}

impl Drop for Outbox {
    fn drop(&mut self) {
        {
            let mut q = self.shared.lock();
            if let Err(e) = sync(&mut q, &self.shared) {
                tracing::error!(outbox = %self.name, "cannot sync the outbox at stop: {e}");
            }
            q.closing = true;
            self.shared.changed.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts a batch only while `up` is set; keeps what it accepted.
    struct Flaky {
        up: Arc<std::sync::atomic::AtomicBool>,
        got: Arc<Mutex<Vec<String>>>,
        /// A finding the far side refuses for good; the batch holding it is refused whole.
        bad: Option<String>,
    }

    impl Transport for Flaky {
        fn deliver(&mut self, items: &[Item]) -> Result<(), Refused> {
            if !self.up.load(Ordering::SeqCst) {
                return Err(Refused::Retry("down".into()));
            }
            if items.iter().any(|i| Some(&i.key) == self.bad.as_ref()) {
                let all = (0..items.len()).map(|i| (i, "HTTP 400".into())).collect();
                return Err(Refused::Rejected(all));
            }
            let mut got = self.got.lock().unwrap();
            got.extend(items.iter().map(|i| i.key.clone()));
            Ok(())
        }
        fn target(&self) -> String {
            "flaky".into()
        }
    }

    fn alert(n: usize) -> crate::alert::Alert {
        crate::alert::test_alert(n as i64 + 1)
    }

    fn outbox(
        dir: &Path,
        up: bool,
        max_bytes: u64,
    ) -> (
        Outbox,
        Arc<Mutex<Vec<String>>>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        outbox_with(dir, up, max_bytes, None, 0)
    }

    fn outbox_with(
        dir: &Path,
        up: bool,
        max_bytes: u64,
        bad: Option<String>,
        padding: usize,
    ) -> (
        Outbox,
        Arc<Mutex<Vec<String>>>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(up));
        let got = Arc::new(Mutex::new(Vec::new()));
        let transport = Box::new(Flaky {
            up: up.clone(),
            got: got.clone(),
            bad,
        });
        let render = Box::new(move |r: Record| {
            Ok(Item {
                key: r.id().to_owned(),
                doc: "x".repeat(padding),
            })
        });
        let options = OutboxOptions {
            batch: 2,
            max_bytes,
            drain: Duration::from_millis(300),
        };
        let o = Outbox::open(dir, "t", transport, render, options, Arc::default()).unwrap();
        (o, got, up)
    }

    #[test]
    fn undelivered_findings_survive_a_restart_and_go_out_once_the_far_side_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let alerts: Vec<_> = (0..5).map(alert).collect();
        let (mut o, got, _) = outbox(dir.path(), false, 1 << 20);
        for a in &alerts {
            o.send(Record::Alert(a)).unwrap();
        }
        o.flush().unwrap();
        drop(o);
        assert!(got.lock().unwrap().is_empty());
        // A torn line after the synced ones, as a crash mid-write leaves it.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("t.jsonl"))
            .unwrap();
        f.write_all(b"[\"torn").unwrap();
        let (o, got, _) = outbox(dir.path(), true, 1 << 20);
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(o);
        let want: Vec<String> = alerts.iter().map(|a| a.id.clone()).collect();
        assert_eq!(*got.lock().unwrap(), want);
        // All delivered: a third start sends nothing again.
        let (o, got, _) = outbox(dir.path(), true, 1 << 20);
        std::thread::sleep(Duration::from_millis(200));
        drop(o);
        assert!(got.lock().unwrap().is_empty());
    }

    #[test]
    fn a_full_outbox_holds_the_sender_until_deliveries_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let alerts: Vec<_> = (0..6).map(alert).collect();
        let (mut o, got, up) = outbox(dir.path(), false, 25);
        let gauges = o.shared.gauges.clone();
        let up2 = up.clone();
        let opener = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            up2.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        for a in &alerts {
            o.send(Record::Alert(a)).unwrap();
            o.flush().unwrap();
        }
        // The sender waited for the far side to come back.
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(gauges.full_waits.load(Ordering::Relaxed) > 0);
        opener.join().unwrap();
        drop(o);
        assert_eq!(got.lock().unwrap().len(), 6);
    }

    fn wait_for(got: &Mutex<Vec<String>>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_finding_refused_for_good_is_set_aside_and_the_rest_go_out() {
        let dir = tempfile::tempdir().unwrap();
        let alerts: Vec<_> = (0..5).map(alert).collect();
        let bad = alerts[2].id.clone();
        let (mut o, got, _) = outbox_with(dir.path(), true, 1 << 20, Some(bad.clone()), 2);
        let gauges = o.shared.gauges.clone();
        for a in &alerts {
            o.send(Record::Alert(a)).unwrap();
        }
        o.flush().unwrap();
        wait_for(&got, 4);
        drop(o);
        let want: Vec<String> = alerts
            .iter()
            .map(|a| a.id.clone())
            .filter(|id| *id != bad)
            .collect();
        assert_eq!(*got.lock().unwrap(), want);
        assert_eq!(gauges.rejected.load(Ordering::Relaxed), 1);
        let aside = std::fs::read_to_string(dir.path().join("t.rejected.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(aside.trim()).unwrap();
        assert_eq!(line["key"], bad.as_str());
        assert_eq!(line["reason"], "HTTP 400");
        assert_eq!(line["document"], "xx");
    }

    #[test]
    fn a_busy_outbox_is_compacted_and_a_stale_offset_never_skips_a_finding() {
        let dir = tempfile::tempdir().unwrap();
        // 300 findings of 8 KiB: past the compaction mark several times over.
        let alerts: Vec<_> = (0..300).map(alert).collect();
        let (mut o, got, _) = outbox_with(dir.path(), true, 64 << 20, None, 8 << 10);
        for a in &alerts {
            o.send(Record::Alert(a)).unwrap();
            o.flush().unwrap();
        }
        wait_for(&got, 300);
        drop(o);
        assert_eq!(got.lock().unwrap().len(), 300);
        let len = std::fs::metadata(dir.path().join("t.jsonl")).unwrap().len();
        assert!(
            len < COMPACT_AT + (16 << 10),
            "never compacted: {len} bytes"
        );

        // Undelivered findings, and a `.done` left by a file a compaction replaced (a crash
        // between the rename and the new offset): it must count for nothing.
        let dir = tempfile::tempdir().unwrap();
        let (mut o, got, _) = outbox_with(dir.path(), false, 64 << 20, None, 10);
        for a in &alerts[..3] {
            o.send(Record::Alert(a)).unwrap();
        }
        o.flush().unwrap();
        drop(o);
        assert!(got.lock().unwrap().is_empty());
        std::fs::write(dir.path().join("t.done"), "40 1").unwrap();
        let (o, got, _) = outbox(dir.path(), true, 1 << 20);
        wait_for(&got, 3);
        drop(o);
        assert_eq!(got.lock().unwrap().len(), 3);
    }
}
