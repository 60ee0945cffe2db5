//! Text that comes from a guest (log lines, stdout and stderr, error messages, function names from
//! its name section) is untrusted: it could be huge, or carry line breaks and terminal escapes
//! that forge lines looking like kp's own. Before any of it reaches the log, the status file, a
//! halt or a dead-letter header it goes through [`sanitize`]; guest log lines are also rate
//! limited per plugin ([`LogBudget`]), with what was dropped counted and said.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Longest guest text kept, in bytes; the rest is cut (and the cut said).
pub const MAX_GUEST_TEXT: usize = 4096;

/// Guest log lines a plugin may write per second, sustained, and in one burst.
pub const LOG_LINES_PER_SECOND: f64 = 200.0;
pub const LOG_BURST: f64 = 2000.0;

/// `text` cut to `max` bytes (on a character boundary) with control characters escaped:
/// `\n`, `\r`, `\t` as those two characters, any other control character (terminal escapes
/// included) as `\u{..}`. The result holds no line break and no escape sequence.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for (i, c) in text.char_indices() {
        if out.len() >= max {
            out.push_str(&format!(" [{} more bytes cut]", text.len() - i));
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A token bucket of guest log lines, shared by every instance of one plugin version.
#[derive(Debug)]
pub struct LogBudget {
    /// Lines that may be written now, and when that was computed.
    bucket: Mutex<(f64, Instant)>,
    /// Lines dropped since the last one written.
    dropped: AtomicU64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            bucket: Mutex::new((LOG_BURST, Instant::now())),
            dropped: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// `Some(dropped before it)` when a line may be written now, `None` when it is dropped.
    pub fn take(&self) -> Option<u64> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * LOG_LINES_PER_SECOND;
        *bucket = ((bucket.0 + refill).min(LOG_BURST), now);
        if bucket.0 < 1.0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        bucket.0 -= 1.0;
        Some(self.dropped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_and_escapes_are_neutralized() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR kp: PARTITION HALTED\r\x1b[31mred\u{2028}";
        let clean = sanitize(forged, MAX_GUEST_TEXT);
        assert!(!clean.contains('\n') && !clean.contains('\r') && !clean.contains('\x1b'));
        assert!(clean.starts_with("ok\\n2026"), "{clean}");
        assert!(clean.contains("\\u{1b}[31mred"), "{clean}");
    }

    #[test]
    fn long_text_is_cut_and_says_so() {
        let long = "é".repeat(10_000);
        let clean = sanitize(&long, 100);
        assert!(clean.len() < 140, "{}", clean.len());
        assert!(clean.ends_with("more bytes cut]"), "{clean}");
    }

    #[test]
    fn the_budget_drops_a_flood_and_counts_it() {
        let budget = LogBudget::default();
        let written = (0..10_000).filter(|_| budget.take().is_some()).count();
        assert!(
            written >= LOG_BURST as usize && written < LOG_BURST as usize + 100,
            "{written}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let dropped = budget.take().expect("refilled");
        assert_eq!(dropped as usize, 10_000 - written);
    }
}
