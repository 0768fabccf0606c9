//! Shared by the integration tests: running the built binary from the repository root.
#![allow(dead_code)] // each test file uses the helpers it needs

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn audithound(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_audithound"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run audithound")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `audithound replay ARGS --summary-json <temp>`: asserts the run succeeded and returns its
/// output with the parsed summary.
pub fn replay_with_summary(args: &[&str]) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("summary.json");
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.extend(["--summary-json", path.to_str().expect("utf-8 temp path")]);
    let out = audithound(&all);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = serde_json::from_slice(&std::fs::read(&path).expect("summary written"))
        .expect("summary is JSON");
    (out, summary)
}
