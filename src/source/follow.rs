//! Following log files as they grow (`tail -F`): each new complete line is one record, offered
//! to the live queue (waiting while it is full, so a slow engine slows the reading, nothing is
//! skipped). Rotation-aware: when the path names a new file (rename and re-create) or the file
//! shrinks (copy-truncate), the rest of the old file is read first, then the new one from its
//! start. A line still being written (no newline yet) waits for its end.

use super::live::{Chunk, LiveQueue};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a quiet file is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// Longest line kept whole; longer ones are cut here (and rejected downstream as truncated JSON).
const MAX_LINE: usize = 16 << 20;

pub struct Follower {
    path: PathBuf,
    input: u32,
    file: Option<File>,
    /// File identity (device, inode) and read position of the open file.
    id: Option<(u64, u64)>,
    pos: u64,
    partial: Vec<u8>,
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
        let mut f = Follower {
            path,
            input,
            file: None,
            id: None,
            pos: 0,
            partial: Vec::new(),
        };
        f.open(from_start);
        f
    }

    fn open(&mut self, from_start: bool) {
        let Ok(mut file) = File::open(&self.path) else {
            return; // not there yet: looked for again on every poll
        };
        let meta = file.metadata().ok();
        self.id = meta.as_ref().map(identity);
        self.pos = if from_start {
            0
        } else {
            meta.map_or(0, |m| m.len())
        };
        if file.seek(SeekFrom::Start(self.pos)).is_ok() {
            self.file = Some(file);
        }
    }

    /// Reads what was appended; returns the complete lines.
    fn read_new(&mut self, out: &mut Vec<Vec<u8>>) {
        let Some(file) = self.file.as_mut() else {
            self.open(true);
            return;
        };
        let mut buf = Vec::new();
        if let Ok(n) = file.read_to_end(&mut buf) {
            self.pos += n as u64;
        }
        self.split(&buf, out);
        // Rotated (a new file under the path) or truncated: the old file is drained above.
        let now = std::fs::metadata(&self.path).ok();
        let rotated = match &now {
            Some(m) => Some(identity(m)) != self.id || m.len() < self.pos,
            None => false,
        };
        if rotated {
            if !self.partial.is_empty() {
                out.push(std::mem::take(&mut self.partial));
            }
            self.file = None;
            self.open(true);
            tracing::info!(path = %self.path.display(), "followed file rotated; reading the new one");
        }
    }

    fn split(&mut self, buf: &[u8], out: &mut Vec<Vec<u8>>) {
        let mut rest = buf;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..nl]);
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(line);
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            out.push(std::mem::take(&mut self.partial));
        }
    }
}

/// Follows `paths` (each with its input index) on a thread until `stop` is set, offering lines
/// to `queue`. The queue's sender is dropped when the thread ends.
pub fn spawn(
    paths: Vec<(PathBuf, u32)>,
    from_start: bool,
    queue: LiveQueue,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("follow".into())
        .spawn(move || {
            let mut followers: Vec<Follower> = paths
                .into_iter()
                .map(|(p, input)| Follower::new(p, input, from_start))
                .collect();
            let mut lines = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut any = false;
                for f in &mut followers {
                    f.read_new(&mut lines);
                    any |= !lines.is_empty();
                    for body in lines.drain(..) {
                        let chunk = Chunk {
                            input: f.input,
                            body,
                            received: std::time::Instant::now(),
                            position: None,
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

    #[test]
    fn follows_appends_partial_lines_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = Follower::new(path.clone(), 0, false);
        let mut out = Vec::new();
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
            out,
            vec![b"a".to_vec()],
            "existing lines skipped, partial line waits"
        );
        out.clear();
        append("c\n");
        f.read_new(&mut out);
        assert_eq!(out, vec![b"bc".to_vec()]);
        out.clear();
        // Rotation: rename away, a new file appears under the path.
        append("last\n");
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::write(&path, "new\n").unwrap();
        f.read_new(&mut out);
        f.read_new(&mut out);
        assert_eq!(out, vec![b"last".to_vec(), b"new".to_vec()]);
    }
}
