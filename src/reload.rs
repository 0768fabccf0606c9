//! Values replaced whole while a service runs (the rule set, the revocation list): readers take
//! snapshots, and files are watched (editors that save by rename included) and re-read on
//! SIGHUP. What to do with a changed file is the caller's: a bad edit keeps the previous value.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Quiet time after the last file event before the file is read.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(150);

/// A value replaced whole while readers take snapshots of it. A lock poisoned by a panic
/// still holds the last value set, which stays good: it is only ever replaced whole.
pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    pub fn new(value: Arc<T>) -> Self {
        Current(RwLock::new(value))
    }

    pub fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(value) => value.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut cur) => *cur = Arc::new(value),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
        }
    }
}

/// Calls `reload` when a file under `dirs` that `relevant` accepts is created or changed (once
/// the burst of events a save makes has settled), and on SIGHUP.
pub fn watch(
    what: &str,
    dirs: &[PathBuf],
    mode: notify::RecursiveMode,
    relevant: impl Fn(&Path) -> bool + Send + 'static,
    reload: impl Fn(&str) + Send + Sync + 'static,
) -> anyhow::Result<Watch> {
    use notify::Watcher;
    let (changed_tx, changed) = crossbeam_channel::unbounded::<()>();
    let label = what.to_owned();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.kind.is_create() || ev.kind.is_modify() || ev.kind.is_remove() => {
                if ev.paths.iter().any(|p| relevant(p)) {
                    let _ = changed_tx.send(());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the {label}: {e}"),
        })?;
    for dir in dirs {
        watcher.watch(dir, mode)?;
    }
    let reload = Arc::new(reload);
    let on_change = Arc::clone(&reload);
    std::thread::Builder::new()
        .name(format!("{what}-watch"))
        .spawn(move || {
            while changed.recv().is_ok() {
                while changed.recv_timeout(SETTLE).is_ok() {}
                on_change("file changed");
            }
        })?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name(format!("{what}-sighup"))
        .spawn(move || {
            for _ in signals.forever() {
                reload("SIGHUP");
            }
        })?;
    Ok(Watch {
        _watcher: Some(Box::new(watcher)),
    })
}

/// Stops watching the file when dropped (SIGHUP keeps working for the process's life).
pub struct Watch {
    _watcher: Option<Box<dyn notify::Watcher + Send>>,
}

impl Watch {
    /// A watch of nothing (a value with no file behind it).
    pub fn none() -> Watch {
        Watch { _watcher: None }
    }
}
