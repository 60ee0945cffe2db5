//! What the benchmarks share beyond the tests' helpers (`support`, the same module the
//! integration tests use: the broker address, unique names, topic creation): numeric settings
//! from the environment, producing the input, a group's committed total, building the example
//! plugins, the benchmark message and a timing loop.

#![allow(dead_code)]

#[path = "../../../tests/support/mod.rs"]
pub mod support;

#[allow(unused_imports)] // each bench uses some
pub use support::{create_topic, unique};

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker under test (`KP_TEST_BROKERS`, default 127.0.0.1:9092), checked once.
pub fn brokers() -> String {
    support::brokers().to_string()
}

/// A number from the environment, or `default`.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Produces `n` records of 100 bytes keyed over `keys` keys; returns the rate.
pub fn produce(topic: &str, n: usize, keys: usize) -> f64 {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let value = [b'x'; 100];
    let start = Instant::now();
    for i in 0..n {
        let key = format!("k{}", i % keys);
        let mut record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// The sum of `group`'s committed offsets over `topic`'s partitions (`None` when the cluster
/// does not answer).
pub fn committed_total(client: &BaseConsumer, topic: &str, partitions: i32) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = client
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    let sum = got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    drop(got); // before the consumer handle (see field-notes: librdkafka hangs otherwise)
    Some(sum)
}

/// Creates topics of `partitions` partitions, each ready (its partitions have leaders).
pub fn create_topics(names: &[&str], partitions: i32) {
    for name in names {
        create_topic(name, partitions);
    }
}

/// Builds the example plugins (plugins/build.sh) and returns their folder.
pub fn build_plugins() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dist = root.join("target/plugins/dist");
    let status = Command::new(root.join("plugins/build.sh"))
        .arg(&dist)
        .status()
        .expect("plugins/build.sh");
    assert!(status.success(), "plugins/build.sh failed");
    dist
}

/// `kp::runner::run` on a thread of its own, until `stop`.
pub struct BackgroundKp {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<kp::runner::RunReport>>,
}

impl BackgroundKp {
    pub fn start(config: kp::runner::RunConfig) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(kp::runner::run(config, async {
                    let _ = stopped.await;
                }))
        });
        BackgroundKp { stop, thread }
    }

    /// Shuts kp down (drain, commit, leave) and returns its report.
    pub fn stop(self) -> kp::runner::RunReport {
        let _ = self.stop.send(());
        self.thread.join().unwrap().unwrap()
    }
}

/// The benchmarks' message: a 100-byte value and a 10-byte key.
pub fn message() -> kp::sandbox::Message {
    kp::sandbox::Message {
        topic: "bench".into(),
        partition: 0,
        offset: 0,
        timestamp: None,
        key: Some(b"key-000001".to_vec()),
        value: Some(vec![b'x'; 100]),
        headers: vec![],
    }
}

/// Runs `f` `n` times (after a warm-up of n/10) and returns the mean time per run.
pub fn per_iteration(n: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

/// Sends kp's log to stderr when `KP_LOG` is set (e.g. `KP_LOG=warn`).
pub fn log_from_env() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("KP_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// CPU time used so far by this process and by the broker (when `scripts/kafka.sh` started it:
/// its pid file names it), for CPU-per-message figures that hold up on a noisy machine better
/// than rates do.
#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    this: Duration,
    broker: Option<Duration>,
}

/// CPU time per message between two snapshots.
pub struct CpuPerMessage {
    /// This process: the client under test (kp in-process, or the plain rdkafka loop).
    pub this_us: f64,
    /// The broker, when its pid is known.
    pub broker_us: Option<f64>,
}

impl CpuSnapshot {
    pub fn now() -> Self {
        // The pid file is only about the broker under test when that broker is on this machine.
        let local = brokers().starts_with("127.0.0.1:");
        // Where scripts/kafka.sh keeps it: KP_KAFKA_DIR, by default <repo>/.kafka.
        let kafka_dir = std::env::var_os("KP_KAFKA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.kafka"));
        let broker = std::fs::read_to_string(kafka_dir.join("broker.pid"))
            .ok()
            .filter(|_| local)
            .and_then(|pid| pid.trim().parse().ok())
            .and_then(|pid| kp::ops::process_figures(Some(pid)))
            .map(|p| p.cpu);
        CpuSnapshot {
            this: kp::ops::process_figures(None)
                .map(|p| p.cpu)
                .unwrap_or_default(),
            broker,
        }
    }

    /// CPU time per message from `self` until now, over `messages` messages.
    pub fn per_message(&self, messages: usize) -> CpuPerMessage {
        let now = CpuSnapshot::now();
        let us = |d: Duration| d.as_secs_f64() * 1e6 / messages as f64;
        CpuPerMessage {
            this_us: us(now.this.saturating_sub(self.this)),
            broker_us: now
                .broker
                .zip(self.broker)
                .map(|(b, a)| us(b.saturating_sub(a))),
        }
    }
}
