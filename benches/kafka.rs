//! Kafka end to end, against a real broker on loopback (tansu, as the tests use; skipped with a
//! note when it is not installed):
//!
//! 1. Throughput: the same topic of benign audit events read by a bare rdkafka consume loop (no
//!    parsing: the baseline) and by `audithound run` (decode, every shipped rule, alerts to a file
//!    sink, offsets committed per batch), in events per second of wall time, and their ratio.
//! 2. Latency: events that each raise an alert produced at a fixed rate to a running service;
//!    event time (stamped at produce time) to alert delivered, p50/p90/p99 from its hdrhistogram.
//!
//! Run:
//!
//!     cargo bench --bench kafka
//!     AUDITHOUND_BENCH_EVENTS=500000 AUDITHOUND_BENCH_RATE=5000 cargo bench --bench kafka

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// The `/metrics` text of a service whose webhook listens on `port`.
fn metrics(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `audithound run` consuming `topic` as group `group` from `start`, alerts to /dev/null.
fn service(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    group: &str,
    start: &str,
) -> (Killed, u16) {
    let hook = free_port();
    let config = dir.join(format!("{group}.toml"));
    std::fs::write(
        &config,
        format!(
            "[webhook]\nlisten = \"127.0.0.1:{hook}\"\n[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"{group}\"\nstart = \"{start}\"\n[[sink]]\ntype = \"file\"\npath = \"/dev/null\"\n"
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_audithound"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "-q", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start audithound run");
    (Killed(child), hook)
}

fn main() {
    let events = env("AUDITHOUND_BENCH_EVENTS", 200_000);
    let rate = env("AUDITHOUND_BENCH_RATE", 2_000);
    let seconds = env("AUDITHOUND_BENCH_SECONDS", 10);
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let Ok(broker) = Command::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("skipped: the tansu broker is not installed (bash .ci/run installs it)");
        return;
    };
    let _broker = Killed(broker);
    let brokers = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "broker never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let admin: AdminClient<_> = client(&brokers).create().expect("admin client");
    let topics = [
        NewTopic::new("audit", 1, TopicReplication::Fixed(1)),
        NewTopic::new("live", 1, TopicReplication::Fixed(1)),
    ];
    runtime
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("create topics");

    // The topic: benign traffic from the same generator as the other benches.
    let producer: BaseProducer = client(&brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut lines = Vec::new();
    let t0 = audithound::event::time::parse_rfc3339_micros("2025-03-04T00:00:00Z").unwrap_or(0);
    audithound::synth::stream(7, t0, |line| {
        lines.push(line.to_owned());
        (lines.len() as u64) < events
    });
    for line in &lines {
        while let Err((e, _)) =
            producer.send(BaseRecord::<(), _>::to("audit").payload(line.as_str()))
        {
            assert!(
                matches!(e, rdkafka::error::KafkaError::MessageProduction(_)),
                "{e}"
            );
            producer.poll(Duration::from_millis(10));
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let bytes: usize = lines.iter().map(String::len).sum();
    println!(
        "topic: {} events, {} MiB, one partition, broker tansu on loopback",
        lines.len(),
        bytes >> 20
    );

    // 1. The bare consume loop, then audithound, over the same messages.
    let bare: BaseConsumer = client(&brokers)
        .set("group.id", "bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100") // as audithound's consumer
        .create()
        .expect("consumer");
    bare.subscribe(&["audit"]).expect("subscribe");
    let start = Instant::now();
    let (mut n, mut payload) = (0usize, 0usize);
    while n < lines.len() {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "bare consumer stalled at {n}"
        );
        if let Some(Ok(m)) = bare.poll(Duration::from_millis(100)) {
            n += 1;
            payload += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
        }
    }
    let bare_rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(payload, bytes);
    drop(bare);

    let dir = tempfile::tempdir().expect("temp dir");
    let start = Instant::now();
    let (run, hook) = service(dir.path(), &brokers, "audit", "bench", "earliest");
    while metric(&metrics(hook), "audithound_records_total") != Some(lines.len() as f64) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "audithound stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run_rate = lines.len() as f64 / start.elapsed().as_secs_f64();
    drop(run);
    println!("{:<44} {:>12} {:>8}", "", "events/s", "ratio");
    println!(
        "{:<44} {bare_rate:>12.0} {:>8.2}",
        "bare rdkafka consume loop (no parsing)", 1.0
    );
    println!(
        "{:<44} {run_rate:>12.0} {:>8.2}",
        "audithound run (every rule, alerts, commits)",
        run_rate / bare_rate
    );

    // 2. Latency at a fixed offered rate: each event raises an alert (exec into a pod, a new
    //    user each time so that no suppression holds any back).
    let (live, hook) = service(dir.path(), &brokers, "live", "latency", "latest");
    let ready = Instant::now();
    while metrics(hook).is_empty() {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "service never served /metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3)); // group join, so "latest" is now
    let total = rate * seconds;
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = audithound::event::time::format_micros(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
        );
        let event = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"00000000-0000-4000-8000-{i:012x}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods/web-1/exec?command=sh","verb":"create","user":{{"username":"user-{i}","groups":["system:authenticated"]}},"sourceIPs":["10.0.0.9"],"userAgent":"kubectl/v1.30.2","objectRef":{{"resource":"pods","subresource":"exec","namespace":"shop","name":"web-1","apiVersion":"v1"}},"responseStatus":{{"code":101}},"requestReceivedTimestamp":"{now}","stageTimestamp":"{now}"}}"#
        );
        let _ = producer.send(BaseRecord::<(), _>::to("live").payload(&event));
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let wait = Instant::now();
    let text = loop {
        let text = metrics(hook);
        if metric(&text, "audithound_alert_latency_seconds_count") == Some(total as f64)
            || wait.elapsed() > Duration::from_secs(60)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(live);
    let q = |p: &str| {
        metric(
            &text,
            &format!("audithound_alert_latency_seconds{{quantile=\"{p}\"}}"),
        )
        .map_or("?".to_string(), |v| format!("{:.0} ms", v * 1e3))
    };
    println!(
        "latency at {rate} events/s for {seconds} s ({} of {total} alerts delivered): p50 {}  p90 {}  p99 {}  (event time = produce time → alert written to the sink)",
        metric(&text, "audithound_alert_latency_seconds_count").unwrap_or(0.0),
        q("0.5"),
        q("0.9"),
        q("0.99")
    );
}
