//! Lists the rule library (`detectors/*.yaml` and its README) for `rules::library`, which
//! includes the files into the binary, and digests them for `--version`.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read when the script runs, not when it was compiled: cargo may reuse a build script
    // compiled in another checkout that shares the target directory.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&root).join("detectors");
    // A directory: cargo re-runs this script when a file in it is added, removed or changed.
    println!("cargo:rerun-if-changed={}", dir.display());
    // A binary without its library would load no rules: fail the build instead.
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot read the rule library {}: {e}", dir.display()),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    if names.is_empty() {
        panic!("no rule files in {}", dir.display());
    }
    names.sort();
    let mut code = String::from("const FILES: &[(&str, &str)] = &[\n");
    // FNV-1a over names and contents: stable, no dependency.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for name in &names {
        let path = dir.join(name);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        for b in name.bytes().chain(text) {
            digest = (digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let _ = writeln!(
            code,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("library.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("cannot write {}: {e}", out.display());
    }
    println!(
        "cargo:rustc-env=AUDITHOUND_LIBRARY_DIGEST={:08x}",
        digest >> 32
    );
    println!("cargo:rustc-env=AUDITHOUND_LIBRARY_FILES={}", names.len());
}
