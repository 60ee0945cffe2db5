//! # kp-guest: write a kp message handler in Rust
//!
//! A handler is one function over friendly types plus one line that exports it:
//!
//! ```ignore
//! use kp_guest::{Message, Output, HandlerResult};
//!
//! fn handle(msg: Message) -> HandlerResult {
//!     let upper = msg.value.as_deref().map(<[u8]>::to_ascii_uppercase);
//!     Ok(vec![Output::from_message(&msg).with_value(upper)])
//! }
//!
//! kp_guest::export_handler!(handle);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`; the result is a WebAssembly component that the
//! kp host runs. Map of this crate:
//! - [`Message`], [`Output`], [`Header`], [`Timestamp`]: the records going in and out (bytes are
//!   bytes: keys, values and header values are never assumed to be UTF-8).
//! - [`HandlerError`]: `RetryLater` (transient, try again) or `BadMessage` (permanent).
//! - [`log`]: structured logging into the host's log; [`config`]: the plugin's `[config]` values.
//! - [`export_handler!`]: exports your function (and optionally an `init` function).
//!
//! The WIT contract lives in `wit/kp.wit` at the root of the kp repository.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "kp:plugin/handler-world@0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_kp_world",
        default_bindings_module: "kp_guest::bindings",
        generate_all,
    });
}

pub use bindings::kp::plugin::types::{
    HandlerError, Header, Message, Output, Timestamp, TimestampType,
};

/// What a handler returns: the records to produce, or why it could not handle the message.
pub type HandlerResult = Result<Vec<Output>, HandlerError>;

impl Message {
    /// The key as UTF-8 text, if there is a key and it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value as UTF-8 text, if there is a value (not a tombstone) and it is valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        self.value.as_deref().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// True when the value is null (a tombstone).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

impl Output {
    /// A record for the plugin's default output topic with this value and nothing else.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Output {
            topic: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            partition: None,
        }
    }

    /// A record that keeps the message's key, value and headers (to the default output topic).
    pub fn from_message(msg: &Message) -> Self {
        Output {
            topic: None,
            key: msg.key.clone(),
            value: msg.value.clone(),
            headers: msg.headers.clone(),
            partition: None,
        }
    }

    /// Sends this record to `topic` instead of the default output topic.
    pub fn to_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the key (`None` for no key).
    pub fn with_key(mut self, key: Option<impl Into<Vec<u8>>>) -> Self {
        self.key = key.map(Into::into);
        self
    }

    /// Sets the value (`None` for a tombstone).
    pub fn with_value(mut self, value: Option<impl Into<Vec<u8>>>) -> Self {
        self.value = value.map(Into::into);
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Pins the destination partition.
    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

impl HandlerError {
    /// A transient failure: the host may try this message again later.
    pub fn retry_later(reason: impl std::fmt::Display) -> Self {
        HandlerError::RetryLater(reason.to_string())
    }

    /// A permanent failure: this message can never be handled.
    pub fn bad_message(reason: impl std::fmt::Display) -> Self {
        HandlerError::BadMessage(reason.to_string())
    }
}

/// Logging into the host's log, tagged with the plugin and the current message's position.
pub mod log {
    use crate::bindings::kp::plugin::logging::{self, Level};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        logging::log(Level::Trace, message)
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        logging::log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        logging::log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        logging::log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        logging::log(Level::Error, message)
    }
}

/// The plugin's configuration: the `[config]` table of its manifest.
pub mod config {
    use crate::bindings::kp::plugin::config;

    /// The value of `key`, if the manifest sets it.
    pub fn get(key: &str) -> Option<String> {
        config::get(key)
    }

    /// Every key and value, sorted by key.
    pub fn entries() -> Vec<(String, String)> {
        config::entries()
    }
}

/// The `init` used when a handler exports none: it accepts every instance.
#[doc(hidden)]
pub fn default_init() -> Result<(), String> {
    Ok(())
}

/// Exports a handler function as the component's `kp:plugin/handler`.
///
/// `export_handler!(handle)` exports `fn handle(Message) -> HandlerResult`.
/// `export_handler!(handle, init = setup)` also runs `fn setup() -> Result<(), String>` once per
/// instance before the first message (read your [`config`] there; an `Err` refuses the instance).
#[macro_export]
macro_rules! export_handler {
    ($handle:path) => {
        $crate::export_handler!($handle, init = $crate::default_init);
    };
    ($handle:path, init = $init:path) => {
        #[doc(hidden)]
        struct __KpHandler;

        impl $crate::bindings::exports::kp::plugin::handler::Guest for __KpHandler {
            fn init() -> ::core::result::Result<(), ::std::string::String> {
                $init()
            }
            fn handle(message: $crate::Message) -> $crate::HandlerResult {
                $handle(message)
            }
        }

        $crate::bindings::__export_kp_world!(__KpHandler);
    };
}
