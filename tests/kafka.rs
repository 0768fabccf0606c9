//! Kafka end to end against a real Kafka-protocol broker on loopback (tansu, installed by
//! `.ci/run`): audit events produced to a topic, `audithound run` consuming them in a group,
//! alerts produced to another topic. Same alerts as a replay; offsets committed to the end.

mod common;
use common::{alert_ids, attack_lines, audithound, free_port, wait_until, Service};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::Duration;

/// The broker process, killed when dropped.
struct Broker(std::process::Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker(port: u16) -> Broker {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the tansu broker must be installed (bash .ci/run installs it)");
    let b = Broker(child);
    wait_until("broker never listened", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    b
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

#[test]
fn consumed_from_kafka_alerts_to_kafka_same_as_replay_offsets_committed() {
    let port = free_port();
    let _broker = broker(port);
    let brokers = format!("127.0.0.1:{port}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin: AdminClient<_> = client(&brokers).create().unwrap();
    let topics = [
        NewTopic::new("audit", 1, TopicReplication::Fixed(1)),
        NewTopic::new("alerts", 1, TopicReplication::Fixed(1)),
    ];
    runtime
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .unwrap();

    // One record per batch: tansu mishandles resuming inside a multi-record batch.
    let producer: BaseProducer = client(&brokers)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let events = attack_lines();
    for e in &events {
        // Fleets ship every cluster to one topic; the header names the cluster.
        let headers = OwnedHeaders::new().insert(Header {
            key: "cluster",
            value: Some("prod-eu"),
        });
        producer
            .send(
                BaseRecord::to("audit")
                    .key("prod-eu/user")
                    .headers(headers)
                    .payload(e.as_str()),
            )
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let hook = free_port();
    let config = dir.path().join("audithound.toml");
    std::fs::write(
        &config,
        format!(
            "[detection]\nrevocations = \"samples/revocations.yaml\"\n[webhook]\nlisten = \"127.0.0.1:{hook}\"\n[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"audit\"]\ngroup = \"audithound-test\"\ncluster_from = \"header:cluster\"\n[[sink]]\ntype = \"file\"\npath = {:?}\n[[sink]]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"alerts\"\n",
            alerts.to_str().unwrap()
        ),
    )
    .unwrap();
    let service = Service::start(config.to_str().unwrap());
    let want = format!("audithound_records_total {}\n", events.len());
    wait_until("not every message was processed", || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", hook)) else {
            return false;
        };
        use std::io::{Read, Write};
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.contains(&want)
    });
    service.stop();

    let replay = audithound(&[
        "replay",
        "samples/attacks",
        "-q",
        "--revocations",
        "samples/revocations.yaml",
        "--cluster",
        "prod-eu",
    ]);
    let expected = alert_ids(&String::from_utf8_lossy(&replay.stdout));
    assert!(expected.len() > 10);
    let written = std::fs::read_to_string(&alerts).unwrap();
    assert_eq!(alert_ids(&written), expected);
    assert!(written
        .lines()
        .all(|l| l.contains("\"cluster\":\"prod-eu\"")));

    // The alerts topic holds the same alerts, keyed by alert id.
    let reader: BaseConsumer = client(&brokers)
        .set("group.id", "alerts-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["alerts"]).unwrap();
    let mut keys = BTreeSet::new();
    wait_until("alerts topic incomplete", || {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            if let Some(k) = m.key() {
                keys.insert(String::from_utf8_lossy(k).into_owned());
            }
        }
        keys.len() >= expected.len()
    });
    assert_eq!(keys, expected);

    // The group's committed offset is past the last message.
    let group: BaseConsumer = client(&brokers)
        .set("group.id", "audithound-test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("audit", 0);
    let committed = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let offset = committed.elements()[0].offset();
    assert_eq!(offset, Offset::Offset(events.len() as i64));
}
