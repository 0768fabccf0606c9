//! Shared by the integration tests: running the built binary from the repository root.
#![allow(dead_code)] // each test file uses the helpers it needs

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn audithound(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_audithound"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run audithound")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
