//! Regenerates `samples/`: a benign day of a small HA cluster (three API servers; gzip and zstd
//! logs) plus labelled attack snippets and the alerts they must raise.
//!
//!     cargo run --example gen-audit -- samples
//!
//! Output is deterministic: the same seed writes the same bytes.

use audithound::event::time::parse_rfc3339_micros;
use audithound::synth;
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
