//! Snapshots of a live service's detector state, under `state_dir/snapshot.json.zst`: every
//! stateful rule's state by rule id, the open incidents, the suppression periods, and the
//! position of every source the state reflects (the webhook journal's record, each followed
//! file's offset). Written every `every` and when the service stops, at a batch boundary
//! where everything held for the watermark has been applied and every alert it caused
//! delivered; read back at start, when the sources resume from those positions.
//!
//! The format is versioned JSON, zstd-compressed. A snapshot that cannot be read (corrupt,
//! another version) is reported and counted and the service starts fresh: never a crash.

use crate::detect::{SnapshotOf, StatefulSnapshot, Suppressor};
use crate::incident::Incidents;
use crate::source::Positions;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FORMAT: &str = "audithound-snapshot";
/// Bumped whenever the state's shape changes: an older snapshot is then refused, not misread.
pub const VERSION: u32 = 2;

/// Told the positions a snapshot just written reflects.
pub type Written = Arc<dyn Fn(&Positions) + Send + Sync>;

/// When and where a service writes its snapshots.
#[derive(Clone)]
pub struct SnapshotPlan {
    pub path: PathBuf,
    pub every: std::time::Duration,
    /// Told the positions a snapshot just written reflects (the journal keeps what follows).
    pub written: Option<Written>,
}

#[derive(Serialize)]
pub(super) struct Out<'a> {
    pub format: &'static str,
    pub version: u32,
    /// The names of the inputs the positions' indices refer to.
    pub inputs: Vec<&'a str>,
    pub positions: &'a Positions,
    pub stateful: SnapshotOf<'a>,
    pub incidents: Option<&'a Incidents>,
    pub suppressor: &'a Suppressor,
}

/// A snapshot read back.
#[derive(Deserialize)]
pub struct Snapshot {
    format: String,
    version: u32,
    pub inputs: Vec<String>,
    pub positions: Positions,
    pub(super) stateful: StatefulSnapshot,
    pub(super) incidents: Option<Incidents>,
    pub(super) suppressor: Suppressor,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the snapshot {path}: {error}")]
    Unreadable { path: String, error: String },
    #[error("the snapshot {path} is version {found}, this program writes version {VERSION}")]
    Incompatible { path: String, found: u32 },
}

impl Snapshot {
    /// Where each followed file was, by path (input indices change with the configuration).
    pub fn file_position(&self, path: &Path) -> Option<crate::source::follow::Checkpoint> {
        let name = path.to_string_lossy();
        self.positions
            .files
            .values()
            .find(|cp| {
                self.inputs
                    .get(cp.input as usize)
                    .is_some_and(|n| **n == *name)
            })
            .copied()
    }
}

pub(super) fn write(path: &Path, out: &Out) -> anyhow::Result<u64> {
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write the snapshot {}: {e}", tmp.display()))?;
    let mut encoder = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), 1)?;
    serde_json::to_writer(&mut encoder, out)?;
    let file = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(bytes)
}

/// The snapshot at `path`: None when there is none.
pub fn read(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SnapshotError::Unreadable {
                path: path.display().to_string(),
                error: e.to_string(),
            })
        }
    };
    let unreadable = |error: String| SnapshotError::Unreadable {
        path: path.display().to_string(),
        error,
    };
    // The version is checked before the state is read as this program's.
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    let decoder = zstd::stream::read::Decoder::new(std::io::BufReader::new(file))
        .map_err(|e| unreadable(e.to_string()))?;
    let text = std::io::read_to_string(decoder).map_err(|e| unreadable(e.to_string()))?;
    let head: Head = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    if head.format != FORMAT {
        return Err(unreadable(format!("not a snapshot ({:?})", head.format)));
    }
    if head.version != VERSION {
        return Err(SnapshotError::Incompatible {
            path: path.display().to_string(),
            found: head.version,
        });
    }
    let snapshot: Snapshot = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    debug_assert!(snapshot.format == FORMAT && snapshot.version == VERSION);
    Ok(Some(snapshot))
}

pub(super) const FORMAT_NAME: &str = FORMAT;
