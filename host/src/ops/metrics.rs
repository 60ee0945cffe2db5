//! kp's Prometheus metrics, in one registry per process (`prometheus-client`, OpenMetrics text).
//!
//! Names follow Prometheus conventions: `kp_` prefix, `_total` counters, seconds. Labels are
//! bounded: `plugin` everywhere (plugins are files an operator put in a folder), plus `kind` for
//! failures (a fixed set), `result` for reloads, and `topic`/`partition` only for the
//! per-partition position and lag, removed when the partition is revoked.
//!
//! The message path holds owned handles ([`PluginMetrics`]): an increment is an atomic add, with
//! no label lookup per message.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    plugin: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    plugin: String,
    topic: String,
    partition: i32,
}

impl PartitionLabels {
    pub fn new(plugin: &str, topic: &str, partition: i32) -> Self {
        PartitionLabels {
            plugin: plugin.to_string(),
            topic: topic.to_string(),
            partition,
        }
    }
}

type HistogramFamily = Family<PluginLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 µs to about 4 s, by fours: a Rust handler's microseconds to a slow remote call.
    Histogram::new(exponential_buckets(1e-6, 4.0, 12))
}

/// Every metric kp exports.
pub struct Metrics {
    registry: Registry,
    handled: Family<PluginLabel, Counter>,
    outputs: Family<PluginLabel, Counter>,
    duration: HistogramFamily,
    failures: Family<FailureLabels, Counter>,
    retries: Family<PluginLabel, Counter>,
    dead_lettered: Family<PluginLabel, Counter>,
    skipped: Family<PluginLabel, Counter>,
    halted: Family<PluginLabel, Gauge>,
    resumed: Family<PluginLabel, Counter>,
    instances_started: Family<PluginLabel, Counter>,
    delivery_errors: Family<PluginLabel, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    committed: Family<PartitionLabels, Gauge>,
    lag: Family<PartitionLabels, Gauge>,
    /// Records the producer holds that the broker has not acknowledged, set at each scrape.
    pub producer_queue: Gauge,
    process_cpu: Counter<f64, AtomicU64>,
    process_rss: Gauge,
    process_threads: Gauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("kp");
        let handled = Family::default();
        registry.register(
            "records_handled",
            "Records whose handler returned successfully",
            Family::clone(&handled),
        );
        let outputs = Family::default();
        registry.register(
            "outputs_produced",
            "Output records acknowledged by the broker (dead letters not included)",
            Family::clone(&outputs),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "handler_duration",
            "Time of one handler call",
            Unit::Seconds,
            duration.clone(),
        );
        let failures = Family::default();
        registry.register(
            "handler_failures",
            "Failed handler attempts by kind (retry-later, bad-message, trap, timeout, out-of-memory, ...)",
            Family::clone(&failures),
        );
        let retries = Family::default();
        registry.register(
            "retries",
            "Attempts scheduled again after retry-later",
            Family::clone(&retries),
        );
        let dead_lettered = Family::default();
        registry.register(
            "dead_lettered",
            "Records sent to the dead-letter topic",
            Family::clone(&dead_lettered),
        );
        let skipped = Family::default();
        registry.register(
            "skipped",
            "Records dropped by the skip policy",
            Family::clone(&skipped),
        );
        let halted = Family::default();
        registry.register(
            "halted_partitions",
            "Partitions halted on a message they could not finish",
            Family::clone(&halted),
        );
        let resumed = Family::default();
        registry.register(
            "partitions_resumed",
            "Halted partitions resumed (a new version, or an operator's request)",
            Family::clone(&resumed),
        );
        let instances_started = Family::default();
        registry.register(
            "instances_started",
            "Guest instances started (first ones, replacements after traps, new versions)",
            Family::clone(&instances_started),
        );
        let delivery_errors = Family::default();
        registry.register(
            "delivery_errors",
            "Output or dead-letter records the broker refused for good",
            Family::clone(&delivery_errors),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Plugin versions published or refused",
            Family::clone(&reloads),
        );
        let committed = Family::default();
        registry.register(
            "committed_offset",
            "The group's committed offset per assigned partition",
            Family::clone(&committed),
        );
        let lag = Family::default();
        registry.register(
            "consumer_lag",
            "Records between the committed offset and the high watermark, per assigned partition",
            Family::clone(&lag),
        );
        let producer_queue = Gauge::default();
        registry.register(
            "producer_queue",
            "Records handed to the producer and not yet acknowledged",
            producer_queue.clone(),
        );
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("wasmtime", env!("KP_WASMTIME_VERSION").to_string()),
            ("librdkafka", rdkafka::util::get_rdkafka_version().1),
        ]);
        registry.register("build", "kp's version and its engines'", build);
        let process_cpu = Counter::<f64, AtomicU64>::default();
        root.register_with_unit(
            "process_cpu",
            "User and system CPU time",
            Unit::Seconds,
            process_cpu.clone(),
        );
        let process_rss = Gauge::default();
        root.register_with_unit(
            "process_resident_memory",
            "Resident memory size",
            Unit::Bytes,
            process_rss.clone(),
        );
        let process_threads = Gauge::default();
        root.register("process_threads", "OS threads", process_threads.clone());
        let process_start = Gauge::<f64, AtomicU64>::default();
        root.register_with_unit(
            "process_start_time",
            "Start time since the Unix epoch",
            Unit::Seconds,
            process_start.clone(),
        );
        process_start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        Metrics {
            registry: root,
            handled,
            outputs,
            duration,
            failures,
            retries,
            dead_lettered,
            skipped,
            halted,
            resumed,
            instances_started,
            delivery_errors,
            reloads,
            committed,
            lag,
            producer_queue,
            process_cpu,
            process_rss,
            process_threads,
        }
    }

    /// The handles one plugin's message path uses.
    pub fn plugin(&self, name: &str) -> PluginMetrics {
        let label = PluginLabel {
            plugin: name.to_string(),
        };
        PluginMetrics {
            name: name.to_string(),
            handled: self.handled.get_or_create_owned(&label),
            outputs: self.outputs.get_or_create_owned(&label),
            duration: self.duration.get_or_create_owned(&label),
            retries: self.retries.get_or_create_owned(&label),
            dead_lettered: self.dead_lettered.get_or_create_owned(&label),
            skipped: self.skipped.get_or_create_owned(&label),
            resumed: self.resumed.get_or_create_owned(&label),
            instances_started: self.instances_started.get_or_create_owned(&label),
            delivery_errors: self.delivery_errors.get_or_create_owned(&label),
        }
    }

    /// Counts a failed attempt.
    pub fn failure(&self, plugin: &str, kind: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                plugin: plugin.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts a version published (`true`) or refused.
    pub fn reload(&self, plugin: &str, published: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                plugin: plugin.to_string(),
                result: if published { "published" } else { "refused" }.to_string(),
            })
            .inc();
    }

    /// Sets the number of halted partitions of each plugin (computed at each scrape from the
    /// partitions this kp owns, so it cannot drift).
    pub fn set_halted(&self, counts: &std::collections::BTreeMap<String, i64>) {
        self.halted.clear();
        for (plugin, count) in counts {
            self.halted
                .get_or_create(&PluginLabel {
                    plugin: plugin.clone(),
                })
                .set(*count);
        }
    }

    /// Sets a partition's committed offset and lag (from librdkafka's statistics).
    pub fn partition_position(&self, labels: &PartitionLabels, committed: i64, lag: i64) {
        if committed >= 0 {
            self.committed.get_or_create(labels).set(committed);
        }
        if lag >= 0 {
            self.lag.get_or_create(labels).set(lag);
        }
    }

    /// Forgets a partition that is no longer assigned.
    pub fn forget_partition(&self, labels: &PartitionLabels) {
        self.committed.remove(labels);
        self.lag.remove(labels);
    }

    /// The metrics as OpenMetrics text, with the process figures read now.
    pub fn encode(&self) -> String {
        if let Some(process) = crate::ops::process_figures(None) {
            // A counter: it moves by what the process used since the last scrape.
            let more = process.cpu.as_secs_f64() - self.process_cpu.get();
            if more > 0.0 {
                self.process_cpu.inc_by(more);
            }
            self.process_rss.set(process.rss_bytes as i64);
            self.process_threads.set(process.threads as i64);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// One plugin's metric handles (cheap clones of shared atomics).
#[derive(Clone, Debug)]
pub struct PluginMetrics {
    pub name: String,
    pub handled: Counter,
    pub outputs: Counter,
    pub duration: Histogram,
    pub retries: Counter,
    pub dead_lettered: Counter,
    pub skipped: Counter,
    pub resumed: Counter,
    pub instances_started: Counter,
    pub delivery_errors: Counter,
}

impl PluginMetrics {
    /// Counts a failed attempt of `kind`.
    pub fn failure(&self, kind: impl std::fmt::Display) {
        metrics().failure(&self.name, &kind.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_conventional_names_and_the_plugin_label() {
        let m = metrics();
        let p = m.plugin("unit-test-plugin");
        p.handled.inc();
        p.duration.observe(0.000_002);
        p.failure("timeout");
        m.reload("unit-test-plugin", true);
        let labels = PartitionLabels::new("unit-test-plugin", "t", 3);
        m.partition_position(&labels, 10, 5);
        let text = m.encode();
        for line in [
            "kp_records_handled_total{plugin=\"unit-test-plugin\"} 1",
            "kp_handler_failures_total{plugin=\"unit-test-plugin\",kind=\"timeout\"} 1",
            "kp_reloads_total{plugin=\"unit-test-plugin\",result=\"published\"} 1",
            "kp_consumer_lag{plugin=\"unit-test-plugin\",topic=\"t\",partition=\"3\"} 5",
            "kp_handler_duration_seconds_count{plugin=\"unit-test-plugin\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("kp_build_info{"), "{text}");
        assert!(text.contains("process_threads "), "{text}");
        m.forget_partition(&labels);
        assert!(!m.encode().contains("topic=\"t\",partition=\"3\""));
    }

    /// Every metric the Grafana dashboard in `ops/` queries is one kp exports.
    #[test]
    fn the_dashboard_queries_only_metrics_kp_exports() {
        let dashboard = include_str!("../../../ops/grafana-dashboard.json");
        let m = metrics();
        let p = m.plugin("dashboard-test");
        for counter in [
            &p.handled,
            &p.outputs,
            &p.retries,
            &p.dead_lettered,
            &p.skipped,
            &p.resumed,
            &p.instances_started,
            &p.delivery_errors,
        ] {
            counter.inc();
        }
        p.duration.observe(0.001);
        p.failure("trap");
        m.reload("dashboard-test", false);
        m.partition_position(&PartitionLabels::new("dashboard-test", "t", 0), 1, 1);
        m.set_halted(&std::collections::BTreeMap::from([(
            "dashboard-test".to_string(),
            0,
        )]));
        let text = m.encode();
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let json: serde_json::Value = serde_json::from_str(dashboard).expect("valid JSON");
        let mut queried = 0;
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("kp_") || word.starts_with("process_") {
                        queried += 1;
                        assert!(
                            exported.contains(word),
                            "the dashboard queries {word}, which kp does not export:\n{text}"
                        );
                    }
                }
            }
        }
        assert!(queried >= 15, "{queried}");
    }
}
