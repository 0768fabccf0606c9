//! The shipped rule library (`detectors/`), built into the binary so that a service or a
//! replay needs no files beside it. `build.rs` lists the files; `--rules DIR` replaces the
//! library, `--rules builtin --rules DIR` extends it, and `audithound rules dump DIR` writes it
//! out for editing.

use std::borrow::Cow;
use std::path::PathBuf;

/// The name that stands for the built-in library among rule paths.
pub const BUILTIN: &str = "builtin";

include!(concat!(env!("OUT_DIR"), "/library.rs"));

/// The library's files as (name, text), in name order. Names read `builtin/<file>`.
pub fn sources() -> Vec<(PathBuf, Cow<'static, str>)> {
    FILES
        .iter()
        .map(|(name, text)| (PathBuf::from(BUILTIN).join(name), Cow::Borrowed(*text)))
        .collect()
}

/// The files themselves, for `rules dump`.
pub fn files() -> &'static [(&'static str, &'static str)] {
    FILES
}

/// Which library a binary carries, for `--version`: a digest of its files' names and content.
pub const VERSION: &str = concat!(
    "library ",
    env!("AUDITHOUND_LIBRARY_DIGEST"),
    ", ",
    env!("AUDITHOUND_LIBRARY_FILES"),
    " files"
);
