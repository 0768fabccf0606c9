//! Replay throughput against a bare serde_json parse of the same file, measured in one run.
//!
//!     cargo bench --bench throughput                        # 1 GiB input
//!     AUDITHOUND_BENCH_MB=200 cargo bench --bench throughput # smaller
//!
//! (a) baseline (best of two runs): one thread reads the file line by line and deserializes every line into the
//!     same borrowed `AuditEvent` the pipeline uses, nothing else;
//! (b) `audithound replay` (the release binary, all shipped detectors, --threads 1 and 2), timed
//!     end to end including process start, rule loading and the summary, with its peak RSS.
//! Ratios b/a are what to compare across machines: both sides run on the same box at the same time.

mod common;

use audithound::event::AuditEvent;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

fn main() {
    let mb: u64 = std::env::var("AUDITHOUND_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let data = common::ensure_input(mb);
    let bytes = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    println!(
        "input: {} ({:.0} MiB)",
        data.display(),
        bytes as f64 / (1 << 20) as f64
    );

    // Best of two baseline runs (one warms the page cache), so noise cannot flatter the ratio.
    let (events, first) = bare_parse(&data);
    let (_, second) = bare_parse(&data);
    let base_secs = first.min(second);
    let base_rate = events as f64 / base_secs;
    println!(
        "{:<34} {:>12} {:>10} {:>8} {:>10}",
        "", "events/s", "MiB/s", "ratio", "peak RSS"
    );
    let mib_s = |secs: f64| bytes as f64 / (1 << 20) as f64 / secs;
    println!(
        "{:<34} {:>12.0} {:>10.1} {:>8.2} {:>10}",
        "(a) bare serde_json parse, 1 thread",
        base_rate,
        mib_s(base_secs),
        1.0,
        "-"
    );
    for threads in [1, 2] {
        let run = common::replay(&data, threads, &[]);
        let (secs, rss_kib, replay_events) = (run.wall_secs, run.peak_rss_kib, run.events);
        assert_eq!(
            replay_events, events,
            "replay and baseline saw different event counts"
        );
        println!(
            "{:<34} {:>12.0} {:>10.1} {:>8.2} {:>7} MiB",
            format!("(b) audithound replay, {threads} thread(s)"),
            events as f64 / secs,
            mib_s(secs),
            base_secs / secs,
            rss_kib / 1024
        );
    }
}

fn bare_parse(path: &Path) -> (u64, f64) {
    let start = Instant::now();
    let mut r = BufReader::with_capacity(256 * 1024, File::open(path).expect("open input"));
    let mut line = Vec::new();
    let mut events = 0u64;
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                if let Ok(ev) = serde_json::from_slice::<AuditEvent>(line.trim_ascii_end()) {
                    events += u64::from(ev.audit_id.is_some());
                }
            }
            Err(e) => panic!("read input: {e}"),
        }
    }
    (events, start.elapsed().as_secs_f64())
}
