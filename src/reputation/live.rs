//! Keeps the IP lists and the GeoIP database current while audithound runs, as
//! `revocation::live` does for the revocation list: every file is watched (editors that save
//! by rename and ConfigMap symlink swaps included) and re-read on SIGHUP. A file that no longer
//! loads is logged and its previous version stays in force; the others are taken.

use super::{Enrichment, GeoIp, IpList, Sources};
use crate::reload::{watch, Current, Watch};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The enrichment in force; workers take a snapshot per batch.
pub struct LiveReputation {
    sources: Sources,
    current: Current<Enrichment>,
}

impl LiveReputation {
    /// A fixed enrichment (no files behind it): nothing to reload.
    pub fn fixed(enrichment: Enrichment) -> Arc<Self> {
        Arc::new(LiveReputation {
            sources: Sources::default(),
            current: Current::new(Arc::new(enrichment)),
        })
    }

    /// Loads every file; an error here stops the start-up, unlike errors on reload.
    pub fn load(sources: &Sources) -> Result<Arc<Self>, String> {
        let mut lists = Vec::new();
        for (name, path) in &sources.lists {
            if lists.iter().any(|(n, _)| n == name) {
                return Err(format!("IP list {name:?} is given twice"));
            }
            let list = IpList::load(path).map_err(|e| format!("IP list {name}: {e}"))?;
            lists.push((name.clone(), Arc::new(list)));
        }
        let geoip = match &sources.geoip {
            Some(path) => Some(Arc::new(GeoIp::open(path)?)),
            None => None,
        };
        Ok(Arc::new(LiveReputation {
            sources: sources.clone(),
            current: Current::new(Arc::new(Enrichment::new(lists, geoip))),
        }))
    }

    pub fn current(&self) -> Arc<Enrichment> {
        self.current.get()
    }

    /// One line per list and the database, for logs and `--check-config`.
    pub fn describe(&self) -> Vec<String> {
        let now = self.current();
        let mut out: Vec<String> = now
            .lists()
            .map(|(name, list)| format!("IP list {name}: {} entries", list.len()))
            .collect();
        if let (Some(path), Some(_)) = (&self.sources.geoip, now.geoip()) {
            out.push(format!("GeoIP database: {}", path.display()));
        }
        out
    }

    /// Re-reads every file; a file that does not load keeps its previous version. Returns the
    /// errors, one per file.
    pub fn reload(&self) -> Vec<String> {
        let before = self.current();
        let mut errors = Vec::new();
        let mut lists = Vec::new();
        let previous = |name: &str| before.lists.iter().find(|(n, _)| n == name).cloned();
        for (name, path) in &self.sources.lists {
            match reread(path, IpList::load) {
                Ok(list) => lists.push((name.clone(), Arc::new(list))),
                Err(e) => {
                    errors.push(format!("IP list {name}: {e}"));
                    lists.extend(previous(name));
                }
            }
        }
        let geoip = match &self.sources.geoip {
            Some(path) => match reread(path, GeoIp::open) {
                Ok(db) => Some(Arc::new(db)),
                Err(e) => {
                    errors.push(e);
                    before.geoip.clone()
                }
            },
            None => None,
        };
        self.current.set(Enrichment::new(lists, geoip));
        errors
    }

    fn reload_logged(&self, why: &str) {
        let errors = self.reload();
        for e in &errors {
            tracing::error!(
                why,
                "reputation NOT reloaded, the previous version stays: {e}"
            );
        }
        tracing::info!(why, lists = ?self.describe(), "reputation lists reloaded");
    }

    /// Starts reloading on file changes and on SIGHUP. Keep the returned guard alive as long
    /// as reloading should happen.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Watch> {
        let files: Vec<PathBuf> = self
            .sources
            .lists
            .iter()
            .map(|(_, p)| p.clone())
            .chain(self.sources.geoip.clone())
            .collect();
        if files.is_empty() {
            return Ok(Watch::none());
        }
        // Watch the directories: saving by rename replaces the file's inode.
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        let names: Vec<_> = files
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_owned())
            .collect();
        let live = Arc::clone(self);
        watch(
            "reputation",
            &dirs,
            notify::RecursiveMode::NonRecursive,
            // A ConfigMap volume swaps the `..data` symlink the files point through.
            move |p| {
                p.file_name().is_some_and(|n| {
                    names.iter().any(|m| m == n) || n.to_string_lossy().starts_with("..data")
                })
            },
            move |why| live.reload_logged(why),
        )
    }
}

/// Reads a file again; an empty one is a save in progress (truncated, not yet written), never
/// a list: an intentionally empty list holds a `#` comment.
fn reread<T>(path: &Path, load: impl Fn(&Path) -> Result<T, String>) -> Result<T, String> {
    let blank = std::fs::read(path).map(|b| b.iter().all(u8::is_ascii_whitespace));
    if blank.unwrap_or(false) {
        return Err(format!(
            "{}: the file is empty (write a `#` comment line for an empty list)",
            path.display()
        ));
    }
    load(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(live: &LiveReputation, ip: &str, listed: bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let now = live.current();
            let on = now.source(ip).is_some_and(|s| s.lists.contains(&"tor"));
            if on == listed {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn list_edits_are_picked_up_and_bad_edits_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let tor = dir.path().join("tor.txt");
        let threat = dir.path().join("threat.csv");
        std::fs::write(&tor, "203.0.113.5\n").unwrap();
        std::fs::write(&threat, "ip\n198.51.100.7\n").unwrap();
        let sources = Sources {
            lists: vec![
                ("tor".into(), tor.clone()),
                ("threat".into(), threat.clone()),
            ],
            geoip: None,
        };
        let live = LiveReputation::load(&sources).unwrap();
        let _watch = live.watch().unwrap();
        assert!(wait_for(&live, "203.0.113.5", true));
        assert!(wait_for(&live, "203.0.113.6", false));

        std::fs::write(&tor, "203.0.113.5\n203.0.113.6\n").unwrap();
        assert!(
            wait_for(&live, "203.0.113.6", true),
            "the edit was not picked up"
        );

        // A broken line keeps the previous list, and names the file and line.
        std::fs::write(&tor, "203.0.113.9\nnope\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(wait_for(&live, "203.0.113.6", true));
        assert!(wait_for(&live, "203.0.113.9", false));
        let errors = live.reload();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("tor.txt:2"), "{errors:?}");
        // The other list is still there.
        let now = live.current();
        assert_eq!(now.source("198.51.100.7").unwrap().lists, ["threat"]);
        // So does an emptied file (a save caught half-way).
        std::fs::write(&tor, "").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(wait_for(&live, "203.0.113.6", true));

        // Saved by rename, as editors do.
        let tmp = dir.path().join(".tor.txt.swp");
        std::fs::write(&tmp, "# nobody\n").unwrap();
        std::fs::rename(&tmp, &tor).unwrap();
        assert!(
            wait_for(&live, "203.0.113.5", false),
            "the renamed file was not picked up"
        );
    }

    #[test]
    fn a_bad_list_stops_the_start_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let tor = dir.path().join("tor.txt");
        std::fs::write(&tor, "203.0.113.5\n\n# fine\n203.0.113.0/33\n").unwrap();
        let sources = Sources {
            lists: vec![("tor".into(), tor)],
            geoip: None,
        };
        let err = LiveReputation::load(&sources).err().unwrap();
        assert!(err.contains("tor.txt:4"), "{err}");
    }
}
