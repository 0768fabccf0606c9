//! Rule kinds beyond a single-event match: their YAML and their compiled parameters.
//!
//! ```yaml
//! kind: threshold
//! threshold: {by: [user.username], count: 20, distinct: objectRef.name, window: 5m}
//!
//! kind: new_terms
//! new_terms: {fields: [user.username, userAgent], learning: 24h}
//!
//! kind: sequence
//! sequence:
//!   by: [user.username]
//!   max_span: 5m
//!   steps: [{objectRef.resource: clusterrolebindings}, {objectRef.resource: deployments}]
//! ```

use super::condition::{Cond, Scope};
use super::field::Field;
use super::template::Template;
use crate::event::time;
use serde::Deserialize;
use serde_yaml::Value as Y;

#[derive(Debug)]
pub enum Kind {
    /// One event decides.
    Match,
    Threshold(ThresholdSpec),
    NewTerms(NewTermsSpec),
    Sequence(SequenceSpec),
    /// Built-in: uses of revoked credentials (the list comes from `--revocations`).
    Revoked(RevokedSpec),
    /// Built-in: refused, then granted by an RBAC change, then allowed (same identity and action).
    Chain(ChainSpec),
    /// Built-in: an identity still succeeding after the stream removed all its bindings.
    Unbound(UnboundSpec),
    /// Built-in: an identity's rate far above its own history (median and MAD).
    Spike(SpikeSpec),
}

/// `denied → granted → used` within `window`.
#[derive(Debug)]
pub struct ChainSpec {
    pub window: i64,
}

/// How long after its last binding was removed an identity's success still counts.
#[derive(Debug)]
pub struct UnboundSpec {
    pub window: i64,
}

/// Rate-spike parameters: counts per `bucket`, compared with the last `history` buckets.
#[derive(Debug)]
pub struct SpikeSpec {
    pub bucket: i64,
    pub history: usize,
    /// Buckets of history an identity needs before it can spike (its learning period).
    pub min_history: usize,
    /// How many robust standard deviations (1.4826 × MAD, at least 1) above the median.
    pub factor: f64,
    /// Never fire below this many events in a bucket.
    pub floor: u32,
}

/// One alert per revoked credential per `window`, counting the uses in between.
#[derive(Debug)]
pub struct RevokedSpec {
    pub window: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltin {
    name: String,
    window: Option<String>,
    bucket: Option<String>,
    history: Option<usize>,
    min_history: Option<usize>,
    factor: Option<f64>,
    floor: Option<u32>,
}

impl Kind {
    /// Values the kind's detector offers a summary template beside the event's fields.
    pub fn values(&self) -> &'static [&'static str] {
        match self {
            Kind::Match => &[],
            Kind::Threshold(_) => &["count", "window", "first_time"],
            Kind::NewTerms(_) => &["learning_since"],
            Kind::Sequence(_) => &["count", "first_time", "span"],
            Kind::Revoked(_) => &[
                "revoked",
                "revoked_at",
                "reason",
                "ticket",
                "outcome",
                "uses",
                "uses_since",
            ],
            Kind::Chain(_) => &["denied_action", "denied_at", "granted_by", "granted_at"],
            Kind::Unbound(_) => &["binding", "unbound_at"],
            Kind::Spike(_) => &[
                "count",
                "bucket",
                "bucket_start",
                "median",
                "mad",
                "threshold",
                "buckets",
            ],
        }
    }

    /// Requests a built-in detector reads whatever its rule's condition admits: the escalation
    /// chain and unbound identities follow who (Cluster)RoleBindings name, from the subjects in
    /// the request of every binding write (`detect::rbac::binding_subjects`).
    pub fn implied_reads(&self) -> Option<Cond> {
        const BINDING_WRITES: &str = "all:
  - objectRef.resource: [rolebindings, clusterrolebindings]
  - objectRef.subresource: {exists: false}
  - verb: [create, update, patch]
  - requestObject.subjects[*].(kind|name|namespace): {exists: true}
";
        match self {
            Kind::Chain(_) | Kind::Unbound(_) => {
                let yaml: Y = serde_yaml::from_str(BINDING_WRITES).ok()?;
                let none = std::collections::BTreeMap::new();
                let scope = Scope {
                    lists: &none,
                    macros: &std::collections::BTreeMap::new(),
                };
                Cond::compile(&yaml, &scope, "builtin").ok()
            }
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::Match => "match",
            Kind::Threshold(_) => "threshold",
            Kind::NewTerms(_) => "new_terms",
            Kind::Sequence(_) => "sequence",
            Kind::Revoked(_) => "builtin:revoked",
            Kind::Chain(_) => "builtin:escalation_chain",
            Kind::Unbound(_) => "builtin:unbound_identity",
            Kind::Spike(_) => "builtin:rate_spike",
        }
    }
}

/// Count (or distinct count of `distinct`) of matching events per `by` key in an event-time window.
#[derive(Debug)]
pub struct ThresholdSpec {
    pub by: Vec<Field>,
    pub count: u64,
    pub distinct: Option<Field>,
    /// Microseconds.
    pub window: i64,
}

/// The first time a combination of `fields` is seen, once `learning` has passed. With a
/// `history`, a combination not seen for that long is forgotten and new again. With `known`,
/// only combinations whose `known` part was seen before count (a known client getting a new
/// decision), not newcomers.
#[derive(Debug)]
pub struct NewTermsSpec {
    pub fields: Vec<Field>,
    pub learning: i64,
    pub history: Option<i64>,
    pub known: Vec<Field>,
    /// `known` names the first fields of `fields`, in order: its key text is a prefix of theirs.
    pub known_is_prefix: bool,
}

/// `steps` in order by the same `by` key within `max_span`.
#[derive(Debug)]
pub struct SequenceSpec {
    pub by: Vec<Field>,
    pub max_span: i64,
    pub steps: Vec<Cond>,
    /// A step's own key (`key: "system:serviceaccount:{objectRef.namespace}:{objectRef.name}"`),
    /// for sequences whose steps are done by different identities; None: the `by` fields.
    pub step_keys: Vec<Option<Template>>,
    /// How many matching events each step needs before the next one counts (`count: 10`: a
    /// burst of ten refusals, then an RBAC write). 1 unless given.
    pub step_counts: Vec<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    #[serde(default)]
    by: Vec<String>,
    count: u64,
    distinct: Option<String>,
    window: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNewTerms {
    fields: Vec<String>,
    #[serde(default = "no_learning")]
    learning: String,
    history: Option<String>,
    #[serde(default)]
    known: Vec<String>,
}

fn no_learning() -> String {
    "0s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSequence {
    #[serde(default)]
    by: Vec<String>,
    max_span: String,
    steps: Vec<Y>,
}

fn fields(paths: &[String], at: &str) -> Result<Vec<Field>, String> {
    paths
        .iter()
        .map(|p| Field::parse(p).map_err(|e| format!("{at}: {e}")))
        .collect()
}

/// Builds the kind named `name` from its parameter block; also returns the step conditions a
/// sequence adds to the rule's filter (any step may start or advance it).
pub fn compile(
    name: &str,
    threshold: Option<RawThreshold>,
    new_terms: Option<RawNewTerms>,
    sequence: Option<RawSequence>,
    builtin: Option<RawBuiltin>,
    scope: &Scope,
    at: &str,
) -> Result<Kind, String> {
    let given = [
        threshold.is_some(),
        new_terms.is_some(),
        sequence.is_some(),
        builtin.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let expect_block = name != "match";
    if given > usize::from(expect_block) || (expect_block && given == 0) {
        return Err(format!(
            "{at}: kind {name:?} needs exactly its own `{name}:` block and no other kind's"
        ));
    }
    Ok(match (name, threshold, new_terms, sequence) {
        ("match", ..) => Kind::Match,
        ("threshold", Some(t), ..) => {
            if t.count == 0 {
                return Err(format!("{at}.threshold.count: must be at least 1"));
            }
            Kind::Threshold(ThresholdSpec {
                by: fields(&t.by, &format!("{at}.threshold.by"))?,
                count: t.count,
                distinct: t
                    .distinct
                    .as_deref()
                    .map(Field::parse)
                    .transpose()
                    .map_err(|e| format!("{at}.threshold.distinct: {e}"))?,
                window: time::parse_duration(&t.window)
                    .map_err(|e| format!("{at}.threshold.window: {e}"))?,
            })
        }
        ("new_terms", _, Some(n), _) => {
            if n.fields.is_empty() {
                return Err(format!("{at}.new_terms.fields: name at least one field"));
            }
            Kind::NewTerms(NewTermsSpec {
                fields: fields(&n.fields, &format!("{at}.new_terms.fields"))?,
                learning: time::parse_duration(&n.learning)
                    .map_err(|e| format!("{at}.new_terms.learning: {e}"))?,
                history: n
                    .history
                    .as_deref()
                    .map(time::parse_duration)
                    .transpose()
                    .map_err(|e| format!("{at}.new_terms.history: {e}"))?,
                known: fields(&n.known, &format!("{at}.new_terms.known"))?,
                known_is_prefix: n.fields.starts_with(&n.known),
            })
        }
        ("sequence", _, _, Some(s)) => {
            if !(2..=32).contains(&s.steps.len()) {
                return Err(format!("{at}.sequence.steps: a sequence has 2 to 32 steps"));
            }
            let mut steps = Vec::new();
            let mut step_keys = Vec::new();
            let mut step_counts = Vec::new();
            for (i, y) in s.steps.iter().enumerate() {
                let here = format!("{at}.sequence.steps[{i}]");
                // A step is a condition, or `{when: condition, key: template, count: n}`.
                match y.get("when") {
                    Some(when) => {
                        if let Some(other) = y.as_mapping().and_then(|m| {
                            m.keys().filter_map(Y::as_str).find(|k| !["when", "key", "count"].contains(k))
                        }) {
                            return Err(format!("{here}.{other}: unknown key; a step has when, key and count"));
                        }
                        step_counts.push(match y.get("count") {
                            None => 1,
                            Some(c) => c
                                .as_u64()
                                .and_then(|c| u32::try_from(c).ok())
                                .filter(|c| *c >= 1)
                                .ok_or_else(|| format!("{here}.count: expected a whole number of at least 1"))?,
                        });
                        steps.push(Cond::compile(when, scope, &format!("{here}.when"))?);
                        let key = match y.get("key") {
                            Some(k) => Some(
                                k.as_str()
                                    .ok_or_else(|| format!("{here}.key: expected a template string"))
                                    .and_then(|k| Template::parse(k, &[]).map_err(|e| format!("{here}.key: {e}")))?,
                            ),
                            None => None,
                        };
                        step_keys.push(key);
                    }
                    None => {
                        steps.push(Cond::compile(y, scope, &here)?);
                        step_keys.push(None);
                        step_counts.push(1);
                    }
                }
            }
            Kind::Sequence(SequenceSpec {
                by: fields(&s.by, &format!("{at}.sequence.by"))?,
                max_span: time::parse_duration(&s.max_span)
                    .map_err(|e| format!("{at}.sequence.max_span: {e}"))?,
                steps,
                step_keys,
                step_counts,
            })
        }
        ("builtin", ..) => match builtin {
            Some(b) => compile_builtin(b, at)?,
            None => return Err(format!("{at}: kind builtin needs a `builtin:` block")),
        },
        (other, ..) => {
            return Err(format!(
                "{at}.kind: unknown kind {other:?}; use match, threshold, new_terms, sequence or builtin"
            ))
        }
    })
}

const BUILTINS: &str = "revoked, escalation_chain, unbound_identity, rate_spike";

fn compile_builtin(b: RawBuiltin, at: &str) -> Result<Kind, String> {
    let duration = |v: &Option<String>, default: &str, name: &str| {
        time::parse_duration(v.as_deref().unwrap_or(default))
            .map_err(|e| format!("{at}.builtin.{name}: {e}"))
    };
    let only_window = b.bucket.is_none()
        && b.history.is_none()
        && b.min_history.is_none()
        && b.factor.is_none()
        && b.floor.is_none();
    let kind = match b.name.as_str() {
        "revoked" => Kind::Revoked(RevokedSpec {
            window: duration(&b.window, "1h", "window")?,
        }),
        "escalation_chain" => Kind::Chain(ChainSpec {
            window: duration(&b.window, "1h", "window")?,
        }),
        "unbound_identity" => Kind::Unbound(UnboundSpec {
            window: duration(&b.window, "7d", "window")?,
        }),
        "rate_spike" => {
            if b.window.is_some() {
                return Err(format!(
                    "{at}.builtin.window: rate_spike takes bucket, history, min_history, factor and floor"
                ));
            }
            let spec = SpikeSpec {
                bucket: duration(&b.bucket, "10m", "bucket")?,
                history: b.history.unwrap_or(36),
                min_history: b.min_history.unwrap_or(6),
                factor: b.factor.unwrap_or(8.0),
                floor: b.floor.unwrap_or(30),
            };
            if !(3..=1024).contains(&spec.history) || spec.min_history > spec.history {
                return Err(format!(
                    "{at}.builtin.history: between 3 and 1024 buckets, and at least min_history"
                ));
            }
            if spec.factor.is_nan() || spec.factor <= 0.0 {
                return Err(format!("{at}.builtin.factor: must be above 0"));
            }
            if spec.floor < 2 {
                return Err(format!("{at}.builtin.floor: at least 2 events"));
            }
            return Ok(Kind::Spike(spec));
        }
        other => {
            return Err(format!(
                "{at}.builtin.name: unknown built-in {other:?}; available: {BUILTINS}"
            ))
        }
    };
    if !only_window {
        return Err(format!(
            "{at}.builtin: {} takes only `window`; bucket, history, min_history, factor and floor belong to rate_spike",
            b.name
        ));
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(time::parse_duration("5m"), Ok(300_000_000));
        assert_eq!(time::parse_duration("2d"), Ok(172_800_000_000));
        assert!(time::parse_duration("5").is_err());
        assert!(time::parse_duration("m").is_err());
        assert!(time::parse_duration("5w").is_err());
    }
}
