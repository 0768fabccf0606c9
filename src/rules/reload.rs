//! Keeps the rule set current while a service runs: the rule directories are watched and
//! re-read on SIGHUP. A set that does not load (a typo, an unknown field) is rejected with its
//! errors and the previous set stays in force. Workers take a snapshot per batch; the collector
//! carries each stateful rule's state over to the new set by rule id.

use super::RuleSet;
use crate::reload::Current;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct LiveRules {
    paths: Vec<PathBuf>,
    current: Current<RuleSet>,
}

impl LiveRules {
    pub fn new(paths: Vec<PathBuf>, loaded: Arc<RuleSet>) -> Arc<Self> {
        Arc::new(LiveRules {
            paths,
            current: Current::new(loaded),
        })
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.current.get()
    }

    /// Loads the directories again; on error the previous set stays. Returns the rule count.
    pub fn reload(&self) -> Result<usize, String> {
        let set = RuleSet::load(&self.paths).map_err(|e| e.to_string())?;
        let n = set.rules.len();
        self.current.set(set);
        Ok(n)
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(n) => tracing::info!(rules = n, why, "rules reloaded"),
            Err(e) => tracing::error!(
                why,
                "rules NOT reloaded, the previous set stays in force: {e}"
            ),
        }
    }

    /// Starts reloading on changes to `*.yaml`/`*.yml` files under the rule paths, and on
    /// SIGHUP. Keep the guard alive as long as reloading should happen.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<crate::reload::Watch> {
        let live = Arc::clone(self);
        let is_rule_file =
            |p: &Path| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        crate::reload::watch(
            "rules",
            &self.paths,
            notify::RecursiveMode::Recursive,
            is_rule_file,
            move |why| live.reload_logged(why),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const RULE: &str = "rules:\n  - id: t.one\n    title: one\n    severity: low\n    condition: {verb: delete}\n    summary: x\n";

    #[test]
    fn a_new_rule_file_is_picked_up_and_a_broken_one_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), RULE).unwrap();
        let paths = vec![dir.path().to_owned()];
        let live = LiveRules::new(paths.clone(), Arc::new(RuleSet::load(&paths).unwrap()));
        let _watch = live.watch().unwrap();
        assert_eq!(live.current().rules.len(), 1);

        std::fs::write(dir.path().join("b.yaml"), RULE.replace("t.one", "t.two")).unwrap();
        let start = Instant::now();
        while live.current().rules.len() != 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "not picked up");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A broken edit keeps the two rules in force.
        std::fs::write(dir.path().join("b.yaml"), "rules: [{id: t.two, nope: 1}]\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(live.current().rules.len(), 2);
        assert!(live.reload().unwrap_err().contains("b.yaml"));
    }
}
