//! End-to-end tests of `kp run` against a real Apache Kafka broker (KRaft, single node), started
//! by `scripts/kafka.sh start` (`.ci/run` does it). Each test uses topics and groups of its own.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use support::{
    FAST_CLASSIC, Kp, PluginDir, Read, Rec, brokers, committed, create_topic, log_end, manifest,
    produce, read_all, unique, wait_for_records,
};

/// `n` records over `keys` keys: value `v<i>` (every 10th a tombstone), headers `seq=<i>` and a
/// repeated `dup` header.
fn numbered(n: usize, keys: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            key: Some(format!("k{}", i % keys).into_bytes()),
            value: if i % 10 == 9 {
                None
            } else {
                Some(format!("v{i}").into_bytes())
            },
            headers: vec![
                ("seq".into(), i.to_string().into_bytes()),
                ("dup".into(), b"a".to_vec()),
                ("dup".into(), vec![0, 255]),
            ],
            partition: None,
        })
        .collect()
}

/// How many times each input appears in the outputs: (missing, duplicated).
fn tally(outputs: &[Read], n: usize) -> (Vec<usize>, usize) {
    let mut seen = vec![0u32; n];
    for r in outputs {
        seen[r.seq()] += 1;
    }
    let missing = (0..n).filter(|i| seen[*i] == 0).collect();
    let dups = seen.iter().map(|c| c.saturating_sub(1) as usize).sum();
    (missing, dups)
}

fn total(offsets: &BTreeMap<i32, i64>) -> i64 {
    offsets.values().sum()
}

fn uppercase_end_to_end(protocol: &[&str], n: usize) {
    let (input, output, group) = (unique("up-in"), unique("up-out"), unique("kp-up"));
    create_topic(&input, 3);
    create_topic(&output, 3);
    let records = numbered(n, 50);
    produce(&input, &records);

    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "uppercase",
        &manifest(&input, &output, &group, ""),
    );
    let kp = Kp::run(plugins.path(), protocol);
    let outputs = read_all(&output, n, Duration::from_secs(180));
    let committed = support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "kp exited with {status}:\n{logs}");

    assert_eq!(outputs.len(), n, "exactly one output per input");
    let (missing, dups) = tally(&outputs, n);
    assert!(
        missing.is_empty() && dups == 0,
        "missing {missing:?}, duplicated {dups}"
    );
    // Per key, outputs appear in input order (a key maps to one output partition).
    let mut by_partition: Vec<&Read> = outputs.iter().collect();
    by_partition.sort_by_key(|r| (r.partition, r.offset));
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in by_partition {
        let s = r.seq();
        let input = &records[s];
        assert_eq!(r.key, input.key);
        if let Some(prev) = last.insert(r.key.clone().unwrap(), s) {
            assert!(
                prev < s,
                "key {:?}: seq {s} came after {prev}",
                String::from_utf8_lossy(r.key.as_ref().unwrap())
            );
        }
        assert_eq!(
            r.value,
            input.value.as_ref().map(|v| v.to_ascii_uppercase()),
            "value of seq {s}"
        );
        assert_eq!(
            r.headers, input.headers,
            "headers of seq {s}, in order, repeats kept"
        );
    }
    assert_eq!(
        total(&committed),
        n as i64,
        "committed offsets equal the log end"
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn uppercase_30k_messages_classic_protocol() {
    uppercase_end_to_end(FAST_CLASSIC, 30_000);
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn uppercase_with_the_kip848_consumer_protocol() {
    uppercase_end_to_end(&["--group-protocol", "consumer"], 5_000);
}

/// A slow copy of the input: the chaos plugin busy-waits `delay_us` per message.
fn slow_setup(n: usize, delay_us: u32) -> (String, String, String, PluginDir) {
    let (input, output, group) = (unique("slow-in"), unique("slow-out"), unique("kp-slow"));
    create_topic(&input, 3);
    create_topic(&output, 3);
    produce(&input, &numbered(n, 60));
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "slow",
        &manifest(
            &input,
            &output,
            &group,
            &format!("[config]\ndelay-us = {delay_us}\n"),
        ),
    );
    (input, output, group, plugins)
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn sigterm_mid_stream_then_restart_loses_nothing_and_repeats_nothing() {
    let n = 20_000;
    let (input, output, group, plugins) = slow_setup(n, 300);
    let mut kp = Kp::run(plugins.path(), FAST_CLASSIC);
    kp.wait_for_log("partitions assigned", Duration::from_secs(60));
    wait_for_records(&output, 2_000, Duration::from_secs(120));
    let (status, logs) = kp.stop();
    assert!(
        status.success(),
        "clean exit after SIGTERM: {status}\n{logs}"
    );
    assert!(logs.contains("partition drained and committed"), "{logs}");
    let stopped_at = total(&committed(&group, &input));
    assert!(
        stopped_at < n as i64,
        "the stop came mid-stream (committed {stopped_at})"
    );
    assert_eq!(
        stopped_at,
        total(&log_end(&output)),
        "every output written before the stop is committed, and nothing else"
    );

    let kp = Kp::run(plugins.path(), FAST_CLASSIC);
    let outputs = read_all(&output, n, Duration::from_secs(240));
    support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    let (missing, dups) = tally(&outputs, n);
    assert!(
        missing.is_empty(),
        "lost {} messages: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(dups, 0, "a clean stop handles nothing twice");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn kill_9_mid_stream_then_restart_loses_nothing() {
    let n = 20_000;
    let queue_depth = 200;
    let (input, output, group, plugins) = slow_setup(n, 300);
    let depth = queue_depth.to_string();
    let mut args = FAST_CLASSIC.to_vec();
    args.extend(["--queue-depth", &depth]);
    let mut kp = Kp::run(plugins.path(), &args);
    kp.wait_for_log("partitions assigned", Duration::from_secs(60));
    wait_for_records(&output, 3_000, Duration::from_secs(120));
    kp.signal("KILL");
    kp.wait(Duration::from_secs(10));
    let at_kill = total(&committed(&group, &input));
    let written = total(&log_end(&output));
    println!("at kill -9: committed {at_kill}, outputs written {written}");
    assert!(at_kill < n as i64, "the kill came mid-stream");

    // A new member of the same group: the old one's session must expire first.
    let kp = Kp::run(plugins.path(), &args);
    let outputs = read_all(&output, n, Duration::from_secs(240));
    support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    let (missing, dups) = tally(&outputs, n);
    assert!(missing.is_empty(), "lost {} messages", missing.len());
    println!(
        "kill -9 duplicates: {dups} (outputs written but not committed at the kill: {})",
        written - at_kill
    );
    // Duplicates are the messages handled but not yet committed when the process died: at most
    // what was queued and in flight.
    assert!(
        dups as i64 <= written - at_kill,
        "duplicates {dups} exceed what was uncommitted at the kill"
    );
    assert!(
        dups <= 3 * queue_depth,
        "duplicates {dups} exceed the in-flight bound"
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn two_processes_split_the_partitions_and_hand_over_without_loss() {
    let n = 24_000;
    let (input, output, group, plugins) = slow_setup(n, 1_000);
    let mut a = Kp::run(plugins.path(), FAST_CLASSIC);
    a.wait_for_log("partitions assigned", Duration::from_secs(60));
    wait_for_records(&output, 1_000, Duration::from_secs(60));
    let mut b = Kp::run(plugins.path(), FAST_CLASSIC);
    // Cooperative rebalancing takes two rounds: A gives partitions up, then B receives them.
    a.wait_for_log("partitions revoked", Duration::from_secs(60));
    b.wait_for_log(
        &format!("consumer{{plugin=slow}}: kp::kafka::plugin_consumer: partitions assigned partitions=[\"{input}"),
        Duration::from_secs(60),
    );
    let before = total(&log_end(&output));
    wait_for_records(&output, before + 2_000, Duration::from_secs(120));
    let b_logs = b.logs();
    assert!(
        b_logs.contains("partition") && b_logs.contains("assigned"),
        "{b_logs}"
    );
    let (status, b_logs) = b.stop();
    assert!(status.success(), "{b_logs}");
    assert!(
        b_logs.contains("partition drained and committed"),
        "{b_logs}"
    );

    let outputs = read_all(&output, n, Duration::from_secs(300));
    support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, a_logs) = a.stop();
    assert!(status.success(), "{a_logs}");
    let (missing, dups) = tally(&outputs, n);
    assert!(missing.is_empty(), "lost {} messages", missing.len());
    assert_eq!(dups, 0, "clean hand-overs handle nothing twice");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn two_plugins_on_one_topic_each_see_every_message() {
    let n = 2_000;
    let input = unique("shared-in");
    let (out_up, out_pass) = (unique("shared-up"), unique("shared-pass"));
    for t in [&input, &out_up, &out_pass] {
        create_topic(t, 2);
    }
    produce(&input, &numbered(n, 10));
    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "up",
        &manifest(&input, &out_up, &unique("g-up"), ""),
    );
    plugins.add(
        "passthrough",
        "pass",
        &manifest(&input, &out_pass, &unique("g-pass"), ""),
    );
    let kp = Kp::run(plugins.path(), FAST_CLASSIC);
    let up = read_all(&out_up, n, Duration::from_secs(120));
    let pass = read_all(&out_pass, n, Duration::from_secs(120));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    for outputs in [&up, &pass] {
        let (missing, dups) = tally(outputs, n);
        assert!(
            missing.is_empty() && dups == 0,
            "missing {}, dups {dups}",
            missing.len()
        );
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn bad_modules_are_reported_and_skipped_while_good_ones_run() {
    let n = 500;
    let (input, output) = (unique("mixed-in"), unique("mixed-out"));
    create_topic(&input, 1);
    create_topic(&output, 1);
    produce(&input, &numbered(n, 5));
    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "good",
        &manifest(&input, &output, &unique("g-good"), ""),
    );
    plugins.add_raw("garbage", b"definitely not a module");
    std::fs::copy(
        support::plugins_dist().join("testing/wrong-world.wasm"),
        plugins.path().join("alien.wasm"),
    )
    .unwrap();
    plugins.add(
        "uppercase",
        "lost",
        &manifest(&unique("no-such-topic"), &output, &unique("g-lost"), ""),
    );
    let kp = Kp::run(plugins.path(), FAST_CLASSIC);
    let outputs = read_all(&output, n, Duration::from_secs(120));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    assert_eq!(outputs.len(), n);
    assert!(
        logs.contains("garbage.wasm") && logs.contains("not a WebAssembly file"),
        "{logs}"
    );
    assert!(
        logs.contains("alien.wasm") && logs.contains("does not implement the world"),
        "{logs}"
    );
    assert!(
        logs.contains("plugin lost: not started") && logs.contains("do not exist"),
        "{logs}"
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_missing_topic_with_no_other_plugin_is_a_clear_error() {
    let plugins = PluginDir::new();
    let topic = unique("absent");
    plugins.add(
        "uppercase",
        "lonely",
        &manifest(&topic, &unique("absent-out"), &unique("g"), ""),
    );
    let mut kp = Kp::run(plugins.path(), &[]);
    let status = kp.wait(Duration::from_secs(60));
    assert!(!status.success());
    let logs = kp.logs();
    assert!(
        logs.contains(&topic) && logs.contains("do not exist"),
        "{logs}"
    );
    assert!(logs.contains("no plugin can run"), "{logs}");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_failed_message_halts_its_partition_uncommitted_and_loudly() {
    let (input, output, group) = (unique("halt-in"), unique("halt-out"), unique("kp-halt"));
    create_topic(&input, 1);
    create_topic(&output, 1);
    produce(
        &input,
        &[
            Rec::kv("a", "1"),
            Rec::kv("b", "2"),
            Rec::kv("panic", "3"),
            Rec::kv("c", "4"),
        ],
    );
    let plugins = PluginDir::new();
    plugins.add("chaos", "halter", &manifest(&input, &output, &group, ""));
    let mut kp = Kp::run(plugins.path(), FAST_CLASSIC);
    kp.wait_for_log("PARTITION HALTED", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        committed(&group, &input),
        BTreeMap::from([(0, 2)]),
        "committed up to the failed message, not past it"
    );
    assert_eq!(
        read_topic_len(&output),
        2,
        "the message after the failure was not handled"
    );
    let (status, logs) = kp.stop();
    assert_eq!(
        status.code(),
        Some(3),
        "exit status says a partition halted:\n{logs}"
    );
    assert!(
        logs.contains("HALTED") && logs.contains("offset 2"),
        "{logs}"
    );
}

fn read_topic_len(topic: &str) -> usize {
    support::read_topic(topic).len()
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn strict_mode_commits_each_message_before_the_next() {
    let (input, output, group) = (
        unique("strict-in"),
        unique("strict-out"),
        unique("kp-strict"),
    );
    create_topic(&input, 1);
    create_topic(&output, 1);
    let mut records: Vec<Rec> = (0..20).map(|i| Rec::kv(&format!("k{i}"), "x")).collect();
    records.push(Rec::kv("sleep:5000", "blocks for 5 s")); // offset 20
    records.extend((21..26).map(|i| Rec::kv(&format!("k{i}"), "x")));
    produce(&input, &records);
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "strict",
        &manifest(
            &input,
            &output,
            &group,
            "[limits]\ntimeout-ms = 20000\n[config]\nlog-each = true\n",
        ),
    );
    let mut args = FAST_CLASSIC.to_vec();
    args.extend(["--commit-mode", "strict"]);
    let mut kp = Kp::run_logging(plugins.path(), &args, "info,kp::kafka::committer=debug");
    kp.wait_for_log("handling offset 20", Duration::from_secs(60));
    // The handler is blocked on offset 20: everything before it is committed, it is not.
    assert_eq!(committed(&group, &input), BTreeMap::from([(0, 20)]));
    support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");

    // In the log, the commit of each message comes before the next message is handled.
    let pos = |needle: &str| {
        logs.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in log:\n{logs}"))
    };
    for k in 0..25 {
        let commit = pos(&format!("(\"{input}\", 0): {}", k + 1));
        let next = pos(&format!("handling offset {}", k + 1));
        assert!(
            commit < next,
            "offset {k} was committed only after offset {} was handed out",
            k + 1
        );
    }
    let _ = brokers();
}
