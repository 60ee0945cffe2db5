//! Any bytes given as a module are either loaded or refused with a `LoadError`: never a panic,
//! never a crash of the host.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use kp::manifest::Manifest;
use kp::sandbox::{Allocation, Sandbox, SandboxConfig};
use libfuzzer_sys::fuzz_target;

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(SandboxConfig { cache_dir: None, allocation: Allocation::OnDemand, ..Default::default() }).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let _ = sandbox().load_bytes(Path::new("fuzz.wasm"), data, Manifest::default_for("fuzz"));
});
