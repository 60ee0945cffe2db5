//! The commit rule at its edges, on the real broker: an input topic deleted and created again
//! while kp runs, and outputs the broker refuses (too large, a partition or topic that does not
//! exist) under each failure policy.

mod support;

use std::time::Duration;

use support::{
    FAST_CLASSIC, Kp, PluginDir, Read, Rec, committed, create_topic, create_topic_again,
    delete_topic, manifest, produce, read_all, read_topic, unique, wait_committed_to_end,
};

fn values(outputs: &[Read]) -> Vec<String> {
    outputs
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// Waits until `topic` holds records whose value starts with `prefix`, `n` of them.
fn wait_for_values(topic: &str, prefix: &str, n: usize, kp: &Kp) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = values(&read_topic(topic))
            .iter()
            .filter(|v| v.starts_with(prefix))
            .count();
        if got >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: {got} of {n} {prefix}…:\n{}",
            kp.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_recreated_input_topic_loses_nothing_across_a_restart() {
    let (input, output, group) = (
        unique("recreate-in"),
        unique("recreate-out"),
        unique("kp-recreate"),
    );
    create_topic(&input, 1);
    create_topic(&output, 1);
    let batch = |tag: &str, from: usize, n: usize| -> Vec<Rec> {
        (from..from + n)
            .map(|i| Rec::kv("k", &format!("{tag} {i}")))
            .collect()
    };
    produce(&input, &batch("old", 0, 100));
    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "uppercase",
        &manifest(&input, &output, &group, ""),
    );
    let kp = Kp::run(plugins.path(), FAST_CLASSIC);
    wait_for_values(&output, "OLD", 100, &kp);
    wait_committed_to_end(&group, &input, Duration::from_secs(60));

    delete_topic(&input);
    create_topic_again(&input, 1);
    produce(&input, &batch("new", 0, 50));
    wait_for_values(&output, "NEW", 50, &kp);
    // Whatever kp commits now must be the new topic's (at most its log end of 50).
    wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, first_log) = kp.stop();
    assert!(status.success(), "{first_log}");

    produce(&input, &batch("new", 50, 50));
    let kp = Kp::run(plugins.path(), FAST_CLASSIC);
    wait_for_values(&output, "NEW", 100, &kp);
    wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, second_log) = kp.stop();
    assert!(status.success(), "{second_log}");

    let outputs = values(&read_topic(&output));
    for i in 0..100 {
        let n = outputs.iter().filter(|v| **v == format!("NEW {i}")).count();
        assert_eq!(
            n, 1,
            "new record {i} handled {n} times:\n{first_log}\n{second_log}"
        );
    }
    assert!(
        first_log.contains("OFFSETS WENT BACKWARDS")
            || first_log.contains("INPUT TOPIC DELETED")
            || first_log.contains("does not exist any more"),
        "the log says what happened:\n{first_log}"
    );
}

/// Inputs whose outputs the broker refuses: too large, a partition that does not exist, a topic
/// that does not exist. Partition 0 carries them between good records; partition 1 only good ones.
struct RefusalRun {
    input: String,
    output: String,
    dlq: String,
    group: String,
    kp: Kp,
    _plugins: PluginDir,
}

fn refused_outputs(policy: &str) -> RefusalRun {
    let (input, output, dlq, group) = (
        unique("refuse-in"),
        unique("refuse-out"),
        unique("refuse-dlq"),
        unique("kp-refuse"),
    );
    create_topic(&input, 2);
    create_topic(&output, 1);
    create_topic(&dlq, 1);
    let missing = unique("no-such-topic");
    let keys = [
        "fine",
        "big:2000000",
        "to-partition:99",
        &format!("to-topic:{missing}"),
        "fine",
    ];
    let mut records: Vec<Rec> = keys.iter().map(|k| Rec::kv(k, "v").on(0)).collect();
    records.extend((0..20).map(|i| Rec::kv("fine", &format!("p1 {i}")).on(1)));
    produce(&input, &records);
    let extra = format!("[on-failure]\npolicy = \"{policy}\"\ndead-letter-topic = \"{dlq}\"\n");
    let plugins = PluginDir::new();
    plugins.add("chaos", "chaos", &manifest(&input, &output, &group, &extra));
    // librdkafka gives up on a topic that does not exist after topic.metadata.propagation.max.ms.
    let kp = Kp::run(
        plugins.path(),
        &["-X", "topic.metadata.propagation.max.ms=3000"],
    );
    RefusalRun {
        input,
        output,
        dlq,
        group,
        kp,
        _plugins: plugins,
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn refused_outputs_are_dead_lettered_with_the_reason() {
    let RefusalRun {
        input,
        output,
        dlq,
        group,
        kp,
        _plugins,
    } = refused_outputs("dead-letter");
    let mut dead = read_all(&dlq, 3, Duration::from_secs(90));
    // In the order the refusals came: the missing partition's is not always learned before the
    // missing topic's (it waits for the new output topic's metadata), so by source offset.
    let source_offset =
        |r: &Read| -> i64 { r.header_str("kp.source.offset").unwrap().parse().unwrap() };
    dead.sort_by_key(source_offset);
    wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    assert_eq!(dead.len(), 3, "{logs}");
    let keys: Vec<String> = dead
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned())
        .collect();
    assert!(
        keys[0].starts_with("big:")
            && keys[1].starts_with("to-partition:")
            && keys[2].starts_with("to-topic:"),
        "{keys:?}"
    );
    for r in &dead {
        assert_eq!(r.header_str("kp.error.kind"), Some("output-refused"));
        assert_eq!(r.header_str("kp.source.partition"), Some("0"));
    }
    let why: Vec<&str> = dead
        .iter()
        .map(|r| r.header_str("kp.error.message").unwrap())
        .collect();
    assert!(
        why[0].contains("too large") || why[0].contains("Size"),
        "{why:?}"
    );
    assert!(why[1].contains("partition"), "{why:?}");
    assert!(why[2].contains("topic"), "{why:?}");
    assert_eq!(
        read_all(&output, 22, Duration::from_secs(30)).len(),
        22,
        "the good records flowed"
    );
    assert!(!logs.contains("PARTITION HALTED"), "{logs}");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn refused_outputs_are_skipped_and_counted() {
    let RefusalRun {
        input,
        output,
        group,
        kp,
        _plugins,
        ..
    } = refused_outputs("skip");
    wait_committed_to_end(&group, &input, Duration::from_secs(90));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    assert_eq!(logs.matches("SKIPPED").count(), 3, "{logs}");
    assert_eq!(read_all(&output, 22, Duration::from_secs(30)).len(), 22);
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_refused_output_halts_under_the_halt_policy_and_others_flow() {
    let RefusalRun {
        input,
        output,
        group,
        mut kp,
        _plugins,
        ..
    } = refused_outputs("halt");
    kp.wait_for_log("PARTITION HALTED", Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed(&group, &input).get(&1) != Some(&20) {
        assert!(std::time::Instant::now() < deadline, "{}", kp.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, logs) = kp.stop();
    assert_eq!(status.code(), Some(3), "{logs}");
    assert_eq!(
        committed(&group, &input).get(&0),
        Some(&1),
        "halted at the oversized output"
    );
    assert!(read_all(&output, 21, Duration::from_secs(30)).len() >= 21);
}

/// What kp does not load is said once, with the reason, in the log and the status; so is an
/// input topic that disappears.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn unusable_files_and_a_deleted_input_topic_are_reported() {
    let (input, output, group) = (
        unique("report-in"),
        unique("report-out"),
        unique("kp-report"),
    );
    create_topic(&input, 1);
    create_topic(&output, 1);
    let plugins = PluginDir::new();
    plugins.add("uppercase", "up", &manifest(&input, &output, &group, ""));
    let dir = plugins.path();
    std::fs::create_dir(dir.join("folder.wasm")).unwrap();
    std::os::unix::fs::symlink("looped.wasm", dir.join("looped.wasm")).unwrap();
    std::fs::write(dir.join("notes.md"), "not a plugin").unwrap();
    std::fs::write(dir.join("orphan.toml"), "input-topics = [\"x\"]").unwrap();
    let status_dir = tempfile::tempdir().unwrap();
    let status_file = status_dir.path().join("status.json");
    let mut kp = Kp::run(
        plugins.path(),
        &["--status-file", status_file.to_str().unwrap()],
    );
    kp.wait_for_log("plugin consuming", Duration::from_secs(60));
    let logs = kp.logs();
    assert!(
        logs.contains("folder.wasm is a folder, not a module file"),
        "{logs}"
    );
    assert!(
        logs.contains("looped.wasm is a link that cannot be followed"),
        "{logs}"
    );
    assert!(logs.contains("notes.md: not a module"), "{logs}");
    assert!(
        logs.contains("orphan.toml: a manifest without its module"),
        "{logs}"
    );
    let status = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap()
    };
    let s = status();
    assert_eq!(s["plugins"]["folder"]["state"], "refused", "{s}");
    assert!(
        s["plugins"]["looped"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot be followed"),
        "{s}"
    );
    assert_eq!(s["plugins"]["up"]["state"], "running", "{s}");

    delete_topic(&input);
    kp.wait_for_log("INPUT TOPIC DELETED", Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !status()["plugins"]["up"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("does not exist"))
    {
        assert!(std::time::Instant::now() < deadline, "{}", status());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (exit, logs) = kp.stop();
    assert!(exit.success(), "{logs}");
}

/// kill -9, then a restart with the same `--instance-id` (static membership): the partitions
/// come back at once, not after the dead member's session (45 s by default) expires, and what
/// is handled again stays under `--max-uncommitted` per partition.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_restart_after_kill_9_gets_its_partitions_back_at_once() {
    let n = 20_000;
    let max_uncommitted = 300;
    let (input, output, group) = (
        unique("static-in"),
        unique("static-out"),
        unique("kp-static"),
    );
    create_topic(&input, 3);
    create_topic(&output, 3);
    produce(&input, &support::seq_records(n, 30));
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "slow",
        &manifest(&input, &output, &group, "[config]\ndelay-us = 300\n"),
    );
    let id = unique("host");
    let cap = max_uncommitted.to_string();
    let args = ["--instance-id", &id, "--max-uncommitted", &cap];
    let mut kp = Kp::run(plugins.path(), &args);
    kp.wait_for_log("partitions assigned", Duration::from_secs(60));
    support::wait_for_records(&output, 3_000, Duration::from_secs(120));
    kp.signal("KILL");
    kp.wait(Duration::from_secs(10));
    let at_kill: i64 = committed(&group, &input).values().sum();
    assert!(at_kill < n as i64, "the kill came mid-stream");

    let restarted = std::time::Instant::now();
    let mut kp = Kp::run(plugins.path(), &args);
    kp.wait_for_log("partitions assigned", Duration::from_secs(60));
    let back_after = restarted.elapsed();
    let outputs = read_all(&output, n, Duration::from_secs(240));
    wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    println!("partitions back {back_after:?} after the restart");
    assert!(
        back_after < Duration::from_secs(10),
        "partitions back only after {back_after:?}:\n{logs}"
    );
    let seen = support::count_by_seq(&outputs, n);
    assert!(seen.iter().all(|c| *c >= 1), "nothing lost");
    let again: u32 = seen.iter().map(|c| c - 1).sum();
    println!(
        "handled again after kill -9: {again} (bound {})",
        3 * max_uncommitted
    );
    assert!(
        again as usize <= 3 * max_uncommitted,
        "{again} handled again, above 3 partitions x {max_uncommitted}"
    );
}

/// The broker unreachable for kp (and only kp) for 8 s while it produces: outputs wait and are
/// retried, nothing halts, nothing is lost or written twice.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_broker_outage_during_produce_halts_nothing() {
    let n = 3_000;
    let secured = support::Secured::get();
    let proxy = support::Proxy::start(&secured.proxy, &secured.proxied);
    let (input, output, group) = (
        unique("outage-in"),
        unique("outage-out"),
        unique("kp-outage"),
    );
    create_topic(&input, 2);
    create_topic(&output, 2);
    produce(&input, &support::seq_records(n, 10));
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "slow",
        &manifest(&input, &output, &group, "[config]\ndelay-us = 2000\n"),
    );
    let kp = Kp::run_against(&secured.proxy, plugins.path(), &[], "info");
    support::wait_for_records(&output, 300, Duration::from_secs(60));
    proxy.cut(Duration::from_secs(8));
    let outputs = read_all(&output, n, Duration::from_secs(180));
    wait_committed_to_end(&group, &input, Duration::from_secs(90));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("PARTITION HALTED"), "{logs}");
    assert!(
        [
            "Disconnected",
            "Connection refused",
            "brokers are down",
            "Connect to"
        ]
        .iter()
        .any(|s| logs.contains(s)),
        "kp did not notice the outage:\n{logs}"
    );
    let seen = support::count_by_seq(&outputs, n);
    assert!(
        seen.iter().all(|c| *c == 1),
        "every output exactly once (idempotent producer)"
    );
}
