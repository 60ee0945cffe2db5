//! Hot-reload figures on a real Kafka broker: the latency from the final rename of a new module
//! to the first message handled by it, and the longest gap in message handling around a swap,
//! under a steady stream. Uses the `tag-a` / `tag-b` test guests (Rust).
//!
//! `scripts/kafka.sh start && cargo bench --bench reload`
//! Environment: KP_TEST_BROKERS (default 127.0.0.1:9092), KP_BENCH_RATE (messages/s, default 20000),
//! KP_BENCH_SWAPS (default 6), KP_BENCH_INTERVAL_S (seconds between swaps, default 3),
//! KP_BENCH_BIG_MODULE (a large component to swap with instead of tag-b).
//!
//! Times come from the output records' CreateTime, which kp's producer stamps when the handler
//! returns (millisecond resolution).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{BackgroundKp, brokers, build_plugins, create_topics, env_num};
use kp::kafka::{CommitMode, KafkaSettings, RunOptions};
use kp::runner::RunConfig;
use kp::sandbox::{Allocation, SandboxConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Timestamp};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn install(dir: &Path, bytes: &[u8]) -> i64 {
    let tmp = dir.join(".tagger.wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join("tagger.wasm")).unwrap();
    now_ms()
}

/// One output: partition, CreateTime, tag.
struct Out {
    partition: i32,
    at: i64,
    tag: u8,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    common::log_from_env();
    let dist = build_plugins();
    let tag_a = std::fs::read(dist.join("testing/tag-a.wasm")).unwrap();
    // KP_BENCH_BIG_MODULE: a large component (e.g. the Python twin in benches/tag-py, 18 MB) to
    // swap with instead of tag-b; its outputs carry tag=py.
    let (tag_b, b_tag) = match std::env::var("KP_BENCH_BIG_MODULE") {
        Ok(path) => (std::fs::read(path).unwrap(), b'p'),
        Err(_) => (
            std::fs::read(dist.join("testing/tag-b.wasm")).unwrap(),
            b'b',
        ),
    };
    let rate = env_num("KP_BENCH_RATE", 20_000) as u64;
    let swaps = env_num("KP_BENCH_SWAPS", 6);
    // Seconds between swaps; a large module needs longer (its first load compiles it).
    let interval = env_num("KP_BENCH_INTERVAL_S", 3) as u64;

    let id = now_ms();
    let (input, output) = (format!("reload-in-{id}"), format!("reload-out-{id}"));
    create_topics(&[&input, &output], 3);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tagger.toml"),
        format!("input-topics = [\"{input}\"]\noutput-topic = \"{output}\"\ngroup-id = \"reload-bench-{id}\"\n"),
    )
    .unwrap();
    install(dir.path(), &tag_a);
    let cache = tempfile::tempdir().unwrap();
    let config = RunConfig {
        plugins_dir: dir.path().to_path_buf(),
        options: RunOptions {
            kafka: KafkaSettings {
                brokers: brokers(),
                ..Default::default()
            },
            commit_mode: CommitMode::Eager,
            ..Default::default()
        },
        sandbox: SandboxConfig {
            cache_dir: Some(cache.path().into()),
            allocation: Allocation::default(),
            ..Default::default()
        },
        watch: true,
        wait_for_plugins: false,
        status_file: None,
        http: None,
    };
    let running = BackgroundKp::start(config);

    // A steady stream at `rate` messages/s.
    let streaming = Arc::new(AtomicBool::new(true));
    let producer_thread = {
        let (input, streaming) = (input.clone(), streaming.clone());
        std::thread::spawn(move || {
            let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .set("linger.ms", "1")
                .create()
                .unwrap();
            let start = Instant::now();
            let mut sent: u64 = 0;
            while streaming.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let key = format!("k{}", sent % 101);
                    let _ = producer.send(
                        BaseRecord::to(&input)
                            .key(key.as_bytes())
                            .payload("x".as_bytes()),
                    );
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            producer.flush(Duration::from_secs(30)).unwrap();
        })
    };

    // Let the group settle and the stream run, then swap back and forth.
    std::thread::sleep(Duration::from_secs(8));
    let mut renames = Vec::new();
    for i in 0..swaps {
        let (bytes, tag) = if i % 2 == 0 {
            (&tag_b, b_tag)
        } else {
            (&tag_a, b'a')
        };
        renames.push((install(dir.path(), bytes), tag));
        std::thread::sleep(Duration::from_secs(interval));
    }
    streaming.store(false, Ordering::Relaxed);
    producer_thread.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    running.stop();

    // Read every output back.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reload-bench-reader-{id}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&output]).unwrap();
    let mut outs = Vec::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let tag = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "tag")
                    .and_then(|h| h.value.map(|v| v[0]))
            });
            let at = match m.timestamp() {
                Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                Timestamp::NotAvailable => continue,
            };
            outs.push(Out {
                partition: m.partition(),
                at,
                tag: tag.unwrap_or(b'?'),
            });
            idle = Instant::now();
        }
    }
    outs.sort_by_key(|o| (o.partition, o.at));

    println!(
        "kp reload benchmark: tag-a ({} bytes) swapped with a {} byte module, steady stream of {rate} msg/s over 3 partitions, {} outputs",
        tag_a.len(),
        tag_b.len(),
        outs.len()
    );
    let mut latencies = Vec::new();
    let mut gaps_near = Vec::new();
    for (at, tag) in &renames {
        let first = outs
            .iter()
            .filter(|o| o.tag == *tag && o.at >= *at)
            .map(|o| o.at)
            .min();
        if let Some(first) = first {
            latencies.push(first - at);
        }
        // Longest gap between consecutive outputs of a partition within 1 s after the rename.
        let mut worst = 0;
        for p in 0..3 {
            let times: Vec<i64> = outs
                .iter()
                .filter(|o| o.partition == p && o.at >= *at && o.at <= at + 1000)
                .map(|o| o.at)
                .collect();
            for w in times.windows(2) {
                worst = worst.max(w[1] - w[0]);
            }
        }
        gaps_near.push(worst);
    }
    // The same measure away from any swap (the second before the first one), for comparison.
    let first_rename = renames[0].0;
    let mut steady = 0;
    for p in 0..3 {
        let times: Vec<i64> = outs
            .iter()
            .filter(|o| {
                o.partition == p && o.at >= first_rename - 2000 && o.at < first_rename - 1000
            })
            .map(|o| o.at)
            .collect();
        for w in times.windows(2) {
            steady = steady.max(w[1] - w[0]);
        }
    }
    println!("  rename -> first message handled by the new version: {latencies:?} ms");
    println!("  longest gap in a partition within 1 s after a rename: {gaps_near:?} ms");
    println!("  longest gap in a partition in a second without a swap: {steady} ms");
}
