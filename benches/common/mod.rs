//! Shared by the benchmarks: running the release binary and measuring it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What one run of the binary cost.
#[allow(dead_code)] // each bench reads the fields it reports
#[derive(Clone)]
pub struct Run {
    pub wall_secs: f64,
    /// User + system CPU seconds of all its threads: steadier than wall time on a shared box.
    pub cpu_secs: f64,
    pub peak_rss_kib: u64,
    pub events: u64,
}

/// Runs the release binary on `path` and measures it.
#[allow(dead_code)] // not every bench runs it unpinned
pub fn replay(path: &Path, threads: usize, extra: &[&str]) -> Run {
    replay_on(path, threads, extra, false)
}

/// `replay`, with every thread of the binary on one core when `one_core` is set: what an event
/// costs then is its own work, not also the time threads lose competing for two cores with each
/// other and with the machine's neighbours (rounds vary by a few per cent instead of ±20 %).
pub fn replay_on(path: &Path, threads: usize, extra: &[&str], one_core: bool) -> Run {
    let summary = std::env::temp_dir().join(format!(
        "audithound-bench-summary-{}-{threads}.json",
        std::process::id()
    ));
    let threads = threads.to_string();
    let summary_arg = summary.to_string_lossy();
    let path_arg = path.to_string_lossy();
    let mut args = vec![
        "replay",
        "-q",
        "--out",
        "/dev/null",
        "--threads",
        &threads,
        "--summary-json",
        &summary_arg,
    ];
    args.extend_from_slice(extra);
    args.push(&path_arg);
    let (mut run, _) = run_binary(&args, one_core);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("summary JSON");
    run.events = s["events"].as_u64().unwrap_or(0);
    run
}

/// Runs the release binary with `args` (from the crate's directory, stdout discarded) and
/// measures it; returns its stderr too. `events` is left 0: the caller knows what it read.
/// `one_core`: as in `replay_on`.
pub fn run_binary(args: &[&str], one_core: bool) -> (Run, String) {
    let stderr = tempfile::tempfile().expect("temp file for stderr");
    let start = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_audithound"));
    if one_core {
        use std::os::unix::process::CommandExt;
        // SAFETY: sched_setaffinity on the child itself, between fork and exec; `set` is a
        // valid, initialised CPU set.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(stderr.try_clone().expect("clone stderr file"))
        .spawn()
        .expect("start audithound");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting on our own child; `usage` is a valid out-pointer.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(waited, pid, "wait4 failed");
    let mut text = String::new();
    {
        use std::io::{Read, Seek};
        let mut f = stderr;
        let _ = f.rewind();
        let _ = f.read_to_string(&mut text);
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "audithound {} failed: {text}",
        args.join(" ")
    );
    let _ = child.try_wait();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        Run {
            wall_secs: secs,
            cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
            peak_rss_kib: usage.ru_maxrss as u64,
            events: 0,
        },
        text,
    )
}

/// The median of `values` (NaN when empty).
#[allow(dead_code)] // not every bench compares cases
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Generates (once) a benign-traffic log of about `mb` MiB under target/bench-data.
#[allow(dead_code)] // not every bench needs the generated log
pub fn ensure_input(mb: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let path = dir.join(format!("audit-{mb}MiB.log"));
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    let tmp = path.with_extension("partial");
    let mut w = BufWriter::new(File::create(&tmp).expect("create bench input"));
    let target = mb << 20;
    let mut written = 0u64;
    let start = audithound::event::time::parse_rfc3339_micros("2025-03-04T00:00:00Z").unwrap_or(0);
    eprintln!(
        "generating {mb} MiB of audit events into {} …",
        path.display()
    );
    audithound::synth::stream(7, start, |line| {
        w.write_all(line.as_bytes()).expect("write bench input");
        w.write_all(b"\n").expect("write bench input");
        written += line.len() as u64 + 1;
        written < target
    });
    w.flush().expect("flush bench input");
    drop(w);
    std::fs::rename(&tmp, &path).expect("rename bench input");
    path
}

/// What interleaved rounds of a bench's cases measured.
#[allow(dead_code)] // not every bench compares cases
pub struct Rounds {
    /// Each case's cheapest run in CPU time.
    pub best: Vec<Run>,
    /// Each case's throughput relative to the first case's in the same round, median over the
    /// rounds: a neighbour's busy minute slows both runs of a round alike, so this moves less
    /// than a ratio of two best runs taken minutes apart.
    pub paired: Vec<f64>,
    /// Every run, by round then case.
    pub runs: Vec<Vec<Run>>,
}

#[allow(dead_code)] // not every bench compares cases
impl Rounds {
    /// Case `i`'s CPU-time throughput relative to case `base`'s in the same round, median over
    /// the rounds.
    pub fn paired_between(&self, i: usize, base: usize) -> f64 {
        let throughput = |r: &Run| r.events as f64 / r.cpu_secs;
        median(
            self.runs
                .iter()
                .map(|round| throughput(&round[i]) / throughput(&round[base]))
                .collect(),
        )
    }
}

/// Replays `path` with each case's extra arguments, one worker and every thread on one core,
/// `rounds` times interleaved (so that a noisy moment hits every case alike).
#[allow(dead_code)] // not every bench compares cases
pub fn interleaved(rounds: usize, path: &Path, cases: &[Vec<&str>]) -> Rounds {
    let runs: Vec<Vec<Run>> = (0..rounds)
        .map(|_| {
            cases
                .iter()
                .map(|args| replay_on(path, 1, args, true))
                .collect()
        })
        .collect();
    let mut rounds = Rounds {
        best: Vec::new(),
        paired: Vec::new(),
        runs,
    };
    rounds.paired = (0..cases.len())
        .map(|i| rounds.paired_between(i, 0))
        .collect();
    let mut best: Vec<Option<Run>> = cases.iter().map(|_| None).collect();
    for round in &rounds.runs {
        for (i, run) in round.iter().enumerate() {
            if best[i].as_ref().is_none_or(|b| run.cpu_secs < b.cpu_secs) {
                best[i] = Some(run.clone());
            }
        }
    }
    rounds.best = best.into_iter().flatten().collect();
    rounds
}

/// Instructions per event of a replay with `extra` arguments, start-up excluded (a one-event
/// replay's count is subtracted), from `valgrind --tool=callgrind` over the first `lines` of
/// `path`: unlike time, the same on a busy machine as on an idle one. None without valgrind.
#[allow(dead_code)] // not every bench counts instructions
pub fn instructions_per_event(path: &Path, lines: usize, extra: &[&str]) -> Option<f64> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().ok()?;
    let write_slice = |n: usize, name: &str| -> Option<PathBuf> {
        let out = dir.path().join(name);
        let mut w = BufWriter::new(File::create(&out).ok()?);
        for line in BufReader::new(File::open(path).ok()?).lines().take(n) {
            writeln!(w, "{}", line.ok()?).ok()?;
        }
        w.flush().ok()?;
        Some(out)
    };
    let count = |input: &Path| -> Option<u64> {
        let out = Command::new("valgrind")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(env!("CARGO_BIN_EXE_audithound"))
            .args(["replay", "-q", "--out", "/dev/null", "--threads", "1"])
            .args(extra)
            .arg(input)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let at = text.find("Collected : ")? + "Collected : ".len();
        text[at..].split_whitespace().next()?.parse().ok()
    };
    let many = count(&write_slice(lines, "slice.log")?)?;
    let one = count(&write_slice(1, "one.log")?)?;
    Some(many.saturating_sub(one) as f64 / lines.saturating_sub(1).max(1) as f64)
}

/// Prints each case's instructions per input line and its ratio to the first case's; returns
/// the counts (None where valgrind gave none).
#[allow(dead_code)] // not every bench counts instructions
pub fn print_instructions(
    path: &Path,
    lines: usize,
    cases: &[(&str, Vec<&str>)],
) -> Vec<Option<f64>> {
    let counts: Vec<Option<f64>> = cases
        .iter()
        .map(|(_, args)| instructions_per_event(path, lines, args))
        .collect();
    let Some(&Some(base)) = counts.first() else {
        println!("(valgrind not installed: no instruction counts)");
        return counts;
    };
    println!();
    println!("instructions per input line, start-up excluded (valgrind, first {lines} lines):");
    for ((name, _), n) in cases.iter().zip(&counts) {
        if let Some(n) = n {
            println!("{name:<34} {n:>14.0} {:>12.2}", base / n);
        }
    }
    counts
}

/// Copies every rule file of `from` into `to`.
#[allow(dead_code)] // not every bench edits the rules
pub fn copy_rule_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("rule dir");
    for f in std::fs::read_dir(from).expect("read detectors").flatten() {
        let p = f.path();
        if p.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&p, to.join(p.file_name().unwrap_or_default())).expect("copy rules");
        }
    }
}
