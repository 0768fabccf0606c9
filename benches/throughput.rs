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
//!
//! Then other runs over the same file on the same threads (2), in interleaved rounds (5, or
//! AUDITHOUND_BENCH_ROUNDS), each against its base in the same round (the median of the rounds'
//! own ratios, in CPU time and in wall time):
//! (c) replay with incidents on (the default) against `--no-incidents`: what incidents cost
//!     (episodes belong to the threshold and spike rules and are on in both);
//! (d) `hunt --where` (a condition nothing matches, and one a few events match) and
//!     `timeline --user` against replay;
//! (e) replay `--report FILE.html` against replay, with the report's size.

mod common;

use audithound::event::AuditEvent;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

/// Threads of the paired runs (c)–(e).
const THREADS: usize = 2;
/// A hunt nothing in the benign log matches: the cost of looking.
const HUNT_NONE: &str = "objectRef.resource=secrets and verb=delete";
/// A hunt some events match (refused Secret reads): looking and printing.
const HUNT_SOME: &str = "objectRef.resource=secrets and responseStatus.code=403";
const TIMELINE_USER: &str = "alice@example.com";

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
    paired(&data, events, bytes);
}

/// One case of the paired runs: its label, the command line, and the case it is compared with.
struct Case {
    label: &'static str,
    args: Vec<String>,
    base: Option<usize>,
}

/// (c)–(e): runs over the same file on the same threads, interleaved; ratios to each case's base.
fn paired(data: &Path, events: u64, bytes: u64) {
    let rounds: usize = std::env::var("AUDITHOUND_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let work = tempfile::tempdir().expect("temp dir");
    let report = work.path().join("report.html");
    let file = data.to_string_lossy().into_owned();
    let threads = THREADS.to_string();
    let replay = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["replay", "-q", "--out", "/dev/null", "--threads", &threads]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(file.clone());
        a
    };
    // Without -q: they end with a line of what matched (no progress bar off a terminal).
    let archive = |command: &str, extra: &[&str]| -> Vec<String> {
        let mut a = vec![command.to_string(), "--threads".into(), threads.clone()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(file.clone());
        a
    };
    const OFF: usize = 0;
    const ON: usize = 1;
    let cases = [
        Case {
            label: "(c) replay --no-incidents",
            args: replay(&["--no-incidents"]),
            base: None,
        },
        Case {
            label: "(c) replay, incidents on",
            args: replay(&[]),
            base: Some(OFF),
        },
        Case {
            label: "(d) hunt, nothing matches",
            args: archive("hunt", &["--where", HUNT_NONE]),
            base: Some(ON),
        },
        Case {
            label: "(d) hunt, some events match",
            args: archive("hunt", &["--where", HUNT_SOME]),
            base: Some(ON),
        },
        Case {
            label: "(d) timeline --user",
            args: archive("timeline", &["--user", TIMELINE_USER]),
            base: Some(ON),
        },
        Case {
            label: "(e) replay --report",
            args: replay(&["--report", &report.to_string_lossy()]),
            base: Some(ON),
        },
    ];
    let mut runs: Vec<Vec<common::Run>> = Vec::new();
    let mut said: Vec<String> = vec![String::new(); cases.len()];
    for _ in 0..rounds {
        let mut round = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
            let (mut run, stderr) = common::run_binary(&args, false);
            run.events = events;
            said[i] = stderr.lines().last().unwrap_or_default().trim().to_owned();
            round.push(run);
        }
        runs.push(round);
    }
    let report_bytes = std::fs::metadata(&report).map(|m| m.len()).unwrap_or(0);
    println!();
    println!(
        "same file, {THREADS} thread(s), {rounds} interleaved rounds; ratios: median of each round's own (throughput / its base's)"
    );
    println!(
        "{:<34} {:>12} {:>12} {:>10} {:>11} {:>12}  base",
        "", "events/s", "events/CPU-s", "peak RSS", "ratio (CPU)", "ratio (wall)"
    );
    for (i, case) in cases.iter().enumerate() {
        let best = runs
            .iter()
            .map(|r| &r[i])
            .min_by(|a, b| a.cpu_secs.total_cmp(&b.cpu_secs))
            .expect("a round");
        let base = case.base.unwrap_or(i);
        let ratio = |secs: fn(&common::Run) -> f64| {
            common::median(runs.iter().map(|r| secs(&r[base]) / secs(&r[i])).collect())
        };
        println!(
            "{:<34} {:>12.0} {:>12.0} {:>6} MiB {:>11.2} {:>12.2}  {}",
            case.label,
            events as f64 / best.wall_secs,
            events as f64 / best.cpu_secs,
            best.peak_rss_kib / 1024,
            ratio(|r| r.cpu_secs),
            ratio(|r| r.wall_secs),
            case.base.map_or("-", |b| cases[b].label)
        );
    }
    println!();
    println!(
        "(d) hunt, nothing matches: hunt --where '{HUNT_NONE}': {}",
        said[2]
    );
    println!(
        "(d) hunt, some events match: hunt --where '{HUNT_SOME}': {}",
        said[3]
    );
    println!("(d) timeline --user {TIMELINE_USER}: {}", said[4]);
    println!(
        "(e) report: {report_bytes} bytes for {:.0} MiB of input",
        bytes as f64 / (1 << 20) as f64
    );
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
