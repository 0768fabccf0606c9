//! One record, whatever it holds, through the decoder (every envelope, auto-detected, strict and
//! with `--input-format`) and the built-in library. Seeds: the sample lines, one per file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    audithound_fuzz::decode_all(data);
});
