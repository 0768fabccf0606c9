//! The report's charts, drawn by plotters' SVG backend into strings that the page embeds
//! inline. plotters escapes every text it writes, so names from the input are safe here.

use crate::alert::{Alert, Incident};
use crate::event::time::{format_micros, parse_rfc3339_micros};
use crate::rules::Severity;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::{BTreeMap, HashMap};

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Series drawn in one chart at most; the rest are summed as "other".
const MAX_SERIES: usize = 8;
/// Identities drawn per incident chart; the rest are summed as "others".
const MAX_IDENTITIES: usize = 4;
/// Alert markers drawn per incident chart.
const MAX_MARKERS: usize = 300;
/// Bars of a top-actors chart.
pub const MAX_ACTORS: usize = 10;

/// Categorical colours (Tableau 10), distinguishable side by side.
/// Reds and orange come last: they are the severities' colours of alert markers.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(44, 160, 44),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 70, 110),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
];
const GREY: RGBColor = RGBColor(160, 160, 160);
/// Background of a span the chart has no data for.
const SHADE: RGBColor = RGBColor(236, 236, 236);

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Mark {
    Line(RGBColor),
    Box(RGBColor),
    Triangle(RGBColor),
}

/// A legend in its own area beside the plot, one entry a line from `top`.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(String, Mark)],
    top: i32,
) -> DrawResult {
    for (n, (label, mark)) in entries.iter().enumerate() {
        let y = top + n as i32 * 20;
        match *mark {
            Mark::Line(c) => {
                area.draw(&PathElement::new(vec![(6, y), (22, y)], c.stroke_width(2)))?
            }
            Mark::Box(c) => area.draw(&Rectangle::new([(8, y - 6), (20, y + 6)], c.filled()))?,
            Mark::Triangle(c) => area.draw(&TriangleMarker::new((14, y), 6, c.filled()))?,
        }
        area.draw(&Text::new(
            label.as_str(),
            (28, y - 7),
            ("sans-serif", 12).into_font(),
        ))?;
    }
    Ok(())
}

/// The colour of series `n` of `shown` named ones (the rest, summed, in grey).
fn series_colour(n: usize, shown: usize) -> RGBColor {
    if n < shown {
        colour(n)
    } else {
        GREY
    }
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The colour of a severity, the same as its badge in the page's CSS.
fn severity_colour(s: Severity) -> RGBColor {
    match s {
        Severity::Critical => RGBColor(123, 0, 40),
        Severity::High => RGBColor(214, 39, 40),
        Severity::Medium => RGBColor(255, 127, 14),
        Severity::Low => RGBColor(0, 128, 128),
        Severity::Info => RGBColor(127, 127, 127),
    }
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Draws into a `w`×`h` SVG and returns its text, or why it could not be drawn.
fn svg<F>(w: u32, h: u32, draw: F) -> Result<String, String>
where
    F: for<'b> FnOnce(&DrawingArea<SVGBackend<'b>, Shift>) -> DrawResult,
{
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A time axis in hours (spans over two hours) or minutes, from a round origin, so that
/// plotters' 1-2-5 ticks land on readable clock times.
#[derive(Clone, Copy)]
struct TimeAxis {
    origin: i64,
    unit: i64,
    with_date: bool,
}

impl TimeAxis {
    fn new(first: i64, last: i64) -> TimeAxis {
        let (unit, round) = if last - first > 2 * HOUR {
            (HOUR, DAY)
        } else {
            (MINUTE, HOUR)
        };
        TimeAxis {
            origin: first - first.rem_euclid(round),
            unit,
            with_date: first.div_euclid(DAY) != last.div_euclid(DAY),
        }
    }

    fn x(&self, t: i64) -> f64 {
        (t - self.origin) as f64 / self.unit as f64
    }

    fn label(&self, x: f64) -> String {
        let t = self.origin + (x * self.unit as f64).round() as i64;
        let text = format_micros(t);
        let clock = if self.unit == MINUTE && x.fract().abs() > 1e-9 {
            text.get(11..19)
        } else {
            text.get(11..16)
        };
        match (self.with_date, clock) {
            (true, Some(c)) => format!("{} {c}", text.get(5..10).unwrap_or("")),
            (false, Some(c)) => c.to_owned(),
            _ => text,
        }
    }

    fn description(&self) -> &'static str {
        "event time (UTC)"
    }
}

/// A bucket width (microseconds) from a round set that cuts `span` into at most `target`.
pub fn bucket_width(span: i64, target: i64) -> i64 {
    const ROUND: [i64; 15] = [
        10 * SECOND,
        30 * SECOND,
        MINUTE,
        2 * MINUTE,
        5 * MINUTE,
        10 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        HOUR,
        2 * HOUR,
        3 * HOUR,
        6 * HOUR,
        12 * HOUR,
        DAY,
        7 * DAY,
    ];
    let target = target.max(1);
    ROUND
        .into_iter()
        .find(|w| span / w < target)
        .unwrap_or_else(|| (span / target / DAY + 1) * DAY)
}

fn human_width(w: i64) -> String {
    match w {
        w if w % DAY == 0 => format!("{} d", w / DAY),
        w if w % HOUR == 0 => format!("{} h", w / HOUR),
        w if w % MINUTE == 0 => format!("{} min", w / MINUTE),
        w => format!("{} s", w / SECOND),
    }
}

/// Shortens a label to `max` characters.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Requests per minute of each identity during one incident, from its timeline (a folded line
/// spreads its count evenly between its first and last time), with its alerts as markers.
pub struct Rate {
    pub caption: String,
    pub svg: Result<String, String>,
}

pub fn incident_rate(i: &Incident) -> Option<Rate> {
    let steps = &i.timeline.steps;
    if steps.is_empty() {
        return None;
    }
    let end_of = |s: &crate::alert::incident::Step| {
        s.last_time
            .as_deref()
            .and_then(parse_rfc3339_micros)
            .unwrap_or(s.micros)
            .max(s.micros)
    };
    let steps_first = steps
        .iter()
        .map(|s| s.micros)
        .min()
        .unwrap_or(i.first_micros);
    let steps_last = steps.iter().map(end_of).max().unwrap_or(i.last_micros);
    let alerts: Vec<(i64, Severity)> = i
        .alerts
        .iter()
        .filter_map(|a| Some((parse_rfc3339_micros(&a.time)?, a.severity)))
        .take(MAX_MARKERS)
        .collect();
    let first = steps_first
        .min(i.first_micros)
        .min(alerts.iter().map(|a| a.0).min().unwrap_or(i64::MAX));
    let last = steps_last
        .max(i.last_micros)
        .max(alerts.iter().map(|a| a.0).max().unwrap_or(i64::MIN));
    let width = bucket_width(last - first, 180);
    let start = first - first.rem_euclid(width);
    let buckets = ((last - start) / width + 1) as usize;
    let per_minute = MINUTE as f64 / width as f64;

    // Identities by requests; beyond the cap they are summed.
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for s in steps {
        *by_name.entry(s.username.as_str()).or_default() += s.count;
    }
    let mut names: Vec<(&str, u64)> = by_name.into_iter().collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<&str> = names.iter().take(MAX_IDENTITIES).map(|n| n.0).collect();
    let others = names.len() > shown.len();
    let series_of = |name: &str| shown.iter().position(|n| *n == name).unwrap_or(shown.len());
    let mut counts = vec![vec![0f64; buckets]; shown.len() + usize::from(others)];
    let last_row = counts.len() - 1;
    for s in steps {
        let row = &mut counts[series_of(&s.username).min(last_row)];
        let (a, b) = (s.micros, end_of(s));
        if b <= a {
            let k = ((a - start) / width) as usize;
            if let Some(c) = row.get_mut(k) {
                *c += s.count as f64;
            }
            continue;
        }
        let (ka, kb) = (
            ((a - start) / width) as usize,
            ((b - start) / width) as usize,
        );
        for (k, c) in row.iter_mut().enumerate().take(kb + 1).skip(ka) {
            let lo = a.max(start + k as i64 * width);
            let hi = b.min(start + (k as i64 + 1) * width);
            *c += s.count as f64 * (hi - lo).max(0) as f64 / (b - a) as f64;
        }
    }
    // Where the recorded lines end: a capped timeline is not drawn past it.
    let capped = (steps.len() as u64) < i.timeline.total
        && steps.iter().map(|s| s.count).sum::<u64>() < i.timeline.total;
    let drawn = if capped {
        ((steps_last - start) / width) as usize + 1
    } else {
        buckets
    };
    let rate = |row: &Vec<f64>, k: usize| row.get(k).copied().unwrap_or(0.0) * per_minute;
    let top = |k: usize| counts.iter().map(|r| rate(r, k)).fold(0.0, f64::max);
    let ymax = (0..drawn).map(top).fold(1.0, f64::max) * 1.2;
    let axis = TimeAxis::new(start, start + buckets as i64 * width);
    let labels: Vec<String> = shown
        .iter()
        .map(|n| short(if n.is_empty() { "(no user)" } else { n }, 27))
        .chain(others.then(|| "others".to_owned()))
        .collect();

    let mut by_severity: BTreeMap<Severity, Vec<(f64, f64)>> = BTreeMap::new();
    for &(t, sev) in &alerts {
        let k = ((t - start) / width) as usize;
        by_severity
            .entry(sev)
            .or_default()
            .push((axis.x(start + k as i64 * width + width / 2), top(k)));
    }
    let mut legend: Vec<(String, Mark)> = labels
        .iter()
        .enumerate()
        .map(|(n, l)| (l.clone(), Mark::Line(series_colour(n, shown.len()))))
        .collect();
    legend.extend(by_severity.iter().rev().map(|(sev, points)| {
        (
            format!("{} alert ({})", sev.name(), points.len()),
            Mark::Triangle(severity_colour(*sev)),
        )
    }));
    if capped {
        legend.push(("not kept (timeline cap)".to_owned(), Mark::Box(SHADE)));
    }

    let title = short(&i.title, 80);
    let svg = svg(620, 260, |root| {
        let (plot, key) = root.split_horizontally(430);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&title, ("sans-serif", 13))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(
                axis.x(start)..axis.x(start + buckets as i64 * width),
                0f64..ymax,
            )?;
        chart
            .configure_mesh()
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&|x| axis.label(*x))
            .y_desc("requests/min")
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 11))
            .draw()?;
        if capped {
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (axis.x(start + drawn as i64 * width), 0.0),
                    (axis.x(start + buckets as i64 * width), ymax),
                ],
                SHADE.filled(),
            )))?;
        }
        for (n, row) in counts.iter().enumerate() {
            let points =
                (0..drawn).map(|k| (axis.x(start + k as i64 * width + width / 2), rate(row, k)));
            chart.draw_series(LineSeries::new(
                points,
                series_colour(n, shown.len()).stroke_width(2),
            ))?;
        }
        for (sev, points) in by_severity.iter().rev() {
            let c = severity_colour(*sev);
            chart.draw_series(
                points
                    .iter()
                    .map(move |p| TriangleMarker::new(*p, 6, c.filled())),
            )?;
        }
        draw_legend(&key, &legend, 30)
    });
    let mut caption = if capped {
        format!(
            "{} requests; the timeline kept its first {} lines, so the lines stop at {}",
            i.timeline.total,
            steps.len(),
            format_micros(steps_last)
        )
    } else {
        format!(
            "{} requests in {} timeline lines",
            i.timeline.total,
            steps.len()
        )
    };
    caption.push_str(&format!(
        "; buckets of {}, shown as requests per minute; ▲ alerts",
        human_width(width)
    ));
    Some(Rate { caption, svg })
}

/// Alerts raised per time bucket, stacked by rule (the most frequent rules, the rest as
/// "other"). Returns the chart and a caption.
pub fn alerts_by_rule(alerts: &[Alert]) -> (String, Result<String, String>) {
    if alerts.is_empty() {
        return ("no alerts".to_owned(), Err("no alerts to chart".to_owned()));
    }
    let first = alerts.iter().map(|a| a.time_micros).min().unwrap_or(0);
    let last = alerts.iter().map(|a| a.time_micros).max().unwrap_or(0);
    let width = bucket_width(last - first, 48);
    let start = first - first.rem_euclid(width);
    let buckets = ((last - start) / width + 1) as usize;

    let mut by_rule: HashMap<&str, u64> = HashMap::new();
    for a in alerts {
        *by_rule.entry(a.rule.id.as_str()).or_default() += 1;
    }
    let mut rules: Vec<(&str, u64)> = by_rule.into_iter().collect();
    rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<&str> = rules.iter().take(MAX_SERIES).map(|r| r.0).collect();
    let other = rules.len() > shown.len();
    let mut counts = vec![vec![0u64; buckets]; shown.len() + usize::from(other)];
    for a in alerts {
        let row = shown
            .iter()
            .position(|r| *r == a.rule.id)
            .unwrap_or(shown.len());
        let k = ((a.time_micros - start) / width) as usize;
        if let Some(c) = counts.get_mut(row).and_then(|r| r.get_mut(k)) {
            *c += 1;
        }
    }
    let ymax = (0..buckets)
        .map(|k| counts.iter().map(|r| r[k]).sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let axis = TimeAxis::new(start, start + buckets as i64 * width);
    let mut labels: Vec<String> = rules
        .iter()
        .take(MAX_SERIES)
        .map(|(r, n)| format!("{} ({n})", short(r, 44)))
        .collect();
    if other {
        let rest: u64 = rules.iter().skip(MAX_SERIES).map(|r| r.1).sum();
        labels.push(format!("{} other rules ({rest})", rules.len() - MAX_SERIES));
    }
    let svg = svg(1200, 340, |root| {
        let (plot, legend) = root.split_horizontally(860);
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(
                axis.x(start)..axis.x(start + buckets as i64 * width),
                0f64..(ymax as f64 * 1.1).ceil(),
            )?;
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(6)
            .x_label_formatter(&|x| axis.label(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc(axis.description())
            .y_desc(format!("alerts per {}", human_width(width)))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 11))
            .draw()?;
        let mut base = vec![0u64; buckets];
        for (n, row) in counts.iter().enumerate() {
            let c = series_colour(n, shown.len());
            let bars: Vec<Rectangle<(f64, f64)>> = row
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| {
                    let x0 = axis.x(start + k as i64 * width);
                    let x1 = axis.x(start + (k as i64 + 1) * width);
                    let pad = (x1 - x0) * 0.08;
                    let y0 = base[k] as f64;
                    Rectangle::new([(x0 + pad, y0), (x1 - pad, y0 + *v as f64)], c.filled())
                })
                .collect();
            for (b, v) in base.iter_mut().zip(row) {
                *b += v;
            }
            chart.draw_series(bars)?;
        }
        let entries: Vec<(String, Mark)> = labels
            .iter()
            .enumerate()
            .map(|(n, l)| (l.clone(), Mark::Box(series_colour(n, shown.len()))))
            .collect();
        draw_legend(&legend, &entries, 20)
    });
    let caption = format!(
        "{} alerts from {} to {}, in buckets of {}, stacked by rule",
        alerts.len(),
        format_micros(first),
        format_micros(last),
        human_width(width)
    );
    (caption, svg)
}

/// Horizontal bars: the largest counts with their names.
pub fn top_bars(title: &str, rows: &[(String, u64)]) -> Result<String, String> {
    let rows: Vec<(String, u64)> = rows
        .iter()
        .take(MAX_ACTORS)
        .map(|(n, v)| (short(n, 42), *v))
        .collect();
    if rows.is_empty() {
        return Err(format!("{title}: nothing to chart"));
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let label_width = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(10)
        .clamp(10, 42) as u32
        * 6
        + 12;
    let n = rows.len();
    // The largest at the top: row 0 is drawn in the highest slot (and back: the axis asks for
    // slots up to `n`, which hold no row).
    let row = |k: usize| n.checked_sub(k + 1);
    svg(600, 60 + 26 * n as u32, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(26)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0f64..max as f64 * 1.15, (0..n).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(5)
            .y_labels(n)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) => row(*k)
                    .and_then(|r| rows.get(r))
                    .map(|r| r.0.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 11))
            .draw()?;
        chart.draw_series(rows.iter().enumerate().map(|(r, (_, v))| {
            let k = n - 1 - r;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(k)),
                    (*v as f64, SegmentValue::Exact(k + 1)),
                ],
                colour(0).filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))?;
        chart.draw_series(rows.iter().enumerate().map(|(r, (_, v))| {
            let k = n - 1 - r;
            Text::new(
                v.to_string(),
                (*v as f64 + max as f64 * 0.01, SegmentValue::CenterOf(k)),
                TextStyle::from(("sans-serif", 11).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_round_and_few() {
        assert_eq!(bucket_width(30 * MINUTE, 180), 30 * SECOND);
        assert_eq!(bucket_width(70 * SECOND, 180), 10 * SECOND);
        assert_eq!(bucket_width(22 * HOUR, 180), 10 * MINUTE);
        assert_eq!(bucket_width(DAY, 48), HOUR);
        assert!(bucket_width(400 * DAY, 48) >= 7 * DAY);
        assert!(400 * DAY / bucket_width(400 * DAY, 48) <= 48);
    }

    #[test]
    fn time_labels_are_clock_times() {
        let t = parse_rfc3339_micros("2025-03-04T09:00:00Z").unwrap_or(0);
        let axis = TimeAxis::new(t, t + 6 * HOUR);
        assert_eq!(axis.label(axis.x(t + 90 * MINUTE)), "10:30");
        let axis = TimeAxis::new(t, t + 2 * DAY);
        assert_eq!(axis.label(axis.x(t)), "03-04 09:00");
    }

    #[test]
    fn bars_escape_names() {
        let svg = top_bars("t", &[("<b>&x".to_owned(), 3)]).unwrap_or_default();
        assert!(svg.contains("&lt;b&gt;&amp;x"), "{svg}");
        assert!(!svg.contains("<b>"));
    }
}
