//! A rule file's text through the rule loader (every rule kind, overrides, templates), after
//! the library's lists and macros so that `$lists` and `macro:` resolve as in a user's rules
//! directory; what loads evaluated on the sample events and its own `tests:` run
//! (`rules test`).
#![no_main]
use audithound::eval::rule_tests;
use audithound::rules::{library, RuleSet};
use audithound_fuzz::{exercise, revocations, with_samples};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn lists() -> &'static str {
    library::files()
        .iter()
        .find(|(name, _)| *name == "00-lists.yaml")
        .map(|(_, text)| *text)
        .expect("the library has 00-lists.yaml")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = vec![
        (PathBuf::from("00-lists.yaml"), lists().to_owned()),
        (PathBuf::from("fuzz.yaml"), text.to_owned()),
    ];
    let Ok(set) = RuleSet::load_with(&[], sources) else {
        return;
    };
    let set = set.with_disabled_enabled();
    let _ = audithound::rules::policy::reads(&set);
    with_samples(&mut |ev| exercise(ev, &set, revocations()));
    let _ = rule_tests::run(&set);
});
