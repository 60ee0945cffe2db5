//! The {{name}} kp handler: copies each message to the output topic with a `handled-by` header.
//! Replace `handle` with your logic; see the kp-guest docs for the helpers.

use kp_guest::{HandlerError, HandlerResult, Message, Output};

fn handle(msg: Message) -> HandlerResult {
    if msg.is_tombstone() {
        return Err(HandlerError::bad_message("{{name}} does not handle tombstones"));
    }
    Ok(vec![Output::from_message(&msg).with_header("handled-by", "{{name}}")])
}

kp_guest::export_handler!(handle);
