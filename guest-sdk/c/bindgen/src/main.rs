//! Regenerates `guest-sdk/c/bindings/` (the C bindings of kp's WIT world) with wit-bindgen's C
//! generator, and records the SHA-256 of `wit/kp.wit` they were made from in `bindings/WIT_SHA256`.
//! No object file is generated: `kp componentize` embeds the component type itself.

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wit_bindgen_core::Files;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let wit_file = root.join("wit/kp.wit");
    let wit = std::fs::read_to_string(&wit_file).with_context(|| format!("reading {}", wit_file.display()))?;
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("kp.wit", &wit)?;
    let world = resolve.select_world(&[package], Some("kp:plugin/handler-world@0.1.0"))?;

    let opts = wit_bindgen_c::Opts { no_object_file: true, ..Default::default() };
    let mut files = Files::default();
    opts.build().generate(&mut resolve, world, &mut files)?;

    let out = root.join("guest-sdk/c/bindings");
    std::fs::create_dir_all(&out)?;
    for (name, contents) in files.iter() {
        std::fs::write(out.join(name), contents)?;
        println!("wrote {}", out.join(name).display());
    }
    std::fs::write(out.join("WIT_SHA256"), format!("{}\n", hex::encode(Sha256::digest(wit.as_bytes()))))?;
    Ok(())
}
