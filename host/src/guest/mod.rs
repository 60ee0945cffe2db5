//! Tools for handler authors, built into `kp` so that writing a handler needs no other tool:
//! - [`scaffold`]: `kp new NAME --lang rust|js|python|c`, a project that builds as it is;
//! - [`componentize`]: `kp componentize`, a WASI preview 1 core module (C) into a kp component.
//!
//! The guest SDKs themselves live in `guest-sdk/<language>/` at the repository root; the
//! scaffolds embed the parts a project carries with it (`sdk/`).

pub mod componentize;
pub mod scaffold;

/// kp's WIT package (`wit/kp.wit`): the contract every handler implements.
pub const KP_WIT: &str = include_str!("../../../wit/kp.wit");
