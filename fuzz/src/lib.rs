//! What the fuzz targets share: the built-in rule library and a revocation list loaded once, a
//! few real events (from `samples/`) to run fuzzed rules, conditions and lists on, and
//! `exercise`, which takes a decoded event through what a worker does with it.

use audithound::detect::{self, Origin, Outputs};
use audithound::event::{decode_record, AuditEvent, DecodeOptions, EventView, Format, Item};
use audithound::reputation::{Enrichment, Geo};
use audithound::revocation::RevocationList;
use audithound::rules::{library, RuleSet};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Events the loaders' targets evaluate what they loaded on: every provider's shape, an
/// impersonation, a privileged pod, an exec, a revoked credential.
const SAMPLES: &[&str] = &[
    include_str!("../../samples/formats/native.log"),
    include_str!("../../samples/formats/aks.log"),
    include_str!("../../samples/formats/gke.log"),
    include_str!("../../samples/formats/ack.log"),
    include_str!("../../samples/formats/eks-s3-export.log"),
    include_str!("../../samples/attacks/privileged-pod.log"),
    include_str!("../../samples/attacks/exec-system-pod.log"),
    include_str!("../../samples/attacks/cluster-admin-binding.log"),
    include_str!("../../samples/attacks/revoked-credential.log"),
];

/// The built-in rule library, loaded once per process.
pub fn builtin() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        RuleSet::load(&[PathBuf::from(library::BUILTIN)]).expect("the built-in library loads")
    })
}

/// The samples' revocation list.
pub fn revocations() -> &'static RevocationList {
    static LIST: OnceLock<RevocationList> = OnceLock::new();
    LIST.get_or_init(|| {
        RevocationList::parse(
            include_str!("../../samples/revocations.yaml"),
            "revocations.yaml",
        )
        .expect("the samples' revocation list loads")
    })
}

/// An IP list and a GeoIP table covering the samples' addresses, so that `sourceIP.*` fields
/// have values.
pub fn enrichment() -> &'static Enrichment {
    static ENRICHMENT: OnceLock<Enrichment> = OnceLock::new();
    ENRICHMENT.get_or_init(|| {
        let lists = BTreeMap::from([(
            "tor".to_string(),
            vec!["198.51.100.0/24".to_string(), "2001:db8::/32".to_string()],
        )]);
        let geo = BTreeMap::from([(
            "198.51.100.0/25".to_string(),
            Geo {
                asn: Some(64500),
                as_org: Some("Example".into()),
                country: Some("NL".into()),
            },
        )]);
        Enrichment::inline(&lists, &geo).expect("the enrichment is valid")
    })
}

/// Calls `f` on every event of the samples.
pub fn with_samples(f: &mut dyn FnMut(&AuditEvent)) {
    let opts = DecodeOptions::default();
    for text in SAMPLES {
        for line in text.lines() {
            decode_record(line.as_bytes(), &opts, "samples", &mut |item| {
                if let Item::Event(ev, _) = item {
                    f(ev)
                }
            });
        }
    }
}

/// What a worker does with an event: every accessor, the rules of `rules` and the
/// revocations, the alerts shaped and serialised.
pub fn exercise(ev: &AuditEvent, rules: &RuleSet, revocations: &RevocationList) {
    let time = ev.event_time().unwrap_or(0);
    let _ = (
        ev.stage(),
        ev.username(),
        ev.status_code(),
        ev.resource(),
        ev.is_long_running(),
    );
    let view = EventView::new(ev, time).enriched(enrichment());
    let mut out = Outputs::with_follow_ups();
    out.all_actors = true;
    detect::evaluate(
        rules,
        revocations,
        Origin::default(),
        &view,
        &mut out,
        &mut |_| true,
    );
    for alert in &out.alerts {
        serde_json::to_vec(alert).expect("an alert serialises");
    }
    let mut hits = Vec::new();
    revocations.matches(&view, &mut hits);
}

/// Every format `--input-format` can name.
pub const FORMATS: [Format; 6] = [
    Format::Native,
    Format::EventList,
    Format::Ack,
    Format::Eks,
    Format::Gke,
    Format::Aks,
];

/// Decodes `data` as a record three ways (auto-detected, `--strict` with a cluster field,
/// `--input-format` some format) and exercises the auto-detected events with the built-in
/// library. Returns how many items (events, rejections, skips) the first way gave.
pub fn decode_all(data: &[u8]) -> usize {
    let mut items = 0;
    let auto = DecodeOptions::default();
    decode_record(data, &auto, "fuzz", &mut |item| {
        items += 1;
        match item {
            Item::Event(ev, format) => {
                let _ = (format.name(), format.provider());
                exercise(ev, builtin(), revocations());
            }
            Item::Rejected(e) => {
                let _ = (e.reason(), e.to_string());
            }
            Item::Skipped(what) => assert!(!what.is_empty()),
        }
    });
    let strict = DecodeOptions {
        strict: true,
        expect: None,
        cluster_field: Some("cluster".into()),
    };
    let expect = DecodeOptions {
        strict: false,
        expect: Some(FORMATS[data.len() % FORMATS.len()]),
        cluster_field: None,
    };
    for opts in [strict, expect] {
        decode_record(data, &opts, "fuzz", &mut |item| {
            if let Item::Event(ev, _) = item {
                let _ = (ev.event_time(), ev.stage(), ev.username());
            }
        });
    }
    items
}
