//! Records the versions of kp's main dependencies (from the workspace's Cargo.lock) so that
//! `kp version` can print what this binary was built with.

use std::path::Path;

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    for (krate, var) in [
        ("wasmtime", "KP_WASMTIME_VERSION"),
        ("rdkafka", "KP_RDKAFKA_VERSION"),
    ] {
        println!("cargo:rustc-env={var}={}", locked_version(&text, krate));
    }
}

/// The version of `krate` in a Cargo.lock, or "unknown".
fn locked_version(lock: &str, krate: &str) -> String {
    let name_line = format!("name = \"{krate}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name_line
            && let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return version.trim_matches('"').to_string();
        }
    }
    "unknown".to_string()
}
