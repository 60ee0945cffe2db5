//! Passes every message through unchanged (key, value, headers) to the default output topic.
//! The benchmarks use it to measure the host's own overhead.

use kp_guest::{HandlerResult, Message, Output};

fn handle(msg: Message) -> HandlerResult {
    Ok(vec![Output::from_message(&msg)])
}

kp_guest::export_handler!(handle);
