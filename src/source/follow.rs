//! Following log files as they grow (`tail -F`): each new complete line is one record, offered
//! to the live queue (waiting while it is full, so a slow engine slows the reading, nothing is
//! skipped). Rotation-aware: when the path names a new file (rename and re-create) or the file
//! shrinks (copy-truncate), the rest of the old file is read first, then the new one from its
//! start. A line still being written (no newline yet) waits for its end.
//!
//! With a state directory, each line carries its checkpoint (the file's identity and the offset
//! after it); once the engine has delivered every alert up to a line, the checkpoint is saved,
//! and a restart resumes there: lines appended while the service was down are read, none twice
//! that was acknowledged. A file rotated or truncated while it was down is read from its start.

use super::live::{Chunk, LiveQueue};
use super::Position;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a followed file has been read to: its identity and the offset after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run's input index of the file (it depends on the configuration: saved records name
    /// the path too).
    #[serde(default)]
    pub input: u32,
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
}

/// Rotations and truncations seen, for the summary and /metrics.
#[derive(Debug, Default)]
pub struct FollowStats {
    pub rotations: AtomicU64,
    pub truncations: AtomicU64,
}

/// How often a quiet file is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// Longest line kept whole; longer ones are cut here (and rejected downstream as truncated JSON).
const MAX_LINE: usize = 16 << 20;
/// The most read from a file at once: a file that grew by gigabytes while the service was
/// down is read in pieces, not into memory whole.
const READ_CHUNK: u64 = 8 << 20;

pub struct Follower {
    path: PathBuf,
    input: u32,
    file: Option<File>,
    /// File identity (device, inode) and read position of the open file.
    id: Option<(u64, u64)>,
    pos: u64,
    partial: Vec<u8>,
    stats: Arc<FollowStats>,
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        (0, 0)
    }
}

impl Follower {
    /// `from_start`: read what the file already holds; otherwise only what is appended.
    pub fn new(path: PathBuf, input: u32, from_start: bool) -> Follower {
        Self::resume(path, input, None, from_start, Arc::default())
    }

    /// Resumes at `checkpoint` when it names the file now at `path` (else as `new`, but from
    /// the start of a file that was rotated or truncated since).
    pub fn resume(
        path: PathBuf,
        input: u32,
        checkpoint: Option<Checkpoint>,
        from_start: bool,
        stats: Arc<FollowStats>,
    ) -> Follower {
        let mut f = Follower {
            path,
            input,
            file: None,
            id: None,
            pos: 0,
            partial: Vec::new(),
            stats,
        };
        f.open(from_start, checkpoint);
        f
    }

    fn open(&mut self, from_start: bool, checkpoint: Option<Checkpoint>) {
        let Ok(mut file) = File::open(&self.path) else {
            return; // not there yet: looked for again on every poll
        };
        let meta = file.metadata().ok();
        self.id = meta.as_ref().map(identity);
        let len = meta.map_or(0, |m| m.len());
        self.pos = match checkpoint {
            Some(cp) if self.id == Some((cp.device, cp.inode)) && len >= cp.offset => cp.offset,
            Some(cp) => {
                let what = if self.id == Some((cp.device, cp.inode)) {
                    self.stats.truncations.fetch_add(1, Ordering::Relaxed);
                    "truncated"
                } else {
                    self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                    "rotated"
                };
                tracing::warn!(path = %self.path.display(), "followed file {what} while stopped; reading it from its start");
                0
            }
            None if from_start => 0,
            None => len,
        };
        if file.seek(SeekFrom::Start(self.pos)).is_ok() {
            self.file = Some(file);
        }
    }

    /// Reads what was appended, at most `READ_CHUNK` at a time; returns the complete lines,
    /// each with the checkpoint after it, and whether more may be waiting.
    fn read_new(&mut self, out: &mut Vec<(Vec<u8>, Checkpoint)>) -> bool {
        let Some(file) = self.file.as_mut() else {
            self.open(true, None);
            return false;
        };
        let mut buf = Vec::new();
        let base = self.pos;
        if let Ok(n) = file.by_ref().take(READ_CHUNK).read_to_end(&mut buf) {
            self.pos += n as u64;
        }
        self.split(&buf, base, out);
        if buf.len() as u64 == READ_CHUNK {
            // Not drained: a rotation is looked for once the old file is read to its end.
            return true;
        }
        // Rotated (a new file under the path) or truncated: the old file is drained above.
        let now = std::fs::metadata(&self.path).ok();
        let rotated = match &now {
            Some(m) => Some(identity(m)) != self.id || m.len() < self.pos,
            None => false,
        };
        if rotated {
            if !self.partial.is_empty() {
                let at = self.checkpoint(self.pos);
                out.push((std::mem::take(&mut self.partial), at));
            }
            let truncated = now.as_ref().is_some_and(|m| Some(identity(m)) == self.id);
            let counter = if truncated {
                &self.stats.truncations
            } else {
                &self.stats.rotations
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.file = None;
            self.open(true, None);
            tracing::info!(path = %self.path.display(), truncated, "followed file rotated; reading the new one");
            return true;
        }
        false
    }

    fn checkpoint(&self, offset: u64) -> Checkpoint {
        let (device, inode) = self.id.unwrap_or_default();
        Checkpoint {
            input: self.input,
            device,
            inode,
            offset,
        }
    }

    /// `buf` was read from offset `base`: its complete lines, each with the offset after it.
    fn split(&mut self, buf: &[u8], base: u64, out: &mut Vec<(Vec<u8>, Checkpoint)>) {
        let mut rest = buf;
        let mut at = base;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..nl]);
            at += nl as u64 + 1;
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push((line, self.checkpoint(at)));
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            let end = at + rest.len() as u64;
            out.push((std::mem::take(&mut self.partial), self.checkpoint(end)));
        }
    }
}

/// Saved checkpoints of followed files, one small file per followed path under a directory;
/// advanced as the engine acknowledges lines.
pub struct Checkpoints {
    dir: PathBuf,
    /// Input index → followed path.
    paths: HashMap<u32, PathBuf>,
    saved: Mutex<HashMap<u32, Checkpoint>>,
    /// Positions to resume at that override the saved checkpoints (a snapshot's).
    start: HashMap<PathBuf, Checkpoint>,
}

impl Checkpoints {
    pub fn new(dir: &Path, paths: &[(PathBuf, u32)]) -> std::io::Result<Checkpoints> {
        std::fs::create_dir_all(dir)?;
        Ok(Checkpoints {
            dir: dir.to_owned(),
            paths: paths.iter().map(|(p, i)| (*i, p.clone())).collect(),
            saved: Mutex::default(),
            start: HashMap::new(),
        })
    }

    /// `<dir>/<hash of the path>.<kind>`: `json` the acknowledged checkpoint, `origin`
    /// where following began.
    fn file_of(&self, path: &Path) -> PathBuf {
        let name = crate::keyed::stable_hash(path.to_string_lossy().as_bytes());
        self.dir.join(format!("{name:016x}.json"))
    }

    /// Resume `paths` at these positions rather than at their saved checkpoints.
    pub fn starting_at(self, positions: Vec<(PathBuf, Checkpoint)>) -> Self {
        Checkpoints {
            start: positions.into_iter().collect(),
            ..self
        }
    }

    /// Where to resume `path`: a snapshot's position; else, without one, where following
    /// began (so that the detectors' state is built again from the same lines); else the
    /// checkpoint saved for it.
    pub fn load(&self, path: &Path) -> Option<Checkpoint> {
        if let Some(cp) = self.start.get(path) {
            return Some(*cp);
        }
        if let Some(origin) = self.saved_as(path, "origin") {
            return Some(origin);
        }
        self.saved_as(path, "json")
    }

    /// Notes where following `path` began, unless a start is noted for that file already.
    pub fn began(&self, path: &Path, at: Checkpoint) {
        let same_file = |o: Checkpoint| (o.device, o.inode) == (at.device, at.inode);
        if self.start.contains_key(path) || self.saved_as(path, "origin").is_some_and(same_file) {
            return;
        }
        if let Err(e) = self.save_as(path, "origin", at) {
            tracing::warn!(path = %path.display(), "cannot note where following began: {e}");
        }
    }

    fn saved_as(&self, path: &Path, kind: &str) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(self.file_of(path).with_extension(kind)).ok()?;
        let saved: SavedCheckpoint = serde_json::from_str(&text).ok()?;
        (saved.path == path).then_some(saved.checkpoint)
    }

    fn save_as(&self, path: &Path, kind: &str, checkpoint: Checkpoint) -> std::io::Result<()> {
        let record = SavedCheckpoint {
            path: path.to_owned(),
            checkpoint,
        };
        let target = self.file_of(path).with_extension(kind);
        let tmp = target.with_extension("tmp");
        let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &target)
    }
}

#[derive(Serialize, Deserialize)]
struct SavedCheckpoint {
    path: PathBuf,
    #[serde(flatten)]
    checkpoint: Checkpoint,
}

impl super::Acknowledge for Checkpoints {
    fn acknowledge(&self, positions: &[Position]) {
        let mut latest: HashMap<u32, Checkpoint> = HashMap::new();
        for p in positions {
            if let Position::File(cp) = p {
                latest.insert(cp.input, *cp);
            }
        }
        let Ok(mut saved) = self.saved.lock() else {
            return;
        };
        for (input, cp) in latest {
            let Some(path) = self.paths.get(&input) else {
                continue;
            };
            if saved.get(&input) == Some(&cp) {
                continue;
            }
            match self.save_as(path, "json", cp) {
                Ok(()) => {
                    saved.insert(input, cp);
                }
                Err(e) => tracing::warn!(path = %path.display(), "cannot save the checkpoint: {e}"),
            }
        }
    }
}

/// Follows `paths` (each with its input index) on a thread until `stop` is set, offering lines
/// to `queue`, each resumed at its checkpoint in `checkpoints` when there is one. The queue's
/// sender is dropped when the thread ends.
pub fn spawn(
    paths: Vec<(PathBuf, u32)>,
    from_start: bool,
    checkpoints: Option<Arc<Checkpoints>>,
    stats: Arc<FollowStats>,
    queue: LiveQueue,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("follow".into())
        .spawn(move || {
            let mut followers: Vec<Follower> = paths
                .into_iter()
                .map(|(p, input)| {
                    let cp = checkpoints.as_ref().and_then(|c| c.load(&p));
                    let f = Follower::resume(p.clone(), input, cp, from_start, stats.clone());
                    if let (Some(store), None) = (&checkpoints, cp) {
                        store.began(&p, f.checkpoint(f.pos));
                    }
                    f
                })
                .collect();
            // Lines carry checkpoints only when they are saved.
            let positions = checkpoints.is_some();
            let mut lines = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut any = false;
                for f in &mut followers {
                    any |= f.read_new(&mut lines) | !lines.is_empty();
                    for (body, checkpoint) in lines.drain(..) {
                        let chunk = Chunk {
                            input: f.input,
                            body,
                            received: std::time::Instant::now(),
                            position: positions.then_some(Position::File(checkpoint)),
                            cluster: None,
                            warmup: false,
                            context: false,
                        };
                        if queue.send(chunk).is_err() {
                            return; // the engine has stopped
                        }
                    }
                }
                if !any {
                    std::thread::sleep(POLL);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(out: &mut Vec<(Vec<u8>, Checkpoint)>) -> Vec<Vec<u8>> {
        out.drain(..).map(|(line, _)| line).collect()
    }

    #[test]
    fn follows_appends_partial_lines_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = Follower::new(path.clone(), 0, false);
        let mut out: Vec<(Vec<u8>, Checkpoint)> = Vec::new();
        let append = |s: &str| {
            let mut w = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            w.write_all(s.as_bytes()).unwrap();
        };
        append("a\nb");
        f.read_new(&mut out);
        assert_eq!(
            lines(&mut out),
            vec![b"a".to_vec()],
            "existing lines skipped, partial line waits"
        );
        append("c\n");
        f.read_new(&mut out);
        assert_eq!(out[0].1.offset, 9, "after `old\\na\\nbc\\n`");
        assert_eq!(lines(&mut out), vec![b"bc".to_vec()]);
        // Rotation: rename away, a new file appears under the path.
        append("last\n");
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::write(&path, "new\n").unwrap();
        f.read_new(&mut out);
        f.read_new(&mut out);
        assert_eq!(lines(&mut out), vec![b"last".to_vec(), b"new".to_vec()]);
    }

    #[test]
    fn a_checkpoint_resumes_where_the_engine_acknowledged_and_survives_rotation() {
        use crate::source::Acknowledge;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let store = Checkpoints::new(&dir.path().join("cp"), &[(path.clone(), 3)]).unwrap();
        let mut f = Follower::new(path.clone(), 3, true);
        let mut out = Vec::new();
        f.read_new(&mut out);
        // Only the first line is acknowledged before the "crash".
        store.acknowledge(&[Position::File(out[0].1)]);
        let cp = store.load(&path).expect("saved");
        assert_eq!(cp.offset, 4);
        // Appended while down: read from the checkpoint, the unacknowledged line again.
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap_or(());
        let stats = Arc::new(FollowStats::default());
        let mut f = Follower::resume(path.clone(), 3, Some(cp), false, stats.clone());
        f.read_new(&mut out);
        assert_eq!(lines(&mut out)[2..], [b"two".to_vec(), b"three".to_vec()]);
        // Rotated while down: the new file from its start, counted.
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::write(&path, "four\n").unwrap();
        let mut f = Follower::resume(path.clone(), 3, Some(cp), false, stats.clone());
        f.read_new(&mut out);
        assert_eq!(lines(&mut out), vec![b"four".to_vec()]);
        assert_eq!(stats.rotations.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_file_that_grew_a_lot_is_read_in_pieces_and_rotation_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "").unwrap();
        let mut f = Follower::new(path.clone(), 0, false);
        let mut out: Vec<(Vec<u8>, Checkpoint)> = Vec::new();
        f.read_new(&mut out);
        let line = format!("{}\n", "x".repeat(1023));
        let count = (READ_CHUNK as usize * 5 / 2) / line.len();
        std::fs::write(&path, line.repeat(count)).unwrap();
        // Rotated before the follower read any of it: the old file is still read whole.
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::write(&path, "new\n").unwrap();
        let mut reads = 1;
        let mut all = Vec::new();
        while f.read_new(&mut out) {
            reads += 1;
            assert!(
                out.len() <= READ_CHUNK as usize / line.len(),
                "one piece at a time"
            );
            all.append(&mut lines(&mut out));
        }
        all.append(&mut lines(&mut out));
        assert!(reads >= 3, "{reads} reads");
        assert_eq!(all.len(), count + 1);
        assert_eq!(all[count], b"new", "the new file after the whole old one");
    }
}
