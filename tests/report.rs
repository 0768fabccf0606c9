//! The HTML report in a real browser: `replay samples/ --report` rendered by headless Chromium
//! (Debian's `chromium`, which `scripts/test` installs), its DOM checked for the incidents and
//! charts, its console for errors, and a screenshot taken.

mod common;

use common::{replay_with_summary, root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    assert!(
        path.exists(),
        "{CHROMIUM} is missing: the report is tested in a real browser; run scripts/test, which \
         installs Debian's chromium package"
    );
    path
}

/// Headless Chromium on `page` with `args`, stopped after two minutes whatever happens.
fn run_chromium(profile: &Path, page: &Path, args: &[&str]) -> Output {
    let profile = format!("--user-data-dir={}", profile.display());
    let url = format!("file://{}", page.display());
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            &profile,
        ])
        .args(args)
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the page itself printed to the console: Chromium logs it as `…:CONSOLE:…] "text",
/// source: URL (line)`. The page has no script, so any message is a fault (an uncaught error,
/// a resource the Content-Security-Policy blocked); Chromium's own start-up noise (D-Bus, GPU,
/// sandbox warnings) is not from the page and is ignored.
fn console_messages(stderr: &str, page: &Path) -> Vec<String> {
    let url = format!("file://{}", page.display());
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .filter(|l| l.contains(&url) || l.contains("Uncaught") || l.contains("ERROR:CONSOLE"))
        .map(str::to_owned)
        .collect()
}

/// The HTML of each element that starts with `open` (up to the next one, or the end).
fn blocks<'a>(html: &'a str, open: &str) -> Vec<&'a str> {
    let mut found: Vec<&str> = html.split(open).skip(1).collect();
    // The last block runs to the end of the page: cut it at the section's end.
    if let Some(last) = found.last_mut() {
        if let Some(end) = last.find("</section>") {
            *last = &last[..end];
        }
    }
    found
}

#[test]
fn the_report_of_samples_renders_offline_in_chromium() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("report.html");
    let page_arg = page.to_str().expect("utf-8 temp path");
    let (_, summary) = replay_with_summary(&["samples/", "-q", "--report", page_arg]);
    let html = std::fs::read_to_string(&page).expect("report written");

    // Offline: nothing the page loads points at the network.
    let remote = regex::Regex::new(
        r#"(?i)(src|href)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?\s*(https?:)?//"#,
    )
    .expect("regex");
    let found: Vec<&str> = remote.find_iter(&html).map(|m| m.as_str()).collect();
    assert!(found.is_empty(), "network references: {found:?}");
    assert!(
        html.len() < 4 << 20,
        "report of samples/ is {} bytes",
        html.len()
    );

    let profile = tempfile::tempdir().expect("chromium profile");
    let out = run_chromium(profile.path(), &page, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(dom.contains("id=\"summary\""), "no summary in the DOM");
    let summary_block = blocks(&dom, "<section id=\"summary\"")
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let events = summary["events"].as_u64().expect("events in the summary");
    assert!(
        summary_block.contains(&events.to_string()),
        "the summary block shows {events} events"
    );

    // Every incident the run reported, each with its severity, worst first.
    let incidents = blocks(&dom, "<details class=\"incident\"");
    let expected = summary["incidents"]
        .as_u64()
        .expect("incidents in the summary") as usize;
    assert!(expected >= 10, "samples/ should raise many incidents");
    assert!(
        incidents.len() >= expected,
        "{} incident sections for {expected} incidents",
        incidents.len()
    );
    let rank = |s: &str| {
        ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|v| s.contains(&format!("data-severity=\"{v}\"")))
    };
    let ranks: Vec<usize> = incidents
        .iter()
        .map(|i| rank(i).expect("each incident has a data-severity"))
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] >= w[1]),
        "incidents worst first: {ranks:?}"
    );
    let title = |i: &str| {
        i.split("<span class=\"t\">")
            .nth(1)
            .and_then(|t| t.split("</span>").next())
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        incidents
            .iter()
            .any(|i| title(i).contains("mallory@example.com")
                && i.contains("<table class=\"timeline\"")),
        "an incident of mallory@example.com with its timeline"
    );
    assert!(
        incidents.iter().any(|i| rank(i) == Some(4)
            && title(i).contains("bob@example.com")
            && i.contains("dave@example.com")
            && i.contains("Blast radius")),
        "the critical incident of bob@example.com impersonating dave@example.com, with its blast radius"
    );

    // The charts: inline SVG drawn by plotters.
    let charts = blocks(&dom, "<div class=\"chart\"");
    assert!(charts.len() >= 3, "{} chart sections", charts.len());
    for c in &charts {
        assert!(
            c.contains("<svg"),
            "a chart without an svg: {}",
            &c[..c.len().min(300)]
        );
    }
    assert!(
        dom.contains("id=\"chart-rates\""),
        "requests-per-minute chart"
    );
    assert!(dom.contains("id=\"chart-rules\""), "alerts-by-rule chart");
    assert!(dom.contains("id=\"chart-actors\""), "top-actors chart");

    let rejections = blocks(&dom, "<section id=\"rejections\"");
    let rejections = rejections.first().copied().unwrap_or("");
    for (reason, n) in summary["rejected"].as_object().expect("rejected by reason") {
        assert!(
            rejections.contains(reason.as_str()),
            "{reason} in {rejections}"
        );
        assert!(rejections.contains(&n.to_string()));
    }

    let console = console_messages(&stderr, &page);
    assert!(console.is_empty(), "console messages: {console:#?}");

    // A screenshot, as the README shows it: laid out 1280 CSS pixels wide, drawn at 0.8 (a
    // 1024×1920 PNG, about a third of a MB).
    let shot = dir.path().join("report.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    let out = run_chromium(
        profile.path(),
        &page,
        &[
            &shot_arg,
            "--window-size=1280,2400",
            "--force-device-scale-factor=0.8",
            "--hide-scrollbars",
        ],
    );
    let console = console_messages(&String::from_utf8_lossy(&out.stderr), &page);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "screenshot of {} bytes", png.len());
    // AUDITHOUND_UPDATE_SCREENSHOT=1 refreshes the README's picture.
    if std::env::var_os("AUDITHOUND_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(root().join("docs/report.png"), &png).expect("write docs/report.png");
    }
}

#[test]
fn console_messages_are_told_from_chromium_noise() {
    let page = Path::new("/tmp/r/report.html");
    let stderr = "\
[1:1:1206/064325.452080:ERROR:dbus/bus.cc:405] Failed to connect to the bus
[2:2:1206/064325.505798:WARNING:media/gpu/vaapi/vaapi_wrapper.cc:1655] drmGetDevices2() has not found any devices
[3:3:1206/064707.015180:INFO:CONSOLE:1] \"boom\", source: file:///tmp/r/report.html (1)
[4:4:1206/064707.015246:INFO:CONSOLE:1] \"Uncaught ReferenceError: f is not defined\", source: (1)
";
    let found = console_messages(stderr, page);
    assert_eq!(found.len(), 2, "{found:?}");
}
