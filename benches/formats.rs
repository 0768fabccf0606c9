//! Replay throughput per input format, as a ratio against native lines, in one run.
//!
//!     cargo bench --bench formats                        # ~100 MiB of native events, rendered in every format
//!     AUDITHOUND_BENCH_MB=300 cargo bench --bench formats
//!
//! The same events are rendered as each provider ships them (EKS and EventList in batches of
//! 50), then the release binary replays each file with 2 threads (best of two runs). Events/s is the fair unit:
//! envelopes make files of different sizes for the same events.

mod common;

use audithound::event::Format;
use audithound::synth::{self, formats};
use serde_json::Value;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

const BATCH: usize = 50;

fn main() {
    let mb: u64 = std::env::var("AUDITHOUND_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-data/formats-{mb}MiB"));
    let cases: [(&str, Format); 7] = [
        ("native.log", Format::Native),
        ("eventlist.log", Format::EventList),
        ("ack.log", Format::Ack),
        ("eks-cloudwatch.log", Format::Eks),
        ("eks-s3.log", Format::Eks),
        ("gke.log", Format::Gke),
        ("aks.log", Format::Aks),
    ];
    if !dir.join("done").exists() {
        generate(&dir, mb, &cases);
    }
    println!(
        "{:<22} {:>10} {:>12} {:>10} {:>16}",
        "format", "MiB", "events/s", "MiB/s", "ratio to native"
    );
    let mut native_rate = 0.0;
    for (name, _) in cases {
        let path = dir.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
        // Best of two runs each, so one noisy run cannot decide a ratio.
        let (first, _, events) = common::replay(&path, 2, &[]);
        let (second, _, _) = common::replay(&path, 2, &[]);
        let secs = first.min(second);
        let rate = events as f64 / secs;
        if name == "native.log" {
            native_rate = rate;
        }
        println!(
            "{name:<22} {size:>10.0} {rate:>12.0} {:>10.1} {:>16.2}",
            size / secs,
            rate / native_rate
        );
    }
}

fn generate(dir: &std::path::Path, mb: u64, cases: &[(&str, Format)]) {
    std::fs::create_dir_all(dir).expect("create bench dir");
    eprintln!(
        "rendering ~{mb} MiB of events in every format into {} …",
        dir.display()
    );
    let mut writers: Vec<BufWriter<File>> = cases
        .iter()
        .map(|(name, _)| BufWriter::new(File::create(dir.join(name)).expect("create bench file")))
        .collect();
    let start = audithound::event::time::parse_rfc3339_micros("2025-03-04T00:00:00Z").unwrap_or(0);
    let target = mb << 20;
    let mut written = 0u64;
    let mut batch: Vec<Value> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<Value>, writers: &mut Vec<BufWriter<File>>| {
        for ((name, format), w) in cases.iter().zip(writers.iter_mut()) {
            let text = match (*name, format) {
                ("eks-s3.log", _) => formats::eks_s3_export(batch),
                (_, Format::Eks) => formats::eks_subscription(batch, "bench").to_string() + "\n",
                // One webhook batch per line.
                (_, Format::EventList) => {
                    serde_json::json!({"kind": "EventList", "items": batch}).to_string() + "\n"
                }
                (_, f) => formats::render(*f, batch, "bench"),
            };
            w.write_all(text.as_bytes()).expect("write bench file");
        }
        batch.clear();
    };
    synth::stream(11, start, |line| {
        written += line.len() as u64 + 1;
        batch.push(serde_json::from_str(line).expect("generated JSON"));
        if batch.len() == BATCH {
            flush(&mut batch, &mut writers);
        }
        written < target
    });
    flush(&mut batch, &mut writers);
    for mut w in writers {
        w.flush().expect("flush bench file");
    }
    File::create(dir.join("done")).expect("mark bench data complete");
}
