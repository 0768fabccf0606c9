//! What the rule library costs: replay throughput with one rule, with the shipped library, and
//! with the library plus 200 generated rules, over the same input in one run; then the same
//! cases' instructions per event (valgrind), which a busy machine does not disturb.
//!
//!     cargo bench --bench rules                          # 200 MiB input
//!     AUDITHOUND_BENCH_MB=500 cargo bench --bench rules
//!
//! Ratios use CPU seconds of a replay with one worker and all its threads on one core (see
//! `common::replay_on`) over nine interleaved rounds: of each case's best run, and the median
//! of the rounds' own ratios; `benches/throughput.rs` measures throughput on every core.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The rule the library is compared with: a typical single-event rule.
const ONE_RULE: &str = "k8s.exec.into_system_pod";

fn main() {
    let mb: u64 = std::env::var("AUDITHOUND_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let data = common::ensure_input(mb);
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("detectors");
    let work = tempfile::tempdir().expect("temp dir");
    let one = work.path().join("one");
    let many = work.path().join("many");
    for dir in [&one, &many] {
        common::copy_rule_files(&shipped, dir);
    }
    // One rule: the library's files with every rule but one switched off by an override.
    let library = audithound::rules::RuleSet::load(std::slice::from_ref(&shipped))
        .expect("load the shipped library");
    let mut off = String::from("overrides:\n");
    for rule in library.rules.iter().filter(|r| r.id != ONE_RULE) {
        let _ = writeln!(off, "  - {{rule: {}, enabled: false}}", rule.id);
    }
    std::fs::write(one.join("zz-only-one.yaml"), off).expect("write the override");
    std::fs::write(many.join("zz-generated.yaml"), generated_rules(200))
        .expect("write generated rules");

    let cases: [(&str, &Path); 3] = [
        ("one rule (exec into a system pod)", &one),
        ("shipped library", &shipped),
        ("library + 200 generated rules", &many),
    ];
    let dirs: Vec<String> = cases
        .iter()
        .map(|(_, d)| d.to_string_lossy().into_owned())
        .collect();
    let args: Vec<Vec<&str>> = dirs.iter().map(|d| vec!["--rules", d.as_str()]).collect();
    let rounds = common::interleaved(9, &data, &args);
    println!("input: {} ({mb} MiB)", data.display());
    println!(
        "{:<32} {:>14} {:>12} {:>14}",
        "rules loaded", "events/CPU-s", "ratio (best)", "ratio (paired)"
    );
    let Some(base) = rounds.best.first().map(|r| r.events as f64 / r.cpu_secs) else {
        return;
    };
    for (((name, _), run), paired) in cases.iter().zip(&rounds.best).zip(&rounds.paired) {
        let cpu = run.events as f64 / run.cpu_secs;
        println!("{name:<32} {cpu:>14.0} {:>12.2} {paired:>14.2}", cpu / base);
    }
    let cases: Vec<(&str, Vec<&str>)> = cases
        .iter()
        .zip(&args)
        .map(|((name, _), a)| (*name, a.clone()))
        .collect();
    common::print_instructions(&data, 40_000, &cases);
}

/// Rules shaped like real ones: most pinned to a resource, with string, glob and regex
/// matchers, a fifth matching any resource.
fn generated_rules(n: usize) -> String {
    let resources = [
        "pods",
        "secrets",
        "configmaps",
        "deployments",
        "leases",
        "nodes",
        "services",
        "serviceaccounts",
    ];
    let mut y = String::from("rules:\n");
    for i in 0..n {
        let condition = if i % 5 == 4 {
            format!("{{all: [{{user.username: {{glob: \"intruder-{i}-*\"}}}}, {{verb: [create, patch]}}]}}")
        } else {
            format!(
                "{{all: [{{objectRef.resource: {}}}, {{verb: [get, list, create, patch]}}, {{userAgent: {{regex: '^scanner-{i}/[0-9.]+'}}}}, {{not: {{macro: control_plane}}}}]}}",
                resources[i % resources.len()]
            )
        };
        let _ = writeln!(
            y,
            "  - id: bench.generated_{i}\n    title: generated {i}\n    severity: low\n    condition: {condition}\n    summary: \"{{user.username}}\""
        );
    }
    y
}
