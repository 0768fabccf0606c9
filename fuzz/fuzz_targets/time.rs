//! The hand-written time and duration parsers: never a panic, and what parses prints back to
//! the same value.
#![no_main]
use audithound::event::time::{
    format_micros, human_duration, parse_duration, parse_export_json, parse_export_time,
    parse_rfc3339_micros, parse_time_arg,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = parse_rfc3339_micros(s) {
        let printed = format_micros(t);
        assert_eq!(
            parse_rfc3339_micros(&printed),
            Some(t),
            "{s:?} -> {t} -> {printed:?}"
        );
    }
    if let Ok(d) = parse_duration(s) {
        let _ = human_duration(d);
        assert_eq!(parse_duration(&format!("{}s", d / 1_000_000)), Ok(d));
    }
    let _ = parse_time_arg(s, 1_741_078_800_000_000);
    let _ = parse_export_time(s);
    if let Ok(raw) = serde_json::from_str::<&serde_json::value::RawValue>(s) {
        let _ = parse_export_json(raw);
    }
});
