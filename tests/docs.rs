//! Keeps the documentation from drifting away from the code: rule ids named in the docs exist in
//! the built-in library, the README's command lines use subcommands the binary has, and
//! ARCHITECTURE.md's code map names every module under `src/` (and no module that is gone).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Inline code spans (`…`) outside fenced code blocks, with their 1-based line numbers.
fn code_spans(text: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Between the 1st and 2nd backtick, the 3rd and 4th…
        for (n, piece) in line.split('`').enumerate() {
            if n % 2 == 1 {
                spans.push((i + 1, piece.to_owned()));
            }
        }
    }
    spans
}

/// Lines inside fenced code blocks, with their 1-based line numbers.
fn fenced_lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// `k8s\.[a-z_.]+`, the whole span: a rule id of the library's own namespace.
fn is_rule_id(span: &str) -> bool {
    span.strip_prefix("k8s.").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
    })
}

/// Rule ids that detectors/COVERAGE.md names for detections marked *planned*: they need engine
/// support that does not exist yet, so no rule carries them. Remove an id from here when its
/// rule ships (none today: the source-reputation rules shipped with IP lists and GeoIP).
const PLANNED_RULES: &[&str] = &[];

#[test]
fn rule_ids_named_in_the_docs_exist() {
    let set = audithound::rules::RuleSet::load(&[PathBuf::from("builtin")])
        .expect("the built-in library loads");
    let known: BTreeSet<&str> = set
        .rules
        .iter()
        .chain(&set.disabled)
        .map(|r| r.id.as_str())
        .collect();
    assert!(known.len() > 50, "only {} rules loaded", known.len());
    let mut missing = Vec::new();
    let mut named = 0;
    for doc in ["README.md", "ARCHITECTURE.md", "detectors/COVERAGE.md"] {
        for (line, span) in code_spans(&read(doc)) {
            if !is_rule_id(&span) {
                continue;
            }
            named += 1;
            if !known.contains(span.as_str()) && !PLANNED_RULES.contains(&span.as_str()) {
                missing.push(format!("{doc}:{line}: `{span}`"));
            }
        }
    }
    assert!(
        named > 50,
        "only {named} rule ids found in the docs: is the parsing broken?"
    );
    assert!(
        missing.is_empty(),
        "rule ids in the docs that the built-in library does not have \
         (`audithound rules list` shows the ids):\n{}",
        missing.join("\n")
    );
}

/// The subcommands a `--help` lists under "Commands:".
fn subcommands(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_audithound"))
        .args(args)
        .output()
        .expect("run audithound");
    assert!(out.status.success(), "audithound {args:?} failed");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut names = BTreeSet::new();
    let mut listing = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            listing = true;
        } else if listing && line.trim().is_empty() {
            break;
        } else if listing && line.starts_with("  ") && !line[2..].starts_with(' ') {
            // A command's own line; wrapped descriptions are indented further.
            if let Some(name) = line.split_whitespace().next() {
                names.insert(name.to_owned());
            }
        }
    }
    assert!(
        !names.is_empty(),
        "no commands in audithound {args:?}:\n{help}"
    );
    names
}

/// Subcommands the README already shows while they are being added to the binary. Remove a name
/// from here once `audithound --help` lists it.
const BEING_ADDED: &[&str] = &[];

/// The arguments of an audithound invocation on a README line: `audithound …`, or
/// `cargo run [--release] -- …`.
fn invocation(line: &str) -> Option<Vec<&str>> {
    let line = line.trim_start();
    if let Some(rest) = line.strip_prefix("audithound ") {
        return Some(rest.split_whitespace().collect());
    }
    if line.starts_with("cargo run ") && !line.contains("--example") {
        let (_, rest) = line.split_once(" -- ")?;
        return Some(rest.split_whitespace().collect());
    }
    None
}

/// The first argument that is not an option (or an option's value).
fn first_word<'a>(args: &[&'a str]) -> Option<&'a str> {
    let mut args = args.iter();
    while let Some(a) = args.next() {
        if *a == "--log-format" {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

#[test]
fn readme_commands_use_subcommands_the_binary_has() {
    let top = subcommands(&["--help"]);
    let rules = subcommands(&["rules", "--help"]);
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (line, text) in fenced_lines(&read("README.md")) {
        let Some(args) = invocation(text) else {
            continue;
        };
        seen += 1;
        let Some(command) = first_word(&args) else {
            wrong.push(format!("README.md:{line}: no subcommand: {text}"));
            continue;
        };
        if BEING_ADDED.contains(&command) {
            continue;
        }
        if !top.contains(command) {
            wrong.push(format!(
                "README.md:{line}: `{command}` is not a subcommand ({top:?}): {text}"
            ));
        } else if command == "rules" {
            let rest: Vec<&str> = args
                .iter()
                .skip_while(|a| **a != "rules")
                .skip(1)
                .copied()
                .collect();
            match first_word(&rest) {
                Some(sub) if rules.contains(sub) => {}
                sub => wrong.push(format!(
                    "README.md:{line}: `rules {}` is not a rules subcommand ({rules:?}): {text}",
                    sub.unwrap_or("")
                )),
            }
        }
    }
    assert!(
        seen >= 5,
        "only {seen} command lines found in README.md: is the parsing broken?"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every module under `src/` as a path (`detect::threshold`), from its file's place.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeSet<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            let mut inner = prefix.to_vec();
            inner.push(name);
            modules(&path, &inner, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut parts = prefix.to_vec();
            match (prefix.is_empty(), stem) {
                // The crate root and the binary: the code map names the binary as `main.rs`.
                (true, "lib") => continue,
                (true, "main") => {
                    out.insert("main.rs".to_owned());
                    continue;
                }
                (_, "mod") => {}
                _ => parts.push(stem.to_owned()),
            }
            if !parts.is_empty() {
                out.insert(parts.join("::"));
            }
        }
    }
}

/// ARCHITECTURE.md from "## Code map" up to the next `## ` heading.
fn code_map() -> String {
    let text = read("ARCHITECTURE.md");
    let start = text
        .find("\n## Code map")
        .expect("ARCHITECTURE.md has a \"## Code map\" section");
    let body = &text[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    body[..end].to_owned()
}

#[test]
fn the_code_map_names_every_module_and_only_modules() {
    let mut existing = BTreeSet::new();
    modules(&root().join("src"), &[], &mut existing);
    assert!(existing.len() > 20, "{existing:?}");
    let map = code_map();
    let unmapped: Vec<&String> = existing
        .iter()
        .filter(|m| !map.contains(&format!("`{m}`")))
        .collect();
    assert!(
        unmapped.is_empty(),
        "modules without a line in ARCHITECTURE.md's code map (add `- `module`: what it is for`): {unmapped:?}"
    );
    // The entries themselves (`### `module`` headings and `- `module`:` lines) name modules
    // that exist.
    let mut gone = Vec::new();
    for line in map.lines() {
        let entry = line
            .strip_prefix("### `")
            .or_else(|| line.strip_prefix("- `"))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name);
        if let Some(name) = entry {
            if !existing.contains(name) {
                gone.push(name.to_owned());
            }
        }
    }
    assert!(
        gone.is_empty(),
        "ARCHITECTURE.md's code map has entries for modules that do not exist: {gone:?}"
    );
}

/// What each top-level module may use (ARCHITECTURE.md, "Layering").
const LAYERS: &[(&str, &[&str])] = &[
    ("keyed", &[]),
    ("settings", &[]),
    ("reload", &[]),
    ("reputation", &["reload"]),
    ("event", &["reputation"]),
    ("revocation", &["event", "reload"]),
    (
        "rules",
        &["event", "keyed", "reload", "revocation", "reputation"],
    ),
    ("alert", &["event", "rules"]),
    (
        "detect",
        &["event", "rules", "alert", "revocation", "keyed"],
    ),
    ("incident", &["event", "rules", "alert", "detect", "keyed"]),
    ("source", &["event", "keyed", "settings"]),
    ("sink", &["alert", "keyed", "rules", "settings"]),
    ("metrics", &["alert", "source", "sink"]),
    (
        "engine",
        &[
            "event",
            "rules",
            "alert",
            "detect",
            "incident",
            "revocation",
            "reputation",
            "keyed",
            "source",
            "sink",
            "metrics",
            "reload",
            "settings",
        ],
    ),
    (
        "hunt",
        &["alert", "incident", "metrics", "rules", "sink", "event"],
    ),
    (
        "report",
        &["alert", "incident", "metrics", "rules", "sink", "event"],
    ),
    (
        "eval",
        &[
            "engine",
            "event",
            "rules",
            "alert",
            "detect",
            "revocation",
            "sink",
            "source",
            "metrics",
        ],
    ),
    (
        "route",
        &["engine", "event", "rules", "detect", "source", "keyed"],
    ),
    (
        "config",
        &[
            "event",
            "settings",
            "sink",
            "source",
            "rules",
            "alert",
            "reputation",
        ],
    ),
    (
        "service",
        &[
            "config",
            "engine",
            "event",
            "metrics",
            "revocation",
            "reputation",
            "rules",
            "sink",
            "source",
            "reload",
            "settings",
            "alert",
        ],
    ),
    ("synth", &["event"]),
];

#[test]
fn modules_depend_only_on_the_layers_below_them() {
    let src = root().join("src");
    let mut wrong = Vec::new();
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .unwrap_or_default();
        if module == "lib" || module == "main" {
            continue;
        }
        let allowed = LAYERS
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, deps)| *deps)
            .unwrap_or_else(|| panic!("{module}: add it to LAYERS and to ARCHITECTURE.md"));
        let text = std::fs::read_to_string(&entry).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let used: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used != module && !allowed.contains(&used.as_str()) {
                    wrong.push(format!("{}: {module} uses {used}", rel.display()));
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "dependencies against the layering:\n{}",
        wrong.join("\n")
    );
}

/// Every `.rs` file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}
