//! The execution model at scale, on the real broker: threads and instances bounded by
//! `--workers`, not by partitions; order per partition while the workers interleave partitions.
//! (The JavaScript/Python memory figure is in tests/languages.rs, which builds those guests.)
//!
//! Thread bounds stated here, for `--workers 2`: kp's own threads are the workers, the timer, the
//! epoch ticker, the folder watcher, the tokio runtime's, and per plugin a consumer thread and a
//! committer thread; librdkafka adds its own per client (a main thread, and one per broker
//! connection: about 5 per client on this single-broker cluster, for the consumer of each
//! plugin, the producer and the metadata client).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

/// librdkafka's threads for one client on the single-node test cluster, with room to spare.
const THREADS_PER_CLIENT: u64 = 6;
/// kp's own threads besides the workers and the per-plugin ones, with room to spare.
const THREADS_FIXED: u64 = 16;

fn thread_bound(workers: u64, plugins: u64) -> u64 {
    // kp's own (fixed, workers, 2 per plugin) + librdkafka's (a consumer per plugin, the
    // producer, the metadata client).
    THREADS_FIXED + workers + 2 * plugins + THREADS_PER_CLIENT * (plugins + 2)
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_thousand_partitions_through_one_kp_exactly_once_with_bounded_threads() {
    let (input, output, group) = (unique("p1000-in"), unique("p1000-out"), unique("p1000"));
    create_topic(&input, 1000);
    create_topic(&output, 6);
    let n = 20_000;
    // 5,000 keys spread the records over every partition.
    produce(&input, &seq_records(n, 5_000));
    let ends = log_end(&input);
    assert_eq!(ends.len(), 1000);
    assert!(
        ends.values().filter(|&&e| e > 0).count() > 950,
        "records on most partitions"
    );

    let plugins = PluginDir::new();
    plugins.add(
        "passthrough",
        "pass",
        &manifest(&input, &output, &group, ""),
    );
    let mut kp = Kp::run(plugins.path(), &["--workers", "2"]);
    let pid = kp.child.id();
    let mut outputs = Vec::new();
    let (threads, rss_mib) = watch_process(pid, || {
        outputs = read_topic(&output);
        outputs.len() >= n || kp.child.try_wait().unwrap().is_some()
    });
    assert!(outputs.len() >= n, "{}", kp.logs());
    // Committed at the log end: every partition that has records (one without has no offset to
    // commit).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let committed = committed(&group, &input);
        let behind: Vec<_> = ends
            .iter()
            .filter(|(p, end)| **end > 0 && committed.get(p) != Some(end))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} partitions not committed to their end, such as {:?}",
            behind.len(),
            &behind[..behind.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    let bound = thread_bound(2, 1);
    println!("1,000 partitions: {threads} threads (bound {bound}), peak RSS {rss_mib} MiB");
    let seen = count_by_seq(&outputs, n);
    assert!(
        seen.iter().all(|&c| c == 1),
        "every record exactly once: {} missing, {} repeated",
        seen.iter().filter(|&&c| c == 0).count(),
        seen.iter().filter(|&&c| c > 1).count()
    );
    assert!(
        threads <= bound,
        "{threads} threads for 1,000 partitions, above the bound of {bound}"
    );
    assert!(!logs.contains("halted"), "{logs}");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_hundred_plugins_in_one_folder_all_consume_with_bounded_threads() {
    const PLUGINS: usize = 100;
    const EACH: usize = 5;
    let t = unique("p100");
    let output = format!("{t}-out");
    create_topic(&output, 1);
    let plugins = PluginDir::new();
    let mut inputs = Vec::new();
    for i in 0..PLUGINS {
        let input = format!("{t}-in-{i}");
        create_topic(&input, 1);
        plugins.add(
            "passthrough",
            &format!("p{i}"),
            &manifest(&input, &output, &format!("{t}-g{i}"), ""),
        );
        inputs.push(input);
    }
    for (i, input) in inputs.iter().enumerate() {
        let records: Vec<Rec> = (0..EACH)
            .map(|j| Rec::kv(&format!("{i}"), &format!("{j}")))
            .collect();
        produce(input, &records);
    }
    let mut kp = Kp::run(plugins.path(), &["--workers", "2"]);
    let pid = kp.child.id();
    let mut outputs = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let (threads, rss_mib) = watch_process(pid, || {
        outputs = read_topic(&output);
        outputs.len() >= PLUGINS * EACH
            || kp.child.try_wait().unwrap().is_some()
            || std::time::Instant::now() > deadline
    });
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    let mut by_plugin: BTreeMap<String, usize> = BTreeMap::new();
    for r in &outputs {
        *by_plugin
            .entry(String::from_utf8(r.key.clone().unwrap()).unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        by_plugin.len(),
        PLUGINS,
        "every plugin consumed: {by_plugin:?}"
    );
    assert!(by_plugin.values().all(|&c| c == EACH), "{by_plugin:?}");
    let bound = thread_bound(2, PLUGINS as u64);
    println!("{PLUGINS} plugins: {threads} threads (bound {bound}), peak RSS {rss_mib} MiB");
    assert!(threads <= bound, "{threads} threads, above {bound}");
}

/// Many partitions, two workers: each partition's turns move between the workers, and a guest
/// instance sees several partitions' messages, interleaved. Every partition's messages must
/// still be handled one at a time, in offset order, once each. The check is on the outputs (an
/// instance no longer sees every message of a partition, so the guest itself cannot check for
/// gaps): the chaos plugin's `where` returns each message's offset keyed by its partition, and
/// one key's outputs keep the order in which they were produced (idempotent producer).
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn order_per_partition_holds_while_workers_interleave_partitions() {
    let (input, output, group) = (unique("order-in"), unique("order-out"), unique("order"));
    const PARTITIONS: i32 = 48;
    const EACH: i64 = 400;
    create_topic(&input, PARTITIONS);
    create_topic(&output, 4);
    let records: Vec<Rec> = (0..PARTITIONS)
        .flat_map(|p| (0..EACH).map(move |_| Rec::kv("where", "").on(p)))
        .collect();
    produce(&input, &records);
    let plugins = PluginDir::new();
    plugins.add("chaos", "order", &manifest(&input, &output, &group, ""));
    let kp = Kp::run(plugins.path(), &["--workers", "2"]);
    let outputs = read_all(
        &output,
        (PARTITIONS as i64 * EACH) as usize,
        Duration::from_secs(120),
    );
    wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut ordered: Vec<&Read> = outputs.iter().collect();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    for r in ordered {
        let p: i32 = std::str::from_utf8(r.key.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = std::str::from_utf8(r.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        seen.entry(p).or_default().push(offset);
    }
    assert_eq!(seen.len(), PARTITIONS as usize);
    for (p, offsets) in seen {
        let expected: Vec<i64> = (0..EACH).collect();
        assert_eq!(
            offsets, expected,
            "partition {p}: its messages were not handled once each in offset order"
        );
    }
}

/// The smallest pool `--workers 2` accepts (6: no room for idle instances), two plugins, and
/// guests that trap: a trapped instance is never given back or called again, each partition
/// gets a fresh one, and no partition waits for good on a full pool.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn the_smallest_pool_with_trapping_guests_stalls_no_partition() {
    let t = unique("tinypool");
    let output = format!("{t}-out");
    create_topic(&output, 1);
    let plugins = PluginDir::new();
    let mut inputs = Vec::new();
    for i in 0..2 {
        let input = format!("{t}-in-{i}");
        create_topic(&input, 6);
        plugins.add(
            "chaos",
            &format!("c{i}"),
            &manifest(
                &input,
                &output,
                &format!("{t}-g{i}"),
                "[on-failure]\npolicy = \"skip\"\n",
            ),
        );
        inputs.push(input);
    }
    const EACH: usize = 120;
    for input in &inputs {
        // Every fourth record traps its instance; the others pass.
        let records: Vec<Rec> = (0..EACH)
            .map(|i| {
                let key = if i % 4 == 0 { "panic" } else { "pass" };
                Rec::kv(key, &i.to_string()).on((i % 6) as i32)
            })
            .collect();
        produce(input, &records);
    }
    let kp = Kp::run(plugins.path(), &["--workers", "2", "--instance-pool", "6"]);
    let expected = 2 * (EACH - EACH / 4);
    let outputs = read_all(&output, expected, Duration::from_secs(120));
    for input in &inputs {
        wait_committed_to_end(
            &format!("{t}-g{}", &input[input.len() - 1..]),
            input,
            Duration::from_secs(60),
        );
    }
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    assert_eq!(outputs.len(), expected, "{logs}");
    assert_eq!(logs.matches("SKIPPED").count(), 2 * (EACH / 4), "{logs}");
}

/// What a plugin holds prefetched is bounded by `--prefetch-mib`, shared by its input partitions,
/// not by how many partitions it has: with a backlog on 100 partitions and a slow handler (the
/// backlog waits in librdkafka's queues), kp holds far less with a 4 MiB budget (64 KiB per
/// partition, the floor) than with one above the backlog.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn prefetched_records_are_bounded_by_the_budget_not_by_partitions() {
    let input = unique("prefetch-in");
    create_topic(&input, 100);
    // 400,000 records of 100 B, 4,000 on each partition: librdkafka's bookkeeping per record
    // (a few hundred bytes) weighs more than the records.
    let value = "v".repeat(100);
    let records: Vec<Rec> = (0..400_000)
        .map(|i| Rec::kv(&format!("k{i}"), &value))
        .collect();
    produce(&input, &records);
    let peak_rss_mib = |budget: &str| -> u64 {
        // An output topic of its own: the first output seen is this run's.
        let (group, output) = (unique("prefetch"), unique("prefetch-out"));
        create_topic(&output, 1);
        let plugins = PluginDir::new();
        // 1 ms per record on one worker: 1,000 records/s, the fetcher far more (and a core left
        // for it and the broker).
        let slow = "[config]\ndelay-us = 1000\n";
        plugins.add("chaos", "slow", &manifest(&input, &output, &group, slow));
        let kp = Kp::run(
            plugins.path(),
            &["--workers", "1", "--prefetch-mib", budget],
        );
        let pid = kp.child.id();
        let started = std::time::Instant::now();
        let mut first_output = None;
        let (_, peak) = watch_process(pid, || {
            if first_output.is_none() && !read_topic(&output).is_empty() {
                first_output = Some(std::time::Instant::now());
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "no output in 90 s: {}",
                kp.logs()
            );
            // Long enough for the fetcher to take in all it may.
            first_output.is_some_and(|at| at.elapsed() > Duration::from_secs(5))
        });
        let (status, logs) = kp.stop();
        assert!(status.success(), "{logs}");
        peak
    };
    let bounded = peak_rss_mib("4");
    let unbounded = peak_rss_mib("4096");
    println!(
        "peak RSS with 400,000 records waiting on 100 partitions: {bounded} MiB with --prefetch-mib 4, {unbounded} MiB with 4096"
    );
    assert!(
        bounded + 32 < unbounded,
        "the budget did not bound the prefetch: {bounded} MiB with 4 MiB, {unbounded} MiB with 4096"
    );
}
