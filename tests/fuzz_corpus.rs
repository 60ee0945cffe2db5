//! Replays the fuzzing corpora (fuzz/corpus/*, kept in the repository) on stable Rust: every input
//! the fuzzers found interesting must still be accepted or refused cleanly, never panic. Inputs
//! that once crashed kp go in fuzz/regressions/<target>/ and are replayed the same way.

use std::path::{Path, PathBuf};

use kp::manifest::Manifest;
use kp::sandbox::{Allocation, Sandbox, SandboxConfig};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

#[test]
fn manifest_corpus_parses_or_refuses() {
    let files = inputs("manifest");
    assert!(files.len() >= 5, "the manifest corpus is there");
    let mut accepted = 0;
    for file in &files {
        if let Ok(text) = std::str::from_utf8(&std::fs::read(file).unwrap())
            && Manifest::parse("fuzz", text).is_ok()
        {
            accepted += 1;
        }
    }
    assert!(accepted > 0, "the seeds are valid manifests");
}

#[test]
fn module_corpus_loads_or_refuses() {
    let files = inputs("module");
    assert!(files.len() >= 3, "the module corpus is there");
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: None,
        allocation: Allocation::OnDemand,
        ..Default::default()
    })
    .unwrap();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        // Loaded or refused; a panic fails the test.
        let _ = sandbox.load_bytes(file, &bytes, Manifest::default_for("fuzz"));
    }
}
