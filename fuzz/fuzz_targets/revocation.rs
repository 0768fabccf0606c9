//! A revocation list's text (YAML, JSON or CSV: the first byte picks which) through
//! `RevocationList::parse`, and what loads matched against the sample events.
#![no_main]
use audithound::event::EventView;
use audithound::revocation::RevocationList;
use audithound_fuzz::with_samples;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let origin = ["fuzz.yaml", "fuzz.json", "fuzz.csv"][kind as usize % 3];
    let Ok(list) = RevocationList::parse(text, origin) else {
        return;
    };
    let mut hits = Vec::new();
    with_samples(&mut |ev| {
        let view = EventView::new(ev, ev.event_time().unwrap_or(0));
        list.matches(&view, &mut hits);
        for (entry, _) in &hits {
            assert!(entry.revoked_at_micros < view.time);
        }
    });
});
