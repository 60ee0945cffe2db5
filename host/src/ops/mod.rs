//! Operating kp: what an operator's tools read and do.
//!
//! - [`metrics`]: the Prometheus metrics (one registry per process).
//! - [`http`]: the HTTP listener (`--http`): `/metrics`, `/healthz`, `/readyz`, `/status`, and
//!   `POST /resume` for halted partitions.
//! - [`trace`]: W3C trace context through kp, spans exported through OTLP when configured.

pub mod http;
pub mod metrics;
pub mod trace;

/// What `/proc` says about a process (kp itself for `/metrics`; the kp binary and the broker
/// for the benchmarks and tests that measure them from outside).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    /// User and system CPU time.
    pub cpu: std::time::Duration,
    pub rss_bytes: u64,
    /// Peak resident memory (`VmHWM`).
    pub peak_rss_bytes: u64,
    pub threads: u64,
}

/// The figures of process `pid` (`None`: this process), or `None` when it is gone (or off
/// Linux).
pub fn process_figures(pid: Option<u32>) -> Option<ProcessFigures> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |pid| format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // utime and stime, in USER_HZ ticks (100 per second on Linux).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcessFigures {
        cpu: std::time::Duration::from_millis(ticks * 10),
        rss_bytes: field("VmRSS") * 1024,
        peak_rss_bytes: field("VmHWM") * 1024,
        threads: field("Threads"),
    })
}
