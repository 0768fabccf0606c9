//! Shared by the benchmarks: running the release binary and measuring it.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs the release binary; returns wall seconds, peak RSS in KiB and the events it decoded.
pub fn replay(path: &Path, threads: usize, extra: &[&str]) -> (f64, u64, u64) {
    let summary = std::env::temp_dir().join(format!(
        "audithound-bench-summary-{}-{threads}.json",
        std::process::id()
    ));
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_audithound"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "replay",
            "-q",
            "--out",
            "/dev/null",
            "--threads",
            &threads.to_string(),
            "--summary-json",
        ])
        .arg(&summary)
        .args(extra)
        .arg(path)
        .spawn()
        .expect("start audithound");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting on our own child; `usage` is a valid out-pointer.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(waited, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "replay failed"
    );
    let _ = child.try_wait();
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("summary JSON");
    (
        secs,
        usage.ru_maxrss as u64,
        s["events"].as_u64().unwrap_or(0),
    )
}
