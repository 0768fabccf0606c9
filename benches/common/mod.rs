//! Shared by the benchmarks: running the release binary and measuring it.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// What one run of the binary cost.
#[allow(dead_code)] // each bench reads the fields it reports
pub struct Run {
    pub wall_secs: f64,
    /// User + system CPU seconds of all its threads: steadier than wall time on a shared box.
    pub cpu_secs: f64,
    pub peak_rss_kib: u64,
    pub events: u64,
}

/// Runs the release binary on `path` and measures it.
pub fn replay(path: &Path, threads: usize, extra: &[&str]) -> Run {
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
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run {
        wall_secs: secs,
        cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss_kib: usage.ru_maxrss as u64,
        events: s["events"].as_u64().unwrap_or(0),
    }
}
