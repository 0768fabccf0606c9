//! A `hunt --where` condition: the one-line parser (`hunt::parse_where`), the condition
//! compiler (fields, operators, globs, regexes, CIDRs, `$lists`, macros) and evaluation and
//! explanation on the sample events; the same condition as a hunt's rule.
#![no_main]
use audithound::event::EventView;
use audithound::hunt;
use audithound::rules::condition::{Cond, Scope};
use audithound_fuzz::{enrichment, exercise, revocations, with_samples};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(y) = hunt::parse_where(text) else {
        return;
    };
    let lists = BTreeMap::from([(
        "system_namespaces".to_string(),
        vec!["kube-system".to_string(), "kube-public".to_string()],
    )]);
    let macros = BTreeMap::from([(
        "control_plane".to_string(),
        serde_yaml::from_str("{user.username: {prefix: 'system:'}}").unwrap(),
    )]);
    let scope = Scope {
        lists: &lists,
        macros: &macros,
    };
    if let Ok(cond) = Cond::compile(&y, &scope, "--where") {
        let _ = (cond.cost(), cond.required_values("verb"));
        with_samples(&mut |ev| {
            let view = EventView::new(ev, 0).enriched(enrichment());
            let holds = cond.eval(&view);
            let mut why = String::new();
            assert_eq!(
                cond.explain(&view, 0, &mut why),
                holds,
                "explain and eval disagree on {text:?}"
            );
        });
    }
    if let Ok(set) = hunt::rules_with(&[], y) {
        with_samples(&mut |ev| exercise(ev, &set, revocations()));
    }
});
