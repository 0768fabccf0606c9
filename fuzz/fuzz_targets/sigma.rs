//! A Sigma rule's text: translated to a rule (`rules::sigma`), loaded as the rule loader loads
//! a Sigma file, and what loads evaluated on the sample events.
#![no_main]
use audithound::rules::{sigma, RuleSet};
use audithound_fuzz::{exercise, revocations, with_samples};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return;
    };
    if !sigma::is_sigma(&doc) {
        return;
    }
    let _ = sigma::translate(&doc);
    let Ok(set) = RuleSet::load_with(&[], vec![(PathBuf::from("fuzz.yml"), text.to_owned())])
    else {
        return;
    };
    with_samples(&mut |ev| exercise(ev, &set, revocations()));
});
