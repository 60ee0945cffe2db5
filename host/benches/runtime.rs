//! Guest call costs in the kp host, for the Rust passthrough plugin and a 100-byte message:
//! one call on a reused instance, a fresh instance (pooling and on-demand allocation), and
//! loading a module (compiling vs. loading the cached artifact).
//!
//! `cargo bench --bench runtime` (builds the example plugins first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{message, per_iteration};

mod common;

use kp::sandbox::{Allocation, LoadedPlugin, PluginInstance, Sandbox, SandboxConfig};

fn fresh(plugin: &Arc<LoadedPlugin>, n: u32) -> Duration {
    per_iteration(n, || {
        let instance = PluginInstance::new(plugin.clone()).unwrap();
        std::hint::black_box(&instance);
    })
}

fn main() {
    let path = common::build_plugins().join("passthrough.wasm");
    let cache = tempfile::tempdir().unwrap();
    let pooled = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache.path().into()),
        allocation: Allocation::default(),
        ..Default::default()
    })
    .unwrap();

    let t = Instant::now();
    let plugin = pooled.load(&path).unwrap();
    let compile = t.elapsed();
    let t = Instant::now();
    let again = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache.path().into()),
        allocation: Allocation::OnDemand,
        ..Default::default()
    })
    .unwrap();
    let cached_plugin = again.load(&path).unwrap();
    let cached = t.elapsed();
    assert_eq!(cached_plugin.provenance, kp::sandbox::Provenance::Cached);

    let msg = message();
    let mut instance = PluginInstance::new(plugin.clone()).unwrap();
    let call = per_iteration(200_000, || {
        let out = instance.handle(&msg).unwrap();
        std::hint::black_box(out);
    });
    let fresh_pooled = fresh(&plugin, 5_000);
    let fresh_on_demand = fresh(&cached_plugin, 2_000);

    println!(
        "kp runtime benchmark: Rust passthrough plugin ({} bytes), 100-byte value, 10-byte key",
        plugin.size
    );
    println!(
        "  call on a reused instance         {:>9.2} µs",
        call.as_secs_f64() * 1e6
    );
    println!(
        "  fresh instance + init, pooling    {:>9.2} µs",
        fresh_pooled.as_secs_f64() * 1e6
    );
    println!(
        "  fresh instance + init, on demand  {:>9.2} µs",
        fresh_on_demand.as_secs_f64() * 1e6
    );
    println!(
        "  load: compile + check + cache     {:>9.2} ms",
        compile.as_secs_f64() * 1e3
    );
    println!(
        "  load: cached artifact + check     {:>9.2} ms (new engine included)",
        cached.as_secs_f64() * 1e3
    );
}
