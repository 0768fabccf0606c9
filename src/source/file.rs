//! Finding input files (paths, directories, globs) and opening them through the right
//! decompressor, chosen by magic bytes rather than by name.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// File names picked up when walking a directory (files named explicitly are always read).
pub const DEFAULT_INCLUDE: &[&str] = &[
    "*.log", "*.log.*", "*.json", "*.jsonl", "*.ndjson", "*.gz", "*.zst", "*audit*",
];

#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    /// Path as shown in reports.
    pub name: Arc<str>,
    /// Size on disk (compressed), for progress.
    pub size: u64,
}

/// A path that could not be used at all.
#[derive(Debug, Clone)]
pub struct PathProblem {
    pub path: String,
    pub detail: String,
}

pub fn include_set(patterns: &[String]) -> anyhow::Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| anyhow::anyhow!("bad --include pattern {p:?}: {e}"))?);
    }
    Ok(b.build()?)
}

/// Expands the command-line paths into a sorted, de-duplicated list of files.
pub fn discover(args: &[String], include: &GlobSet) -> (Vec<InputFile>, Vec<PathProblem>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if path.is_dir() {
            walk_dir(path, include, &mut files, &mut problems);
        } else if path.exists() {
            push_file(path.to_path_buf(), &mut files, &mut problems);
        } else if arg.contains(['*', '?', '[']) {
            match glob::glob(arg) {
                Ok(paths) => {
                    let before = files.len();
                    for entry in paths {
                        match entry {
                            Ok(p) if p.is_dir() => walk_dir(&p, include, &mut files, &mut problems),
                            Ok(p) => push_file(p, &mut files, &mut problems),
                            Err(e) => problems.push(PathProblem {
                                path: e.path().display().to_string(),
                                detail: e.error().to_string(),
                            }),
                        }
                    }
                    if files.len() == before {
                        problems.push(PathProblem {
                            path: arg.clone(),
                            detail: "glob matched no files".into(),
                        });
                    }
                }
                Err(e) => problems.push(PathProblem {
                    path: arg.clone(),
                    detail: format!("bad glob: {e}"),
                }),
            }
        } else {
            problems.push(PathProblem {
                path: arg.clone(),
                detail: "no such file or directory".into(),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    (files, problems)
}

/// Drops the given paths (compared after resolving links and `..`) from the input list.
pub fn exclude(files: &mut Vec<InputFile>, paths: &[PathBuf]) {
    let excluded: Vec<PathBuf> = paths.iter().filter_map(|p| resolve(p)).collect();
    if !excluded.is_empty() {
        files.retain(|f| resolve(&f.path).is_none_or(|c| !excluded.contains(&c)));
    }
}

/// Absolute form of a path whose file may not exist yet.
fn resolve(p: &Path) -> Option<PathBuf> {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    Some(parent.join(p.file_name()?))
}

fn walk_dir(
    dir: &Path,
    include: &GlobSet,
    files: &mut Vec<InputFile>,
    problems: &mut Vec<PathProblem>,
) {
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name();
    let hidden =
        |e: &walkdir::DirEntry| e.depth() > 0 && e.file_name().to_string_lossy().starts_with('.');
    for entry in walker.into_iter().filter_entry(|e| !hidden(e)) {
        match entry {
            Ok(e) if e.file_type().is_file() && include.is_match(e.file_name()) => {
                push_file(e.into_path(), files, problems)
            }
            Ok(_) => {}
            Err(e) => problems.push(PathProblem {
                path: e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| dir.display().to_string()),
                detail: e.to_string(),
            }),
        }
    }
}

fn push_file(path: PathBuf, files: &mut Vec<InputFile>, problems: &mut Vec<PathProblem>) {
    match std::fs::metadata(&path) {
        Ok(m) => files.push(InputFile {
            name: Arc::from(path.display().to_string()),
            path,
            size: m.len(),
        }),
        Err(e) => problems.push(PathProblem {
            path: path.display().to_string(),
            detail: e.to_string(),
        }),
    }
}

/// Counts bytes read from disk, for the progress bar.
struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a file, sniffing gzip/zstd magic bytes, and returns a buffered reader of its content.
pub fn open(file: &InputFile, disk_bytes: Arc<AtomicU64>) -> io::Result<Box<dyn BufRead + Send>> {
    let mut f = File::open(&file.path)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic)?;
    let raw = Counting {
        inner: io::Cursor::new(magic[..n].to_vec()).chain(f),
        counter: disk_bytes,
    };
    const BUF: usize = 256 * 1024;
    // Chosen by content, not by name: rotated and renamed archives keep working.
    Ok(match magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(BufReader::with_capacity(
            BUF,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(BUF, raw)),
        )),
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(BufReader::with_capacity(
            BUF,
            zstd::stream::read::Decoder::new(raw)?,
        )),
        _ => {
            if let Some(kind) = unsupported_compression(&magic[..n]) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{kind}-compressed, which is not read: decompress it, or recompress it with gzip or zstd"),
                ));
            }
            Box::new(BufReader::with_capacity(BUF, raw))
        }
    })
}

/// Archive formats recognised by their magic bytes but not read (rather than being rejected
/// line by line as text that is not UTF-8).
fn unsupported_compression(magic: &[u8]) -> Option<&'static str> {
    Some(match magic {
        [b'B', b'Z', b'h', b'1'..=b'9'] => "bzip2",
        [0xfd, b'7', b'z', b'X'] => "xz",
        [b'P', b'K', 3, 4] => "zip",
        [0x04, 0x22, 0x4d, 0x18] => "lz4",
        [b'7', b'z', 0xbc, 0xaf] => "7z",
        _ => return None,
    })
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
