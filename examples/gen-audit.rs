//! Regenerates `samples/`: a benign day of a small HA cluster (three API servers; gzip and zstd
//! logs) plus labelled attack snippets and the alerts they must raise.
//!
//!     cargo run --example gen-audit -- samples
//!
//! Output is deterministic: the same seed writes the same bytes.

use audithound::event::time::parse_rfc3339_micros;
use audithound::event::Format;
use audithound::synth::{self, formats};
use serde_json::{json, Value};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = Path::new(args.first().map_or("samples", String::as_str));
    let events: usize = args.get(1).map_or(Ok(24_000), |s| s.parse())?;
    let seed = 20250304;
    let start = parse_rfc3339_micros("2025-03-04T00:00:00Z").ok_or("bad start time")?;

    let day = synth::benign(seed, start, 24, events, 3);
    let day_dir = out.join("cluster-day");
    fs::create_dir_all(&day_dir)?;
    let mut expected = Vec::new();
    for server in 0..3 {
        let name = [
            "apiserver-1.log.gz",
            "apiserver-2.log.gz",
            "apiserver-3.log.zst",
        ][server];
        let file = File::create(day_dir.join(name))?;
        let mut w: Box<dyn Write> = if name.ends_with(".gz") {
            Box::new(flate2::write::GzEncoder::new(
                BufWriter::new(file),
                flate2::Compression::best(),
            ))
        } else {
            Box::new(zstd::stream::write::Encoder::new(BufWriter::new(file), 19)?.auto_finish())
        };
        for e in day.iter().filter(|e| e.server == server) {
            writeln!(w, "{}", e.line)?;
            expected.extend(
                e.expect
                    .iter()
                    .map(|r| (r.to_string(), e.audit_id.clone(), "benign-day".to_string())),
            );
        }
        w.flush()?;
    }

    let attack_dir = out.join("attacks");
    fs::create_dir_all(&attack_dir)?;
    for attack in synth::attacks(seed, start) {
        let mut w = BufWriter::new(File::create(
            attack_dir.join(format!("{}.log", attack.name)),
        )?);
        for e in &attack.events {
            writeln!(w, "{}", e.line)?;
            expected.extend(
                e.expect
                    .iter()
                    .map(|r| (r.to_string(), e.audit_id.clone(), attack.name.to_string())),
            );
        }
        w.flush()?;
    }

    write_formats(out, seed, start, &mut expected)?;
    write_scenarios(out, seed, start)?;

    expected.sort();
    let mut w = BufWriter::new(File::create(out.join("expected-alerts.tsv"))?);
    writeln!(
        w,
        "# rule_id\taudit_id\tscenario (written by `cargo run --example gen-audit`)"
    )?;
    for (rule, id, scenario) in expected {
        writeln!(w, "{rule}\t{id}\t{scenario}")?;
    }
    w.flush()?;
    eprintln!(
        "wrote {} benign events and the attack snippets to {}",
        day.len(),
        out.display()
    );
    Ok(())
}

/// `samples/scenarios/`: one attack per file inside its own benign background, the benign
/// baseline, the labels, the revocation list the suite uses and an index. Labels
/// (`expected.labels`, JSON lines) name every alert a file must raise; an attack's labels also
/// name its incident (the scenario: one attacker, one story). `episodes.labels` lists, for the
/// attacks that go on for a while, every request the alert's final report must cite.
fn write_scenarios(out: &Path, seed: u64, start: i64) -> Result<(), Box<dyn std::error::Error>> {
    use synth::scenarios;
    let dir = out.join("scenarios");
    fs::create_dir_all(&dir)?;
    let mut labels = Vec::new();
    let mut episodes = Vec::new();
    let mut index = String::from(
        "# Scenario suite\n\nWritten by `cargo run --example gen-audit -- samples`; scored by\n\
         `audithound eval samples/scenarios`. Each file is replayed on its own: one attack inside\n\
         about 20 hours of benign traffic of a small cluster. `expected.labels` lists every alert\n\
         each file must raise (rule and audit ID, and for the attack's alerts the incident they\n\
         belong to); anything else is a false positive. `episodes.labels` lists, for attacks that\n\
         go on for a while, every request the alert's final report must cite.\n\n\
         | file | detector | what happens |\n|---|---|---|\n",
    );
    let mut write = |name: String,
                     events: &[synth::GenEvent],
                     incident: Option<(&str, &std::collections::HashSet<String>)>|
     -> std::io::Result<()> {
        let file = File::create(dir.join(&name))?;
        let mut w = zstd::stream::write::Encoder::new(BufWriter::new(file), 19)?.auto_finish();
        for e in events {
            writeln!(w, "{}", e.line)?;
            for rule in &e.expect {
                let mut label = json!({"file": name, "rule": rule, "audit_id": e.audit_id});
                if let Some((scenario, attack)) = incident {
                    if attack.contains(&e.audit_id) {
                        label["incident"] = json!(scenario);
                    }
                }
                labels.push(label.to_string());
            }
        }
        w.flush()
    };
    // The attacks that go on for a while: their episode rule, and when (after the scenario's
    // start) its requests belong to the episode.
    const MIN: i64 = 60 * 1_000_000;
    let episode_of = |name: &str| match name {
        "secret-enumeration" => Some(("k8s.secrets.enumeration", 0, i64::MAX)),
        "denied-secret-burst" => Some(("k8s.secrets.denied_burst", 0, i64::MAX)),
        // The exporter's burst: 120 reads from 12:01, four seconds apart.
        "secret-rate-spike" => Some(("k8s.secrets.rate_spike", 721 * MIN, 729 * MIN)),
        _ => None,
    };
    for (i, s) in scenarios::scenarios(seed, start).iter().enumerate() {
        let name = format!("{:02}-{}.log.zst", i + 1, s.name);
        let events = scenarios::with_background(s, seed + 100 + i as u64, start);
        let attack: std::collections::HashSet<String> =
            s.events.iter().map(|e| e.audit_id.clone()).collect();
        write(name.clone(), &events, Some((s.name, &attack)))?;
        if let Some((rule, from, until)) = episode_of(s.name) {
            let during = |t: i64| t >= start + from && t < start.saturating_add(until);
            let ids: Vec<&str> = s
                .events
                .iter()
                .filter(|e| during(e.time) && e.line.contains("\"stage\":\"ResponseComplete\""))
                .map(|e| e.audit_id.as_str())
                .collect();
            episodes.push(json!({"file": name, "rule": rule, "audit_ids": ids}).to_string());
        }
        index.push_str(&format!(
            "| `{name}` | {} | {} |\n",
            s.family.name(),
            s.description
        ));
    }
    let baseline = scenarios::baseline(seed + 7, start, 120_000);
    write("baseline.log.zst".into(), &baseline, None)?;
    index.push_str(&format!(
        "| `baseline.log.zst` | (none) | {} events of a benign day: controllers, kubelets, operators reading Secrets, CI, people. Only people's low-severity execs into application pods are expected. |\n",
        baseline.len()
    ));
    fs::write(dir.join("expected.labels"), labels.join("\n") + "\n")?;
    fs::write(dir.join("episodes.labels"), episodes.join("\n") + "\n")?;
    fs::write(dir.join("README.md"), index)?;
    fs::write(
        dir.join("revocations.yaml"),
        "# Revocation list for the scenario suite (eval reads it from here).\n\
         - username: dave@example.com\n  revoked_at: \"2025-03-04T12:00:00Z\"\n  reason: left the company; cloud account deleted\n  ticket: HR-2291\n\
         - credential_id: \"JTI=7d3e9b1a-5c2f-4e8d-b6a0-3f9c1e7d5b24\"\n  revoked_at: \"2025-03-04T06:00:00Z\"\n  reason: CI token leaked in a build log\n  ticket: SEC-93\n",
    )?;
    Ok(())
}

/// `samples/formats/`: the cluster-admin binding and the privileged pod as each provider ships
/// them, each file with its own audit IDs, plus the awkward records each provider produces.
fn write_formats(
    out: &Path,
    seed: u64,
    start: i64,
    expected: &mut Vec<(String, String, String)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = out.join("formats");
    fs::create_dir_all(&dir)?;
    let files: [(&str, Format, &str); 7] = [
        ("native.log", Format::Native, "default"),
        ("eventlist.json", Format::EventList, "default"),
        ("ack.log", Format::Ack, "c5e8f0a1b2c3d4e5f60718293a4b5c6d7"),
        ("eks-cloudwatch.json.gz", Format::Eks, "prod-eks"),
        ("eks-s3-export.log", Format::Eks, "default"),
        ("gke.log", Format::Gke, "prod-gke"),
        ("aks.log", Format::Aks, "prod-aks"),
    ];
    for (i, (name, format, cluster)) in files.into_iter().enumerate() {
        let attacks = synth::attacks(seed + 1 + i as u64, start);
        let events: Vec<_> = attacks
            .iter()
            .take(2)
            .flat_map(|a| a.events.iter())
            .filter(|e| e.line.contains("ResponseComplete"))
            .collect();
        let values: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.line))
            .collect::<Result<_, _>>()?;
        let mut content = if name == "eks-s3-export.log" {
            formats::eks_s3_export(&values)
        } else {
            formats::render(format, &values, cluster)
        };
        match format {
            Format::Aks => content.push_str(&format!(
                "{}\n",
                json!({"category": "kube-apiserver", "properties": {"log": "I0304 09:00:00.000000 1 controller.go:615] quota admission added evaluator"}, "time": "2025-03-04T09:00:00Z"})
            )),
            Format::Eks if name.ends_with(".gz") => {
                let cut = &values[0].to_string()[..200];
                let awkward = [
                    json!({"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "", "subscriptionFilters": [], "logEvents": [{"id": "", "timestamp": 0, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}),
                    json!({"messageType": "DATA_MESSAGE", "logGroup": format!("/aws/eks/{cluster}/cluster"), "logEvents": [{"id": "1", "timestamp": 0, "message": format!("{cut}[Truncated...]")}]}),
                ];
                for a in awkward {
                    content.push_str(&format!("{a}\n"));
                }
            }
            _ => {}
        }
        let bytes = if name.ends_with(".gz") {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(content.as_bytes())?;
            e.finish()?
        } else {
            content.into_bytes()
        };
        fs::write(dir.join(name), bytes)?;
        for e in events {
            expected.extend(
                e.expect
                    .iter()
                    .map(|r| (r.to_string(), e.audit_id.clone(), format!("formats/{name}"))),
            );
        }
    }
    Ok(())
}
