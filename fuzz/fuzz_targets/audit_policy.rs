//! An audit policy's text (`rules check --audit-policy`) through `Policy::parse`, and what
//! parses checked against the built-in library.
#![no_main]
use audithound::rules::policy::{self, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::parse(text) {
        let _ = policy::check(&p, audithound_fuzz::builtin());
    }
});
