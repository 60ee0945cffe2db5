//! A filter (1→0 or 1): forwards a message unchanged only when its value contains the text
//! configured as `contains` (every non-tombstone passes when it is unset). Tombstones are
//! dropped unless `keep-tombstones = true`.

use std::sync::OnceLock;

use kp_guest::{HandlerResult, Message, Output, config, log};

struct Settings {
    contains: Vec<u8>,
    keep_tombstones: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn init() -> Result<(), String> {
    let keep_tombstones = match config::get("keep-tombstones").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(format!("keep-tombstones must be true or false, not {other:?}")),
    };
    let contains = config::get("contains").unwrap_or_default().into_bytes();
    log::debug(&format!(
        "filter ready: contains={:?} keep-tombstones={keep_tombstones}",
        String::from_utf8_lossy(&contains)
    ));
    let _ = SETTINGS.set(Settings { contains, keep_tombstones });
    Ok(())
}

fn handle(msg: Message) -> HandlerResult {
    let settings = SETTINGS.get().expect("init runs before handle");
    let keep = match msg.value.as_deref() {
        None => settings.keep_tombstones,
        Some(value) => {
            settings.contains.is_empty()
                || value.windows(settings.contains.len()).any(|w| w == settings.contains)
        }
    };
    Ok(if keep { vec![Output::from_message(&msg)] } else { Vec::new() })
}

kp_guest::export_handler!(handle, init = init);
