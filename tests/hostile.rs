//! Hostile modules, files and records (issue: "never stop, stall or crash kp, never hide a
//! failure"). Each test here failed on kp before the fix it covers.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{kp_bin, text};

/// A component whose core function nests `depth` loops around code that changes `locals`
/// locals: about 100 KB on disk, but every loop header needs a merge of every local, so the
/// compiler's memory grows with depth x locals.
fn compile_bomb(depth: usize, locals: usize) -> Vec<u8> {
    let mut body = String::new();
    body.push_str(&"(local i64) ".repeat(locals));
    body.push_str(&"loop\n".repeat(depth));
    for l in 0..locals {
        body.push_str(&format!(
            "local.get {l} i64.const 1 i64.add local.set {l}\n"
        ));
    }
    body.push_str(&"end\n".repeat(depth));
    wat::parse_str(format!(
        "(component (core module $m (func (export \"f\") {body})) (core instance (instantiate $m)))"
    ))
    .unwrap()
}

/// Runs `kp ARGS`, sampling the kp process's peak resident memory (VmHWM, KiB) until it exits.
fn kp_with_peak(args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, u64, Duration) {
    let started = Instant::now();
    let mut command = Command::new(kp_bin());
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
            if status.contains("State:\tZ") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    (out, sampler.join().unwrap(), started.elapsed())
}

#[test]
fn a_compile_bomb_is_refused_with_bounded_memory_and_leaves_nothing_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    let module = compile_bomb(20_000, 1_000);
    println!("compile bomb: {} bytes", module.len());
    if let Ok(path) = std::env::var("KP_TEST_WRITE_BOMB") {
        std::fs::write(path, &module).unwrap();
    }
    std::fs::write(&bomb, module).unwrap();
    let cache = dir.path().join("cache");
    let (out, peak_kib, took) = kp_with_peak(
        &[
            "check",
            bomb.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[
            ("KP_COMPILE_MEMORY_MIB", "1024"),
            ("KP_COMPILE_TIMEOUT_S", "120"),
        ],
    );
    let stderr = text(&out.stderr);
    println!(
        "compile bomb: refused in {took:?}, kp's own peak RSS {} MiB",
        peak_kib >> 10
    );
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("needed more than 1024 MiB of memory"),
        "{stderr}"
    );
    assert!(
        peak_kib < 300 << 10,
        "kp itself grew to {} MiB",
        peak_kib >> 10
    );
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached, 0, "a refused module leaves nothing in the cache");
}

/// `kp check` of an ordinary module still works through the bounded compiler.
#[test]
fn ordinary_modules_compile_in_the_bounded_child() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::kp(
        &[
            "check",
            support::module("uppercase").to_str().unwrap(),
            "--no-cache",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = Path::new(dir.path());
}

/// `kp replay` of the chaos plugin (as `name`, with `manifest`) over `lines`.
fn replay_chaos(manifest: &str, lines: &str) -> (String, String, Duration) {
    let plugins = support::PluginDir::new();
    plugins.add("chaos", "chaos", manifest);
    let module = plugins.path().join("chaos.wasm");
    let started = Instant::now();
    let out = support::kp(
        &[
            "replay",
            "--plugin",
            module.to_str().unwrap(),
            "--input",
            "-",
        ],
        lines,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr), started.elapsed())
}

#[test]
fn a_guest_blocked_in_the_host_is_cut_at_its_deadline() {
    let manifest = "input-topics = [\"in\"]\n[limits]\ntimeout-ms = 300\n";
    let lines =
        "{\"key\": \"wait:5000\"}\n{\"key\": \"wait:18446744073709551\"}\n{\"key\": \"wait:10\"}\n";
    let (stdout, stderr, took) = replay_chaos(manifest, lines);
    let results: Vec<&str> = stdout.lines().collect();
    assert_eq!(results.len(), 3, "{stdout}\n{stderr}");
    assert!(results[0].contains("\"timeout\""), "{}", results[0]);
    assert!(results[1].contains("\"timeout\""), "{}", results[1]);
    assert!(
        results[2].contains("\"outputs\""),
        "a short wait is fine: {}",
        results[2]
    );
    assert!(
        took < Duration::from_secs(4),
        "two 300 ms deadlines took {took:?}"
    );
}

#[test]
fn a_blocking_init_is_cut_at_its_deadline() {
    let dir = support::PluginDir::new();
    dir.add(
        "chaos",
        "chaos",
        "input-topics = [\"in\"]\n[limits]\ntimeout-ms = 500\n[config]\ninit-wait-ms = 100000000\n",
    );
    let started = Instant::now();
    let out = support::kp(
        &["check", dir.path().join("chaos.wasm").to_str().unwrap()],
        "",
    );
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("deadline") || stderr.contains("timeout"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(20), "init blocked for {took:?}");
}

#[test]
fn guest_log_floods_are_rate_limited_and_forged_lines_escaped() {
    let manifest = "input-topics = [\"in\"]\n";
    let (_, stderr, _) = replay_chaos(
        manifest,
        "{\"key\": \"forge\"}\n{\"key\": \"flood:20000\"}\n",
    );
    let flood = stderr.lines().filter(|l| l.contains("flood line")).count();
    assert!(flood <= 2_100, "{flood} flood lines reached the log");
    assert!(flood >= 1_000, "the first lines are kept: {flood}");
    assert!(
        stderr.contains("guest log lines dropped"),
        "the drop is said"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")),
        "a forged line:\n{stderr}"
    );
    assert!(
        stderr.contains("innocent\\n2026-01-01T00:00:00.000000Z ERROR"),
        "escaped in place"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal escapes from a guest"
    );
}

#[test]
fn too_many_outputs_from_one_call_are_the_guests_failure() {
    let (stdout, _, _) = replay_chaos(
        "input-topics = [\"in\"]\n",
        "{\"key\": \"fanout:20000\"}\n{\"key\": \"fanout:3\"}\n",
    );
    let results: Vec<&str> = stdout.lines().collect();
    assert!(
        results[0].contains("output-refused") && results[0].contains("20000 outputs"),
        "{}",
        results[0]
    );
    assert!(results[1].contains("\"outputs\""), "{}", results[1]);
}

#[test]
fn a_manifest_linked_outside_the_folder_is_refused_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(support::module("uppercase"), dir.path().join("up.wasm")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("up.toml")).unwrap();
    let secret = "hunter2-kp-test-secret";
    let out = Command::new(kp_bin())
        .args([
            "check",
            dir.path().join("up.wasm").to_str().unwrap(),
            "--no-cache",
        ])
        .env("KP_TEST_SECRET", secret)
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("outside the plugins folder"), "{all}");
    assert!(!all.contains(secret), "the environment leaked:\n{all}");
    // A manifest that is not TOML: the error names line and column, not the text.
    std::fs::remove_file(dir.path().join("up.toml")).unwrap();
    std::fs::write(
        dir.path().join("up.toml"),
        format!("input-topics = [\"x\"]\nAPI_KEY={secret} oops\n"),
    )
    .unwrap();
    let out = support::kp(&["check", dir.path().join("up.wasm").to_str().unwrap()], "");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success() && all.contains("line 2, column"),
        "{all}"
    );
    assert!(
        !all.contains(secret),
        "the manifest's text is quoted:\n{all}"
    );
}

#[test]
fn a_foreign_artifact_in_the_cache_is_not_run() {
    use sha2::Digest;
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("kp");
    let check = |module: &Path| {
        let out = Command::new(kp_bin())
            .args([
                "check",
                module.to_str().unwrap(),
                "--cache-dir",
                cache_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let (up, filter) = (support::module("uppercase"), support::module("filter"));
    check(&up);
    check(&filter);
    let name_of = |module: &Path| hex::encode(sha2::Sha256::digest(std::fs::read(module).unwrap()));
    let artifact_of = |hash: &str| {
        std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name().unwrap().to_str().unwrap().starts_with(hash)
                    && p.extension().unwrap() == "cwasm"
            })
            .unwrap()
    };
    let (up_art, filter_art) = (artifact_of(&name_of(&up)), artifact_of(&name_of(&filter)));
    // Plant the filter's artifact, with its own valid tag, under the uppercase module's name.
    std::fs::copy(&filter_art, &up_art).unwrap();
    std::fs::copy(
        filter_art.with_extension("cwasm.tag"),
        up_art.with_extension("cwasm.tag"),
    )
    .unwrap();
    let out = Command::new(kp_bin())
        .args([
            "replay",
            "--plugin",
            up.to_str().unwrap(),
            "--input",
            "-",
            "--cache-dir",
            cache_dir.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"{\"value\": \"abc\"}\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("NOT loading a cached artifact") && stderr.contains("tag does not match"),
        "{stderr}"
    );
    assert!(
        stdout.contains("ABC"),
        "the uppercase module ran, not the planted one: {stdout}"
    );
    // A cache folder others may write is not used at all.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = check(&up);
    assert!(
        stderr.contains("may be written by group or others"),
        "{stderr}"
    );
}

/// Produces one record with kcat (which, unlike rdkafka, writes header names that are not UTF-8).
fn kcat_produce(topic: &str, partition: i32, key: &str, header: &[u8], value: &str) {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut h = header.to_vec();
    h.extend_from_slice(b"=v");
    let mut child = Command::new("kcat")
        .args([
            "-b",
            support::brokers(),
            "-P",
            "-t",
            topic,
            "-p",
            &partition.to_string(),
            "-k",
            key,
        ])
        .arg("-H")
        .arg(std::ffi::OsStr::from_bytes(&h))
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat (scripts/toolchains.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A record whose header name is not UTF-8 used to panic the partition's worker (silently, for
/// ever). Now it goes to the failure policy as a bad message, and the partition flows on.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_header_name_that_is_not_utf8_goes_to_the_policy() {
    let (input, output, dlq, group) = (
        support::unique("hdr-in"),
        support::unique("hdr-out"),
        support::unique("hdr-dlq"),
        support::unique("kp-hdr"),
    );
    support::create_topic(&input, 1);
    support::create_topic(&output, 1);
    support::create_topic(&dlq, 1);
    support::produce(&input, &[support::Rec::kv("a", "first").on(0)]);
    kcat_produce(&input, 0, "b", b"\xffbad\xfe", "second");
    support::produce(&input, &[support::Rec::kv("c", "third").on(0)]);
    let plugins = support::PluginDir::new();
    let extra = format!("[on-failure]\ndead-letter-topic = \"{dlq}\"\n");
    plugins.add(
        "uppercase",
        "up",
        &support::manifest(&input, &output, &group, &extra),
    );
    let kp = support::Kp::run(plugins.path(), &[]);
    let dead = support::read_all(&dlq, 1, Duration::from_secs(60));
    let outputs = support::read_all(&output, 2, Duration::from_secs(60));
    support::wait_committed_to_end(&group, &input, Duration::from_secs(60));
    let (status, logs) = kp.stop();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    assert_eq!(outputs.len(), 2);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.as_deref(), Some(&b"b"[..]));
    assert_eq!(dead[0].header_str("kp.error.kind"), Some("bad-message"));
    let why = dead[0].header_str("kp.error.message").unwrap();
    assert!(
        why.contains("not valid UTF-8") && why.contains("ff626164fe"),
        "{why}"
    );
}

/// A plugin whose init blocks for ever, dropped into the folder of a running kp: refused at its
/// deadline, the other plugin keeps flowing, and SIGTERM ends kp within its bound.
#[test]
#[ignore = "needs a Kafka broker: scripts/test.sh starts one and runs it"]
fn a_blocking_init_or_a_compile_bomb_does_not_stop_the_others_or_shutdown() {
    let (input, output, group) = (
        support::unique("calm-in"),
        support::unique("calm-out"),
        support::unique("kp-calm"),
    );
    support::create_topic(&input, 1);
    support::create_topic(&output, 1);
    let plugins = support::PluginDir::new();
    plugins.add(
        "uppercase",
        "calm",
        &support::manifest(&input, &output, &group, ""),
    );
    let mut kp =
        support::Kp::run_with_env(plugins.path(), &[], &[("KP_COMPILE_MEMORY_MIB", "1024")]);
    kp.wait_for_log("plugin consuming", Duration::from_secs(60));
    // The hostile ones arrive while kp runs.
    plugins.add("chaos", "stuck", &format!(
        "input-topics = [\"{input}\"]\n[limits]\ntimeout-ms = 2000\n[config]\ninit-wait-ms = 100000000\n"
    ));
    std::fs::write(
        plugins.path().join("bomb.toml"),
        format!("input-topics = [\"{input}\"]\n"),
    )
    .unwrap();
    std::fs::write(
        plugins.path().join("bomb.wasm"),
        compile_bomb(20_000, 1_000),
    )
    .unwrap();
    support::produce(
        &input,
        &(0..50)
            .map(|i| support::Rec::kv("k", &format!("v{i}")))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        support::read_all(&output, 50, Duration::from_secs(60)).len(),
        50,
        "the calm plugin flowed"
    );
    kp.wait_for_log("plugin=\"stuck\"", Duration::from_secs(60));
    // The bomb's refusal (its name alone shows up earlier, as its compilation starts).
    kp.wait_for_log("needed more than 1024 MiB", Duration::from_secs(60));
    let stopped = Instant::now();
    kp.signal("TERM");
    kp.wait(Duration::from_secs(60)); // panics, with the log, if SIGTERM did not end kp
    println!("SIGTERM to exit: {:?}", stopped.elapsed());
    let all = kp.logs();
    assert!(all.contains("needed more than 1024 MiB"), "{all}");
    assert!(all.contains("deadline"), "{all}");
}
