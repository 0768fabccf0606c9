//! `audithound eval DIR`: scores the detectors against a labelled scenario suite. Every log file
//! in DIR is replayed on its own (fresh state, as if it were the only stream) and its alerts are
//! compared with `DIR/expected.labels`, JSON lines of `{"file", "rule", "audit_id"}`:
//!
//! - an expected label is found when an alert of that rule from that file carries the audit ID
//!   among its evidence (an episode's later reports are the same alert);
//! - an alert no label accounts for is a false positive.
//!
//! Results are per rule and per detector family (a rule's `revoked`, `escalation` or
//! `secret-access` tag), with precision and recall. Two more scores:
//!
//! - episodes (`DIR/episodes.labels`, `{"file", "rule", "audit_ids"}`): the share of an
//!   attack's requests the rule's final report cites;
//! - incidents (labels with `"incident"`): precision and recall over pairs of labelled alerts,
//!   a pair being right when both sit in one incident exactly when their labels say so.

pub mod rule_tests;

use crate::alert::Alert;
use crate::engine::{self, EngineOptions, Files};
use crate::rules::RuleSet;
use crate::sink::Collect;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
struct Label {
    file: String,
    rule: String,
    audit_id: String,
    /// The incident the alert belongs to (an attack's alerts share one).
    #[serde(default)]
    incident: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EpisodeLabel {
    file: String,
    rule: String,
    audit_ids: Vec<String>,
}

/// How much of an attack that goes on an alert's final report cites.
#[derive(Debug, Serialize, Clone)]
pub struct EpisodeScore {
    pub file: String,
    pub rule: String,
    pub expected: u64,
    pub cited: u64,
}

impl EpisodeScore {
    pub fn coverage(&self) -> f64 {
        ratio(self.cited, self.expected)
    }
}

/// Pairs of labelled alerts grouped together (or not) into incidents.
#[derive(Debug, Default, Serialize, Clone)]
pub struct PairScore {
    /// Pairs labelled as one incident, pairs grouped as one, and pairs both.
    pub labelled: u64,
    pub grouped: u64,
    pub both: u64,
}

impl PairScore {
    pub fn precision(&self) -> f64 {
        ratio(self.both, self.grouped)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.both, self.labelled)
    }
}

/// Counts for one rule or family.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Score {
    /// Labels, and how many of them an alert matched.
    pub expected: u64,
    pub found: u64,
    /// Alerts that match at least one label, and alerts that match none.
    pub true_alerts: u64,
    pub false_positives: u64,
}

impl Score {
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.expected)
    }
    /// Alerts that match a label over all alerts.
    pub fn precision(&self) -> f64 {
        ratio(self.true_alerts, self.true_alerts + self.false_positives)
    }
    fn add(&mut self, o: &Score) {
        self.expected += o.expected;
        self.found += o.found;
        self.true_alerts += o.true_alerts;
        self.false_positives += o.false_positives;
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// One file's outcome.
#[derive(Debug, Serialize)]
pub struct FileResult {
    pub file: String,
    pub events: u64,
    pub alerts: u64,
    /// `rule audit_id` of labels no alert matched.
    pub missed: Vec<String>,
    /// `rule audit_id` of alerts no label accounts for.
    pub unexpected: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub files: Vec<FileResult>,
    pub rules: BTreeMap<String, Score>,
    pub families: BTreeMap<String, Score>,
    pub total: Score,
    pub episodes: Vec<EpisodeScore>,
    pub incidents: PairScore,
}

impl Report {
    /// Every label found, no false positive, every episode cited in full and every labelled
    /// pair grouped as labelled.
    pub fn clean(&self) -> bool {
        self.total.found == self.total.expected
            && self.total.false_positives == 0
            && self.episodes.iter().all(|e| e.cited == e.expected)
            && self.incidents.both == self.incidents.labelled
            && self.incidents.both == self.incidents.grouped
    }
}

/// Replays each log file of `dir` alone and scores it against `dir/expected.labels`.
pub fn run(
    dir: &Path,
    rules: Arc<RuleSet>,
    opts: &EngineOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Report> {
    let labels_path = dir.join("expected.labels");
    let text = std::fs::read_to_string(&labels_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", labels_path.display()))?;
    let mut labels: HashMap<String, Vec<Label>> = HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let label: Label = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", labels_path.display(), i + 1))?;
        labels.entry(label.file.clone()).or_default().push(label);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_log(p))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{}: no log files (.log, .gz, .zst, .json)", dir.display());
    }
    for name in labels.keys() {
        if !files.iter().any(|f| file_name(f) == *name) {
            anyhow::bail!(
                "{}: labels name {name:?}, which is not in {}",
                labels_path.display(),
                dir.display()
            );
        }
    }
    let family_of: HashMap<&str, &'static str> = rules
        .rules
        .iter()
        .chain(&rules.disabled)
        .map(|r| (r.id.as_str(), r.family()))
        .collect();
    let mut episode_labels: HashMap<String, Vec<EpisodeLabel>> = HashMap::new();
    let episodes_path = dir.join("episodes.labels");
    if let Ok(text) = std::fs::read_to_string(&episodes_path) {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let label: EpisodeLabel = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", episodes_path.display(), i + 1))?;
            episode_labels
                .entry(label.file.clone())
                .or_default()
                .push(label);
        }
    }
    let mut report = Report {
        files: Vec::new(),
        rules: BTreeMap::new(),
        families: BTreeMap::new(),
        total: Score::default(),
        episodes: Vec::new(),
        incidents: PairScore::default(),
    };
    for path in files {
        let name = file_name(&path);
        progress(&name);
        let input = Files::new(vec![path.to_string_lossy().into_owned()]);
        let mut sink = Collect::default();
        let stats = engine::replay(opts, &input, rules.clone(), &mut sink, None)?;
        let file_labels = labels.remove(&name).unwrap_or_default();
        let alerts = latest_reports(sink.0);
        for label in episode_labels.remove(&name).unwrap_or_default() {
            report.episodes.push(score_episode(&label, &alerts));
        }
        score_incidents(&alerts, &sink.1, &file_labels, &mut report.incidents);
        let result = score_file(&name, &alerts, &file_labels, &mut report.rules);
        report.files.push(FileResult {
            events: stats.events,
            ..result
        });
    }
    for (rule, score) in &report.rules {
        let family = family_of.get(rule.as_str()).copied().unwrap_or("other");
        report
            .families
            .entry(family.to_owned())
            .or_default()
            .add(score);
        report.total.add(score);
    }
    Ok(report)
}

/// One alert per id, its latest report: an episode's updates are the same finding.
pub fn latest_reports(alerts: Vec<Alert>) -> Vec<Alert> {
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Alert> = Vec::new();
    for alert in alerts {
        match at.get(&alert.id) {
            Some(&i) => out[i] = alert,
            None => {
                at.insert(alert.id.clone(), out.len());
                out.push(alert);
            }
        }
    }
    out
}

/// The share of `label`'s requests its rule's final report cites.
fn score_episode(label: &EpisodeLabel, alerts: &[Alert]) -> EpisodeScore {
    let mut cited: BTreeSet<&str> = BTreeSet::new();
    for a in alerts.iter().filter(|a| a.rule.id == label.rule) {
        cited.extend(a.evidence.audit_ids.iter().map(String::as_str));
        if let Some(e) = &a.episode {
            cited.extend(e.audit_ids.items.iter().map(String::as_str));
        }
    }
    EpisodeScore {
        file: label.file.clone(),
        rule: label.rule.clone(),
        expected: label.audit_ids.len() as u64,
        cited: label
            .audit_ids
            .iter()
            .filter(|id| cited.contains(id.as_str()))
            .count() as u64,
    }
}

/// Adds one file's pairs of labelled alerts to `score`: labelled as one incident, grouped into
/// one (by the incidents' final reports), or both.
fn score_incidents(
    alerts: &[Alert],
    incidents: &[crate::alert::Incident],
    labels: &[Label],
    score: &mut PairScore,
) {
    let mut incident_of: HashMap<&str, &str> = HashMap::new();
    for i in incidents {
        for a in &i.alerts {
            incident_of.insert(a.id.as_str(), i.id.as_str());
        }
    }
    // Each labelled alert once: (its label's incident, the incident it was grouped into).
    let mut seen = BTreeSet::new();
    let mut items: Vec<(Option<&str>, Option<&str>)> = Vec::new();
    for l in labels {
        let Some(a) = alerts
            .iter()
            .find(|a| a.rule.id == l.rule && a.evidence.audit_ids.contains(&l.audit_id))
        else {
            continue;
        };
        if seen.insert(a.id.as_str()) {
            items.push((
                l.incident.as_deref(),
                incident_of.get(a.id.as_str()).copied(),
            ));
        }
    }
    for (i, a) in items.iter().enumerate() {
        for b in &items[i + 1..] {
            let labelled = a.0.is_some() && a.0 == b.0;
            let grouped = a.1.is_some() && a.1 == b.1;
            score.labelled += u64::from(labelled);
            score.grouped += u64::from(grouped);
            score.both += u64::from(labelled && grouped);
        }
    }
}

fn score_file(
    name: &str,
    alerts: &[Alert],
    labels: &[Label],
    rules: &mut BTreeMap<String, Score>,
) -> FileResult {
    let mut matched_alerts = BTreeSet::new();
    let mut missed = Vec::new();
    for l in labels {
        let score = rules.entry(l.rule.clone()).or_default();
        score.expected += 1;
        let hit = alerts
            .iter()
            .position(|a| a.rule.id == l.rule && a.evidence.audit_ids.contains(&l.audit_id));
        match hit {
            Some(i) => {
                score.found += 1;
                matched_alerts.insert(i);
            }
            None => missed.push(format!("{} {}", l.rule, l.audit_id)),
        }
    }
    let mut unexpected = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        let score = rules.entry(a.rule.id.clone()).or_default();
        if matched_alerts.contains(&i) {
            score.true_alerts += 1;
        } else {
            score.false_positives += 1;
            let id = a.evidence.audit_ids.last().map_or("", String::as_str);
            unexpected.push(format!("{} {id}", a.rule.id));
        }
    }
    FileResult {
        file: name.to_owned(),
        events: 0,
        alerts: alerts.len() as u64,
        missed,
        unexpected,
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_log(p: &Path) -> bool {
    let name = file_name(p);
    p.is_file()
        && !name.ends_with(".labels")
        && [".log", ".gz", ".zst", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

impl Report {
    /// The table `eval` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let row = |s: &mut String, name: &str, sc: &Score| {
            s.push_str(&format!(
                "  {name:<48} {:>8} {:>6} {:>6} {:>9.3} {:>7.3}\n",
                sc.expected,
                sc.found,
                sc.false_positives,
                sc.precision(),
                sc.recall()
            ));
        };
        let header = format!(
            "  {:<48} {:>8} {:>6} {:>6} {:>9} {:>7}\n",
            "", "expected", "found", "FP", "precision", "recall"
        );
        s.push_str("Per detector\n");
        s.push_str(&header);
        for (f, sc) in &self.families {
            row(&mut s, f, sc);
        }
        row(&mut s, "all", &self.total);
        s.push_str("\nPer rule\n");
        s.push_str(&header);
        for (r, sc) in &self.rules {
            row(&mut s, r, sc);
        }
        s.push_str("\nEpisodes (share of the attack's requests the final report cites)\n");
        for e in &self.episodes {
            s.push_str(&format!(
                "  {:<48} {:<32} {:>4}/{:<4} {:>6.3}\n",
                e.file,
                e.rule,
                e.cited,
                e.expected,
                e.coverage()
            ));
        }
        let i = &self.incidents;
        s.push_str(&format!(
            "\nIncidents (pairs of labelled alerts): {} labelled together, {} grouped together, {} both; precision {:.3}, recall {:.3}\n",
            i.labelled,
            i.grouped,
            i.both,
            i.precision(),
            i.recall()
        ));
        s.push_str("\nConfusion by file (events, alerts, missed, unexpected)\n");
        for f in &self.files {
            s.push_str(&format!(
                "  {:<48} {:>7} {:>4} {:>3} {:>3}\n",
                f.file,
                f.events,
                f.alerts,
                f.missed.len(),
                f.unexpected.len()
            ));
            for m in &f.missed {
                s.push_str(&format!("      missed      {m}\n"));
            }
            for u in &f.unexpected {
                s.push_str(&format!("      unexpected  {u}\n"));
            }
        }
        s
    }
}
