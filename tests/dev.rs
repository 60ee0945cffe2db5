//! `kp dev` as a plugin author uses it, on its embedded broker (librdkafka's mock cluster; no
//! real broker needed): a fixed address another client reaches, topics for every plugin (dead
//! letters included, and plugins added while it runs), an empty folder that waits, `--tail`, and
//! `--demo` (the README's first command).

mod support;

use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use support::{Kp, PluginDir, manifest, plugins_dist};

/// Produces `(key, value)` records to `topic` through `bootstrap`, as any Kafka client would.
fn produce_to(bootstrap: &str, topic: &str, records: &[(&str, &str)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    for (key, value) in records {
        producer
            .send(BaseRecord::to(topic).key(*key).payload(*value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The address `kp dev` printed for its broker.
fn broker_address(kp: &mut Kp) -> String {
    kp.wait_for_log("embedded Kafka broker at ", Duration::from_secs(60));
    let logs = kp.logs();
    let at = logs.find("embedded Kafka broker at ").unwrap() + "embedded Kafka broker at ".len();
    logs[at..].lines().next().unwrap().trim().to_string()
}

/// Writes a module and its manifest into a watched folder the way an author's copy would land:
/// the manifest first, the module under a temporary name, then renamed.
fn drop_in(dir: &Path, module: &str, name: &str, manifest: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(plugins_dist().join(format!("{module}.wasm")), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

#[test]
fn a_fixed_address_dead_letters_and_tail() {
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "chaos",
        &manifest(
            "dev-in",
            "dev-out",
            "dev-group",
            "[on-failure]\ndead-letter-topic = \"dev-dlq\"\n",
        ),
    );
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut kp = Kp::dev(plugins.path(), &["--listen", &listen, "--tail"]);
    assert_eq!(broker_address(&mut kp), listen, "the address asked for");
    kp.wait_for_log("kp dev: running", Duration::from_secs(60));
    // Another client, through the fixed address: a record, a panic, an undeclared topic.
    produce_to(
        &listen,
        "dev-in",
        &[
            ("k", "hello"),
            ("panic", "boom"),
            ("to-topic:elsewhere", "x"),
        ],
    );
    // --tail prints the output and both dead letters, with the reason in their headers.
    kp.wait_for_log(
        r#""topic":"dev-out","value":"hello""#,
        Duration::from_secs(60),
    );
    kp.wait_for_log("chaos: asked to panic", Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let tail = loop {
        let logs = kp.logs();
        let dead = logs
            .lines()
            .filter(|l| l.starts_with('{') && l.contains(r#""topic":"dev-dlq""#))
            .count();
        if dead == 2 || std::time::Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<serde_json::Value> = tail
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let out: Vec<_> = lines.iter().filter(|l| l["topic"] == "dev-out").collect();
    assert_eq!(out.len(), 1, "{tail}");
    assert_eq!(out[0]["value"], "hello");
    let dead: Vec<_> = lines.iter().filter(|l| l["topic"] == "dev-dlq").collect();
    assert_eq!(dead.len(), 2, "{tail}");
    let reason = |key: &str| {
        dead.iter()
            .find(|d| d["key"] == key)
            .and_then(|d| {
                d["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|h| h["name"] == "kp.error.message")
            })
            .map(|h| h["value"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no dead letter for {key}: {tail}"))
    };
    assert!(reason("panic").contains("chaos: asked to panic"), "{tail}");
    // An output to a topic the manifest does not name is refused, as under `kp run`.
    assert!(reason("to-topic:elsewhere").contains("elsewhere"), "{tail}");
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    // The address is free again, and the same one works for the next start.
    let mut again = Kp::dev(plugins.path(), &["--listen", &listen]);
    assert_eq!(broker_address(&mut again), listen);
    again.wait_for_log("kp dev: running", Duration::from_secs(60));
}

#[test]
fn an_empty_folder_waits_and_a_plugin_dropped_in_gets_its_topics() {
    let plugins = PluginDir::new();
    let mut kp = Kp::dev(plugins.path(), &["--listen", "127.0.0.1:0", "--tail"]);
    let address = broker_address(&mut kp);
    kp.wait_for_log("no plugin runs yet: waiting", Duration::from_secs(60));
    drop_in(
        plugins.path(),
        "uppercase",
        "late",
        &manifest("late-in", "late-out", "late-group", ""),
    );
    // Its topics are created for it (they did not exist when kp dev started).
    kp.wait_for_log("created topic late-in", Duration::from_secs(60));
    kp.wait_for_log("created topic late-out", Duration::from_secs(60));
    kp.wait_for_log("plugin consuming", Duration::from_secs(60));
    produce_to(&address, "late-in", &[("k", "quiet please")]);
    kp.wait_for_log(
        r#""topic":"late-out","value":"QUIET PLEASE""#,
        Duration::from_secs(60),
    );
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
}

#[test]
fn the_demo_runs_every_example_and_exits() {
    // The README's first command, on a free port so it runs beside other tests.
    let mut kp = Kp::dev(plugins_dist(), &["--demo", "--listen", "127.0.0.1:0"]);
    let status = kp.wait(Duration::from_secs(120));
    let logs = kp.logs();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("kp dev: demo done"), "{logs}");
    assert!(logs.contains(r#""value":"HELLO FROM KP""#), "{logs}");
}

#[test]
fn records_the_embedded_broker_drops_before_they_are_handled_are_reported() {
    // A slow handler (20 ms a message) and 24 MB produced at once: the mock cluster keeps about
    // 5 MiB per partition and drops the oldest records, which the plugin never saw.
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "slow",
        &manifest(
            "flood-in",
            "flood-out",
            "flood-group",
            "[config]\ndelay-us = \"20000\"\n",
        ),
    );
    let mut kp = Kp::dev(plugins.path(), &["--listen", "127.0.0.1:0"]);
    let address = broker_address(&mut kp);
    kp.wait_for_log("kp dev: running", Duration::from_secs(60));
    let value = "x".repeat(1024);
    let records: Vec<(String, &str)> = (0..24_000)
        .map(|i| (format!("k{i}"), value.as_str()))
        .collect();
    let records: Vec<(&str, &str)> = records.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    produce_to(&address, "flood-in", &records);
    kp.wait_for_log("RECORDS LOST", Duration::from_secs(60));
    let logs = kp.logs();
    assert!(
        logs.contains("the embedded broker dropped") && logs.contains("flood-in/"),
        "{logs}"
    );
}

#[test]
fn an_address_off_loopback_is_refused() {
    // The embedded broker has no authentication: it must not answer beyond this machine.
    let plugins = PluginDir::new();
    let mut kp = Kp::dev(plugins.path(), &["--listen", "0.0.0.0:0"]);
    let status = kp.wait(Duration::from_secs(60));
    let logs = kp.logs();
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("loopback"), "{logs}");
    assert!(!logs.contains("embedded Kafka broker at"), "{logs}");
}
