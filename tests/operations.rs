//! Operating kp, on the real broker: a real Prometheus (the Debian package, installed by
//! scripts/toolchains.sh) scrapes `/metrics`; `/readyz`, `/healthz` and `/status` as a probe and
//! an operator read them; a halted partition resumes when a new version is published, and when
//! an operator asks (`POST /resume`).

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// One HTTP/1.1 request; returns the status code and the body.
fn http(method: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    // kp's POST /resume wants X-Kp-Request (a header a web page cannot send cross-site).
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Kp-Request: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((code, body))
}

fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    http("GET", addr, path)
}

/// Waits until `what` holds, failing with `logs()` after `timeout`.
fn wait_until(
    timeout: Duration,
    what: &str,
    mut ok: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Prometheus server scraping `target` every second, with its data in a temporary folder.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kp\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/toolchains.sh installs the Debian package)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The value of an instant query's first sample, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (code, body) = get(&self.addr, &format!("/api/v1/query?query={encoded}"))?;
        if code != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// The state of the scrape of kp ("up").
    fn target_up(&self) -> bool {
        self.query("up{job=\"kp\"}") == Some(1.0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn prometheus_scrapes_throughput_failures_and_lag_and_the_probes_answer() {
    let (input, output, group) = (unique("ops-in"), unique("ops-out"), unique("ops"));
    create_topic(&input, 3);
    create_topic(&output, 3);
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "ops",
        &manifest(&input, &output, &group, "[on-failure]\npolicy = \"skip\"\n"),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let kp = Kp::run(plugins.path(), &["--http", &addr]);
    let logs = || kp.logs();

    // Not ready before the consumer has joined its group; ready after.
    wait_until(
        Duration::from_secs(30),
        "the listener answering",
        || get(&addr, "/healthz").is_some(),
        logs,
    );
    wait_until(
        Duration::from_secs(60),
        "readiness",
        || get(&addr, "/readyz").is_some_and(|(code, _)| code == 200),
        logs,
    );
    assert_eq!(get(&addr, "/healthz").unwrap().0, 200);

    // 300 records: 30 of them bad (skipped), the rest pass.
    let records: Vec<Rec> = (0..300)
        .map(|i| Rec::kv(if i % 10 == 0 { "bad" } else { "pass" }, &i.to_string()).on(i % 3))
        .collect();
    produce(&input, &records);
    read_all(&output, 270, Duration::from_secs(60));
    wait_committed_to_end(&group, &input, Duration::from_secs(60));

    let prometheus = Prometheus::start(&addr);
    wait_until(
        Duration::from_secs(60),
        "Prometheus scraping kp",
        || prometheus.target_up(),
        logs,
    );
    let value = |q: &str| prometheus.query(q);
    wait_until(
        Duration::from_secs(30),
        "the counters in Prometheus",
        || value("kp_records_handled_total{plugin=\"ops\"}") == Some(270.0),
        logs,
    );
    assert_eq!(
        value("kp_handler_failures_total{plugin=\"ops\",kind=\"bad-message\"}"),
        Some(30.0)
    );
    assert_eq!(value("kp_skipped_total{plugin=\"ops\"}"), Some(30.0));
    assert_eq!(
        value("kp_outputs_produced_total{plugin=\"ops\"}"),
        Some(270.0)
    );
    assert_eq!(
        value("kp_handler_duration_seconds_count{plugin=\"ops\"}"),
        Some(300.0)
    );
    // Lag comes from librdkafka's statistics (every 5 s): all committed, none left.
    wait_until(
        Duration::from_secs(30),
        "the lag in Prometheus",
        || {
            value("sum(kp_consumer_lag{plugin=\"ops\"})") == Some(0.0)
                && value("sum(kp_committed_offset{plugin=\"ops\"})") == Some(300.0)
        },
        logs,
    );
    assert!(value("kp_build_info").is_some());
    assert!(value("process_resident_memory_bytes").is_some_and(|v| v > 0.0));

    let (code, status) = get(&addr, "/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let partitions = status["partitions"]["ops"].as_array().unwrap();
    assert_eq!(partitions.len(), 3, "{status}");
    assert!(
        partitions.iter().all(|p| p["state"] == "running"),
        "{status}"
    );
    let committed: i64 = partitions
        .iter()
        .map(|p| p["committed"].as_i64().unwrap())
        .sum();
    assert_eq!(committed, 300, "{status}");
    assert_eq!(status["ready"], true);

    let (status_code, logs) = kp.stop();
    assert!(status_code.success(), "{logs}");
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_refused_plugin_makes_kp_not_ready_and_says_why() {
    let (input, output, group) = (unique("rdy-in"), unique("rdy-out"), unique("rdy"));
    create_topic(&input, 1);
    create_topic(&output, 1);
    let plugins = PluginDir::new();
    plugins.add(
        "passthrough",
        "good",
        &manifest(&input, &output, &group, ""),
    );
    // A manifest naming a topic the cluster does not have.
    plugins.add(
        "passthrough",
        "broken",
        &manifest(&unique("no-such-topic"), &output, &unique("rdy-b"), ""),
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let kp = Kp::run(plugins.path(), &["--http", &addr]);
    let logs = || kp.logs();
    wait_until(
        Duration::from_secs(60),
        "the good plugin joining",
        || {
            get(&addr, "/status").is_some_and(|(_, body)| {
                body.contains("\"good\"") && body.contains("\"partition\":0")
            })
        },
        logs,
    );
    let (code, body) = get(&addr, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("plugin broken: refused"), "{body}");
    assert!(!body.contains("plugin good"), "{body}");
    // Alive all the same.
    assert_eq!(get(&addr, "/healthz").unwrap().0, 200);
    kp.stop();
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_halted_partition_resumes_with_a_new_version_and_when_an_operator_asks() {
    let (input, output, group) = (unique("res-in"), unique("res-out"), unique("res"));
    create_topic(&input, 1);
    create_topic(&output, 1);
    let plugins = PluginDir::new();
    // The chaos plugin halts (the default policy) on a "bad" record.
    let manifest_text = manifest(&input, &output, &group, "");
    plugins.add("chaos", "res", &manifest_text);
    let addr = format!("127.0.0.1:{}", free_port());
    let kp = Kp::run(plugins.path(), &["--http", &addr]);
    let logs = || kp.logs();
    let records: Vec<Rec> = (0..20)
        .map(|i| Rec::kv(if i == 5 { "bad" } else { "pass" }, &i.to_string()))
        .collect();
    produce(&input, &records);
    wait_until(
        Duration::from_secs(60),
        "the halt",
        || logs().contains("PARTITION HALTED"),
        logs,
    );
    let halted_status = get(&addr, "/status").unwrap().1;
    assert!(
        halted_status.contains("\"state\":\"halted\""),
        "{halted_status}"
    );
    assert!(halted_status.contains("\"offset\":5"), "{halted_status}");

    // Without the X-Kp-Request header (what a web page could send cross-site): refused.
    let mut bare = TcpStream::connect(&addr).unwrap();
    write!(
        bare,
        "POST /resume HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    bare.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // An operator retries without a fix: it halts again at the same message.
    let (code, body) = http("POST", &addr, "/resume?plugin=res").unwrap();
    assert_eq!(code, 202, "{body}");
    wait_until(
        Duration::from_secs(30),
        "the second halt",
        || logs().matches("PARTITION HALTED").count() == 2,
        logs,
    );
    assert_eq!(logs().matches("halted partition resumed").count(), 1);
    assert_eq!(
        read_topic(&output).len(),
        5,
        "nothing past the halted message"
    );

    // A fixed version (the passthrough, same topics and group) picks up at the halted message.
    plugins.add("passthrough", "res", &manifest_text);
    let outputs = read_all(&output, 20, Duration::from_secs(60));
    wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let values: Vec<String> = outputs
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(
        values, expected,
        "every record once, in order, the halted one included"
    );
    let status: serde_json::Value =
        serde_json::from_str(&get(&addr, "/status").unwrap().1).unwrap();
    assert_eq!(status["halted"].as_array().unwrap().len(), 0, "{status}");
    assert_eq!(
        status["partitions"]["res"][0]["state"], "running",
        "{status}"
    );
    let metrics = get(&addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("kp_partitions_resumed_total{plugin=\"res\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kp_halted_partitions{plugin=\"res\"} 0"),
        "{metrics}"
    );
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
}

/// Receives OTLP/HTTP JSON posts (a stand-in for an OpenTelemetry collector, which no registry
/// here has: it answers 200 and keeps the bodies).
struct OtlpReceiver {
    addr: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl OtlpReceiver {
    fn start() -> OtlpReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || serve_otlp(stream, &kept));
            }
        });
        OtlpReceiver { addr, bodies }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<serde_json::Value> {
        let bodies = self.bodies.lock().unwrap().clone();
        let mut spans = Vec::new();
        for body in bodies {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            for rs in json["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    spans.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        spans
    }
}

fn serve_otlp(stream: TcpStream, kept: &std::sync::Mutex<Vec<String>>) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // The request line and headers.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&body).into_owned());
        let reply = "{}";
        let _ = write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
    }
}

fn attribute<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_traced_record_is_handled_in_its_trace_and_its_outputs_carry_it_on() {
    let (input, output, group) = (unique("tr-in"), unique("tr-out"), unique("tr"));
    let dead = unique("tr-dlq");
    for t in [&input, &output, &dead] {
        create_topic(t, 1);
    }
    let plugins = PluginDir::new();
    plugins.add(
        "chaos",
        "traced",
        &manifest(
            &input,
            &output,
            &group,
            &format!("[on-failure]\npolicy = \"dead-letter\"\ndead-letter-topic = \"{dead}\"\n"),
        ),
    );
    let receiver = OtlpReceiver::start();
    let endpoint = format!("http://{}", receiver.addr);
    let kp = Kp::run_with_env(
        plugins.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{parent}-01");
    produce(
        &input,
        &[
            Rec::kv("pass", "traced").header("traceparent", traceparent.clone()),
            Rec::kv("pass", "untraced"),
            Rec::kv("bad", "traced-bad").header("traceparent", traceparent.clone()),
        ],
    );
    let outputs = read_all(&output, 2, Duration::from_secs(60));
    let dead_letters = read_all(&dead, 1, Duration::from_secs(60));
    let tp = |r: &Read| -> Vec<String> {
        r.headers
            .iter()
            .filter(|(n, _)| n == "traceparent")
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .collect()
    };
    let traced = outputs
        .iter()
        .find(|r| r.value.as_deref() == Some(b"traced".as_slice()))
        .unwrap();
    let untraced = outputs
        .iter()
        .find(|r| r.value.as_deref() == Some(b"untraced".as_slice()))
        .unwrap();
    assert!(tp(untraced).is_empty(), "no trace, no header");
    let out_tp = tp(traced);
    assert_eq!(out_tp.len(), 1, "one traceparent, kp's: {out_tp:?}");
    let out_parts: Vec<&str> = out_tp[0].split('-').collect();
    assert_eq!(out_parts[1], trace, "the output is in the record's trace");
    assert_ne!(out_parts[2], parent, "with a span of its own");
    let dl_tp = tp(&dead_letters[0]);
    assert_eq!(dl_tp.len(), 1, "{dl_tp:?}");
    assert!(
        dl_tp[0].contains(trace) && !dl_tp[0].contains(parent),
        "{dl_tp:?}"
    );

    // The spans reach the receiver: the handling, child of the record's span; the output's
    // producer span, child of the handling.
    let logs = || kp.logs();
    wait_until(
        Duration::from_secs(30),
        "the spans at the receiver",
        || {
            receiver
                .spans()
                .iter()
                .filter(|s| s["name"] == "kp produce")
                .count()
                >= 2
        },
        logs,
    );
    let spans = receiver.spans();
    let handles: Vec<&serde_json::Value> = spans
        .iter()
        .filter(|s| s["name"] == "kp handle" && s["traceId"] == trace)
        .collect();
    assert_eq!(handles.len(), 2, "{spans:#?}");
    for h in &handles {
        assert_eq!(h["parentSpanId"], parent);
        assert_eq!(attribute(h, "kp.plugin").unwrap()["stringValue"], "traced");
    }
    let ok = handles
        .iter()
        .find(|h| attribute(h, "kp.outcome").unwrap()["stringValue"] == "ok")
        .expect("the handling that succeeded");
    let produce_span = spans
        .iter()
        .find(|s| s["name"] == "kp produce" && s["spanId"] == out_parts[2])
        .expect("the output's producer span");
    assert_eq!(produce_span["parentSpanId"], ok["spanId"]);
    let failed = handles
        .iter()
        .find(|h| attribute(h, "kp.outcome").unwrap()["stringValue"] == "bad-message")
        .expect("the handling that failed");
    assert_eq!(failed["status"]["code"], 2, "an error status: {failed}");
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
}

/// `--log-format json`: one JSON object per line; a guest's stdout line names its plugin, topic,
/// partition (the partition's span) and the offset it was handling.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn json_logs_name_the_partition_and_offset_of_a_guest_line() {
    let (input, output, group) = (unique("log-in"), unique("log-out"), unique("log"));
    create_topic(&input, 2);
    create_topic(&output, 1);
    let plugins = PluginDir::new();
    plugins.add("chaos", "talk", &manifest(&input, &output, &group, ""));
    let mut kp = Kp::run(plugins.path(), &["--log-format", "json"]);
    produce(
        &input,
        &[Rec::kv("pass", "a").on(1), Rec::kv("stdio", "b").on(1)],
    );
    kp.wait_for_log("chaos: to stdout", Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let line = logs
        .lines()
        .find(|l| l.contains("chaos: to stdout"))
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["fields"]["stream"], "stdout", "{json}");
    assert_eq!(json["fields"]["offset"], 1, "{json}");
    assert_eq!(json["span"]["plugin"], "talk", "{json}");
    assert_eq!(json["span"]["topic"], input.as_str(), "{json}");
    assert_eq!(json["span"]["partition"], 1, "{json}");
}
