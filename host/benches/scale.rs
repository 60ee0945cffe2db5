//! kp as a user runs it, beside a plain rdkafka loop, at 1, 6, 100 and 1,000 partitions.
//!
//! Both are separate processes, measured from outside through `/proc/PID`: the `kp` binary
//! (`kp run` with the Rust passthrough plugin, defaults otherwise), and this bench executable
//! started again in "loop" mode: one thread that polls a record, produces a copy of it, stores
//! its offset, and commits the stored offsets every 100 ms (librdkafka's auto-commit), with the
//! same allocator as kp (jemalloc) and kp's `fetch.queue.backoff.ms=10`. The loop runs twice per
//! round: as librdkafka's producer defaults have it ("loop"), and with kp's producer guarantee,
//! `enable.idempotence=true` ("loop+idem": a retried send neither duplicates nor reorders an
//! output), so the cost of that guarantee shows apart from kp's. Same broker, same input topic
//! (each in its own group), rounds interleaved (kp, loop, loop+idem, kp, ...).
//!
//! For each: records per second and CPU µs per record (utime + stime of the process) between the
//! first committed offset and the last, so start-up (plugin load, group join) is left out of
//! both; the most threads seen; peak RSS (`VmHWM`); and the broker's CPU µs per record over the
//! same span, when `scripts/kafka.sh` started it (on a machine shared with the broker, what each
//! makes the broker do is part of its cost).
//!
//! `scripts/kafka.sh start && cargo bench --bench scale`
//! Environment: KP_TEST_BROKERS (default 127.0.0.1:9092), KP_BENCH_MESSAGES (default 1000000),
//! KP_BENCH_ROUNDS (default 2), KP_BENCH_PARTITION_COUNTS (default "1,6,100,1000"),
//! KP_BENCH_KP_ARGS (extra `kp run` arguments, space-separated, for experiments).
//!
//! To profile one side by hand, run the bench executable (`target/release/deps/scale-*`) with
//! `KP_SCALE_PREPARE="TOPIC PARTITIONS RECORDS"` to create a topic and fill it (with 0 records:
//! its index files touched), then `KP_SCALE_ROUND="kp|loop|loop+idem INPUT OUTPUT PARTITIONS
//! RECORDS"` to measure one round.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::support::{Rec, produce_with};
use common::{brokers, build_plugins, committed_total, create_topics, env_num, produce, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};

/// The plain loop, run in a child process (this executable with `KP_SCALE_LOOP` set).
fn plain_loop(input: &str, output: &str, group: &str, idempotent: bool) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "100")
        // As kp sets it: librdkafka's default (1 s) stalls fetching each time the prefetch
        // queue fills.
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .set("enable.idempotence", idempotent.to_string())
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    loop {
        producer.poll(Duration::ZERO);
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let Ok(m) = result else { continue };
        let mut record = BaseRecord::to(output).payload(m.payload().unwrap_or_default());
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        // Stores the message's offset + 1, the next to read (librdkafka adds the 1).
        consumer.store_offset_from_message(&m).unwrap();
    }
}

fn sample(pid: u32) -> kp::ops::ProcessFigures {
    kp::ops::process_figures(Some(pid)).unwrap_or_default()
}

struct Measured {
    rate: f64,
    cpu_us: f64,
    /// The broker's CPU µs per record over the same span, when its pid is known.
    broker_us: Option<f64>,
    threads: u64,
    peak_rss_mib: f64,
}

impl Measured {
    fn line(&self) -> String {
        let broker = self
            .broker_us
            .map_or(String::new(), |b| format!(" (broker {b:.2})"));
        format!("{:.0}/s {:.2} µs{broker}", self.rate, self.cpu_us)
    }
}

/// Watches `child` work through `n` records of `input` (its group's committed offsets).
fn measure(mut child: Child, group: &str, input: &str, partitions: i32, n: usize) -> Measured {
    let pid = child.id();
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut first: Option<(Instant, kp::ops::ProcessFigures, Option<Duration>, i64)> = None;
    let mut threads = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let last = loop {
        assert!(Instant::now() < deadline, "{group}: not done in 10 minutes");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{group}: the process exited early: {status}");
        }
        let committed = committed_total(&watcher, input, partitions).unwrap_or(0);
        let now = sample(pid);
        let broker_now = broker_pid().map(|b| sample(b).cpu);
        threads = threads.max(now.threads);
        if first.is_none() && committed > 0 {
            first = Some((Instant::now(), now, broker_now, committed));
        }
        if committed >= n as i64 {
            break (Instant::now(), now, broker_now);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < exit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (start, at_start, broker_at_start, done_before) = first.expect("progress seen");
    let records = n as f64 - done_before as f64;
    let seconds = last.0.duration_since(start).as_secs_f64().max(1e-3);
    Measured {
        rate: records / seconds,
        cpu_us: last.1.cpu.saturating_sub(at_start.cpu).as_secs_f64() * 1e6 / records,
        broker_us: broker_at_start
            .zip(last.2)
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1e6 / records),
        threads,
        peak_rss_mib: last.1.peak_rss_bytes as f64 / f64::from(1 << 20),
    }
}

fn kp_round(plugins: &Path, input: &str, output: &str, partitions: i32, n: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let group = unique("scale-kp");
    std::fs::copy(
        plugins.join("passthrough.wasm"),
        dir.path().join("pass.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pass.toml"),
        format!(
            "input-topics = [\"{input}\"]\noutput-topic = \"{output}\"\ngroup-id = \"{group}\"\n"
        ),
    )
    .unwrap();
    let extra = std::env::var("KP_BENCH_KP_ARGS").unwrap_or_default();
    let child = Command::new(env!("CARGO_BIN_EXE_kp"))
        .args(["run", "--brokers", &brokers(), "--plugins"])
        .arg(dir.path())
        .args(["--no-watch", "--cache-dir"])
        .arg(cache_dir())
        .args(extra.split_whitespace())
        .env("KP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    measure(child, &group, input, partitions, n)
}

fn loop_round(input: &str, output: &str, partitions: i32, n: usize, idempotent: bool) -> Measured {
    let group = unique("scale-loop");
    let child = Command::new(std::env::current_exe().unwrap())
        .env(
            "KP_SCALE_LOOP",
            format!("{input} {output} {group} {idempotent}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    measure(child, &group, input, partitions, n)
}

/// Writes a few small batches to every partition of `topics`, so each partition's index files
/// have their first entry before a round starts, as a topic in use has.
///
/// Why: the broker preallocates a new segment's `.index` and `.timeindex` (10 MB, sparse) and
/// maps them; the first entry written to each faults a page in. On this machine (page cache
/// full, 2026-11-30) perf showed such a fault costing the broker about 2.4–3 ms (readahead
/// allocating and zeroing a large folio of the sparse file): 78% of its CPU while kp wrote to
/// 1,000 fresh partitions, about 5 s in all. A writer whose batches are large enough never makes
/// an index entry in a short run (the loop's left 12 of 1,000 partitions indexed), one with
/// smaller batches pays for all 1,000, so fresh topics measured the broker's first touch, not
/// the writer. A topic a service writes to for good has paid it once per segment (1 GiB).
fn touch_indexes(topics: &[&str], partitions: i32) {
    // An index entry is written at the first batch after more than 4 KiB (index.interval.bytes)
    // of batches without one: four batches of 2 KiB (one record each) make one.
    let records: Vec<Rec> = (0..4)
        .flat_map(|_| 0..partitions)
        .map(|partition| Rec {
            key: None,
            value: Some(vec![b'w'; 2048]),
            headers: Vec::new(),
            partition: Some(partition),
        })
        .collect();
    let one_record_batches = [("linger.ms", "0"), ("batch.num.messages", "1")];
    for topic in topics {
        produce_with(topic, &records, &one_record_batches);
    }
}

/// Waits (at most 60 s) until the broker is quiet: under a tenth of a core over half a second,
/// so no round starts while it still digests the last one or the topics just created.
fn settle() {
    let Some(pid) = broker_pid() else {
        std::thread::sleep(Duration::from_secs(2));
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let before = sample(pid).cpu;
        std::thread::sleep(Duration::from_millis(500));
        if sample(pid).cpu.saturating_sub(before) < Duration::from_millis(50) {
            return;
        }
    }
    eprintln!("the broker did not settle in 60 s; measuring anyway");
}

/// The broker `scripts/kafka.sh` started (its pid file), whose CPU per record is shown beside:
/// on a machine it shares with the broker, what kp makes the broker do counts too.
fn broker_pid() -> Option<u32> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.kafka/broker.pid");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-kp-cache")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Ok(spec) = std::env::var("KP_SCALE_LOOP") {
        let parts: Vec<&str> = spec.split(' ').collect();
        plain_loop(parts[0], parts[1], parts[2], parts[3] == "true");
        return;
    }
    if let Ok(spec) = std::env::var("KP_SCALE_PREPARE") {
        // For profiling one side by hand: `KP_SCALE_PREPARE="topic partitions records"`.
        let parts: Vec<&str> = spec.split(' ').collect();
        let (partitions, n) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        create_topics(&[parts[0]], partitions);
        if n == 0 {
            touch_indexes(&[parts[0]], partitions);
        }
        produce(parts[0], n, n);
        return;
    }
    if let Ok(spec) = std::env::var("KP_SCALE_ROUND") {
        // One round by hand: `KP_SCALE_ROUND="kp|loop|loop+idem INPUT OUTPUT PARTITIONS RECORDS"`.
        let parts: Vec<&str> = spec.split(' ').collect();
        let (partitions, n) = (parts[3].parse().unwrap(), parts[4].parse().unwrap());
        let m = if parts[0] == "kp" {
            kp_round(&build_plugins(), parts[1], parts[2], partitions, n)
        } else {
            loop_round(parts[1], parts[2], partitions, n, parts[0] == "loop+idem")
        };
        println!("{}", m.line());
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests
    }
    let n = env_num("KP_BENCH_MESSAGES", 1_000_000);
    let rounds = env_num("KP_BENCH_ROUNDS", 2).max(1);
    let counts: Vec<i32> = std::env::var("KP_BENCH_PARTITION_COUNTS")
        .unwrap_or_else(|_| "1,6,100,1000".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let plugins = build_plugins();
    std::fs::create_dir_all(cache_dir()).unwrap();
    let _ = std::fs::set_permissions(
        cache_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    );
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!(
        "scale bench: {n} records of 100 B per run, {rounds} interleaved rounds, {cores} cores, \
         broker {}",
        brokers()
    );
    println!(
        "{:>10} | {:>9} | {:>10} | {:>8} | {:>7} | {:>8} | {:>10} | {:>8} | {:>10}",
        "partitions",
        "who",
        "records/s",
        "× loop",
        "µs/rec",
        "× loop",
        "threads",
        "RSS MiB",
        "broker µs"
    );
    for partitions in counts {
        let input = unique(&format!("scale-in-{partitions}"));
        // Every round writes a topic of its own, all created now: a broker spends seconds of
        // CPU on its metadata after creating 1,000 partitions (measured: its metadata thread
        // at half a core for about 5 s), which a round must not pay for.
        let outputs: Vec<[String; 3]> = (0..rounds)
            .map(|_| ["scale-kp-out", "scale-loop-out", "scale-idem-out"].map(unique))
            .collect();
        let mut made = vec![input.clone()];
        made.extend(outputs.iter().flatten().cloned());
        let names: Vec<&str> = made.iter().map(String::as_str).collect();
        create_topics(&names, partitions);
        let output_names: Vec<&str> = names[1..].to_vec();
        touch_indexes(&output_names, partitions);
        // One key per record: the records spread over every partition.
        produce(&input, n, n);
        let (mut kp, mut plain, mut idem) = (Vec::new(), Vec::new(), Vec::new());
        for [kp_output, loop_output, idem_output] in &outputs {
            settle();
            kp.push(kp_round(&plugins, &input, kp_output, partitions, n));
            settle();
            plain.push(loop_round(&input, loop_output, partitions, n, false));
            settle();
            idem.push(loop_round(&input, idem_output, partitions, n, true));
        }
        let row = |who: &str, m: &[Measured], base: Option<(f64, f64)>| {
            let rate = median(m.iter().map(|x| x.rate).collect());
            let cpu = median(m.iter().map(|x| x.cpu_us).collect());
            let threads = m.iter().map(|x| x.threads).max().unwrap_or(0);
            let rss = m.iter().map(|x| x.peak_rss_mib).fold(0.0, f64::max);
            let broker: Vec<f64> = m.iter().filter_map(|x| x.broker_us).collect();
            let broker = if broker.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", median(broker))
            };
            let (rx, cx) = base.map_or((String::new(), String::new()), |(r, c)| {
                (format!("{:.2}", rate / r), format!("{:.2}", cpu / c))
            });
            println!(
                "{partitions:>10} | {who:>9} | {rate:>10.0} | {rx:>8} | {cpu:>7.2} | {cx:>8} | {threads:>10} | {rss:>8.1} | {broker:>10}"
            );
            let each: Vec<String> = m.iter().map(Measured::line).collect();
            println!("{:>10}   rounds: {}", "", each.join(", "));
            (rate, cpu)
        };
        let base = row("loop", &plain, None);
        let idem = row("loop+idem", &idem, Some(base));
        let kp = row("kp", &kp, Some(base));
        println!(
            "{:>10}   kp against loop+idem: {:.2}× its records/s, {:.2}× its µs/record",
            "",
            kp.0 / idem.0,
            kp.1 / idem.1
        );
        // Thousands of partitions left behind would slow the single broker down for the rest.
        delete_topics(&std::mem::take(&mut made));
    }
}

fn delete_topics(names: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Err(e) = rt.block_on(admin.delete_topics(&names, &AdminOptions::new())) {
        eprintln!("deleting the bench's topics: {e}");
    }
}
