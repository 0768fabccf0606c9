//! Decode workers: turn a batch of records into events, filter them, and run the rules.
//! Everything here is a pure function of the batch, so any number of workers gives the same
//! per-batch result.
//!
//! Stages: each request is analysed at one stage of those configured (`--stages`, by default
//! `ResponseComplete,Panic`); its other stages are counted, not analysed, so nothing is counted
//! twice. Long-running requests (exec, attach, port-forward, proxy, log, watch) are also looked
//! at when they open (`ResponseStarted`), by the single-event rules only: a shell still open at
//! the end of an archive, or a capture holding only that record, raises its alert. Where the
//! `ResponseComplete` twin exists it is analysed in full as before and its single-event alerts,
//! whose ids are the rule, cluster and auditID, are dropped by the collector as duplicates;
//! stateful rules see the request once, at `ResponseComplete`. Whether a twin exists cannot be
//! told from one record, and this keeps the decision to that one record.

use crate::alert::Alert;
use crate::detect::{self, FollowUp, Observation, Outputs};
use crate::event::{
    decode_record_with, Arena, AuditEvent, DecodeOptions, Decoded, Format, Item, Stage,
};
use crate::event::{EventView, Lens};
use crate::metrics::BatchStats;
use crate::reputation::LiveReputation;
use crate::revocation::LiveRevocations;
use crate::revocation::RevocationList;
use crate::rules::RuleSet;
use crate::source::{Batch, RecordMeta, Rejection};
use std::sync::Arc;

/// Bytes of a rejected record kept for the dead-letter output.
const DEAD_LETTER_RAW_MAX: usize = 64 * 1024;

pub struct WorkerContext {
    pub rules: Arc<RuleSet>,
    /// A service's rule set, reloaded while it runs; `rules` when None.
    pub live_rules: Option<Arc<crate::rules::reload::LiveRules>>,
    pub revocations: Arc<LiveRevocations>,
    /// IP lists and GeoIP for `sourceIP.*`; a snapshot per batch like the revocations.
    pub reputation: Arc<LiveReputation>,
    /// Impersonation proxies: their impersonated users are the actors rules see.
    pub proxies: Arc<[String]>,
    pub decode: DecodeOptions,
    pub files: Arc<[Arc<str>]>,
    /// Cluster of each file's events when their envelope names none.
    pub file_clusters: Arc<[String]>,
    pub stages: Vec<Stage>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Whether to keep the raw bytes of rejected records (only when a dead-letter file is set).
    pub keep_raw: bool,
    /// Every event names its actor to the collector (incidents record requests).
    pub all_actors: bool,
    /// Actors that may have an open incident: their requests are described here, for the
    /// collector to record without decoding them again.
    pub watched: Option<Arc<crate::incident::Watched>>,
    /// Output lists of batches the collector is done with, to be filled again.
    pub spare_outputs: Option<crossbeam_channel::Receiver<Vec<Output>>>,
}

pub struct Processed {
    pub seq: u64,
    /// The rule set this batch was evaluated with (observations name its rules by index).
    pub rules: Arc<RuleSet>,
    /// The enrichment and proxies it was evaluated with (the collector decodes its events
    /// again through them when an alert fires).
    pub lens: Lens,
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
    /// Boxed, like the follow-up's checks, so that an output (one for nearly every event, with
    /// incidents on) stays small.
    Observation(Box<Observation>),
    /// Steps of the event's that only advance state already held (see `detect::FollowUp`),
    /// with the request described when its actor may have an open incident (see
    /// `incident::Watched`): the collector records it without decoding the event again.
    FollowUp(FollowUp, Option<Box<crate::incident::Request>>),
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
        s: &detect::Offer,
        index: usize,
        outputs: &mut [Output],
    ) -> bool {
        let crate::rules::Kind::NewTerms(spec) = &rules.rules[s.rule as usize].kind else {
            return true;
        };
        let within = |from: i64, to: i64| spec.history.is_none_or(|h| to - from <= h);
        let term = s.term ^ s.part.rotate_left(64);
        let at = self.first.entry((s.rule, term)).or_insert(usize::MAX);
        let first = match outputs.get_mut(*at) {
            Some(Output::Observation(o)) => {
                let time = o.time;
                o.payload
                    .sighting_mut()
                    .map(|sighting| (time, &mut sighting.last))
            }
            _ => None,
        };
        match first {
            // Later, within the history of the last sighting: known for certain.
            Some((time, last)) if s.time >= time && within(*last, s.time) => {
                *last = (*last).max(s.time);
                return false;
            }
            // Later but past the history: a sighting of its own.
            Some((time, _)) if s.time >= time => {}
            // Earlier (out of order): this sighting decides whether the term is new, the one
            // it replaces only leaves its last-seen time.
            Some((_, last)) => {
                let last = *last;
                if !within(s.time, last) {
                    return true; // a batch longer than the history: both are decided
                }
                self.carried.push((index, last));
                outputs[*at] = Output::Done;
            }
            None => {}
        }
        *at = index;
        true
    }

    /// Hands carried last-seen times to the observations just added to `outputs`.
    fn settle(&mut self, outputs: &mut [Output]) {
        for (index, last) in self.carried.drain(..) {
            if let Some(Output::Observation(obs)) = outputs.get_mut(index) {
                if let Some(sighting) = obs.payload.sighting_mut() {
                    sighting.last = sighting.last.max(last);
                }
            }
        }
    }
}

/// Events decoded before the detectors run on them. Decoding and detecting each take more code
/// than the instruction cache holds; alternating event by event, each evicts the other, and a
/// run of events per phase keeps both warm (cachegrind counts a quarter of the misses).
const RUN: usize = 32;

/// A decoded event waiting for its run to be evaluated, with where it came from.
struct Waiting<'a> {
    event: AuditEvent<'a>,
    format: Format,
    record: &'a RecordMeta,
    index: u32,
}

/// What a batch's events make, in event order.
struct Evaluation<'c> {
    ctx: &'c WorkerContext,
    rules: Arc<RuleSet>,
    revocations: Arc<RevocationList>,
    lens: Lens,
    stats: BatchStats,
    outputs: Vec<Output>,
    placements: Vec<(u32, i64)>,
    detected: Outputs,
    terms: TermsInBatch,
    /// Whether long-running requests are looked at when they open: `ResponseComplete` is
    /// analysed and `ResponseStarted` is not (when it is, they are analysed there in full).
    opening_looks: bool,
}

impl Evaluation<'_> {
    /// Counts, filters and evaluates one event, the `index`-th of `rec`.
    fn event(
        &mut self,
        ev: &AuditEvent,
        format: Format,
        data: &[u8],
        rec: &RecordMeta,
        index: u32,
    ) {
        if index == 0 {
            if let Some(t) = ev.event_time() {
                self.placements.push((self.outputs.len() as u32, t));
            }
        }
        let stats = &mut self.stats;
        stats.events += 1;
        *stats.formats.entry(format.name()).or_default() += 1;
        for r in ev.repairs.iter() {
            *stats.repaired.entry(r.name()).or_default() += 1;
        }
        let stage = ev.stage();
        let stage_ok = stage.is_some_and(|s| self.ctx.stages.contains(&s));
        let opening = !stage_ok
            && self.opening_looks
            && stage == Some(Stage::ResponseStarted)
            && ev.is_long_running();
        if !stage_ok && !opening {
            stats.skipped_stage += 1;
            return;
        }
        // The decoder only yields events with a parseable time.
        let time = ev.event_time().unwrap_or(i64::MIN);
        let (from, to) = (self.ctx.from, self.ctx.to);
        if from.is_some_and(|f| time < f) || to.is_some_and(|t| time >= t) {
            stats.outside_time_range += 1;
            return;
        }
        if opening {
            stats.long_running_started += 1;
            return self.opening(ev, time, data, rec, index);
        }
        // Behind an impersonation proxy, the user it acts for is the actor.
        let acting = self.lens.acting_for(ev);
        let ev = acting.as_ref().unwrap_or(ev);
        stats.analysed += 1;
        stats.first_time = Some(stats.first_time.map_or(time, |t| t.min(time)));
        stats.count_actor(ev.username());
        let view = EventView::new(ev, time).enriched(&self.lens.enrichment);
        let origin = detect::Origin {
            batch: data,
            record_start: rec.start,
            record_len: rec.end - rec.start,
            index,
            context: rec.context,
            seed: None,
        };
        // This event's observations go to `outputs` first, then its alerts.
        let base = self.outputs.len();
        let (rules, terms, outputs) = (&self.rules, &mut self.terms, &mut self.outputs);
        let detected = &mut self.detected;
        detect::evaluate(
            rules,
            &self.revocations,
            origin,
            &view,
            detected,
            &mut |s| terms.first_sighting(rules, s, base + s.position, outputs),
        );
        outputs.extend(
            detected
                .observations
                .drain(..)
                .map(|o| Output::Observation(Box::new(o))),
        );
        terms.settle(outputs);
        // Alerts before follow-ups: an incident an alert opens records the request after it.
        outputs.extend(
            detected
                .alerts
                .drain(..)
                .map(|a| Output::Alert(Box::new(a))),
        );
        // An event leaves one follow-up at most.
        if let Some(follow_ups) = detected.follow_ups.as_mut() {
            let watched = self.ctx.watched.as_deref();
            outputs.extend(follow_ups.drain(..).map(|f| {
                let request = watched
                    .filter(|w| w.may_watch(f.actor))
                    .map(|_| Box::new(crate::incident::Request::of(&view)));
                Output::FollowUp(f, request)
            }));
        }
    }

    /// A long-running request as it opens: its single-event alerts only. What it would tell the
    /// stateful rules waits for its `ResponseComplete` (see the module doc).
    fn opening(&mut self, ev: &AuditEvent, time: i64, data: &[u8], rec: &RecordMeta, index: u32) {
        let acting = self.lens.acting_for(ev);
        let ev = acting.as_ref().unwrap_or(ev);
        let view = EventView::new(ev, time).enriched(&self.lens.enrichment);
        let origin = detect::Origin {
            batch: data,
            record_start: rec.start,
            record_len: rec.end - rec.start,
            index,
            context: rec.context,
            seed: None,
        };
        let detected = &mut self.detected;
        detect::evaluate(
            &self.rules,
            &self.revocations,
            origin,
            &view,
            detected,
            &mut |_| false,
        );
        detected.observations.clear();
        detected.follow_ups.iter_mut().for_each(Vec::clear);
        let alerts = detected
            .alerts
            .drain(..)
            .map(|a| Output::Alert(Box::new(a)));
        self.outputs.extend(alerts);
    }

    /// Evaluates the waiting run, in order.
    fn run(&mut self, waiting: &mut Vec<Waiting>, data: &[u8]) {
        for w in waiting.iter() {
            self.event(&w.event, w.format, data, w.record, w.index);
        }
        waiting.clear();
    }
}

pub fn process(ctx: &WorkerContext, mut batch: Batch) -> Processed {
    // Outputs are sized like this thread's last batch's: growing a vector of large items by
    // doubling copied each one about twice.
    thread_local!(static OUTPUTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
    let mut rejections = std::mem::take(&mut batch.rejections);
    // One snapshot per batch: a reload takes effect from the next batch.
    let mut eval = Evaluation {
        ctx,
        rules: match &ctx.live_rules {
            Some(live) => live.current(),
            None => ctx.rules.clone(),
        },
        revocations: ctx.revocations.current(),
        lens: Lens {
            enrichment: ctx.reputation.current(),
            proxies: ctx.proxies.clone(),
        },
        stats: BatchStats::default(),
        outputs: match ctx.spare_outputs.as_ref().and_then(|r| r.try_recv().ok()) {
            Some(spare) => spare,
            None => Vec::with_capacity(OUTPUTS.get()),
        },
        placements: Vec::new(),
        detected: Outputs {
            all_actors: ctx.all_actors,
            ..Outputs::with_follow_ups()
        },
        terms: TermsInBatch::default(),
        opening_looks: ctx.stages.contains(&Stage::ResponseComplete)
            && !ctx.stages.contains(&Stage::ResponseStarted),
    };
    let data = &batch.data[..];
    for chunk in batch.records.chunks(RUN) {
        // What the decoder unescapes (AKS and CloudWatch strings) lives as long as the events
        // that borrow it: one run's worth of records, so that it is still in cache.
        let arena = Arena::new();
        let mut waiting: Vec<Waiting> = Vec::with_capacity(RUN);
        for rec in chunk {
            eval.stats.records += 1;
            let bytes = &data[rec.start..rec.end];
            let cluster = match rec.cluster.and_then(|i| batch.clusters.get(i as usize)) {
                Some(c) => &**c,
                None => ctx.file_clusters[rec.file as usize].as_str(),
            };
            let mut index = 0u32;
            decode_record_with(
                bytes,
                &ctx.decode,
                cluster,
                &arena,
                &mut |decoded| match decoded {
                    Decoded::Owned(event, format) => {
                        waiting.push(Waiting {
                            event,
                            format,
                            record: rec,
                            index,
                        });
                        index += 1;
                        if waiting.len() == RUN {
                            eval.run(&mut waiting, data);
                        }
                    }
                    // Events that cannot wait (ACK's and GKE's, which borrow the decoder's own
                    // buffers) go after those that do.
                    Decoded::Item(Item::Event(ev, format)) => {
                        eval.run(&mut waiting, data);
                        eval.event(ev, format, data, rec, index);
                        index += 1;
                    }
                    Decoded::Item(Item::Skipped(what)) => {
                        *eval.stats.skipped.entry(what).or_default() += 1
                    }
                    Decoded::Item(Item::Rejected(e)) => rejections.push(Rejection {
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
                },
            );
        }
        eval.run(&mut waiting, data);
    }
    let Evaluation {
        rules,
        lens,
        stats,
        outputs,
        placements,
        ..
    } = eval;
    OUTPUTS.set(outputs.len());
    Processed {
        seq: batch.seq,
        rules,
        lens,
        batch,
        stats,
        outputs,
        placements,
        rejections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::LiveRevocations;

    fn event(id: &str, second: u32) -> String {
        format!(
            r#"{{"kind":"Event","auditID":"{id}","stage":"ResponseComplete","verb":"get","user":{{"username":"u"}},"objectRef":{{"resource":"pods"}},"stageTimestamp":"2025-01-01T00:00:{second:02}Z"}}"#
        )
    }

    /// Native events (and AKS ones, unescaped into the batch's arena) wait for their run while
    /// GKE's, mapped into the decoder's own buffers, cannot: the outputs must still follow the
    /// input.
    #[test]
    fn outputs_follow_the_input_across_waiting_and_immediate_events() {
        let dir = tempfile::tempdir().unwrap();
        let rule =
            "rules:\n  - {id: r, title: r, severity: low, condition: {verb: get}, summary: s}\n";
        std::fs::write(dir.path().join("r.yaml"), rule).unwrap();
        let rules = Arc::new(RuleSet::load(&[dir.path().to_path_buf()]).unwrap());
        let aks = |id: &str, s| {
            let log = serde_json::to_string(&event(id, s)).unwrap();
            format!(r#"{{"category":"kube-audit","properties":{{"log":{log}}}}}"#)
        };
        let gke = |id: &str, s: u32| {
            format!(
                r#"{{"protoPayload":{{"serviceName":"k8s.io","methodName":"io.k8s.core.v1.pods.get","resourceName":"core/v1/namespaces/prod/pods/web-1","authenticationInfo":{{"principalEmail":"u"}},"status":{{"code":0}}}},"insertId":"{id}","timestamp":"2025-01-01T00:00:{s:02}Z"}}"#
            )
        };
        // Native, AKS and EventList events wait; GKE's cannot.
        let kind = |s: u32| ["n", "a", "g"][s as usize % 3];
        let record = |s: u32| {
            let id = format!("{}{s}", kind(s));
            match kind(s) {
                "a" => aks(&id, s),
                "g" => gke(&id, s),
                _ => event(&id, s),
            }
        };
        let mut records = vec![record(0)];
        records.push(format!(
            r#"{{"kind":"EventList","items":[{},{}]}}"#,
            event("l1", 1),
            event("l2", 2)
        ));
        // More than a run, waiting or not, in every order.
        let last = 3 + RUN as u32 + 3;
        records.extend((3..last).map(record));
        let mut batch = Batch::default();
        for r in &records {
            let start = batch.data.len();
            batch.data.extend_from_slice(r.as_bytes());
            batch.records.push(RecordMeta {
                file: 0,
                line: batch.records.len() as u64 + 1,
                offset: start as u64,
                start,
                end: batch.data.len(),
                cluster: None,
                context: false,
            });
        }
        let ctx = WorkerContext {
            rules,
            live_rules: None,
            revocations: LiveRevocations::fixed(RevocationList::default()),
            reputation: crate::reputation::LiveReputation::fixed(Default::default()),
            proxies: Arc::from(Vec::new()),
            decode: DecodeOptions::default(),
            files: vec![Arc::from("f")].into(),
            file_clusters: vec!["c".to_owned()].into(),
            stages: vec![Stage::ResponseComplete],
            from: None,
            to: None,
            keep_raw: false,
            all_actors: false,
            watched: None,
            spare_outputs: None,
        };
        let done = process(&ctx, batch);
        let ids: Vec<String> = done
            .outputs
            .iter()
            .map(|o| match o {
                Output::Alert(a) => a.evidence.audit_ids.join(","),
                _ => String::new(),
            })
            .collect();
        let mut want = vec!["n0".to_owned(), "l1".into(), "l2".into()];
        want.extend((3..last).map(|s| format!("{}{s}", kind(s))));
        assert_eq!(ids, want);
        // One placement per record, at its first event's output.
        let at: Vec<u32> = done.placements.iter().map(|p| p.0).collect();
        let mut want_at = vec![0, 1];
        want_at.extend(3..last);
        assert_eq!(at, want_at);
        assert!(done.rejections.is_empty());
    }
}
