//! The event behind an observation. Most observations never fire, so the alert is not built up
//! front: the event's JSON is found again (and decoded again) only when one does, or when a
//! follow-up finds state waiting for it.

use crate::alert::Alert;
use crate::event::{AuditEvent, EventView, Lens};
use crate::rules::template::Values;
use crate::rules::Rule;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Seed {
    /// The event's JSON lies in the batch it was read from, which the collector holds while it
    /// applies that batch's observations: no copy at all.
    InBatch {
        start: u32,
        len: u32,
        cluster: Arc<str>,
        /// The envelope's provider (an AKS record holding the event as an object).
        provider: Option<&'static str>,
    },
    /// The record the event came from (an envelope, a mapped provider format, a batch of
    /// events), decoded again if needed: the `index`-th event it yields.
    Record {
        start: u32,
        len: u32,
        index: u32,
        cluster: Arc<str>,
    },
    /// The event's JSON when it does not lie in the batch as is (unescaped from an envelope
    /// string, mapped from GKE or ACK, rule tests): made once per event, shared by its
    /// observations.
    Event { json: Arc<str>, cluster: Arc<str> },
}

impl Seed {
    /// The alert `rule` raises on this event, its summary filled with `values`; `batch` is the
    /// data of the batch it came from.
    pub fn alert(
        &self,
        lens: &Lens,
        rule: &Rule,
        time: i64,
        batch: &[u8],
        values: Values,
    ) -> Alert {
        self.with_view(lens, time, batch, |view| {
            super::alert_for(rule, view, values)
        })
    }

    /// Calls `f` with the event decoded again (an empty one if it no longer decodes), seen
    /// through `lens` as the worker saw it.
    pub fn with_view<R>(
        &self,
        lens: &Lens,
        time: i64,
        batch: &[u8],
        mut f: impl FnMut(&EventView) -> R,
    ) -> R {
        let mut view = |ev: &AuditEvent| {
            let acting = lens.acting_for(ev);
            let ev = acting.as_ref().unwrap_or(ev);
            f(&EventView::new(ev, time).enriched(&lens.enrichment))
        };
        let slice = |start: &u32, len: &u32| {
            let start = *start as usize;
            batch.get(start..start + *len as usize).unwrap_or_default()
        };
        let (json, cluster, provider) = match self {
            Seed::Event { json, cluster } => (&**json, cluster, None),
            Seed::InBatch {
                start,
                len,
                cluster,
                provider,
            } => (
                std::str::from_utf8(slice(start, len)).unwrap_or_default(),
                cluster,
                *provider,
            ),
            Seed::Record {
                start,
                len,
                index,
                cluster,
            } => {
                let (mut n, mut answer) = (0, None);
                let opts = crate::event::DecodeOptions::default();
                crate::event::decode_record(slice(start, len), &opts, cluster, &mut |item| {
                    if let crate::event::Item::Event(ev, _) = item {
                        if n == *index {
                            answer = Some(view(ev));
                        }
                        n += 1;
                    }
                });
                return answer.unwrap_or_else(|| view(&Default::default()));
            }
        };
        let mut ev: AuditEvent = serde_json::from_str(json).unwrap_or_default();
        ev.cluster = Some(crate::event::JStr::borrowed(cluster));
        ev.provider = provider;
        view(&ev)
    }
}

/// Where an event was read from, so that an observation can find it again without a copy.
#[derive(Default, Clone, Copy)]
pub struct Origin<'b> {
    /// The batch's data; empty when the event did not come from a batch (rule tests).
    pub batch: &'b [u8],
    /// The record's byte range in the batch, and which of its events this is.
    pub record_start: usize,
    pub record_len: usize,
    pub index: u32,
    /// A context copy (`audithound route`): an event another identity's partition also
    /// needs, a binding change or a service account's deletion. Only the state it changes for
    /// identities other than its actor is kept; the actor's own partition has the original.
    pub context: bool,
    /// The event's seed, when it is being decoded again from one (a follow-up that found
    /// state waiting): its observations keep it.
    pub seed: Option<&'b Seed>,
}

/// Builds an event's observations' seeds, sharing one cluster string (and, for events not read
/// from a batch, one JSON text) across them.
pub(super) struct Seeder<'b> {
    origin: Origin<'b>,
    cluster: Option<Arc<str>>,
    json: Option<Arc<str>>,
}

impl<'b> Seeder<'b> {
    pub(super) fn new(origin: Origin<'b>) -> Self {
        Seeder {
            origin,
            cluster: None,
            json: None,
        }
    }

    pub(super) fn seed(&mut self, view: &EventView, cluster: &str) -> Seed {
        if let Some(seed) = self.origin.seed {
            return seed.clone();
        }
        let cluster = self
            .cluster
            .get_or_insert_with(|| shared_cluster(cluster))
            .clone();
        let batch = self.origin.batch;
        // The event's own JSON inside the batch: decoded again directly.
        if let Some(json) = view.event.source {
            let base = batch.as_ptr() as usize;
            let at = json.as_ptr() as usize;
            let inside = at >= base && at + json.len() <= base + batch.len();
            if let (true, Ok(start), Ok(len)) = (
                inside,
                u32::try_from(at.wrapping_sub(base)),
                u32::try_from(json.len()),
            ) {
                return Seed::InBatch {
                    start,
                    len,
                    cluster,
                    provider: view.event.provider,
                };
            }
        }
        // Otherwise the record it came from, if there is one.
        let o = self.origin;
        if o.record_start + o.record_len <= batch.len() && o.record_len > 0 {
            if let (Ok(start), Ok(len)) =
                (u32::try_from(o.record_start), u32::try_from(o.record_len))
            {
                return Seed::Record {
                    start,
                    len,
                    index: o.index,
                    cluster,
                };
            }
        }
        let json = self
            .json
            .get_or_insert_with(|| match view.event.source {
                Some(text) => Arc::from(text),
                None => serde_json::to_string(view.event).unwrap_or_default().into(),
            })
            .clone();
        Seed::Event { json, cluster }
    }
}

/// The cluster's name as a shared string, made again only when it changes: a worker's events
/// nearly always share one, and an allocation per event was a tenth of the detectors' cost.
fn shared_cluster(name: &str) -> Arc<str> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some(shared) if **shared == *name => shared.clone(),
        _ => last.insert(Arc::from(name)).clone(),
    })
}
