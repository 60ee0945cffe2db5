//! `kp check FILE.wasm`: load and validate a module and its manifest, and describe it.

use std::fmt::Write as _;
use std::path::Path;

use crate::sandbox::{LoadError, LoadedPlugin, Provenance, Sandbox, bindings::WORLD};

/// Loads `path` like `kp run` would and returns a human-readable description, or the refusal.
pub fn check(sandbox: &Sandbox, path: &Path) -> Result<String, LoadError> {
    let plugin = sandbox.load(path)?;
    Ok(describe(&plugin))
}

/// The report `kp check` prints for a loaded plugin.
pub fn describe(plugin: &LoadedPlugin) -> String {
    let m = &plugin.manifest;
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", plugin.path.display());
    let _ = writeln!(
        out,
        "  plugin:   {} (version {})",
        plugin.name(),
        plugin.version()
    );
    let _ = writeln!(out, "  world:    {WORLD}");
    let how = match plugin.provenance {
        Provenance::Compiled => "compiled",
        Provenance::Cached => "loaded from the compiled-artifact cache",
    };
    let _ = writeln!(
        out,
        "  module:   {} bytes, {how} in {:.1} ms, sha256 {}",
        plugin.size,
        plugin.load_time.as_secs_f64() * 1e3,
        plugin.content_hash
    );
    let _ = writeln!(out, "  imports:  {}", list(&plugin.imports));
    let _ = writeln!(out, "  exports:  {}", list(&plugin.exports));
    match &m.source {
        Some(source) => {
            let _ = writeln!(out, "  manifest: {}", source.display());
        }
        None => {
            let _ = writeln!(
                out,
                "  manifest: none (defaults apply; `kp run` needs a manifest naming input-topics)"
            );
        }
    }
    let inputs = if m.input_topics.is_empty() {
        "(none)".to_string()
    } else {
        m.input_topics.join(", ")
    };
    let output = m
        .output_topic
        .as_deref()
        .unwrap_or("(none: each output must name its topic)");
    let _ = writeln!(out, "  topics:   {inputs} -> {output}");
    let _ = writeln!(out, "  group:    {}", m.group_id);
    let _ = writeln!(
        out,
        "  limits:   timeout {} ms per call, memory {} MiB per instance",
        m.limits.timeout.as_millis(),
        m.limits.memory_bytes >> 20
    );
    let f = &m.on_failure;
    let _ = writeln!(
        out,
        "  failure:  {:?}{}, {} attempt(s) for retry-later, backoff {}..{} ms",
        f.action,
        f.dead_letter_topic
            .as_deref()
            .map(|t| format!(" to {t}"))
            .unwrap_or_default(),
        f.max_attempts,
        f.backoff_initial.as_millis(),
        f.backoff_max.as_millis()
    );
    if m.config.is_empty() {
        let _ = writeln!(out, "  config:   (none)");
    } else {
        let _ = writeln!(out, "  config:");
        for (k, v) in &m.config {
            let _ = writeln!(out, "    {k} = {v:?}");
        }
    }
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}
