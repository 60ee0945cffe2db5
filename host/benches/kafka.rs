//! Throughput on a real Kafka broker, in one run, on the same broker: plain rdkafka consumption
//! that stores each offset (no handler) as the baseline; kp with the Rust passthrough plugin in
//! the default (eager) commit mode; kp in strict mode (a synchronous commit per message).
//! Two reference rows split kp's cost: plain rdkafka on one thread that also produces a copy of
//! each message (no handler), and kp with the filter plugin set to drop everything (the handler
//! and the commit rule, without producing).
//!
//! Every row also shows CPU time per message, of this process (the client under test) and of the
//! broker (when `scripts/kafka.sh` started it), which varies less than rates on a shared machine.
//! From the reference row's CPU cost the bench derives a ceiling: the rate at which the
//! machine's cores, fully busy, could consume and produce with no handler at all.
//!
//! `scripts/kafka.sh start && cargo bench --bench kafka`
//! Environment: KP_TEST_BROKERS (default 127.0.0.1:9092), KP_BENCH_MESSAGES (default 1000000),
//! KP_BENCH_STRICT_MESSAGES (default 5000), KP_BENCH_PARTITIONS (default 6), KP_BENCH_ROUNDS
//! (default 3: every run but strict takes turns that many times; rows show the median).

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{
    BackgroundKp, CpuPerMessage, CpuSnapshot, brokers, build_plugins, committed_total,
    create_topics, env_num, produce, unique,
};
use kp::kafka::{CommitMode, KafkaSettings, RunOptions};
use kp::runner::RunConfig;
use kp::sandbox::{Allocation, SandboxConfig};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Polls `n` messages of `topic` in a new group, calls `each` on every one and stores its
/// offset. Returns when, and at what CPU times, the first message arrived.
fn consume(
    topic: &str,
    n: usize,
    group: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> (Instant, CpuSnapshot) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique(group))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        // As kp sets it: librdkafka's default (1 s) stalls a partition whenever its prefetch
        // queue fills, which made the reference loop wait rather than work.
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = 0;
    let mut start = None;
    while seen < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            each(&m);
            consumer.store_offset_from_message(&m).unwrap();
            start.get_or_insert_with(|| (Instant::now(), CpuSnapshot::now()));
            seen += 1;
        }
    }
    start.unwrap()
}

/// The rounds of one row: median rate, its range, median CPU per message.
struct Summary {
    rate: f64,
    lo: f64,
    hi: f64,
    client_us: f64,
    broker_us: f64,
}

impl Summary {
    fn of(rounds: &[Measured]) -> Self {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let rates: Vec<f64> = rounds.iter().map(|m| m.rate).collect();
        Summary {
            lo: rates.iter().copied().fold(f64::NAN, f64::min),
            hi: rates.iter().copied().fold(f64::NAN, f64::max),
            rate: median(rates),
            client_us: median(rounds.iter().map(|m| m.cpu.this_us).collect()),
            broker_us: median(rounds.iter().filter_map(|m| m.cpu.broker_us).collect()),
        }
    }
}

/// One run's figures: messages per second, and CPU time per message.
struct Measured {
    rate: f64,
    cpu: CpuPerMessage,
}

impl Measured {
    fn since(start: Instant, cpu: CpuSnapshot, messages: usize) -> Self {
        Measured {
            rate: messages as f64 / start.elapsed().as_secs_f64(),
            cpu: cpu.per_message(messages),
        }
    }
}

/// Baseline: poll and store each offset, no handler, no output.
fn baseline(topic: &str, n: usize) -> Measured {
    let (start, cpu) = consume(topic, n, "bench-baseline", |_| {});
    Measured::since(start, cpu, n - 1)
}

/// Reference: one thread polls, produces a copy of each message to `output` and stores its
/// offset (at once, not after delivery: a weaker guarantee than kp's); no handler. Timed until
/// every copy is acknowledged.
fn consume_produce(input: &str, output: &str, n: usize) -> Measured {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let (start, cpu) = consume(input, n, "bench-reference", |m| {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(output);
        if let Some(key) = rdkafka::Message::key(m) {
            record = record.key(key);
        }
        if let Some(value) = rdkafka::Message::payload(m) {
            record = record.payload(value);
        }
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    producer.flush(Duration::from_secs(300)).unwrap();
    Measured::since(start, cpu, n - 1)
}

/// kp with the passthrough plugin: time from the first committed offset to the last.
fn kp_run(
    plugins: &Path,
    module: &str,
    input: &str,
    output: &str,
    partitions: i32,
    n: usize,
    mode: CommitMode,
) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let group = unique("bench-kp");
    std::fs::copy(
        plugins.join(format!("{module}.wasm")),
        dir.path().join("pass.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pass.toml"),
        format!(
            "input-topics = [\"{input}\"]\noutput-topic = \"{output}\"\ngroup-id = \"{group}\"\n[config]\ncontains = \"no-such-text\"\n"
        ),
    )
    .unwrap();
    let config = RunConfig {
        plugins_dir: dir.path().to_path_buf(),
        options: RunOptions {
            kafka: KafkaSettings {
                brokers: brokers(),
                // KP_BENCH_X="key=value,key=value": extra librdkafka properties, for experiments.
                common: std::env::var("KP_BENCH_X")
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect(),
                ..Default::default()
            },
            commit_mode: mode,
            queue_depth: env_num("KP_BENCH_QUEUE_DEPTH", kp::kafka::DEFAULT_QUEUE_DEPTH),
            ..Default::default()
        },
        sandbox: SandboxConfig {
            cache_dir: None,
            allocation: Allocation::default(),
            ..Default::default()
        },
        watch: false,
        wait_for_plugins: false,
        status_file: None,
        http: None,
    };
    let running = BackgroundKp::start(config);
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &group)
        .create()
        .unwrap();
    let (mut first, mut first_count) = (None, 0);
    loop {
        let c = committed_total(&watcher, input, partitions).expect("committed offsets");
        if first.is_none() && c > 0 {
            first = Some((Instant::now(), CpuSnapshot::now()));
            first_count = c;
        }
        if c as usize >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (start, cpu) = first.unwrap();
    let measured = Measured::since(start, cpu, n - first_count as usize);
    let report = running.stop();
    assert!(report.halts.is_empty(), "{:?}", report.halts);
    measured
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    common::log_from_env();
    let plugins = build_plugins();
    let n = env_num("KP_BENCH_MESSAGES", 1_000_000);
    let strict_n = env_num("KP_BENCH_STRICT_MESSAGES", 5_000);
    let partitions = env_num("KP_BENCH_PARTITIONS", 6) as i32;
    let (input, output) = (unique("bench-in"), unique("bench-out"));
    let (strict_in, strict_out) = (unique("bench-strict-in"), unique("bench-strict-out"));
    create_topics(&[&input, &output, &strict_in, &strict_out], partitions);
    println!(
        "kp Kafka benchmark: {n} messages of 100 bytes over {partitions} partitions, broker {}",
        brokers()
    );
    let produced = produce(&input, n, 1000);
    println!("  producing the input                     {produced:>12.0} msg/s");
    produce(&strict_in, strict_n, 1000);

    // KP_BENCH_ONLY=baseline|reference|eager|filter|strict (for profiling) runs only that one.
    let only = std::env::var("KP_BENCH_ONLY").ok();
    let rounds = env_num("KP_BENCH_ROUNDS", 3).max(1);
    let reference_out = unique("bench-reference-out");
    create_topics(&[&reference_out], partitions);
    let eager_on = |module: &str| {
        kp_run(
            &plugins,
            module,
            &input,
            &output,
            partitions,
            n,
            CommitMode::Eager,
        )
    };
    // The runs take turns, `rounds` times, each reading the whole input in a group of its own,
    // so a slow phase of the shared machine hits every row alike; rows report the median.
    let runs: [(&str, &str, &dyn Fn() -> Measured); 4] = [
        ("baseline", "baseline: rdkafka poll + store_offset", &|| {
            baseline(&input, n)
        }),
        (
            "reference",
            "reference: one thread poll + produce + store",
            &|| consume_produce(&input, &reference_out, n),
        ),
        ("eager", "kp eager commits, passthrough plugin", &|| {
            eager_on("passthrough")
        }),
        ("filter", "kp eager commits, filter (no outputs)", &|| {
            eager_on("filter")
        }),
    ];
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut results: Vec<Vec<Measured>> = runs.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (name, _, run)) in runs.iter().enumerate() {
            if wanted(name) {
                results[i].push(run());
            }
        }
    }
    let rows: Vec<Summary> = results.iter().map(|r| Summary::of(r)).collect();
    let base = rows[0].rate;
    println!("  (median of {rounds} rounds; min-max in brackets; CPU in microseconds per message)");
    println!("{:>112} | broker", "CPU: client");
    for ((_, label, _), row) in runs.iter().zip(&rows) {
        let range = format!("[{:.0}-{:.0}]", row.lo, row.hi);
        println!(
            "  {label:<46}{:>10.0} msg/s   {:>5.2} x baseline   {range:<17}   {:>6.2} | {:.2}",
            row.rate,
            row.rate / base,
            row.client_us,
            row.broker_us,
        );
    }
    // The rate of the plain consume-produce loop (no handler) if it kept every core busy: the
    // machine's cores divided by the CPU one message costs that loop and the broker together.
    // Only meaningful when the broker shares these cores (its pid file says it runs here).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let reference_cpu = rows[1].client_us + rows[1].broker_us;
    if reference_cpu.is_finite() {
        let ceiling = cores * 1e6 / reference_cpu;
        println!(
            "  ceiling, the plain consume-produce loop on every core: {cores} cores / {reference_cpu:.2} us \
             (reference client + broker) = {ceiling:.0} msg/s = {:.2} x baseline",
            ceiling / base
        );
    } else {
        println!(
            "  no ceiling: it needs the reference row and a broker on this machine (scripts/kafka.sh)"
        );
    }
    if wanted("strict") {
        let strict = kp_run(
            &plugins,
            "passthrough",
            &strict_in,
            &strict_out,
            partitions,
            strict_n,
            CommitMode::Strict,
        );
        let label = "kp strict commits, passthrough plugin";
        println!(
            "  {label:<46}{:>10.0} msg/s{:>48.0} | {:.0}",
            strict.rate,
            strict.cpu.this_us,
            strict.cpu.broker_us.unwrap_or(f64::NAN)
        );
    }
    println!(
        "  kp eager / reference: {:.2} (kp against a plain one-thread consume-produce loop)",
        rows[2].rate / rows[1].rate
    );
    println!("  (strict mode measured over {strict_n} messages)");
}
