//! Keeps the revocation list current while audithound runs: the file is watched (editors that
//! save by rename included) and re-read on SIGHUP. A bad edit is rejected with its error and the
//! previous list stays in force, so a typo never switches the detector off.

use super::RevocationList;
use crate::reload::{watch, Current, Watch};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The list in force; workers take a snapshot per batch.
pub struct LiveRevocations {
    path: Option<PathBuf>,
    current: Current<RevocationList>,
}

impl LiveRevocations {
    /// A fixed list (no file behind it): nothing to reload.
    pub fn fixed(list: RevocationList) -> Arc<Self> {
        Arc::new(LiveRevocations {
            path: None,
            current: Current::new(Arc::new(list)),
        })
    }

    /// Loads `path`; an error here stops the start-up, unlike errors on reload.
    pub fn load(path: &Path) -> Result<Arc<Self>, String> {
        let list = RevocationList::load(path)?;
        Ok(Arc::new(LiveRevocations {
            path: Some(path.to_owned()),
            current: Current::new(Arc::new(list)),
        }))
    }

    pub fn current(&self) -> Arc<RevocationList> {
        self.current.get()
    }

    /// Re-reads the file; on error the previous list stays. Returns the new entry count.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else {
            return Ok(self.current().entries.len());
        };
        // An empty file is a save in progress (truncated, not yet written), never a list: an
        // intentionally empty list is written `[]` (or a CSV header).
        let blank = std::fs::read(path).map(|b| b.iter().all(u8::is_ascii_whitespace));
        if blank.unwrap_or(false) {
            return Err(format!(
                "{}: the file is empty (write `[]` for an empty list)",
                path.display()
            ));
        }
        let list = RevocationList::load(path)?;
        let n = list.entries.len();
        self.current.set(list);
        Ok(n)
    }

    fn reload_logged(&self, why: &str) {
        let path = self.path.as_deref().unwrap_or(Path::new("")).display();
        match self.reload() {
            Ok(n) => tracing::info!(%path, entries = n, why, "revocation list reloaded"),
            Err(e) => tracing::error!(
                %path,
                why,
                "revocation list NOT reloaded, the previous list stays in force: {e}"
            ),
        }
    }

    /// Starts reloading on file changes and on SIGHUP. Keep the returned guard alive as long
    /// as reloading should happen.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Watch> {
        let Some(path) = self.path.clone() else {
            return Ok(Watch::none());
        };
        // Watch the directory: saving by rename replaces the file's inode.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_owned());
        let live = Arc::clone(self);
        watch(
            "revocations",
            &[dir],
            notify::RecursiveMode::NonRecursive,
            // A ConfigMap volume never writes the file itself: the kubelet swaps the `..data`
            // symlink the file points through.
            move |p| {
                p.file_name() == name.as_deref()
                    || p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("..data"))
            },
            move |why| live.reload_logged(why),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(live: &LiveRevocations, n: usize) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if live.current().entries.len() == n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    const ONE: &str = "- {username: dave, revoked_at: \"2025-01-01T00:00:00Z\"}\n";
    const TWO: &str = "- {username: dave, revoked_at: \"2025-01-01T00:00:00Z\"}\n- {credential_id: \"JTI=1\", revoked_at: \"2025-01-01T00:00:00Z\"}\n";

    #[test]
    fn edits_are_picked_up_and_bad_edits_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.yaml");
        std::fs::write(&path, ONE).unwrap();
        let live = LiveRevocations::load(&path).unwrap();
        let _watch = live.watch().unwrap();
        assert_eq!(live.current().entries.len(), 1);

        std::fs::write(&path, TWO).unwrap();
        assert!(wait_for(&live, 2), "the edit was not picked up");

        // A broken edit (bad time) keeps the previous list.
        std::fs::write(&path, "- {username: eve, revoked_at: yesterday}\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(live.current().entries.len(), 2);
        assert!(live.reload().unwrap_err().contains("revoked_at"));
        // So does an emptied file (a save caught half-way).
        std::fs::write(&path, "").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(live.current().entries.len(), 2);

        // Saved by rename, as editors do.
        let tmp = dir.path().join(".revoked.yaml.swp");
        std::fs::write(&tmp, ONE).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(wait_for(&live, 1), "the renamed file was not picked up");
    }

    /// A ConfigMap volume: the file is a symlink through `..data`, which the kubelet swaps
    /// atomically to a new timestamped directory on every update.
    #[test]
    fn a_configmap_update_is_picked_up() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let version = |name: &str, text: &str| {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("revoked.yaml"), text).unwrap();
        };
        version("..2025_01_01", ONE);
        symlink("..2025_01_01", dir.path().join("..data")).unwrap();
        symlink("..data/revoked.yaml", dir.path().join("revoked.yaml")).unwrap();
        let live = LiveRevocations::load(&dir.path().join("revoked.yaml")).unwrap();
        let _watch = live.watch().unwrap();
        assert_eq!(live.current().entries.len(), 1);
        version("..2025_01_02", TWO);
        symlink("..2025_01_02", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(wait_for(&live, 2), "the ConfigMap update was not picked up");
    }

    #[test]
    fn sighup_rereads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.csv");
        std::fs::write(&path, "username,revoked_at\ndave,2025-01-01T00:00:00Z\n").unwrap();
        let live = LiveRevocations::load(&path).unwrap();
        let _watch = live.watch().unwrap();
        drop(_watch); // no file events from here on: only the signal can reload
        std::fs::write(
            &path,
            "username,revoked_at\ndave,2025-01-01T00:00:00Z\nerin,2025-01-01T00:00:00Z\n",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(live.current().entries.len(), 1);
        // SAFETY: signalling our own process; the handler is installed by watch().
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        assert!(wait_for(&live, 2), "SIGHUP did not reload");
    }
}
