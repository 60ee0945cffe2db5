//! Hot reload on a real Kafka broker: a changed module takes over at a message boundary, with
//! nothing lost, skipped or handled twice. The `tag-a` / `tag-b` test guests pass messages through
//! with a `tag` header, so each output says which version handled it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    FAST_CLASSIC, Kp, PluginDir, Read, Rec, committed, create_topic, log_end, manifest, produce,
    read_all, unique, wait_for_records,
};

fn tag_module(tag: &str) -> Vec<u8> {
    std::fs::read(support::plugins_dist().join(format!("testing/tag-{tag}.wasm"))).unwrap()
}

/// Replaces `dir/name.wasm` the careful way: write a hidden temporary file, then rename.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// Produces `n` records (header `seq`) over `secs` seconds from a background thread.
fn stream(topic: &str, n: usize, secs: f64) -> std::thread::JoinHandle<()> {
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let batches = 50;
        let per = n / batches;
        let pause = Duration::from_secs_f64(secs / batches as f64);
        for b in 0..batches {
            let recs: Vec<Rec> = (b * per..(b + 1) * per)
                .map(|i| {
                    Rec::kv(&format!("k{}", i % 97), &format!("v{i}")).header("seq", i.to_string())
                })
                .collect();
            produce(&topic, &recs);
            std::thread::sleep(pause);
        }
    })
}

/// Asserts every input 0..n appears exactly once and, per partition, in input order.
fn exactly_once_in_order(outputs: &[Read], n: usize) {
    let mut seen = vec![0u32; n];
    for r in outputs {
        seen[r.seq()] += 1;
    }
    let missing = seen.iter().filter(|c| **c == 0).count();
    let dups: u32 = seen.iter().map(|c| c.saturating_sub(1)).sum();
    assert!(
        missing == 0 && dups == 0,
        "missing {missing}, duplicated {dups}"
    );
    let mut sorted: Vec<&Read> = outputs.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for w in sorted.windows(2) {
        if w[0].partition == w[1].partition {
            assert!(
                w[0].seq() < w[1].seq(),
                "order broken in partition {}",
                w[0].partition
            );
        }
    }
}

/// The sequence of `tag` values per output partition, as runs: [(tag, count)].
fn tag_runs(outputs: &[Read]) -> Vec<Vec<(String, usize)>> {
    let partitions = outputs.iter().map(|r| r.partition).max().unwrap_or(0) + 1;
    let mut runs = vec![Vec::<(String, usize)>::new(); partitions as usize];
    let mut sorted: Vec<&Read> = outputs.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in sorted {
        let tag = r.header_str("tag").unwrap().to_string();
        let p = &mut runs[r.partition as usize];
        match p.last_mut() {
            Some((t, c)) if *t == tag => *c += 1,
            _ => p.push((tag, 1)),
        }
    }
    runs
}

fn status(file: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(file).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kp running one plugin, `tagger` (the tag-a module), from `input` to `output`, with its status
/// written to `status_file`.
struct Tagger {
    input: String,
    output: String,
    group: String,
    plugins: PluginDir,
    status_file: std::path::PathBuf,
    kp: Kp,
}

fn start_tagger(prefix: &str, partitions: i32, log_filter: &str) -> Tagger {
    let (input, output, group) = (
        unique(&format!("{prefix}-in")),
        unique(&format!("{prefix}-out")),
        unique("kp-tagger"),
    );
    create_topic(&input, partitions);
    create_topic(&output, partitions);
    let plugins = PluginDir::new();
    std::fs::write(
        plugins.path().join("tagger.toml"),
        manifest(&input, &output, &group, ""),
    )
    .unwrap();
    install(plugins.path(), "tagger", &tag_module("a"));
    let status_file = plugins.path().join(".status.json");
    let sf = status_file.to_str().unwrap().to_string();
    let mut args = FAST_CLASSIC.to_vec();
    args.extend(["--status-file", &sf]);
    let mut kp = Kp::run_logging(plugins.path(), &args, log_filter);
    kp.wait_for_log("partitions assigned", Duration::from_secs(60));
    Tagger {
        input,
        output,
        group,
        plugins,
        status_file,
        kp,
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn ten_swaps_under_a_continuous_stream_hand_each_message_to_exactly_one_version() {
    let n = 50_000;
    let Tagger {
        input,
        output,
        group,
        plugins,
        kp,
        ..
    } = start_tagger("swap", 3, "info");
    let producer = stream(&input, n, 12.0);
    wait_for_records(&output, 1, Duration::from_secs(60));
    let swaps = 10;
    for i in 0..swaps {
        std::thread::sleep(Duration::from_millis(800));
        install(
            plugins.path(),
            "tagger",
            &tag_module(if i % 2 == 0 { "b" } else { "a" }),
        );
    }
    producer.join().unwrap();
    let outputs = read_all(&output, n, Duration::from_secs(120));
    support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");

    exactly_once_in_order(&outputs, n);
    let published = logs.matches("new version ready").count();
    assert_eq!(published, swaps, "each swap published once:\n{logs}");
    let runs = tag_runs(&outputs);
    for (p, partition_runs) in runs.iter().enumerate() {
        let changes = partition_runs.len() - 1;
        let switched = logs
            .lines()
            .filter(|l| {
                l.contains("partition switched version") && l.contains(&format!("partition={p}}}"))
            })
            .count();
        assert!(
            changes <= swaps,
            "partition {p} changed version {changes} times for {swaps} swaps"
        );
        assert_eq!(
            changes, switched,
            "partition {p}: the version changes exactly where the worker switched: {partition_runs:?}"
        );
        println!("partition {p}: {partition_runs:?}");
    }
    let total_changes: usize = runs.iter().map(|r| r.len() - 1).sum();
    assert!(
        total_changes >= swaps,
        "swaps took effect while messages flowed ({total_changes} changes)"
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_broken_module_never_replaces_a_good_one_and_the_fix_is_picked_up() {
    let n = 20_000;
    let Tagger {
        input,
        output,
        group,
        plugins,
        status_file,
        kp,
    } = start_tagger("broken", 2, "info");
    let producer = stream(&input, n, 8.0);
    wait_for_records(&output, 1, Duration::from_secs(60));
    let good = status(&status_file)["plugins"]["tagger"]["version"].clone();
    assert!(good.is_string(), "{}", status(&status_file));

    install(
        plugins.path(),
        "tagger",
        b"\0asm\x0d\0\x01\0 truncated garbage",
    );
    wait_until("the refusal in the status", Duration::from_secs(30), || {
        status(&status_file)["plugins"]["tagger"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("tagger.wasm"))
    });
    let s = status(&status_file);
    assert_eq!(s["plugins"]["tagger"]["state"], "running", "{s}");
    assert_eq!(
        s["plugins"]["tagger"]["version"], good,
        "the good version still runs: {s}"
    );
    let before = log_end(&output).values().sum::<i64>();
    wait_for_records(&output, before + 501, Duration::from_secs(30));

    install(plugins.path(), "tagger", &tag_module("b"));
    wait_until("the fix in the status", Duration::from_secs(30), || {
        let s = status(&status_file);
        s["plugins"]["tagger"]["error"].is_null() && s["plugins"]["tagger"]["version"] != good
    });
    producer.join().unwrap();
    let outputs = read_all(&output, n, Duration::from_secs(120));
    support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status_code, logs) = kp.stop();
    assert!(status_code.success(), "{logs}");
    assert!(
        logs.contains("new version refused, the running version goes on"),
        "{logs}"
    );
    exactly_once_in_order(&outputs, n);
    for runs in tag_runs(&outputs) {
        assert_eq!(runs.first().unwrap().0, "a");
        assert_eq!(
            runs.last().unwrap().0,
            "b",
            "the fixed version took over: {runs:?}"
        );
        assert!(runs.len() <= 2, "a, then b, nothing in between: {runs:?}");
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_plugin_added_and_another_removed_mid_stream() {
    let n = 20_000;
    let input = unique("addrm-in");
    let (out_one, out_two) = (unique("addrm-one"), unique("addrm-two"));
    let (group_one, group_two) = (unique("kp-one"), unique("kp-two"));
    create_topic(&input, 2);
    create_topic(&out_one, 2);
    create_topic(&out_two, 2);
    let plugins = PluginDir::new();
    std::fs::write(
        plugins.path().join("one.toml"),
        manifest(&input, &out_one, &group_one, ""),
    )
    .unwrap();
    install(plugins.path(), "one", &tag_module("a"));
    let mut kp = Kp::run(plugins.path(), FAST_CLASSIC);
    kp.wait_for_log("partitions assigned", Duration::from_secs(60));
    let producer = stream(&input, n, 8.0);
    wait_for_records(&out_one, 1001, Duration::from_secs(60));

    std::fs::write(
        plugins.path().join("two.toml"),
        manifest(&input, &out_two, &group_two, ""),
    )
    .unwrap();
    install(plugins.path(), "two", &tag_module("b"));
    wait_for_records(&out_two, 1, Duration::from_secs(60));
    std::fs::remove_file(plugins.path().join("one.wasm")).unwrap();
    kp.wait_for_log(
        "consumer{plugin=one}: kp::kafka::plugin_consumer: left the group",
        Duration::from_secs(60),
    );
    let stopped_one = log_end(&out_one);

    producer.join().unwrap();
    let two = read_all(&out_two, n, Duration::from_secs(120));
    support::wait_committed_to_end(&group_two, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");

    // The added plugin's new group starts at its position (the beginning) and sees everything.
    exactly_once_in_order(&two, n);
    // The removed plugin committed exactly what it finished: its outputs per partition (input and
    // output partitions match: same keys, same partitioner, same partition count).
    assert_eq!(
        committed(&group_one, &input),
        stopped_one,
        "removed plugin: committed == finished"
    );
    assert!(
        stopped_one.values().sum::<i64>() < n as i64,
        "it was removed mid-stream"
    );
    let one = support::read_topic(&out_one);
    let mut seen = std::collections::HashSet::new();
    assert!(
        one.iter().all(|r| seen.insert(r.seq())),
        "the removed plugin handled nothing twice"
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_module_written_slowly_in_chunks_is_loaded_once_whole() {
    let Tagger {
        input,
        output,
        plugins,
        mut kp,
        ..
    } = start_tagger("chunk", 1, "info,kp::watcher=debug");

    // Truncate, then write the new version in place in 12 chunks, 150 ms apart.
    let bytes = tag_module("b");
    let path = plugins.path().join("tagger.wasm");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    use std::io::Write;
    for chunk in bytes.chunks(bytes.len() / 12 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(file);
    kp.wait_for_log("new version ready", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    produce(&input, &[Rec::kv("k", "after").header("seq", "0")]);
    let out = read_all(&output, 1, Duration::from_secs(60));
    assert_eq!(out[0].header_str("tag"), Some("b"));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    assert_eq!(
        logs.matches("new version ready").count(),
        1,
        "loaded once:\n{logs}"
    );
    // One burst of writes is one change; kp reading the module is not a change.
    assert_eq!(
        logs.matches("files changed").count(),
        1,
        "synced once:\n{logs}"
    );
    assert!(
        !logs.contains("refused"),
        "never tried a half-written module:\n{logs}"
    );
}
