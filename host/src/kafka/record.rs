//! A consumed Kafka record as kp's WIT `message`, read without trusting its bytes.
//!
//! Kafka header names are bytes on the wire; the WIT contract's are strings. rdkafka's header
//! accessors unwrap the name as UTF-8 and panic on anything else, which killed a partition's
//! worker silently. kp reads the headers through librdkafka's C API instead
//! ([`raw_headers`], the crate's second justified `unsafe`), and a record whose header name is not
//! UTF-8 is not handed to the guest (it could not be shown to it faithfully): it goes to the
//! failure policy as a `bad-message`, carried with its names made UTF-8 (invalid bytes replaced)
//! and the original bytes, in hex, in the error message.
//!
//! Header names starting with `kp.` are kp's: its dead-letter records carry `kp.source.topic`,
//! `kp.error.kind` and the rest. An input header in that namespace reaches the guest (and a
//! dead-letter copy) renamed `kp.original.*`, so nothing upstream can pass for kp's metadata,
//! and a guest may not set a `kp.*` header on an output ([`reserved_header`]).

/// True for header names in kp's namespace (`kp.` but not `kp.original.`).
pub fn reserved_header(name: &str) -> bool {
    name.starts_with("kp.") && !name.starts_with("kp.original.")
}

use std::ffi::CStr;

use rdkafka::bindings as rd;
use rdkafka::message::{BorrowedMessage, Message as _};

use crate::sandbox::{Header, Message, Timestamp, TimestampType};

/// A header whose name is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonUtf8HeaderName {
    /// Its position among the record's headers.
    pub index: usize,
    pub name: Vec<u8>,
}

impl std::fmt::Display for NonUtf8HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "header #{} has a name that is not valid UTF-8 (bytes {}); the handler contract's \
             header names are strings, so the record is not given to the handler",
            self.index,
            hex::encode(&self.name)
        )
    }
}

/// A consumed record: the message, and whether it may be given to the handler.
#[derive(Debug)]
pub struct Record {
    /// The message; when `bad_header` is set, with its header names made UTF-8 (invalid bytes
    /// replaced), for a dead-letter copy.
    pub message: Message,
    /// The first header whose name is not UTF-8: the record is not for the handler.
    pub bad_header: Option<NonUtf8HeaderName>,
}

/// Reads a consumed record.
pub fn to_message(m: &BorrowedMessage<'_>) -> Record {
    let mut bad = None;
    let headers = raw_headers(m)
        .into_iter()
        .enumerate()
        .map(|(index, (name, value))| {
            let name = match String::from_utf8(name) {
                Ok(name) => name,
                Err(e) => {
                    let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    bad.get_or_insert(NonUtf8HeaderName {
                        index,
                        name: e.into_bytes(),
                    });
                    lossy
                }
            };
            let name = match name.strip_prefix("kp.") {
                Some(rest) => format!("kp.original.{rest}"),
                None => name,
            };
            // The contract has no null header values: a null value arrives empty.
            Header {
                name,
                value: value.unwrap_or_default(),
            }
        })
        .collect();
    let timestamp = match m.timestamp() {
        rdkafka::Timestamp::NotAvailable => None,
        rdkafka::Timestamp::CreateTime(millis) => Some(Timestamp {
            millis,
            kind: TimestampType::CreateTime,
        }),
        rdkafka::Timestamp::LogAppendTime(millis) => Some(Timestamp {
            millis,
            kind: TimestampType::LogAppendTime,
        }),
    };
    let message = Message {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp,
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    };
    Record {
        message,
        bad_header: bad,
    }
}

/// Every header of `m` as (name bytes, value), in order, repeats kept.
#[allow(unsafe_code)]
pub fn raw_headers(m: &BorrowedMessage<'_>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is a live message owned by `m` for this whole function. On success
    // librdkafka points `headers` at the message's own header list (owned by the message, valid
    // while it lives, never freed by us); on any error it leaves it null and we return nothing.
    let err = unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut headers) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return out;
    }
    // SAFETY: `headers` is the valid list obtained above.
    let count = unsafe { rd::rd_kafka_header_cnt(headers) };
    for index in 0..count {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size: usize = 0;
        // SAFETY: `index < count`; librdkafka sets `name` to a NUL-terminated string and `value`
        // to `size` bytes (or null for a null value), both owned by the header list.
        let err = unsafe {
            rd::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
        };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: as above; both are copied out before `m` can go away.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec());
        out.push((name, value));
    }
    out
}
