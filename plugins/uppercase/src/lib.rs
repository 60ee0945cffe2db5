//! A 1→1 transform: upper-cases the value (ASCII letters; other bytes pass through unchanged)
//! and keeps the key and headers. Tombstones stay tombstones.

use kp_guest::{HandlerResult, Message, Output};

fn handle(msg: Message) -> HandlerResult {
    let upper = msg.value.as_deref().map(<[u8]>::to_ascii_uppercase);
    Ok(vec![Output::from_message(&msg).with_value(upper)])
}

kp_guest::export_handler!(handle);
