//! A handler that misbehaves on command, for kp's tests and failure-policy demos. The message key
//! says what to do:
//!
//! | key            | behaviour                                                             |
//! |----------------|-----------------------------------------------------------------------|
//! | `panic`        | panics (a trap)                                                        |
//! | `loop`         | loops forever (stopped by the host's deadline)                        |
//! | `oom`          | allocates until memory runs out (stopped by the host's memory cap)     |
//! | `retry`        | returns `retry-later`                                                  |
//! | `bad`          | returns `bad-message`                                                  |
//! | `drop`         | returns no output                                                      |
//! | `fanout:N`     | returns N outputs, each with header `n`                                |
//! | `sleep:MS`     | busy-waits MS milliseconds, then passes the message through            |
//! | `count`        | returns how many messages this instance has handled, itself included   |
//! | `config`       | returns the `[config]` entries as `k=v` lines                          |
//! | `stdio`        | writes to stdout and stderr and logs at every level, then passes       |
//! | anything else  | passes the message through                                             |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kp_guest::{HandlerError, HandlerResult, Message, Output, config, log};

static HANDLED: AtomicU64 = AtomicU64::new(0);

fn handle(msg: Message) -> HandlerResult {
    let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
    let key = msg.key_str().unwrap_or("").to_string();
    match key.as_str() {
        "panic" => panic!("chaos: asked to panic at offset {}", msg.offset),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "retry" => Err(HandlerError::retry_later("chaos: downstream unavailable")),
        "bad" => Err(HandlerError::bad_message("chaos: this message is bad")),
        "drop" => Ok(Vec::new()),
        "count" => Ok(vec![Output::new(handled.to_string())]),
        "config" => {
            let lines: Vec<String> =
                config::entries().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            Ok(vec![Output::new(lines.join("\n"))])
        }
        "stdio" => {
            println!("chaos: to stdout");
            eprintln!("chaos: to stderr");
            log::trace("chaos: trace");
            log::debug("chaos: debug");
            log::info("chaos: info");
            log::warn("chaos: warn");
            log::error("chaos: error");
            Ok(vec![Output::from_message(&msg)])
        }
        other => {
            if let Some(n) = other.strip_prefix("fanout:") {
                let n: u32 = n.parse().map_err(HandlerError::bad_message)?;
                return Ok((0..n)
                    .map(|i| Output::from_message(&msg).with_header("n", i.to_string()))
                    .collect());
            }
            if let Some(ms) = other.strip_prefix("sleep:") {
                let ms: u64 = ms.parse().map_err(HandlerError::bad_message)?;
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            Ok(vec![Output::from_message(&msg)])
        }
    }
}

kp_guest::export_handler!(handle);
