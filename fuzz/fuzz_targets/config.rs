//! A service configuration's text through `config::parse` (TOML, `${VAR}` expansion and every
//! validation) and the values it derives.
#![no_main]
use libfuzzer_sys::fuzz_target;

/// Whether a configuration would read a file while parsing: `bearer_token_file` and
/// `${file:PATH}` do, as they should for the operator's own configuration, but a fuzzer must
/// not read /dev/zero or the machine's files with them. Looked for after TOML's unescaping.
fn reads_files(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => s.contains("file:"),
        toml::Value::Array(items) => items.iter().any(reads_files),
        toml::Value::Table(t) => t
            .iter()
            .any(|(k, v)| k.ends_with("_file") || reads_files(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match toml::from_str::<toml::Table>(text) {
        Ok(table) => {
            if reads_files(&toml::Value::Table(table)) {
                return;
            }
        }
        Err(_) => return,
    }
    let Ok(config) = audithound::config::parse(text) else {
        return;
    };
    let _ = (
        config.snapshot_every(),
        config.detection.incident_gap_micros(),
        config.detection.lateness_micros(),
        config.reputation.sources(),
    );
    if let Some(webhook) = &config.webhook {
        let _ = webhook.limits();
    }
    if let Some(kafka) = &config.kafka {
        let _ = (kafka.rebuild_ms(), kafka.properties());
    }
});
