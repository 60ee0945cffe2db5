//! Per-language guest costs: the same handler (`kp new NAME --lang L`: copy the message to the
//! output topic and add one header) built in every supported language, then for each:
//! component size, compile time, cached load time, a fresh instance + init (pooling allocator),
//! and one call on a reused instance with a 100-byte value.
//!
//! `cargo bench --bench languages` (needs the toolchains of scripts/toolchains.sh);
//! KP_BENCH_LANGS=rust,c limits the languages.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

mod common;

use common::{message, per_iteration};
use kp::guest::scaffold::{Language, NewProject, create};
use kp::sandbox::{Allocation, PluginInstance, Sandbox, SandboxConfig};

fn main() {
    let wanted = std::env::var("KP_BENCH_LANGS").unwrap_or_else(|_| "rust,c,go,python,js".into());
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");

    println!(
        "kp per-language benchmark: `kp new` handler (copy + 1 header), 100-byte value, 10-byte key"
    );
    println!(
        "  {:<8} {:>10} {:>12} {:>12} {:>16} {:>14}",
        "language", "size", "compile", "cached load", "fresh instance", "call (reused)"
    );
    for lang in wanted.split(',') {
        let language = match lang {
            "rust" => Language::Rust,
            "c" => Language::C,
            "python" => Language::Python,
            "js" => Language::Js,
            "go" => Language::Go,
            other => panic!("unknown language {other}"),
        };
        let name = format!("bench-{lang}");
        let project = dir.path().join(&name);
        create(&NewProject {
            name: &name,
            language,
            dir: &project,
        })
        .unwrap();
        let status = Command::new(project.join("build.sh"))
            .env("KP", env!("CARGO_BIN_EXE_kp"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap();
        assert!(status.success(), "building the {lang} handler");
        let module = project.join(format!("{name}.wasm"));

        let cache = tempfile::tempdir().unwrap();
        let config = |allocation| SandboxConfig {
            cache_dir: Some(cache.path().into()),
            allocation,
            ..Default::default()
        };
        let pooled = Sandbox::new(config(Allocation::default())).unwrap();
        let t = Instant::now();
        let plugin = pooled.load(&module).unwrap();
        let compile = t.elapsed();
        let t = Instant::now();
        let cached = Sandbox::new(config(Allocation::OnDemand))
            .unwrap()
            .load(&module)
            .unwrap();
        let cached_load = t.elapsed();
        assert_eq!(cached.provenance, kp::sandbox::Provenance::Cached);

        // Fewer iterations for the heavy runtimes (a fresh Python instance is about a millisecond,
        // a Go one half of that).
        let heavy = matches!(language, Language::Python | Language::Js | Language::Go);
        let fresh = per_iteration(if heavy { 200 } else { 5_000 }, || {
            std::hint::black_box(PluginInstance::new(plugin.clone()).unwrap());
        });
        let msg = message();
        let mut instance = PluginInstance::new(plugin.clone()).unwrap();
        let call = per_iteration(if heavy { 20_000 } else { 200_000 }, || {
            std::hint::black_box(instance.handle(&msg).unwrap());
        });
        println!(
            "  {:<8} {:>7} KB {:>9.0} ms {:>9.1} ms {:>13.1} µs {:>11.2} µs",
            lang,
            plugin.size / 1000,
            compile.as_secs_f64() * 1e3,
            cached_load.as_secs_f64() * 1e3,
            fresh.as_secs_f64() * 1e6,
            call.as_secs_f64() * 1e6
        );
    }
}
