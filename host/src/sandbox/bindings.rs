//! The one bindgen of the host world (`wit/kp.wit`, world `handler-world`).
//!
//! Generated: the `HandlerWorld`/`HandlerWorldPre` types that instantiate and call a guest, the
//! record types of `kp:plugin/types`, and the `Host` traits of the imports that
//! [`crate::sandbox::state::GuestState`] implements.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "kp:plugin/handler-world@0.1.0",
    additional_derives: [PartialEq, Eq],
});

pub use self::kp::plugin::logging::Level;
pub use self::kp::plugin::types::{Header, Timestamp, TimestampType};
pub use exports::kp::plugin::handler::{HandlerError, Message, Output};

/// The interface a handler must export, as named in a component's exports.
pub const HANDLER_EXPORT: &str = "kp:plugin/handler@0.1.0";
/// The world name, for messages and `kp check`.
pub const WORLD: &str = "kp:plugin/handler-world@0.1.0";
