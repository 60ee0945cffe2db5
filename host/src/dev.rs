//! `kp dev`: the same engine as `kp run`, against an embedded broker (librdkafka's mock
//! cluster). It prints the bootstrap address so any Kafka client can produce to it and read the
//! outputs. With `--demo` it feeds sample records to every plugin's input topics, prints what
//! the handlers produced, and exits.
//!
//! The mock cluster is for trying things out: it keeps at most 5 MiB per partition and drops
//! older data silently. Claims about Kafka behaviour are tested on a real broker.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::kafka::GroupProtocol;
use crate::manifest::Manifest;
use crate::replay::encode_bytes;
use crate::runner::{self, RunConfig, RunReport};

/// Partitions of each topic created on the embedded broker.
const PARTITIONS: i32 = 3;

/// Input, output and dead-letter topics named by the manifests in `dir`, so the embedded broker
/// can create them.
fn topics_of(dir: &Path) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let mut inputs = BTreeSet::new();
    let mut outputs = BTreeSet::new();
    for module in runner::module_files(dir)? {
        let Ok(manifest) = Manifest::load_for(&module) else {
            continue;
        };
        inputs.extend(manifest.input_topics.iter().cloned());
        outputs.extend(manifest.declared_outputs().cloned());
        outputs.extend(manifest.on_failure.dead_letter_topic.iter().cloned());
    }
    Ok((inputs, outputs))
}

/// Starts the embedded broker, runs the plugins in `config.plugins_dir` against it until
/// `shutdown` resolves (or, with `demo`, until the demo has printed its outputs).
pub async fn dev(
    mut config: RunConfig,
    demo: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RunReport> {
    let cluster = MockCluster::new(1).context("starting the embedded broker")?;
    let bootstrap = cluster.bootstrap_servers();
    let (inputs, outputs) = topics_of(&config.plugins_dir)?;
    for topic in inputs.iter().chain(outputs.iter()) {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    println!("kp dev: embedded Kafka broker at {bootstrap}");
    println!(
        "kp dev: topics: {}",
        inputs
            .iter()
            .chain(outputs.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "kp dev: for example: kcat -b {bootstrap} -P -t {} -k mykey",
        inputs.first().map(String::as_str).unwrap_or("TOPIC")
    );
    config.options.kafka.brokers = bootstrap.clone();
    // The mock cluster rebalances slowly with long session timeouts. Classic protocol only:
    // under KIP-848 the broker owns these, and librdkafka refuses them.
    if config.options.kafka.group_protocol == GroupProtocol::Classic {
        let consumer = &mut config.options.kafka.consumer;
        for (key, value) in [
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ] {
            consumer.entry(key.into()).or_insert_with(|| value.into());
        }
    }

    let report = if demo {
        let feed = async {
            let printed =
                tokio::task::spawn_blocking(move || run_demo(&bootstrap, &inputs, &outputs)).await;
            match printed {
                Ok(Ok(n)) => println!("kp dev: demo done: {n} output record(s) shown"),
                Ok(Err(e)) => eprintln!("kp dev: demo failed: {e:#}"),
                Err(e) => eprintln!("kp dev: demo failed: {e}"),
            }
        };
        runner::run(config, feed).await?
    } else {
        println!("kp dev: running; Ctrl-C stops");
        runner::run(config, shutdown).await?
    };
    drop(cluster);
    Ok(report)
}

/// A demo record: key, value, headers.
struct Sample {
    key: Option<&'static str>,
    value: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
}

/// Sample records: keys, headers, a tombstone, text the example plugins react to.
const SAMPLES: &[Sample] = &[
    Sample {
        key: Some("user-1"),
        value: Some("hello from kp"),
        headers: &[("source", "demo")],
    },
    Sample {
        key: Some("user-2"),
        value: Some("ERROR disk full on node 7"),
        headers: &[("source", "demo"), ("trace", "a1")],
    },
    Sample {
        key: Some("user-1"),
        value: Some("second message for user-1"),
        headers: &[],
    },
    Sample {
        key: Some("text-audit/only"),
        value: Some("routed to one topic by its key"),
        headers: &[],
    },
    Sample {
        key: None,
        value: Some("a record without a key"),
        headers: &[],
    },
    Sample {
        key: Some("user-3"),
        value: None,
        headers: &[("note", "tombstone")],
    },
];

fn run_demo(
    bootstrap: &str,
    inputs: &BTreeSet<String>,
    outputs: &BTreeSet<String>,
) -> Result<usize> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("demo producer")?;
    for topic in inputs {
        for Sample {
            key,
            value,
            headers,
        } in SAMPLES
        {
            let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic);
            if let Some(k) = *key {
                record = record.key(k);
            }
            if let Some(v) = *value {
                record = record.payload(v);
            }
            let mut hs = OwnedHeaders::new();
            for (name, v) in *headers {
                hs = hs.insert(Header {
                    key: name,
                    value: Some(*v),
                });
            }
            producer.send(record.headers(hs)).map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(10))?;
    println!(
        "kp dev: demo: produced {} sample records to {}",
        SAMPLES.len() * inputs.len(),
        inputs.iter().cloned().collect::<Vec<_>>().join(", ")
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kp-dev-demo-reader")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let topics: Vec<&str> = outputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let mut shown = 0;
    let mut last_seen = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Print outputs until none has arrived for 3 s after the first, or a minute has passed.
    while Instant::now() < deadline && (shown == 0 || last_seen.elapsed() < Duration::from_secs(3))
    {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let headers: Vec<serde_json::Value> = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| serde_json::json!({"name": h.key, "value": encode_bytes(h.value)}))
                    .collect()
            })
            .unwrap_or_default();
        let line = serde_json::json!({
            "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
            "key": encode_bytes(m.key()), "value": encode_bytes(m.payload()), "headers": headers,
        });
        println!("{line}");
        shown += 1;
        last_seen = Instant::now();
    }
    Ok(shown)
}
