//! Operating kp: what an operator's tools read and do.
//!
//! - [`metrics`]: the Prometheus metrics (one registry per process).
//! - [`http`]: the HTTP listener (`--http`): `/metrics`, `/healthz`, `/readyz`, `/status`, and
//!   `POST /resume` for halted partitions.
//! - [`trace`]: W3C trace context through kp, spans exported through OTLP when configured.

pub mod http;
pub mod metrics;
pub mod trace;

/// What `/proc/self` says about kp.
pub struct ProcSelf {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u64,
}

/// kp's CPU time, resident memory and threads, or `None` off Linux.
pub fn proc_self() -> Option<ProcSelf> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // utime and stime, in USER_HZ ticks (100 per second on Linux).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(ProcSelf {
        cpu_seconds: ticks as f64 / 100.0,
        rss_bytes: field("VmRSS:")? * 1024,
        threads: field("Threads:")?,
    })
}
