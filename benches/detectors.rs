//! What the detectors cost, in time and memory.
//!
//! 1. Throughput of the same replay with no rules at all, with the three mission detectors
//!    (the rules of `audithound eval`'s families revoked, escalation and secrets: built-ins and
//!    plain rules, with a revocation list), and with the whole shipped library, printed as
//!    ratios of CPU-time throughput (one worker, all threads on one core, nine interleaved
//!    rounds: each case's best run, and the median of the rounds' own ratios) and of
//!    instructions per event (valgrind: the same on a busy machine as on an idle one). The
//!    library runs again with `--no-incidents`: incidents on against off, as a paired ratio.
//! 2. Detector state for one million distinct identities: each identity reads a Secret of its
//!    own namespace (one in ten is refused), through the real decoder, rules and state, with
//!    the state cap raised to hold them all, and incidents on as in a replay (every alert joins
//!    one); resident memory before and after, the live heap the allocator counts, and the
//!    rules holding the most keys. Then incidents at their worst: 100 000 other
//!    identities each open a pod exec (an alert, so an incident of their own) and read a Secret
//!    (recorded in it), with the memory those incidents take.
//!
//! Run:
//!
//!     cargo bench --bench detectors                        # 200 MiB input, 1 000 000 identities
//!     AUDITHOUND_BENCH_MB=500 AUDITHOUND_BENCH_IDENTITIES=2000000 cargo bench --bench detectors
//!     AUDITHOUND_BENCH_MB=0 cargo bench --bench detectors    # memory only
//!     AUDITHOUND_BENCH_RULES=detectors:site cargo bench --bench detectors   # memory of another set
//!     AUDITHOUND_BENCH_SPACING_US=50 cargo bench --bench detectors  # all identities within one minute
//!     AUDITHOUND_BENCH_INCIDENTS=0 cargo bench --bench detectors     # memory without incidents
//!     AUDITHOUND_BENCH_INCIDENT_IDENTITIES=1000000 cargo bench --bench detectors  # a million incidents, 10 000 open at most

mod common;

use audithound::detect::{self, state_key, Stateful};
use audithound::event::EventView;
use audithound::event::{decode_record, DecodeOptions, Item};
use audithound::incident::{IncidentOptions, Incidents};
use audithound::revocation::RevocationList;
use audithound::rules::RuleSet;
use std::path::PathBuf;

/// Live heap bytes, counted by the allocator: what the state holds, apart from what the
/// allocator keeps back (resident memory is reported beside it).
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

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
    // Incidents are on unless `--no-incidents` says otherwise; episodes are part of the
    // threshold and spike rules and have no switch of their own.
    let cases: [(&str, Vec<&str>); 4] = [
        ("detectors off (no rules)", vec!["--rules", &none]),
        (
            "three mission detectors",
            vec!["--rules", &mission, "--revocations", &revocations],
        ),
        (
            "whole shipped library",
            vec!["--rules", &shipped, "--revocations", &revocations],
        ),
        (
            "whole library, incidents off",
            vec![
                "--rules",
                &shipped,
                "--revocations",
                &revocations,
                "--no-incidents",
            ],
        ),
    ];
    const LIBRARY: usize = 2;
    const NO_INCIDENTS: usize = 3;
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
    let counts = common::print_instructions(&data, 40_000, &cases);
    // Incidents on against off, the same library: what grouping alerts into incidents (and
    // recording the requests of identities with an open one) costs.
    let best = |i: usize| rounds.best[i].events as f64 / rounds.best[i].cpu_secs;
    let instructions = match (counts[LIBRARY], counts[NO_INCIDENTS]) {
        (Some(on), Some(off)) => format!("{:.2}", off / on),
        _ => "n/a".into(),
    };
    println!();
    println!(
        "incidents on vs off, whole library: {:.2} CPU (paired), {:.2} (best), {instructions} in instructions (throughput with incidents on / off)",
        rounds.paired_between(LIBRARY, NO_INCIDENTS),
        best(LIBRARY) / best(NO_INCIDENTS),
    );
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
    // Incidents are on (as in a replay) unless AUDITHOUND_BENCH_INCIDENTS=0: every alert joins
    // one, and the requests of identities with an open one are recorded.
    let with_incidents = env("AUDITHOUND_BENCH_INCIDENTS", 1) != 0;
    let mut incidents = with_incidents.then(|| Incidents::new(IncidentOptions::default()));
    let mut alerts = 0u64;
    let before = rss_bytes();
    let live_before = live_bytes();
    let mut outputs = detect::Outputs::default();
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
        alerts += feed(
            &json,
            &rules,
            &revocations,
            &mut outputs,
            Some(&mut state),
            incidents.as_mut(),
        );
    }
    let after = rss_bytes();
    let used = after.saturating_sub(before);
    let live = live_bytes().saturating_sub(live_before);
    println!();
    println!(
        "detector state for {identities} identities: {} keys, {:.0} MiB resident, {:.0} MiB live heap ({:.0} bytes per identity), {} evictions; cap 512 MiB",
        state.key_count(),
        used as f64 / (1 << 20) as f64,
        live as f64 / (1 << 20) as f64,
        used as f64 / identities as f64,
        state.stats.evictions
    );
    let mut held: Vec<(usize, &str)> = state
        .keys_by_rule()
        .zip(rules.rules.iter())
        .filter(|(n, _)| *n > 0)
        .map(|(n, r)| (n, r.id.as_str()))
        .collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    for (n, id) in held.iter().take(8) {
        println!("  {n:>9} keys  {id}");
    }
    match &incidents {
        Some(incidents) => println!(
            "  incidents on: {alerts} alerts joined {} incidents ({} open), {} requests recorded",
            incidents.stats.incidents,
            incidents.open_count(),
            incidents.stats.recorded_requests
        ),
        None => println!("  incidents off: {alerts} alerts"),
    }
    let Some(mut incidents) = incidents else {
        let l0 = live_bytes();
        drop(state);
        let l1 = live_bytes();
        drop(outputs);
        eprintln!(
            "ZZ state {} outputs {}",
            (l0 - l1) >> 20,
            (l1 - live_bytes()) >> 20
        );
        return;
    };

    // The worst case for incidents: other identities (100 000) each open a pod exec (a low
    // alert opens an incident; reporting it takes more) and then read a Secret, which the open
    // incident records. Their incidents would stay open an hour of event time after the alert;
    // the cap on open incidents (10 000 by default) closes the least recently active early.
    let n = env("AUDITHOUND_BENCH_INCIDENT_IDENTITIES", 100_000) as usize;
    let before = rss_bytes();
    let opened = incidents.stats.incidents;
    let mut raised = 0u64;
    let start = start + identities as i64 * spacing;
    for k in 0..n {
        for (j, request) in [
            format!(
                r#""requestURI":"/api/v1/namespaces/team-{k}/pods/web-{k}/exec?command=sh&container=app&stdin=true&stdout=true&tty=true","verb":"create","objectRef":{{"resource":"pods","subresource":"exec","namespace":"team-{k}","name":"web-{k}","apiVersion":"v1"}},"responseStatus":{{"code":101}}"#
            ),
            format!(
                r#""requestURI":"/api/v1/namespaces/team-{k}/secrets/db-{k}","verb":"get","objectRef":{{"resource":"secrets","namespace":"team-{k}","name":"db-{k}","apiVersion":"v1"}},"responseStatus":{{"code":200}}"#
            ),
        ]
        .iter()
        .enumerate()
        {
            let time = audithound::event::time::format_micros(start + k as i64 * spacing + j as i64);
            let json = format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{:08x}-9a1b-4c2d-8e3f-{:012x}","stage":"ResponseComplete",{request},"user":{{"username":"dev-{k}@example.com","groups":["developers","system:authenticated"]}},"sourceIPs":["172.16.{}.{}"],"userAgent":"kubectl/v1.30.2 (linux/amd64) kubernetes/3968350","stageTimestamp":"{time}"}}"#,
                k,
                k * 2 + j,
                (k >> 8) & 255,
                k & 255
            );
            raised += feed(
                &json,
                &rules,
                &revocations,
                &mut outputs,
                None,
                Some(&mut incidents),
            );
        }
    }
    let used_incidents = rss_bytes().saturating_sub(before);
    let made = incidents.stats.incidents - opened;
    println!(
        "incidents for {n} more identities (a pod exec, then a Secret read, each): {raised} alerts, {made} incidents ({} open, {} closed early at max_open {}), {} requests recorded, {:.0} MiB resident ({:.0} bytes per incident); with the state above {:.0} MiB; cap 512 MiB",
        incidents.open_count(),
        incidents.stats.closed_early,
        IncidentOptions::default().max_open,
        incidents.stats.recorded_requests,
        used_incidents as f64 / (1 << 20) as f64,
        used_incidents as f64 / made.max(1) as f64,
        (used + used_incidents) as f64 / (1 << 20) as f64,
    );
}

/// Decodes one event and runs it as a replay's collector would: through the rules, into the
/// stateful detectors (when given), its alerts into the incidents and, when an incident of its
/// actor is open, recorded there. Returns the alerts raised.
fn feed(
    json: &str,
    rules: &RuleSet,
    revocations: &RevocationList,
    outputs: &mut detect::Outputs,
    mut state: Option<&mut Stateful>,
    mut incidents: Option<&mut Incidents>,
) -> u64 {
    decode_record(
        json.as_bytes(),
        &DecodeOptions::default(),
        "prod",
        &mut |item| {
            if let Item::Event(ev, _) = item {
                let view = EventView::new(ev, ev.event_time().unwrap_or(0));
                if let Some(incidents) = incidents.as_deref_mut() {
                    let actor = state_key(&format!("prod\u{1f}{}", ev.username()));
                    if incidents.watches(actor) {
                        incidents.request(actor, &view);
                    }
                }
                detect::evaluate(
                    rules,
                    revocations,
                    detect::Origin::default(),
                    &view,
                    outputs,
                    &mut |_| true,
                );
            }
        },
    );
    let mut fired = Vec::new();
    for o in outputs.observations.drain(..) {
        if let Some(state) = state.as_deref_mut() {
            state.observe(rules, o, &[], &mut fired);
        }
    }
    let mut alerts = 0;
    let mut reports = Vec::new();
    for alert in outputs.alerts.drain(..).chain(fired) {
        alerts += 1;
        if let Some(incidents) = incidents.as_deref_mut() {
            let family = rules.get(&alert.rule.id).map_or("other", |r| r.family());
            incidents.alert(&alert, family, &mut reports);
            reports.clear();
        }
    }
    alerts
}
