//! kp against the clusters people run: TLS with server verification, SASL (SCRAM-SHA-512, PLAIN,
//! OAUTHBEARER) over TLS, mutual TLS, every compression codec, and a batch that cannot be
//! decoded. All on the real Apache Kafka broker of `scripts/kafka.sh`, whose secured listeners
//! (and the CA and credentials they use) it writes to `.kafka/listeners.env`. The tests' own
//! clients produce and check over the plaintext listener; kp connects over the secured one.

mod support;

use std::time::Duration;

use support::{
    Kp, PluginDir, Rec, Secured, create_topic, manifest, produce, produce_with, read_all,
    segment_file, unique, wait_committed_to_end,
};

/// `n` records with a `seq` header and a second header, keyed over 7 keys.
fn records(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            Rec::kv(&format!("k{}", i % 7), &format!("value {i}"))
                .header("seq", i.to_string())
                .header("h", vec![0, 255])
        })
        .collect()
}

/// Runs the uppercase plugin over `n` records through kp started with `args` against
/// `bootstrap`, and checks outputs, headers and committed offsets as the Kafka tests do. Returns
/// kp's log.
fn uppercase_over(bootstrap: &str, args: &[&str], n: usize) -> String {
    let (input, output, group) = (unique("sec-in"), unique("sec-out"), unique("kp-sec"));
    create_topic(&input, 2);
    create_topic(&output, 2);
    let sent = records(n);
    produce(&input, &sent);
    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "uppercase",
        &manifest(&input, &output, &group, ""),
    );
    let kp = Kp::run_against(bootstrap, plugins.path(), args, "info");
    let outputs = read_all(&output, n, Duration::from_secs(120));
    let committed = wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "kp exited with {status}:\n{logs}");
    assert_eq!(outputs.len(), n, "one output per input");
    for out in &outputs {
        let seq: usize = out.header_str("seq").unwrap().parse().unwrap();
        assert_eq!(
            out.value.as_deref(),
            Some(format!("VALUE {seq}").as_bytes())
        );
        assert_eq!(out.header("h"), Some(&[0u8, 255][..]));
        assert_eq!(out.key, sent[seq].key);
    }
    assert_eq!(
        committed.values().sum::<i64>(),
        n as i64,
        "committed to the log end"
    );
    logs
}

/// Starts kp with `args` on a plugin whose topic exists, expects it to fail, and returns what it
/// printed.
fn failing_run(bootstrap: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let input = unique("sec-fail-in");
    create_topic(&input, 1);
    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "uppercase",
        &manifest(&input, &unique("sec-fail-out"), &unique("kp-fail"), ""),
    );
    let mut command = std::process::Command::new(support::kp_bin());
    command
        .args(["run", "--brokers", bootstrap, "--plugins"])
        .arg(plugins.path())
        .arg("--cache-dir")
        .arg(support::cache_dir())
        .args(args)
        .env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        support::text(&out.stdout),
        support::text(&out.stderr)
    );
    assert!(!out.status.success(), "kp should have failed:\n{text}");
    text
}

/// `-X` arguments for SASL_SSL with SCRAM-SHA-512 as the test user, `password` (a `-X` value:
/// `sasl.password=...`) and the CA file `ca` of the broker's TLS folder.
fn scram_args(s: &Secured, password: &str, ca: &str) -> Vec<String> {
    [
        "security.protocol=SASL_SSL".to_string(),
        "sasl.mechanisms=SCRAM-SHA-512".into(),
        format!("sasl.username={}", s.scram_user),
        password.to_string(),
        format!("ssl.ca.location={}", s.tls(ca)),
    ]
    .into_iter()
    .flat_map(|p| ["-X".to_string(), p])
    .collect()
}

/// The line kp ends a failed start with.
fn final_error(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| l.starts_with("kp: "))
        .unwrap_or_else(|| panic!("no final error:\n{text}"))
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn tls_with_server_verification() {
    let s = Secured::get();
    let ca = s.tls("ca.pem");
    uppercase_over(
        &s.ssl,
        &[
            "-X",
            "security.protocol=SSL",
            "-X",
            &format!("ssl.ca.location={ca}"),
        ],
        300,
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn tls_with_the_wrong_ca_is_a_clear_error_that_shows_no_secret() {
    // SASL_SSL with the right password and a CA that did not sign the broker's certificate.
    let s = Secured::get();
    let args = scram_args(
        &s,
        "sasl.password=${env:KP_TEST_KAFKA_PASSWORD}",
        "other-ca.pem",
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = failing_run(
        &s.sasl_ssl,
        &args,
        &[("KP_TEST_KAFKA_PASSWORD", &s.scram_password)],
    );
    let why = final_error(&text);
    assert!(
        why.contains("certificate verify failed") && why.contains("ssl.ca.location"),
        "{why}"
    );
    assert!(
        !text.contains(&s.scram_password),
        "the password appears in kp's output:\n{text}"
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn mutual_tls() {
    let s = Secured::get();
    let args = [
        "-X".to_string(),
        "security.protocol=SSL".into(),
        "-X".into(),
        format!("ssl.ca.location={}", s.tls("ca.pem")),
        "-X".into(),
        format!("ssl.certificate.location={}", s.tls("client.pem")),
        "-X".into(),
        format!("ssl.key.location={}", s.tls("client.key")),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    uppercase_over(&s.mtls, &args, 300);
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn sasl_scram_over_tls_with_the_password_from_a_file() {
    let s = Secured::get();
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("kafka-password");
    std::fs::write(&password_file, format!("{}\n", s.scram_password)).unwrap();
    let password = format!("sasl.password=${{file:{}}}", password_file.display());
    let args = scram_args(&s, &password, "ca.pem");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let logs = uppercase_over(&s.sasl_ssl, &args, 300);
    assert!(
        !logs.contains(&s.scram_password),
        "the password appears in kp's log:\n{logs}"
    );
    assert!(
        !logs.contains("is given on the command line"),
        "a reference is not a literal:\n{logs}"
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn sasl_scram_with_a_wrong_password_names_the_mechanism_not_the_password() {
    let s = Secured::get();
    let wrong = "wrong-hunter2-password";
    // From the environment, and written on the command line (which kp warns about).
    for password in [
        "sasl.password=${env:KP_TEST_KAFKA_PASSWORD}".to_string(),
        format!("sasl.password={wrong}"),
    ] {
        let args = scram_args(&s, &password, "ca.pem");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = failing_run(&s.sasl_ssl, &args, &[("KP_TEST_KAFKA_PASSWORD", wrong)]);
        let why = final_error(&text);
        assert!(
            why.contains("SCRAM-SHA-512") && why.contains("Authentication failed"),
            "{why}"
        );
        assert!(
            !text.contains(wrong),
            "the password appears in kp's output:\n{text}"
        );
        assert_eq!(
            text.contains("is given on the command line"),
            !password.contains("${env:"),
            "a literal password on the command line is warned about:\n{text}"
        );
    }
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn sasl_oauthbearer_over_tls() {
    // The broker accepts unsecured JWTs (its default validator, for tests only); librdkafka makes
    // one from sasl.oauthbearer.config. With an identity provider, kp would instead use
    // sasl.oauthbearer.method=oidc (README), which this broker cannot check.
    let s = Secured::get();
    let ca = format!("ssl.ca.location={}", s.tls("ca.pem"));
    uppercase_over(
        &s.sasl_ssl,
        &[
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=OAUTHBEARER",
            "-X",
            "enable.sasl.oauthbearer.unsecure.jwt=true",
            "-X",
            "sasl.oauthbearer.config=principal=kp",
            "-X",
            &ca,
        ],
        200,
    );
}

#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn refused_properties_and_bad_references_never_show_the_value() {
    let s = Secured::get();
    for (args, expect) in [
        (
            vec![
                "-X",
                "ssl.key.password=hunter2-secret",
                "-X",
                "plugin.library.paths=/tmp/hunter2-secret.so",
            ],
            "plugin.library.paths",
        ),
        (
            vec!["-X", "acks=1", "-X", "sasl.password=hunter2-secret"],
            "acks",
        ),
        (
            vec![
                "-X",
                "enable.idempotence=false",
                "-X",
                "sasl.password=hunter2-secret",
            ],
            "--accept-duplicates",
        ),
        (
            vec!["-X", "socket.timeout.ms=hunter2-secret"],
            "socket.timeout.ms",
        ),
        (
            vec!["-X", "sasl.password=${env:KP_TEST_SURELY_UNSET}"],
            "KP_TEST_SURELY_UNSET",
        ),
    ] {
        let text = failing_run(&s.ssl, &args, &[]);
        assert!(text.contains(expect), "{args:?}: {text}");
        assert!(!text.contains("hunter2"), "{args:?} shows a value:\n{text}");
    }
}

/// Inputs compressed with every codec Kafka has, consumed; kp's own outputs compressed with
/// zstd (checked on the broker's disk).
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn every_compression_codec_in_and_zstd_out() {
    let (input, output, group) = (unique("codec-in"), unique("codec-out"), unique("kp-codec"));
    create_topic(&input, 2);
    create_topic(&output, 1);
    let codecs = ["gzip", "snappy", "lz4", "zstd", "none"];
    let per_codec = 400;
    for (i, codec) in codecs.iter().enumerate() {
        let batch: Vec<Rec> = (0..per_codec)
            .map(|j| {
                let n = i * per_codec + j;
                Rec::kv(
                    &format!("k{}", n % 5),
                    &format!("{codec} record {n} {}", "x".repeat(50)),
                )
                .header("seq", n.to_string())
            })
            .collect();
        produce_with(
            &input,
            &batch,
            &[("compression.type", codec), ("linger.ms", "50")],
        );
    }
    let n = codecs.len() * per_codec;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kp.toml");
    std::fs::write(
        &config,
        "[kafka-producer]\n\"compression.type\" = \"zstd\"\n",
    )
    .unwrap();
    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "uppercase",
        &manifest(&input, &output, &group, ""),
    );
    let kp = Kp::run(plugins.path(), &["--config", config.to_str().unwrap()]);
    let outputs = read_all(&output, n, Duration::from_secs(120));
    let committed = wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "kp exited with {status}:\n{logs}");
    assert_eq!(committed.values().sum::<i64>(), n as i64);
    let mut seen = vec![false; n];
    for out in &outputs {
        let seq: usize = out.header_str("seq").unwrap().parse().unwrap();
        assert!(!seen[seq], "seq {seq} twice");
        seen[seq] = true;
        let value = String::from_utf8(out.value.clone().unwrap()).unwrap();
        assert!(value.contains(&format!("RECORD {seq} XXX")), "{value}");
    }
    assert!(seen.iter().all(|s| *s), "every record handled");
    // zstd frames start with 28 b5 2f fd; the uppercase text of kp's outputs must not be there.
    let segment = std::fs::read(segment_file(&output, 0)).unwrap();
    assert!(
        segment.windows(4).any(|w| w == [0x28, 0xb5, 0x2f, 0xfd]),
        "kp's outputs are zstd batches"
    );
    assert!(
        !segment.windows(10).any(|w| w == b"RECORD 1 X"),
        "kp's outputs are compressed"
    );
}

/// A batch that cannot be decompressed halts its partition loudly (log, status file, exit
/// status 3) at its first offset; the other partition keeps flowing; nothing past it is
/// committed.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_corrupt_batch_halts_its_partition_loudly() {
    let (input, output, group) = (
        unique("corrupt-in"),
        unique("corrupt-out"),
        unique("kp-corrupt"),
    );
    create_topic(&input, 2);
    create_topic(&output, 2);
    let on = |p: i32, from: usize, n: usize| -> Vec<Rec> {
        (from..from + n)
            .map(|i| {
                Rec::kv("k", &format!("value {i} {}", "y".repeat(40)))
                    .header("seq", i.to_string())
                    .on(p)
            })
            .collect()
    };
    produce(&input, &on(0, 0, 20));
    produce_with(
        &input,
        &on(0, 20, 20),
        &[("compression.type", "gzip"), ("linger.ms", "100")],
    );
    produce(&input, &on(0, 40, 20));
    produce(&input, &on(1, 0, 100));
    // Break the gzip stream in place on the broker's disk (the broker serves fetches from the
    // file as it is; librdkafka does not check CRCs by default, so the inflate itself fails).
    let path = segment_file(&input, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(3)
        .position(|w| w == [0x1f, 0x8b, 0x08])
        .expect("a gzip batch on disk");
    for b in &mut bytes[at..at + 24] {
        *b = 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();

    let status_dir = tempfile::tempdir().unwrap();
    let status_file = status_dir.path().join("status.json");
    let plugins = PluginDir::new();
    plugins.add(
        "uppercase",
        "uppercase",
        &manifest(&input, &output, &group, ""),
    );
    let mut kp = Kp::run(
        plugins.path(),
        &["--status-file", status_file.to_str().unwrap()],
    );
    kp.wait_for_log("PARTITION HALTED", Duration::from_secs(60));
    // Partition 1 flows to its end; partition 0 commits up to the broken batch and no further.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = support::committed(&group, &input);
        if c.get(&1) == Some(&100) && c.get(&0) == Some(&20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "committed {c:?}:\n{}",
            kp.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    let halted = status["halted"].as_array().expect("halted list");
    assert_eq!(halted.len(), 1, "{status}");
    assert_eq!(halted[0]["partition"], 0, "{status}");
    assert_eq!(halted[0]["offset"], 20, "{status}");
    assert!(
        halted[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be read"),
        "{status}"
    );
    let (exit, logs) = kp.stop();
    assert_eq!(exit.code(), Some(3), "exit status 3 after a halt:\n{logs}");
    assert_eq!(
        support::committed(&group, &input).get(&0),
        Some(&20),
        "nothing past the broken batch"
    );
    assert_eq!(read_all(&output, 120, Duration::from_secs(30)).len(), 120);
}
