//! A sink's durable outbox (with `state_dir`): what the engine hands a remote sink is appended
//! to a file under `state_dir/outbox/` and synced at every flush, so the sources may advance
//! their positions past it; a thread of the sink's own delivers it in batches and retries, with
//! backoff, for as long as it takes. What was not delivered when the service stops (or dies) is
//! read back at the next start. The file is bounded: when it is full, `send` waits for
//! deliveries to make room, which holds the engine and so the sources (backpressure).
//!
//! On disk: `NAME.jsonl`, one `[key, document]` JSON array per line, and `NAME.done`, the byte
//! offset up to which lines were delivered. A line torn by a crash is dropped (it was never
//! synced, so the engine had not advanced past it); the file is emptied whenever everything in
//! it has been delivered.

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

/// The far side of a sink: one attempt at handing over a batch, accepted whole or not at all.
pub trait Transport: Send + 'static {
    fn deliver(&mut self, items: &[Item]) -> Result<(), String>;
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
    done_path: PathBuf,
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
        let (items, done, len) = read_back(&path, &done_path)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the outbox {}: {e}", path.display()))?;
        // Drops a torn last line: the next line starts where the last whole one ended.
        file.set_len(len)?;
        file.seek(std::io::SeekFrom::End(0))?;
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
                len,
                done,
                items,
                durable,
                dirty: false,
                closing: false,
            }),
            changed: Condvar::new(),
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
fn read_back(path: &Path, done_path: &Path) -> anyhow::Result<(Waiting, u64, u64)> {
    let mut items = VecDeque::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((items, 0, 0)),
        Err(e) => anyhow::bail!("cannot read the outbox {}: {e}", path.display()),
    };
    let done: u64 = std::fs::read_to_string(done_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
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
    // A done offset past the end: the file was emptied after everything was delivered.
    let done = if done > offset { offset } else { done };
    Ok((items, done, offset))
}

fn write_done(path: &Path, done: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("done.tmp");
    std::fs::write(&tmp, done.to_string())?;
    std::fs::rename(&tmp, path)
}

fn deliver_loop(shared: &Shared, mut transport: Box<dyn Transport>, batch: usize, drain: Duration) {
    let target = transport.target();
    let mut delay = Duration::from_millis(200);
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut failing_since: Option<Instant> = None;
    let mut closed_at: Option<Instant> = None;
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
            q.items
                .iter()
                .take(q.durable.min(batch.max(1)))
                .map(|(item, _)| item.clone())
                .collect()
        };
        match transport.deliver(&batch_items) {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(sink = %target, after = ?since.elapsed(), "delivering again");
                }
                delay = Duration::from_millis(200);
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
                if q.items.is_empty() {
                    // Everything delivered: start the file again.
                    let emptied = q.file.flush().and_then(|_| q.file.get_ref().set_len(0));
                    if let Err(e) = emptied.and_then(|_| q.file.seek(std::io::SeekFrom::Start(0))) {
                        tracing::warn!(sink = %target, "cannot empty the outbox: {e}");
                    } else {
                        q.len = 0;
                        q.done = 0;
                    }
                }
                if let Err(e) = write_done(&shared.done_path, q.done) {
                    tracing::warn!(sink = %target, "cannot record delivered findings: {e}");
                }
                let g = &shared.gauges;
                g.delivered.fetch_add(n as u64, Ordering::Relaxed);
                g.pending.store(q.items.len() as u64, Ordering::Relaxed);
                g.bytes.store(q.len - q.done, Ordering::Relaxed);
                shared.changed.notify_all();
            }
            Err(why) => {
                shared.gauges.retries.fetch_add(1, Ordering::Relaxed);
                let wait = super::http::jitter(delay, &mut seed);
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::warn!(sink = %target, findings = batch_items.len(), failing_for = ?since.elapsed(), "delivery failed ({why}); retrying in {wait:?}");
                delay = (delay * 2).min(Duration::from_secs(30));
                // Waits, but wakes at close to honour the drain deadline.
                let q = shared.lock();
                let _ = shared.changed.wait_timeout(q, wait);
            }
        }
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
    }

    impl Transport for Flaky {
        fn deliver(&mut self, items: &[Item]) -> Result<(), String> {
            if !self.up.load(Ordering::SeqCst) {
                return Err("down".into());
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
        let up = Arc::new(std::sync::atomic::AtomicBool::new(up));
        let got = Arc::new(Mutex::new(Vec::new()));
        let transport = Box::new(Flaky {
            up: up.clone(),
            got: got.clone(),
        });
        let render = Box::new(|r: Record| {
            Ok(Item {
                key: r.id().to_owned(),
                doc: "{}".into(),
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
        // All delivered: the file is emptied, and a third start sends nothing again.
        assert_eq!(
            std::fs::metadata(dir.path().join("t.jsonl")).unwrap().len(),
            0
        );
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
}
