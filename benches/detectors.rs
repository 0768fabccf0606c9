//! What the detectors cost, in time and memory.
//!
//! 1. Throughput of the same replay with no rules at all, with the three mission detectors
//!    (the rules of `audithound eval`'s families revoked, escalation and secrets: built-ins and
//!    plain rules, with a revocation list), and with the whole shipped library, printed as
//!    ratios of CPU-time throughput (one worker, all threads on one core, nine interleaved
//!    rounds: each case's best run, and the median of the rounds' own ratios) and of
//!    instructions per event (valgrind: the same on a busy machine as on an idle one).
//! 2. Detector state for one million distinct identities: each identity reads a Secret of its
//!    own namespace (one in ten is refused), through the real decoder, rules and state, with
//!    the state cap raised to hold them all; resident memory before and after.
//!
//! Run:
//!
//!     cargo bench --bench detectors                        # 200 MiB input, 1 000 000 identities
//!     AUDITHOUND_BENCH_MB=500 AUDITHOUND_BENCH_IDENTITIES=2000000 cargo bench --bench detectors
//!     AUDITHOUND_BENCH_MB=0 cargo bench --bench detectors    # memory only
//!     AUDITHOUND_BENCH_RULES=detectors:site cargo bench --bench detectors   # memory of another set
//!     AUDITHOUND_BENCH_SPACING_US=50 cargo bench --bench detectors  # all identities within one minute

mod common;

use audithound::detect::{self, Stateful};
use audithound::event::EventView;
use audithound::event::{decode_record, DecodeOptions, Item};
use audithound::revocation::RevocationList;
use audithound::rules::RuleSet;
use std::path::PathBuf;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mb = env("AUDITHOUND_BENCH_MB", 200);
    if mb > 0 {
        throughput(&root, mb);
    }
    memory(
        &root,
        env("AUDITHOUND_BENCH_IDENTITIES", 1_000_000) as usize,
    );
}

fn throughput(root: &std::path::Path, mb: u64) {
    let data = common::ensure_input(mb);
    let work = tempfile::tempdir().expect("temp dir");
    let none = work.path().join("none");
    std::fs::create_dir_all(&none).expect("rule dir");
    std::fs::write(none.join("empty.yaml"), "rules: []\n").expect("write empty rules");
    let shipped = root.join("detectors").to_string_lossy().into_owned();
    let revocations = root
        .join("samples/revocations.yaml")
        .to_string_lossy()
        .into_owned();
    // The mission detectors: the library with every rule of no family switched off.
    let mission = work.path().join("mission");
    common::copy_rule_files(&root.join("detectors"), &mission);
    let library = RuleSet::load(&[root.join("detectors")]).expect("load the shipped library");
    let mut off = String::from("overrides:\n");
    for rule in library.rules.iter() {
        if rule.family() == "other" {
            off.push_str(&format!("  - {{rule: {}, enabled: false}}\n", rule.id));
        }
    }
    std::fs::write(mission.join("zz-mission-only.yaml"), off).expect("write the override");
    let mission = mission.to_string_lossy().into_owned();
    let none = none.to_string_lossy().into_owned();
    let cases: [(&str, Vec<&str>); 3] = [
        ("detectors off (no rules)", vec!["--rules", &none]),
        (
            "three mission detectors",
            vec!["--rules", &mission, "--revocations", &revocations],
        ),
        (
            "whole shipped library",
            vec!["--rules", &shipped, "--revocations", &revocations],
        ),
    ];
    let args: Vec<Vec<&str>> = cases.iter().map(|(_, a)| a.clone()).collect();
    let rounds = common::interleaved(9, &data, &args);
    println!("input: {} ({mb} MiB)", data.display());
    println!(
        "{:<34} {:>14} {:>10} {:>12} {:>14}",
        "", "events/CPU-s", "RSS MiB", "ratio (best)", "ratio (paired)"
    );
    let Some(base) = rounds.best.first().map(|r| r.events as f64 / r.cpu_secs) else {
        return;
    };
    for (((name, _), run), paired) in cases.iter().zip(&rounds.best).zip(&rounds.paired) {
        let cpu = run.events as f64 / run.cpu_secs;
        println!(
            "{name:<34} {cpu:>14.0} {:>10} {:>12.2} {paired:>14.2}",
            run.peak_rss_kib / 1024,
            cpu / base
        );
    }
    // Time on a shared machine moves by ±10 % between runs; instruction counts do not.
    common::print_instructions(&data, 40_000, &cases);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn memory(root: &std::path::Path, identities: usize) {
    // AUDITHOUND_BENCH_RULES=dir:dir measures another rule set (an override directory, say).
    let dirs: Vec<PathBuf> = match std::env::var("AUDITHOUND_BENCH_RULES") {
        Ok(dirs) => dirs.split(':').map(PathBuf::from).collect(),
        Err(_) => vec![root.join("detectors")],
    };
    let rules = RuleSet::load(&dirs).expect("load the rules");
    let revocations = RevocationList::default();
    let mut state = Stateful::new(&rules, identities + identities / 10);
    let before = rss_bytes();
    let (mut outputs, mut fired) = (detect::Outputs::default(), Vec::new());
    let start = audithound::event::time::parse_rfc3339_micros("2025-03-04T00:00:00Z").unwrap_or(0);
    // One identity every millisecond by default: a million over 17 minutes of event time.
    let spacing = env("AUDITHOUND_BENCH_SPACING_US", 1000) as i64;
    for i in 0..identities {
        let code = if i % 10 == 0 { 403 } else { 200 };
        let time = audithound::event::time::format_micros(start + i as i64 * spacing);
        let json = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{:08x}-7d3e-4b1a-8c2f-{:012x}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns-{i}/secrets/app-{i}","verb":"get","user":{{"username":"system:serviceaccount:ns-{i}:app","groups":["system:serviceaccounts","system:authenticated"]}},"sourceIPs":["10.{}.{}.{}"],"userAgent":"app/1.0","objectRef":{{"resource":"secrets","namespace":"ns-{i}","name":"app-{i}","apiVersion":"v1"}},"responseStatus":{{"code":{code}}},"stageTimestamp":"{time}"}}"#,
            i,
            i * 7919,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        decode_record(
            json.as_bytes(),
            &DecodeOptions::default(),
            "prod",
            &mut |item| {
                if let Item::Event(ev, _) = item {
                    let view = EventView::new(ev, ev.event_time().unwrap_or(0));
                    detect::evaluate(
                        &rules,
                        &revocations,
                        detect::Origin::default(),
                        &view,
                        &mut outputs,
                        &mut |_| true,
                    );
                }
            },
        );
        for o in outputs.observations.drain(..) {
            state.observe(&rules, o, &[], &mut fired);
        }
        outputs.alerts.clear();
        fired.clear();
    }
    let after = rss_bytes();
    let used = after.saturating_sub(before);
    println!();
    println!(
        "detector state for {identities} identities: {} keys, {:.0} MiB resident ({:.0} bytes per identity), {} evictions; cap 512 MiB",
        state.key_count(),
        used as f64 / (1 << 20) as f64,
        used as f64 / identities as f64,
        state.stats.evictions
    );
}
