//! Decode workers: turn a batch of records into events, filter them, and run the rules.
//! Everything here is a pure function of the batch, so any number of workers gives the same
//! per-batch result.

use crate::alert::Alert;
use crate::detect::reload::LiveRevocations;
use crate::detect::{self, Observation};
use crate::event::{decode_record, DecodeOptions, Item, Stage};
use crate::metrics::BatchStats;
use crate::rules::field::EventView;
use crate::rules::RuleSet;
use crate::source::{Batch, Rejection};
use std::sync::Arc;

/// Bytes of a rejected record kept for the dead-letter output.
const DEAD_LETTER_RAW_MAX: usize = 64 * 1024;

pub struct WorkerContext {
    pub rules: Arc<RuleSet>,
    /// A service's rule set, reloaded while it runs; `rules` when None.
    pub live_rules: Option<Arc<crate::rules::reload::LiveRules>>,
    pub revocations: Arc<LiveRevocations>,
    pub decode: DecodeOptions,
    pub files: Arc<[Arc<str>]>,
    /// Cluster of each file's events when their envelope names none.
    pub file_clusters: Arc<[String]>,
    pub stages: Vec<Stage>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Whether to keep the raw bytes of rejected records (only when a dead-letter file is set).
    pub keep_raw: bool,
}

pub struct Processed {
    pub seq: u64,
    /// The rule set this batch was evaluated with (observations name its rules by index).
    pub rules: Arc<RuleSet>,
    /// The batch itself: observations' seeds point into its data. The collector returns it to
    /// the reader once it has applied them.
    pub batch: Batch,
    pub stats: BatchStats,
    /// Single-event alerts and stateful observations, in event order.
    pub outputs: Vec<Output>,
    /// Where each record's outputs begin in `outputs`, and the record's time (its first
    /// event's, where a merge places it): how far the input has come at that point.
    pub placements: Vec<(u32, i64)>,
    pub rejections: Vec<Rejection>,
}

pub enum Output {
    Alert(Box<Alert>),
    Observation(Observation),
    /// Taken by the collector already.
    Done,
}

/// new_terms observations of one term within a batch: only the earliest goes to the collector,
/// carrying the latest time the term was seen. The others could only have moved its last-seen
/// time (a term seen a moment before is never new), so the collector's answers are unchanged,
/// and batches are cut the same whatever the thread count. Rules like "a decision this
/// identity and client never got" observe nearly every event; most are repeats.
#[derive(Default)]
struct TermsInBatch {
    /// Where each term's observation is in the batch's outputs.
    first: foldhash::HashMap<(u32, u128), usize>,
    /// Last-seen times an observation about to be made takes over from one it replaces.
    carried: Vec<(usize, i64)>,
}

impl TermsInBatch {
    /// Whether `s` deserves an observation (at `index` in `outputs`): the first sighting of its
    /// term in the batch, or an earlier one than the first (which it replaces). Otherwise its
    /// time is folded into the batch's observation of the term.
    fn first_sighting(
        &mut self,
        rules: &RuleSet,
        s: &detect::Sighting,
        index: usize,
        outputs: &mut [Output],
    ) -> bool {
        let crate::rules::Kind::NewTerms(spec) = &rules.rules[s.rule as usize].kind else {
            return true;
        };
        let within = |from: i64, to: i64| spec.history.is_none_or(|h| to - from <= h);
        let term = s.hashes[0] ^ s.hashes[1].rotate_left(64);
        let at = self.first.entry((s.rule, term)).or_insert(usize::MAX);
        match outputs.get_mut(*at) {
            // Later, within the history of the last sighting: known for certain.
            Some(Output::Observation(first))
                if s.time >= first.time && within(first.last, s.time) =>
            {
                first.last = first.last.max(s.time);
                return false;
            }
            // Later but past the history: a sighting of its own.
            Some(Output::Observation(first)) if s.time >= first.time => {}
            // Earlier (out of order): this sighting decides whether the term is new, the one
            // it replaces only leaves its last-seen time.
            Some(Output::Observation(first)) => {
                if !within(s.time, first.last) {
                    return true; // a batch longer than the history: both are decided
                }
                self.carried.push((index, first.last));
                outputs[*at] = Output::Done;
            }
            _ => {}
        }
        *at = index;
        true
    }

    /// Hands carried last-seen times to the observations just added to `outputs`.
    fn settle(&mut self, outputs: &mut [Output]) {
        for (index, last) in self.carried.drain(..) {
            if let Some(Output::Observation(obs)) = outputs.get_mut(index) {
                obs.last = obs.last.max(last);
            }
        }
    }
}

pub fn process(ctx: &WorkerContext, mut batch: Batch) -> Processed {
    let mut stats = BatchStats::default();
    let mut outputs = Vec::new();
    let mut placements = Vec::new();
    let (mut alerts, mut observations) = (Vec::new(), Vec::new());
    let mut rejections = std::mem::take(&mut batch.rejections);
    let mut matched = Vec::new();
    let mut terms = TermsInBatch::default();
    // One snapshot per batch: a reload takes effect from the next batch.
    let revocations = ctx.revocations.current();
    let rules = match &ctx.live_rules {
        Some(live) => live.current(),
        None => ctx.rules.clone(),
    };
    for rec in &batch.records {
        stats.records += 1;
        let bytes = &batch.data[rec.start..rec.end];
        let cluster = match rec.cluster.and_then(|i| batch.clusters.get(i as usize)) {
            Some(c) => &**c,
            None => ctx.file_clusters[rec.file as usize].as_str(),
        };
        let mut index = 0u32;
        decode_record(bytes, &ctx.decode, cluster, &mut |item| match item {
            Item::Event(ev, format) => {
                if index == 0 {
                    if let Some(t) = ev.event_time() {
                        placements.push((outputs.len() as u32, t));
                    }
                }
                let origin = detect::Origin {
                    batch: &batch.data,
                    record_start: rec.start,
                    record_len: rec.end - rec.start,
                    index,
                    context: rec.context,
                };
                index += 1;
                stats.events += 1;
                *stats.formats.entry(format.name()).or_default() += 1;
                let stage_ok = ev.stage().is_some_and(|s| ctx.stages.contains(&s));
                if !stage_ok {
                    stats.skipped_stage += 1;
                    return;
                }
                // decode_record only yields events with a parseable time.
                let time = ev.event_time().unwrap_or(i64::MIN);
                if ctx.from.is_some_and(|f| time < f) || ctx.to.is_some_and(|t| time >= t) {
                    stats.outside_time_range += 1;
                    return;
                }
                stats.analysed += 1;
                stats.first_time = Some(stats.first_time.map_or(time, |t| t.min(time)));
                stats.count_actor(ev.username());
                let view = EventView::new(ev, time);
                // This event's observations go to `outputs` first, then its alerts.
                let base = outputs.len();
                detect::evaluate_with(
                    &rules,
                    &revocations,
                    origin,
                    &view,
                    &mut matched,
                    &mut alerts,
                    &mut observations,
                    &mut |s| terms.first_sighting(&rules, s, base + s.position, &mut outputs),
                );
                outputs.extend(observations.drain(..).map(Output::Observation));
                terms.settle(&mut outputs);
                outputs.extend(alerts.drain(..).map(|a| Output::Alert(Box::new(a))));
            }
            Item::Skipped(what) => *stats.skipped.entry(what).or_default() += 1,
            Item::Rejected(e) => rejections.push(Rejection {
                reason: e.reason(),
                file: ctx.files[rec.file as usize].clone(),
                line: rec.line,
                offset: rec.offset,
                detail: e.to_string(),
                raw: if ctx.keep_raw {
                    bytes[..bytes.len().min(DEAD_LETTER_RAW_MAX)].to_vec()
                } else {
                    Vec::new()
                },
            }),
        });
    }
    Processed {
        seq: batch.seq,
        rules,
        batch,
        stats,
        outputs,
        placements,
        rejections,
    }
}
