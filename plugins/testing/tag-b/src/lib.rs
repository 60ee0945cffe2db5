//! Passes each message through, adding header `tag: b`. The hot-reload tests alternate this
//! module with its twin to see which version handled each message.

use kp_guest::{HandlerResult, Message, Output};

fn handle(msg: Message) -> HandlerResult {
    Ok(vec![Output::from_message(&msg).with_header("tag", "b")])
}

kp_guest::export_handler!(handle);
