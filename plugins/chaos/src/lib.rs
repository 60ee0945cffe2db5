//! A handler that misbehaves on command, for kp's tests and failure-policy demos. The message key
//! says what to do:
//!
//! | key            | behaviour                                                             |
//! |----------------|-----------------------------------------------------------------------|
//! | `panic`        | panics (a trap)                                                        |
//! | `loop`         | loops forever (stopped by the host's deadline)                        |
//! | `oom`          | allocates until memory runs out (stopped by the host's memory cap)     |
//! | `retry`        | returns `retry-later`                                                  |
//! | `flaky:N`      | returns `retry-later` N times for this message, then passes it through  |
//! |                | with a header `attempts` (N + 1)                                       |
//! | `bad`          | returns `bad-message`                                                  |
//! | `drop`         | returns no output                                                      |
//! | `fanout:N`     | returns N outputs, each with header `n`                                |
//! | `sleep:MS`     | busy-waits MS milliseconds, then passes the message through            |
//! | `to-topic:T`   | passes the message through to topic T                                  |
//! | `to-partition:N` | passes the message through to partition N of the output topic        |
//! | `big:N`        | passes the message through with a value of N bytes                     |
//! | `wait:MS`      | sleeps MS milliseconds blocked in the host (`wasi:io/poll`), then passes |
//! | `flood:N`      | logs N lines, then passes                                              |
//! | `forge`        | logs a line with a line break and a fake kp ERROR line after it          |
//! | `set-header:H` | passes the message through with a header H = "forged"                  |
//! | `count`        | returns how many messages this instance has handled, itself included   |
//! | `where`        | returns its offset as the value, keyed by its partition                 |
//! | `config`       | returns the `[config]` entries as `k=v` lines                          |
//! | `stdio`        | writes to stdout and stderr and logs at every level, then passes       |
//! | `read-file:P`  | tries to read file P; the output value says what happened              |
//! | `env:NAME`     | the output value is environment variable NAME, or `unset`              |
//! | `connect:ADDR` | tries to open a TCP connection; the output value says what happened    |
//! | `clock`        | the output value is the wall clock, in seconds since the Unix epoch     |
//! | `random`       | the output value is 8 random bytes, in hex                              |
//! | anything else  | passes the message through                                             |
//!
//! Config: `delay-us = N` busy-waits N microseconds on every message (a slow handler);
//! `log-each = true` logs "handling offset N" at info level before each message;
//! `init-trap = true` panics in `init`; `init-wait-ms = N` sleeps N ms (blocked in the host) in
//! `init`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kp_guest::{HandlerError, HandlerResult, Message, Output, config, log};

static HANDLED: AtomicU64 = AtomicU64::new(0);

/// Attempts seen per (partition, offset), for `flaky:N`.
static ATTEMPTS: Mutex<Option<HashMap<(i32, i64), u32>>> = Mutex::new(None);

struct Settings {
    delay: Duration,
    log_each: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn init() -> Result<(), String> {
    let delay_us: u64 = match config::get("delay-us") {
        Some(v) => v.parse().map_err(|e| format!("delay-us: {e}"))?,
        None => 0,
    };
    let log_each = config::get("log-each").as_deref() == Some("true");
    if let Some(ms) = config::get("init-wait-ms") {
        let ms: u64 = ms.parse().map_err(|e| format!("init-wait-ms: {e}"))?;
        std::thread::sleep(Duration::from_millis(ms));
    }
    if config::get("init-trap").as_deref() == Some("true") {
        panic!("chaos: asked to trap in init");
    }
    let _ = SETTINGS.set(Settings { delay: Duration::from_micros(delay_us), log_each });
    Ok(())
}

fn busy_wait(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn handle(msg: Message) -> HandlerResult {
    let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
    let settings = SETTINGS.get().expect("init runs first");
    if settings.log_each {
        log::info(&format!("handling offset {}", msg.offset));
    }
    if !settings.delay.is_zero() {
        busy_wait(settings.delay);
    }
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
        // Where the message came from: key = its partition, value = its offset.
        "where" => Ok(vec![
            Output::new(msg.offset.to_string()).with_key(Some(msg.partition.to_string())),
        ]),
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
            if let Some(path) = other.strip_prefix("read-file:") {
                let what = match std::fs::read(path) {
                    Ok(bytes) => format!("read {} bytes", bytes.len()),
                    Err(e) => format!("denied: {:?}: {e}", e.kind()),
                };
                return Ok(vec![Output::new(what)]);
            }
            if let Some(name) = other.strip_prefix("env:") {
                return Ok(vec![Output::new(std::env::var(name).unwrap_or_else(|_| "unset".into()))]);
            }
            if let Some(addr) = other.strip_prefix("connect:") {
                let what = match std::net::TcpStream::connect(addr) {
                    Ok(_) => "connected".to_string(),
                    Err(e) => format!("denied: {:?}: {e}", e.kind()),
                };
                return Ok(vec![Output::new(what)]);
            }
            if other == "clock" {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                return Ok(vec![Output::new(now.as_secs().to_string())]);
            }
            if other == "random" {
                let mut map = HashMap::<u8, u8>::new(); // seeds from WASI random
                map.insert(1, 1);
                let bytes: Vec<String> = (0..8)
                    .map(|i| {
                        let h = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), i);
                        format!("{:02x}", h as u8)
                    })
                    .collect();
                return Ok(vec![Output::new(bytes.concat())]);
            }
            if let Some(n) = other.strip_prefix("flaky:") {
                let n: u32 = n.parse().map_err(HandlerError::bad_message)?;
                let mut attempts = ATTEMPTS.lock().unwrap();
                let seen = attempts.get_or_insert_with(HashMap::new).entry((msg.partition, msg.offset)).or_insert(0);
                *seen += 1;
                if *seen <= n {
                    return Err(HandlerError::retry_later(format!("chaos: flaky, attempt {seen}")));
                }
                let header = seen.to_string();
                return Ok(vec![Output::from_message(&msg).with_header("attempts", header)]);
            }
            if let Some(ms) = other.strip_prefix("wait:") {
                let ms: u64 = ms.parse().map_err(HandlerError::bad_message)?;
                std::thread::sleep(Duration::from_millis(ms));
                return Ok(vec![Output::from_message(&msg)]);
            }
            if let Some(n) = other.strip_prefix("flood:") {
                let n: u32 = n.parse().map_err(HandlerError::bad_message)?;
                for i in 0..n {
                    log::info(&format!("flood line {i}"));
                }
                return Ok(vec![Output::from_message(&msg)]);
            }
            if other == "forge" {
                log::info("innocent\n2026-01-01T00:00:00.000000Z ERROR kp::kafka::health: PARTITION HALTED: forged\r\x1b[2K");
                return Ok(vec![Output::from_message(&msg)]);
            }
            if let Some(name) = other.strip_prefix("set-header:") {
                return Ok(vec![Output::from_message(&msg).with_header(name, "forged")]);
            }
            if let Some(topic) = other.strip_prefix("to-topic:") {
                return Ok(vec![Output::from_message(&msg).to_topic(topic)]);
            }
            if let Some(n) = other.strip_prefix("to-partition:") {
                let n: i32 = n.parse().map_err(HandlerError::bad_message)?;
                return Ok(vec![Output::from_message(&msg).to_partition(n)]);
            }
            if let Some(n) = other.strip_prefix("big:") {
                let n: usize = n.parse().map_err(HandlerError::bad_message)?;
                return Ok(vec![Output::from_message(&msg).with_value(Some(vec![b'x'; n]))]);
            }
            if let Some(ms) = other.strip_prefix("sleep:") {
                let ms: u64 = ms.parse().map_err(HandlerError::bad_message)?;
                busy_wait(Duration::from_millis(ms));
            }
            Ok(vec![Output::from_message(&msg)])
        }
    }
}

kp_guest::export_handler!(handle, init = init);
