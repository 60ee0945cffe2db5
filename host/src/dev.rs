//! `kp dev`: the same engine as `kp run`, against an embedded broker (librdkafka's mock
//! cluster), for trying handlers out.
//!
//! - The broker answers on a fixed address (`--listen`, default [`DEFAULT_LISTEN`]), so a kcat
//!   command or a script keeps working across restarts: kp forwards it to the mock cluster, whose
//!   own port changes on every start (clients are told the mock's address after bootstrapping;
//!   both are on this machine).
//! - Every topic a manifest names (inputs, outputs, dead-letter topic) exists: created at start,
//!   and for a plugin added or changed later, before it is loaded (`RunOptions::create_missing_topics`).
//!   An output to a topic the manifest does not name is refused as under `kp run`.
//! - An empty plugins folder waits for the first plugin.
//! - `--tail` prints every record the plugins produce (JSON lines) until stopped; `--demo` feeds
//!   sample records to every input topic, prints the outputs, and exits.
//! - The mock cluster keeps at most 5 MiB or 100,000 batches per partition and drops the oldest
//!   silently (`rd_kafka_mock_partition`'s `max_size`/`max_cnt`, fixed in librdkafka, not a
//!   setting). kp dev watches for it: records dropped before a plugin handled them are reported
//!   loudly, with how many. Claims about Kafka behaviour are tested on a real broker.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{GroupProtocol, KafkaSettings};
use crate::manifest::Manifest;
use crate::replay::encode_bytes;
use crate::runner::{self, RunConfig, RunReport};
use crate::stop::{Stop, StoppableThread};

/// Partitions of each topic the embedded broker is given at start (a topic created later, for a
/// plugin added while kp dev runs, gets the mock cluster's default, 4).
pub const PARTITIONS: i32 = 3;

/// Where `kp dev`'s broker answers unless `--listen` says otherwise: not 9092, so it does not
/// collide with a real Kafka broker on the same machine.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:19092";

/// What `kp dev` does besides running the plugins.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Feed sample records to every input topic, print the outputs, and exit.
    pub demo: bool,
    /// Print every output record as it is produced, until stopped.
    pub tail: bool,
    /// Where the embedded broker answers (port 0: a free one, printed).
    pub listen: SocketAddr,
}

/// The topics the manifests in `dir` name: (inputs, outputs and dead-letter topics).
fn topics_of(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut inputs = BTreeSet::new();
    let mut outputs = BTreeSet::new();
    for manifest in manifests(dir) {
        inputs.extend(manifest.input_topics.iter().cloned());
        outputs.extend(manifest.declared_outputs().cloned());
        outputs.extend(manifest.on_failure.dead_letter_topic.iter().cloned());
    }
    (inputs, outputs)
}

/// The manifests of the modules in `dir` that have a readable one.
fn manifests(dir: &Path) -> Vec<Manifest> {
    runner::module_files(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|module| Manifest::load_for(module).ok())
        .collect()
}

/// Points `kafka` at the embedded broker. The mock cluster rebalances slowly with long session
/// timeouts, so the classic protocol gets short ones (unless the user set them). Classic only:
/// under KIP-848 the broker owns these, and librdkafka refuses them.
pub fn for_embedded_broker(kafka: &mut KafkaSettings, bootstrap: &str) {
    kafka.brokers = bootstrap.to_string();
    if kafka.group_protocol == GroupProtocol::Classic {
        for (key, value) in [
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ] {
            if !kafka.common.contains_key(key) {
                kafka
                    .consumer
                    .entry(key.into())
                    .or_insert_with(|| value.into());
            }
        }
    }
}

/// Creates `topics` on the embedded broker (those that exist already are left alone): `kp dev`'s
/// registry calls it for a plugin whose topics are missing. The mock cluster has no CreateTopics
/// (an admin request waits forever); it creates a topic when a client that allows it asks for
/// the topic's metadata, with the mock's default partition count.
pub(crate) fn create_topics(kafka: &KafkaSettings, topics: &[String]) -> Result<()> {
    let mut config = kafka.metadata_config();
    config.set("allow.auto.create.topics", "true");
    let client: BaseConsumer = crate::kafka::settings::create_client(
        &config,
        rdkafka::consumer::DefaultConsumerContext,
        "creating a client of the embedded broker",
    )?;
    // One bound for them all: this runs under the registry's lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut waiting: Vec<&String> = topics.iter().collect();
    while !waiting.is_empty() {
        waiting.retain(|topic| {
            let created = client
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .is_ok_and(|md| crate::kafka::has_topic(&md, topic));
            if created {
                println!("kp dev: created topic {topic}");
            }
            !created
        });
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = waiting.iter().map(|t| t.as_str()).collect();
            bail!(
                "the embedded broker did not create topic(s) {}",
                names.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Starts the embedded broker and runs the plugins in `config.plugins_dir` against it until
/// `shutdown` resolves (or, with `demo`, until the demo has printed its outputs).
pub async fn dev(
    mut config: RunConfig,
    options: DevOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RunReport> {
    if !options.listen.ip().is_loopback() {
        bail!(
            "kp dev --listen {}: the embedded broker has no authentication, so it answers on a \
             loopback address only (127.0.0.1 or ::1); clients elsewhere could not reach it past \
             the first connection anyway",
            options.listen
        );
    }
    let cluster = MockCluster::new(1).context("starting the embedded broker")?;
    let mock = cluster.bootstrap_servers();
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| {
            format!(
                "kp dev cannot listen on {} (in use: another kp dev, or a Kafka broker?): pick \
                 another with --listen HOST:PORT (port 0 picks a free one)",
                options.listen
            )
        })?;
    let listen = listener.local_addr()?;
    let forwarder = AbortOnDrop(tokio::spawn(forward(listener, mock.clone())));
    let (inputs, outputs) = topics_of(&config.plugins_dir);
    for topic in inputs.iter().chain(outputs.iter()) {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    println!("kp dev: embedded Kafka broker at {listen}");
    if !inputs.is_empty() || !outputs.is_empty() {
        println!(
            "kp dev: topics: {}",
            inputs
                .iter()
                .chain(outputs.iter())
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "kp dev: for example: kcat -b {listen} -P -t {} -k mykey",
        inputs.first().map(String::as_str).unwrap_or("TOPIC")
    );
    for_embedded_broker(&mut config.options.kafka, &mock);
    config.options.create_missing_topics = true;
    config.wait_for_plugins = config.watch;
    // Records the embedded broker drops before a plugin handled them are said loudly.
    let watch = StoppableThread::spawn("kp-dev-retention", {
        let (dir, mock) = (config.plugins_dir.clone(), mock.clone());
        move |stop| watch_retention(&dir, &mock, &stop)
    })?;
    let tail = if options.tail && !options.demo {
        let (dir, mock) = (config.plugins_dir.clone(), mock.clone());
        Some(StoppableThread::spawn("kp-dev-tail", move |stop| {
            tail_outputs(&dir, &mock, &stop)
        })?)
    } else {
        None
    };

    let report = if options.demo {
        let feed = async {
            let printed =
                tokio::task::spawn_blocking(move || run_demo(&mock, &inputs, &outputs)).await;
            match printed {
                Ok(Ok(n)) => println!("kp dev: demo done: {n} output record(s) shown"),
                Ok(Err(e)) => eprintln!("kp dev: demo failed: {e:#}"),
                Err(e) => eprintln!("kp dev: demo failed: {e}"),
            }
        };
        runner::run(config, feed).await
    } else {
        println!("kp dev: running; Ctrl-C stops");
        runner::run(config, shutdown).await
    };
    drop(tail);
    drop(watch);
    drop(forwarder);
    drop(cluster);
    report
}

/// Connections the forwarder serves at once (each holds two sockets).
const MAX_CONNECTIONS: usize = 256;

/// Forwards every connection to `listen` to the mock cluster at `mock`.
async fn forward(listener: tokio::net::TcpListener, mock: String) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning on the error.
                tracing::warn!("kp dev: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mock = mock.clone();
        tokio::spawn(async move {
            if let Ok(mut broker) = tokio::net::TcpStream::connect(&mock).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
            }
            drop(slot);
        });
    }
}

/// A task aborted when its owner goes, on every path out of `dev` (an early error included).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A client of the embedded broker that only reads (group `group`, never committing).
fn reader(mock: &str, group: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", mock)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("log_level", "3")
        .create()
        .context("creating a client of the embedded broker")
}

/// `--tail`: prints every record produced to an output or dead-letter topic of any plugin in
/// `dir` (the set is read again as plugins come and go), as JSON lines, until stopped.
fn tail_outputs(dir: &Path, mock: &str, stop: &Stop) {
    let consumer = match reader(mock, "kp-dev-tail") {
        Ok(c) => c,
        Err(e) => return eprintln!("kp dev: --tail: {e:#}"),
    };
    // Every topic but the broker's own; what is printed is filtered below.
    if let Err(e) = consumer.subscribe(&["^[^_].*"]) {
        return eprintln!("kp dev: --tail: {e}");
    }
    let mut outputs = BTreeSet::new();
    let mut read_again = Instant::now();
    while !stop.is_triggered() {
        if read_again <= Instant::now() {
            outputs = topics_of(dir).1;
            read_again = Instant::now() + Duration::from_secs(1);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if outputs.contains(m.topic()) => println!("{}", record_line(&m)),
            _ => {}
        }
    }
}

/// One record as a JSON line (the format of `--demo` and `--tail`).
fn record_line(m: &BorrowedMessage<'_>) -> serde_json::Value {
    let headers: Vec<serde_json::Value> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| serde_json::json!({"name": h.key, "value": encode_bytes(h.value)}))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
        "key": encode_bytes(m.key()), "value": encode_bytes(m.payload()), "headers": headers,
    })
}

/// Says, once per partition and plugin, when the embedded broker dropped records of an input
/// topic that the plugin had not handled: the partition's first offset passed the group's
/// committed one (the mock cluster drops the oldest records past 5 MiB or 100,000 batches).
fn watch_retention(dir: &Path, mock: &str, stop: &Stop) {
    let mut readers: BTreeMap<String, BaseConsumer> = BTreeMap::new();
    let mut said: BTreeMap<(String, String, i32), (i64, Instant)> = BTreeMap::new();
    while !stop.wait_timeout(Duration::from_secs(2)) {
        let manifests = manifests(dir);
        // A client per group that still has a plugin (each is a few librdkafka threads).
        readers.retain(|group, _| manifests.iter().any(|m| &m.group_id == group));
        for manifest in manifests {
            let group = manifest.group_id.clone();
            if !readers.contains_key(&group) {
                match reader(mock, &group) {
                    Ok(r) => {
                        readers.insert(group.clone(), r);
                    }
                    Err(_) => continue,
                }
            }
            let reader = &readers[&group];
            for topic in &manifest.input_topics {
                if stop.is_triggered() {
                    return;
                }
                let partitions = reader
                    .fetch_metadata(Some(topic), Duration::from_secs(2))
                    .map(|md| {
                        md.topics()
                            .iter()
                            .find(|t| t.name() == topic)
                            .map_or(0, |t| t.partitions().len() as i32)
                    })
                    .unwrap_or(0);
                for partition in 0..partitions {
                    let Ok((low, _)) =
                        reader.fetch_watermarks(topic, partition, Duration::from_secs(2))
                    else {
                        continue;
                    };
                    if low <= 0 {
                        continue;
                    }
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(topic, partition);
                    let committed = match reader.committed_offsets(tpl, Duration::from_secs(2)) {
                        Ok(got) => match got.elements().first().map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o,
                            _ => 0,
                        },
                        Err(_) => continue,
                    };
                    let key = (manifest.name.clone(), topic.clone(), partition);
                    let lost = low - committed;
                    // Once per loss, and not more than every 30 s for a partition that keeps
                    // losing records.
                    let due = said.get(&key).is_none_or(|(before, at)| {
                        *before < low && at.elapsed() >= Duration::from_secs(30)
                    });
                    if lost > 0 && due {
                        said.insert(key, (low, Instant::now()));
                        tracing::error!(
                            plugin = %manifest.name, topic = %topic, partition,
                            "RECORDS LOST: the embedded broker dropped {lost} record(s) of \
                             {topic}/{partition} (offsets {committed}..{low}) before the plugin \
                             handled them: it keeps about 5 MiB or 100,000 batches per partition. \
                             Produce less at once, or use a real broker (`kp run`) for volume."
                        );
                    }
                }
            }
        }
    }
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
    let started = Instant::now();
    // Outputs until none has arrived for 3 s after the first; when none comes at all (every
    // partition halted, or a handler that outputs nothing), not longer than 15 s.
    while (shown == 0 && started.elapsed() < Duration::from_secs(15))
        || (shown > 0 && last_seen.elapsed() < Duration::from_secs(3))
    {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        println!("{}", record_line(&m));
        shown += 1;
        last_seen = Instant::now();
    }
    if shown == 0 {
        println!(
            "kp dev: demo: no output within 15 s (the log above says why: a halted partition, or a handler that produces nothing)"
        );
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_settings_pass_validation_under_both_group_protocols() {
        for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
            let mut kafka = KafkaSettings {
                group_protocol: protocol,
                ..KafkaSettings::default()
            };
            for_embedded_broker(&mut kafka, "127.0.0.1:1");
            kafka
                .validate()
                .unwrap_or_else(|e| panic!("{protocol:?}: {e:#}"));
            let config = kafka.consumer_config(
                "p",
                "g",
                10,
                crate::kafka::settings::Prefetch::split(1 << 28, 1),
            );
            assert_eq!(
                config.get("session.timeout.ms").is_some(),
                protocol == GroupProtocol::Classic
            );
        }
        // A value the user set is kept.
        let mut kafka = KafkaSettings::default();
        kafka
            .consumer
            .insert("session.timeout.ms".into(), "45000".into());
        for_embedded_broker(&mut kafka, "127.0.0.1:1");
        assert_eq!(kafka.consumer["session.timeout.ms"], "45000");
    }
}
