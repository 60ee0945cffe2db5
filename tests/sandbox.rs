//! The runtime without Kafka: every outcome kind, instance replacement, binary safety, refusal of
//! bad modules and manifests, the compiled-artifact cache. Guests are built from source by
//! `plugins/build.sh`.

mod support;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use kp::manifest::Manifest;
use kp::sandbox::{
    Allocation, FailureKind, Header, LoadError, LoadedPlugin, Message, PluginInstance, Provenance,
    Sandbox, SandboxConfig,
};
use support::{PluginDir, module};

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(SandboxConfig {
            cache_dir: Some(support::cache_dir()),
            allocation: Allocation::default(),
            ..Default::default()
        })
        .unwrap()
    })
}

fn load(name: &str) -> Arc<LoadedPlugin> {
    sandbox().load(&module(name)).unwrap()
}

fn msg(key: &str) -> Message {
    Message {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        timestamp: None,
        key: Some(key.as_bytes().to_vec()),
        value: Some(b"v".to_vec()),
        headers: vec![],
    }
}

fn kind(
    outcome: &Result<Vec<kp::sandbox::Output>, kp::sandbox::HandlerFailure>,
) -> Option<FailureKind> {
    outcome.as_ref().err().map(|f| f.kind())
}

#[test]
fn ok_with_zero_one_and_many_outputs() {
    let mut chaos = PluginInstance::new(load("chaos")).unwrap();
    assert_eq!(chaos.handle(&msg("drop")).unwrap().len(), 0);
    assert_eq!(chaos.handle(&msg("anything")).unwrap().len(), 1);
    let many = chaos.handle(&msg("fanout:5")).unwrap();
    assert_eq!(many.len(), 5);
    let ns: Vec<&[u8]> = many
        .iter()
        .map(|o| o.headers.last().unwrap().value.as_slice())
        .collect();
    assert_eq!(ns, [b"0", b"1", b"2", b"3", b"4"]);
}

#[test]
fn guest_errors_of_each_kind() {
    let mut chaos = PluginInstance::new(load("chaos")).unwrap();
    let retry = chaos.handle(&msg("retry"));
    assert_eq!(kind(&retry), Some(FailureKind::RetryLater));
    assert!(
        retry
            .unwrap_err()
            .to_string()
            .contains("downstream unavailable")
    );
    assert_eq!(
        kind(&chaos.handle(&msg("bad"))),
        Some(FailureKind::BadMessage)
    );
    // A guest error does not kill the instance.
    assert_eq!(chaos.instances_started(), 1);
    assert_eq!(
        chaos.handle(&msg("count")).unwrap()[0].value.as_deref(),
        Some(&b"3"[..])
    );
}

#[test]
fn a_trap_is_a_trap_and_the_instance_is_replaced() {
    let mut chaos = PluginInstance::new(load("chaos")).unwrap();
    assert_eq!(
        chaos.handle(&msg("count")).unwrap()[0].value.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        chaos.handle(&msg("count")).unwrap()[0].value.as_deref(),
        Some(&b"2"[..])
    );
    let trap = chaos.handle(&msg("panic"));
    assert_eq!(kind(&trap), Some(FailureKind::Trap));
    assert!(trap.unwrap_err().to_string().contains("unreachable"));
    // The next call runs in a fresh instance: its counter starts again.
    assert_eq!(
        chaos.handle(&msg("count")).unwrap()[0].value.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(chaos.instances_started(), 2);
}

#[test]
fn an_infinite_loop_times_out() {
    let plugin = load("chaos"); // its manifest sets a 1000 ms deadline
    let mut chaos = PluginInstance::new(plugin).unwrap();
    let started = std::time::Instant::now();
    let outcome = chaos.handle(&msg("loop"));
    assert_eq!(kind(&outcome), Some(FailureKind::Timeout));
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1000),
        "interrupted early: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(30),
        "interrupted far too late: {took:?}"
    );
    assert!(
        chaos.handle(&msg("x")).is_ok(),
        "a fresh instance serves the next message"
    );
}

#[test]
fn memory_exhaustion_is_out_of_memory() {
    let mut chaos = PluginInstance::new(load("chaos")).unwrap(); // 32 MiB cap
    let outcome = chaos.handle(&msg("oom"));
    assert_eq!(kind(&outcome), Some(FailureKind::OutOfMemory));
    assert!(outcome.unwrap_err().to_string().contains("32 MiB"));
    assert!(chaos.handle(&msg("x")).is_ok());
}

#[test]
fn keys_values_and_headers_are_binary_safe() {
    let mut pass = PluginInstance::new(load("passthrough")).unwrap();
    let all_bytes: Vec<u8> = (0..=255).collect();
    let cases = [
        (
            Some(all_bytes.clone()),
            Some(all_bytes.iter().rev().copied().collect::<Vec<u8>>()),
        ),
        (None, None),                 // no key, tombstone
        (Some(vec![]), Some(vec![])), // empty key, empty value: not the same as absent
        (Some(vec![0xff, 0xfe]), None),
    ];
    for (key, value) in cases {
        let m = Message {
            topic: "t".into(),
            partition: 3,
            offset: 42,
            timestamp: None,
            key: key.clone(),
            value: value.clone(),
            headers: vec![
                Header {
                    name: "dup".into(),
                    value: vec![0, 1, 2],
                },
                Header {
                    name: "other".into(),
                    value: vec![],
                },
                Header {
                    name: "dup".into(),
                    value: all_bytes.clone(),
                },
            ],
        };
        let out = pass.handle(&m).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, key);
        assert_eq!(out[0].value, value);
        assert_eq!(
            out[0].headers, m.headers,
            "order and repeated names preserved"
        );
    }
}

#[test]
fn uppercase_transforms_only_the_value() {
    let mut up = PluginInstance::new(load("uppercase")).unwrap();
    let mut m = msg("key");
    m.value = Some(b"hello \xff world".to_vec());
    let out = up.handle(&m).unwrap();
    assert_eq!(out[0].value.as_deref(), Some(&b"HELLO \xff WORLD"[..]));
    assert_eq!(out[0].key.as_deref(), Some(&b"key"[..]));
}

#[test]
fn filter_and_router_follow_their_config() {
    let mut filter = PluginInstance::new(load("filter")).unwrap(); // contains = "ERROR"
    let mut m = msg("k");
    m.value = Some(b"an ERROR here".to_vec());
    assert_eq!(filter.handle(&m).unwrap().len(), 1);
    m.value = Some(b"all fine".to_vec());
    assert_eq!(filter.handle(&m).unwrap().len(), 0);
    m.value = None;
    assert_eq!(filter.handle(&m).unwrap().len(), 0, "tombstones dropped");

    let mut router = PluginInstance::new(load("router")).unwrap(); // routes = text-audit,text-archive
    let out = router.handle(&msg("k")).unwrap();
    let topics: Vec<_> = out.iter().map(|o| o.topic.clone().unwrap()).collect();
    assert_eq!(topics, ["text-audit", "text-archive"]);
    assert_eq!(out[0].headers.last().unwrap().name, "routed-from");
    let out = router.handle(&msg("text-archive/x")).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic.as_deref(), Some("text-archive"));
}

#[test]
fn the_guest_reads_its_config() {
    let mut chaos = PluginInstance::new(load("chaos")).unwrap();
    let out = chaos.handle(&msg("config")).unwrap();
    assert_eq!(out[0].value.as_deref(), Some(&b"greeting=hello"[..]));
}

fn refusal(path: &Path) -> LoadError {
    sandbox()
        .load(path)
        .expect_err("the module must be refused")
}

#[test]
fn garbage_is_refused() {
    let dir = PluginDir::new();
    dir.add_raw("garbage", b"this is not wasm at all");
    let e = refusal(&dir.path().join("garbage.wasm"));
    assert!(matches!(e, LoadError::NotWasm { .. }), "{}", e.report());
    assert!(e.report().contains("garbage.wasm"), "names the file: {e}");
    dir.add_raw("empty", b"");
    assert!(
        refusal(&dir.path().join("empty.wasm"))
            .report()
            .contains("empty")
    );
}

#[test]
fn a_truncated_component_is_refused() {
    let bytes = std::fs::read(module("uppercase")).unwrap();
    let dir = PluginDir::new();
    dir.add_raw("cut", &bytes[..bytes.len() / 2]);
    let e = refusal(&dir.path().join("cut.wasm"));
    assert!(matches!(e, LoadError::Invalid { .. }), "{}", e.report());
    assert!(e.report().contains("cut.wasm"));
}

#[test]
fn a_core_module_is_refused() {
    let dir = PluginDir::new();
    dir.add_raw(
        "core",
        &wat::parse_str("(module (func (export \"handle\")))").unwrap(),
    );
    let e = refusal(&dir.path().join("core.wasm"));
    assert!(matches!(e, LoadError::CoreModule { .. }), "{}", e.report());
    assert!(e.report().contains("wasm32-wasip2"));
}

#[test]
fn a_component_of_another_world_is_refused() {
    let e = refusal(&support::plugins_dist().join("testing/wrong-world.wasm"));
    assert!(matches!(e, LoadError::WrongWorld { .. }), "{}", e.report());
    assert!(
        e.report().contains("kp:plugin/handler@0.1.0"),
        "{}",
        e.report()
    );
}

#[test]
fn a_component_importing_unknown_functions_is_refused() {
    let component = wat::parse_str(
        r#"(component
             (import "acme:secrets/vault@1.0.0" (instance (export "read" (func (result u32)))))
           )"#,
    )
    .unwrap();
    let dir = PluginDir::new();
    dir.add_raw("importer", &component);
    let e = refusal(&dir.path().join("importer.wasm"));
    assert!(
        matches!(e, LoadError::UnsupportedImport { .. }),
        "{}",
        e.report()
    );
    assert!(
        e.report().contains("acme:secrets/vault@1.0.0"),
        "{}",
        e.report()
    );
}

#[test]
fn an_instance_that_cannot_fit_its_memory_cap_is_refused() {
    let dir = PluginDir::new();
    dir.add(
        "uppercase",
        "tiny",
        "input-topics = [\"t\"]\n[limits]\nmemory-mib = 1\n",
    );
    let e = refusal(&dir.path().join("tiny.wasm"));
    assert!(matches!(e, LoadError::StartFailed { .. }), "{}", e.report());
    assert!(e.report().contains("memory"), "{}", e.report());
}

#[test]
fn an_init_that_fails_refuses_the_plugin() {
    let dir = PluginDir::new();
    dir.add("router", "norouter", "input-topics = [\"t\"]\n"); // no [config] routes
    let e = refusal(&dir.path().join("norouter.wasm"));
    assert!(matches!(e, LoadError::StartFailed { .. }), "{}", e.report());
    assert!(e.report().contains("routes"), "{}", e.report());
}

#[test]
fn bad_manifests_are_refused() {
    let dir = PluginDir::new();
    dir.add("uppercase", "typo", "input-topic = [\"t\"]\n");
    let e = refusal(&dir.path().join("typo.wasm"));
    assert!(matches!(e, LoadError::Manifest { .. }), "{}", e.report());
    assert!(
        e.report().contains("typo.toml") && e.report().contains("input-topic"),
        "{}",
        e.report()
    );
    dir.add(
        "uppercase",
        "slow",
        "input-topics = [\"t\"]\n[limits]\ntimeout-ms = \"soon\"\n",
    );
    assert!(
        refusal(&dir.path().join("slow.wasm"))
            .report()
            .contains("timeout-ms")
    );
}

#[test]
fn a_module_without_manifest_gets_defaults() {
    let dir = PluginDir::new();
    dir.add_raw("bare", &std::fs::read(module("uppercase")).unwrap());
    let plugin = sandbox().load(&dir.path().join("bare.wasm")).unwrap();
    assert_eq!(*plugin.manifest, Manifest::default_for("bare"));
    assert!(plugin.manifest.input_topics.is_empty());
}

#[test]
fn compiled_components_are_cached_by_content() {
    let cache = tempfile::tempdir().unwrap();
    let make = || {
        Sandbox::new(SandboxConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            allocation: Allocation::OnDemand,
            ..Default::default()
        })
        .unwrap()
    };
    let first = make().load(&module("filter")).unwrap();
    assert_eq!(first.provenance, Provenance::Compiled);
    let files: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".cwasm")).count(),
        1,
        "{files:?}"
    );
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".cwasm.tag")).count(),
        1,
        "{files:?}"
    );
    // A new process (a new sandbox) loads the artifact instead of compiling.
    let second = make().load(&module("filter")).unwrap();
    assert_eq!(second.provenance, Provenance::Cached);
    assert_eq!(second.content_hash, first.content_hash);
    let mut instance = PluginInstance::new(second).unwrap();
    let mut m = msg("k");
    m.value = Some(b"ERROR".to_vec());
    assert_eq!(
        instance.handle(&m).unwrap().len(),
        1,
        "the cached artifact runs"
    );
    // The same bytes under another name share the artifact.
    let dir = PluginDir::new();
    dir.add("filter", "again", "input-topics = [\"t\"]\n");
    assert_eq!(
        make()
            .load(&dir.path().join("again.wasm"))
            .unwrap()
            .provenance,
        Provenance::Cached
    );
}

fn value_of(instance: &mut PluginInstance, key: &str) -> String {
    let out = instance.handle(&msg(key)).unwrap();
    String::from_utf8(out[0].value.clone().unwrap()).unwrap()
}

#[test]
fn files_unlisted_environment_variables_and_sockets_are_refused() {
    let dir = PluginDir::new();
    // Cargo sets both variables for the test process; only one is granted.
    dir.add(
        "chaos",
        "caps",
        "input-topics = [\"t\"]\n[capabilities]\nenv = [\"CARGO_PKG_NAME\"]\n",
    );
    let mut guest =
        PluginInstance::new(sandbox().load(&dir.path().join("caps.wasm")).unwrap()).unwrap();
    assert_eq!(
        value_of(&mut guest, "env:CARGO_PKG_NAME"),
        "kp",
        "a granted variable is visible"
    );
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    assert_eq!(
        value_of(&mut guest, "env:CARGO_MANIFEST_DIR"),
        "unset",
        "others are not"
    );
    let module = dir.path().join("caps.wasm");
    for path in ["/etc/passwd", module.to_str().unwrap(), "caps.wasm"] {
        let read = value_of(&mut guest, &format!("read-file:{path}"));
        assert!(read.starts_with("denied:"), "{path}: {read}");
    }
    let connect = value_of(&mut guest, &format!("connect:{}", "127.0.0.1:9"));
    assert!(connect.starts_with("denied: PermissionDenied"), "{connect}");
}

#[test]
fn clocks_and_random_are_granted_by_default_and_can_be_denied() {
    let dir = PluginDir::new();
    dir.add("chaos", "open", "input-topics = [\"t\"]\n");
    dir.add(
        "chaos",
        "closed",
        "input-topics = [\"t\"]\n[capabilities]\nwall-clock = false\nrandom = false\n",
    );
    let open = sandbox().load(&dir.path().join("open.wasm")).unwrap();
    let closed = sandbox().load(&dir.path().join("closed.wasm")).unwrap();
    let now: u64 = value_of(&mut PluginInstance::new(open.clone()).unwrap(), "clock")
        .parse()
        .unwrap();
    assert!(now > 1_700_000_000, "the real wall clock: {now}");
    assert_eq!(
        value_of(&mut PluginInstance::new(closed.clone()).unwrap(), "clock"),
        "0"
    );
    let a = value_of(&mut PluginInstance::new(open.clone()).unwrap(), "random");
    let b = value_of(&mut PluginInstance::new(open).unwrap(), "random");
    assert_ne!(a, b, "real random differs between instances");
    let c = value_of(&mut PluginInstance::new(closed.clone()).unwrap(), "random");
    let d = value_of(&mut PluginInstance::new(closed).unwrap(), "random");
    assert_eq!(c, d, "denied random is fixed");
}

#[test]
fn an_init_that_traps_refuses_the_plugin() {
    let dir = PluginDir::new();
    dir.add(
        "chaos",
        "boom",
        "input-topics = [\"t\"]\n[config]\ninit-trap = true\n",
    );
    let e = refusal(&dir.path().join("boom.wasm"));
    assert!(matches!(e, LoadError::StartFailed { .. }), "{}", e.report());
    assert!(
        e.report().contains("init") && e.report().contains("unreachable"),
        "{}",
        e.report()
    );
    // The guest's failure is kept as the cause, not flattened into the message.
    let cause = std::error::Error::source(&e).expect("the init failure is the source");
    assert!(cause.to_string().contains("unreachable"), "{cause}");
    assert!(!e.to_string().contains("unreachable"), "{e}");
}

/// A full instance pool is nobody's fault: the failure says "unavailable", which kp waits out,
/// never a trap that the failure policy would apply to a good message.
#[test]
fn a_full_instance_pool_is_unavailable_not_a_trap() {
    let small = Sandbox::new(SandboxConfig {
        cache_dir: Some(support::cache_dir()),
        allocation: Allocation::Pooling { max_instances: 2 },
        ..Default::default()
    })
    .unwrap();
    let plugin = small.load(&module("uppercase")).unwrap();
    let first = PluginInstance::new(plugin.clone()).unwrap();
    let _second = PluginInstance::new(plugin.clone()).unwrap();
    let Err(third) = PluginInstance::new(plugin.clone()) else {
        panic!("a third instance fit in a pool of two");
    };
    assert_eq!(
        third.kind(),
        kp::sandbox::FailureKind::Unavailable,
        "{third}"
    );
    drop(first);
    assert!(
        PluginInstance::new(plugin).is_ok(),
        "a freed slot is used again"
    );
}

/// The operator's `max-instances`: a plugin's share of the pool. Past it a new instance is
/// "unavailable" (waited out), like a full pool.
#[test]
fn a_plugins_share_of_the_pool_is_capped() {
    let plugin = sandbox()
        .load_admitted(&module("uppercase"), &|m| {
            m.max_instances = Some(2);
            Ok(())
        })
        .unwrap();
    let first = PluginInstance::new(plugin.clone()).unwrap();
    let _second = PluginInstance::new(plugin.clone()).unwrap();
    let Err(third) = PluginInstance::new(plugin.clone()) else {
        panic!("a third instance beyond a share of two");
    };
    assert_eq!(
        third.kind(),
        kp::sandbox::FailureKind::Unavailable,
        "{third}"
    );
    assert!(third.to_string().contains("max-instances"), "{third}");
    drop(first);
    assert!(PluginInstance::new(plugin).is_ok());
}
