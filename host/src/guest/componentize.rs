//! `kp componentize`: turns a core WebAssembly module that targets WASI preview 1 (what clang with
//! wasi-libc, and other `wasm32-wasip1` toolchains, produce) into a kp handler component.
//!
//! Two steps, both done by the `wit-component` library so that no extra tool is needed:
//! 1. embed kp's WIT world (`handler-world`) as the module's component type, unless the module
//!    already carries one (for example from wit-bindgen's `*_component_type.o`);
//! 2. wrap the module with wasmtime's WASI preview 1 *reactor* adapter, which maps its
//!    `wasi_snapshot_preview1` imports onto WASI 0.2 (still deny-by-default in the host).

use anyhow::{Context, Result};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

use super::KP_WIT;

/// The world a kp handler implements.
const WORLD: &str = "kp:plugin/handler-world@0.1.0";

/// Builds a kp handler component from a core module's bytes.
pub fn componentize(core_module: &[u8]) -> Result<Vec<u8>> {
    if wasmparser::Parser::is_component(core_module) {
        anyhow::bail!("the input is already a component; `kp check` it instead");
    }
    if !wasmparser::Parser::is_core_wasm(core_module) {
        anyhow::bail!("the input is not a WebAssembly core module");
    }
    let mut module = core_module.to_vec();
    if !has_component_type(&module)? {
        let mut resolve = Resolve::default();
        let package = resolve
            .push_str("kp.wit", KP_WIT)
            .context("parsing kp's WIT package")?;
        let world = resolve.select_world(&[package], Some(WORLD))?;
        wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
            .context("embedding kp's WIT world into the module")?;
    }
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .context("reading the core module (does it export `kp:plugin/handler@0.1.0#handle`?)")?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .context("loading the WASI preview 1 reactor adapter")?
        .encode()
        .context("encoding the component")
}

/// True when the module already has a `component-type*` custom section.
fn has_component_type(module: &[u8]) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::CustomSection(section) =
            payload.context("parsing the module")?
            && section.name().starts_with("component-type")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_core_module() {
        let err = componentize(b"not wasm").unwrap_err();
        assert!(
            err.to_string().contains("not a WebAssembly core module"),
            "{err}"
        );
    }

    #[test]
    fn a_module_without_the_handler_exports_is_refused_with_a_reason() {
        let module = wat::parse_str("(module (memory (export \"memory\") 1))").unwrap();
        let err = format!("{:#}", componentize(&module).unwrap_err());
        assert!(err.contains("handle"), "{err}");
    }
}
