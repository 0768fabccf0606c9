//! The service's alert file: JSON lines appended (a restart never loses what is there), made
//! durable at each flush (the Kafka offsets are committed right after), and rotated by size:
//! `alerts.jsonl` → `alerts.jsonl.1` → … → `alerts.jsonl.<keep>`, the oldest dropped.

use super::AlertSink;
use crate::alert::{OutputFormat, Record};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// `type = "file"`: `path`, appended to and rotated past `rotate_mib` (100) keeping `keep` old
/// files (5: `alerts.jsonl.1` … `.5`), in `format`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: crate::settings::Text,
    #[serde(default = "default_rotate_mib")]
    pub rotate_mib: u64,
    #[serde(default = "default_keep")]
    pub keep: usize,
    #[serde(default)]
    pub format: OutputFormat,
    /// Only alerts and incidents at least this severe go to this sink.
    #[serde(default)]
    pub min_severity: Option<crate::rules::Severity>,
}

fn default_rotate_mib() -> u64 {
    100
}
fn default_keep() -> usize {
    5
}

impl FileConfig {
    pub fn build(&self) -> anyhow::Result<RotatingFile> {
        RotatingFile::open(
            Path::new(&*self.path),
            self.rotate_mib << 20,
            self.keep,
            self.format,
        )
    }
}

pub struct RotatingFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// Bytes in the current file.
    size: u64,
    max_bytes: u64,
    keep: usize,
    format: OutputFormat,
    /// A regular file (not /dev/null or a pipe): synced, and rotated.
    regular: bool,
}

impl RotatingFile {
    pub fn open(
        path: &Path,
        max_bytes: u64,
        keep: usize,
        format: OutputFormat,
    ) -> anyhow::Result<Self> {
        let (out, size) = append(path)?;
        let regular = out.get_ref().metadata()?.is_file();
        Ok(RotatingFile {
            path: path.to_owned(),
            out,
            size,
            max_bytes: max_bytes.max(1),
            keep,
            format,
            regular,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        (self.out, self.size) = append(&self.path)?;
        Ok(())
    }
}

fn append(path: &Path) -> anyhow::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open alert file {}: {e}", path.display()))?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

impl AlertSink for RotatingFile {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        let line = self.format.render(record)?;
        if self.regular && self.size > 0 && self.size + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        if self.regular {
            // On disk before the sources acknowledge what caused these alerts.
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_across_restarts_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let alert = crate::alert::test_alert(0);
        let one = OutputFormat::Native
            .render(Record::Alert(&alert))
            .unwrap()
            .len() as u64
            + 1;
        let lines = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        for _ in 0..2 {
            // Two runs of the service: the second appends.
            let mut sink = RotatingFile::open(&path, one * 3, 2, OutputFormat::Native).unwrap();
            sink.send(Record::Alert(&alert)).unwrap();
            sink.flush().unwrap();
        }
        assert_eq!(lines(&path), 2);
        let mut sink = RotatingFile::open(&path, one * 3, 2, OutputFormat::Native).unwrap();
        for _ in 0..8 {
            sink.send(Record::Alert(&alert)).unwrap();
        }
        sink.flush().unwrap();
        // 10 alerts, 3 per file, two old files kept: 1 in the current file, 3 + 3 kept.
        assert_eq!(lines(&path), 1);
        assert_eq!(lines(&dir.path().join("alerts.jsonl.1")), 3);
        assert_eq!(lines(&dir.path().join("alerts.jsonl.2")), 3);
        assert!(!dir.path().join("alerts.jsonl.3").exists());
    }
}
