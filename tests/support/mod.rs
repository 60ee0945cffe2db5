//! Helpers shared by kp's integration tests: building the example plugins once, a plugins folder
//! per test, the real Kafka broker (started by `scripts/kafka.sh start`), running the `kp` binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The folder `plugins/build.sh` fills: every Rust example plugin with its manifest, built from
/// source by this test run (once per test binary; cargo skips the work when nothing changed).
pub fn plugins_dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| build_plugins("rust", "dist"))
}

/// Runs `plugins/build.sh --lang LANGS` into `target/plugins/FOLDER` (C is componentized by the
/// kp under test) and returns that folder.
pub fn build_plugins(langs: &str, folder: &str) -> PathBuf {
    let out = repo_root().join("target/plugins").join(folder);
    let status = Command::new(repo_root().join("plugins/build.sh"))
        .args(["--lang", langs])
        .arg(&out)
        .env("KP", kp_bin())
        .stdout(Stdio::null())
        .status()
        .expect("running plugins/build.sh");
    assert!(
        status.success(),
        "plugins/build.sh --lang {langs} failed (scripts/toolchains.sh installs what it needs)"
    );
    out
}

/// The path of an example plugin's module.
pub fn module(name: &str) -> PathBuf {
    plugins_dist().join(format!("{name}.wasm"))
}

/// The `kp` binary under test.
pub fn kp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kp"))
}

/// Runs `kp ARGS --cache-dir <shared cache>` with `stdin` as its input (small: it is written
/// before the output is read) and returns what it printed.
pub fn kp(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(kp_bin())
        .args(args)
        .arg("--cache-dir")
        .arg(cache_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Bytes printed by a process, as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A compiled-artifact cache shared by the tests (speeds up repeated loads).
pub fn cache_dir() -> PathBuf {
    repo_root().join("target/kp-test-cache")
}

/// A local port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plugin manifest reading `input`, writing `output`, in consumer group `group`, followed by
/// `extra` TOML (tables such as `[limits]` or `[on-failure]`).
pub fn manifest(input: &str, output: &str, group: &str, extra: &str) -> String {
    format!(
        "input-topics = [\"{input}\"]\noutput-topic = \"{output}\"\ngroup-id = \"{group}\"\n{extra}"
    )
}

/// A plugins folder for one test: copies of example modules with manifests written by the test.
pub struct PluginDir {
    pub dir: tempfile::TempDir,
}

impl PluginDir {
    pub fn new() -> Self {
        PluginDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds example plugin `module` as `name`, with this manifest text.
    pub fn add(&self, module_name: &str, name: &str, manifest: &str) -> &Self {
        std::fs::copy(
            module(module_name),
            self.path().join(format!("{name}.wasm")),
        )
        .unwrap();
        std::fs::write(self.path().join(format!("{name}.toml")), manifest).unwrap();
        self
    }

    /// Writes arbitrary bytes as `name.wasm`.
    pub fn add_raw(&self, name: &str, bytes: &[u8]) -> &Self {
        std::fs::write(self.path().join(format!("{name}.wasm")), bytes).unwrap();
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The real broker

/// The bootstrap address of the test broker (`KP_TEST_BROKERS`, default 127.0.0.1:9092). Panics
/// with instructions when it does not answer.
pub fn brokers() -> &'static str {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| {
        let brokers = std::env::var("KP_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        if let Err(e) = probe.fetch_metadata(None, Duration::from_secs(20)) {
            panic!("no Kafka broker answers at {brokers} ({e}); start one with `scripts/kafka.sh start`");
        }
        brokers
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap()
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)))
}

/// Waits until the cluster's metadata of topic `name` satisfies `ready`.
fn wait_for_topic(
    name: &str,
    what: &str,
    ready: impl Fn(&rdkafka::metadata::MetadataTopic) -> bool,
) {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = probe
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .unwrap();
        let topics = md.topics();
        if !topics.is_empty() && topics.iter().all(&ready) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "topic {name} did not become {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates a topic and waits until its partitions have leaders.
pub fn create_topic(name: &str, partitions: i32) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = runtime()
        .block_on(admin().create_topics(&[topic], &admin_options()))
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    wait_for_topic(name, "ready", |t| {
        t.error().is_none()
            && t.partitions().len() == partitions as usize
            && t.partitions().iter().all(|p| p.leader() >= 0)
    });
}

/// Deletes a topic and waits until the cluster no longer has it.
pub fn delete_topic(name: &str) {
    let results = runtime()
        .block_on(admin().delete_topics(&[name], &admin_options()))
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("deleting topic {t}: {e}"));
    }
    wait_for_topic(name, "deleted", |t| {
        t.error().is_some() || t.partitions().is_empty()
    });
}

/// Creates a topic, retrying while a deletion of the same name is still being carried out.
pub fn create_topic_again(name: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = std::panic::catch_unwind(|| create_topic(name, partitions));
        match attempt {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: Option<i32>,
}

impl Rec {
    pub fn kv(key: &str, value: &str) -> Self {
        Rec {
            key: Some(key.into()),
            value: Some(value.into()),
            headers: vec![],
            partition: None,
        }
    }
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn on(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// `n` records keyed over `keys` keys, value and `seq` header `i`.
pub fn seq_records(n: usize, keys: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec::kv(&format!("k{}", i % keys), &i.to_string()).header("seq", i.to_string()))
        .collect()
}

/// How many outputs carry each `seq` header value in `0..n`.
pub fn count_by_seq(outputs: &[Read], n: usize) -> Vec<u32> {
    let mut seen = vec![0u32; n];
    for r in outputs {
        seen[r.seq()] += 1;
    }
    seen
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Read {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).map(|v| std::str::from_utf8(v).unwrap())
    }
    /// The `seq` header [`seq_records`] gave its input.
    pub fn seq(&self) -> usize {
        self.header_str("seq")
            .expect("seq header")
            .parse()
            .expect("seq is a number")
    }
}

/// Produces records and waits until the broker has acknowledged them all.
pub fn produce(topic: &str, records: &[Rec]) {
    produce_with(topic, records, &[]);
}

/// [`produce`] with extra producer properties (e.g. `compression.type`).
pub fn produce_with(topic: &str, records: &[Rec], properties: &[(&str, &str)]) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers())
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    for r in records {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        if !r.headers.is_empty() {
            let mut hs = OwnedHeaders::new();
            for (n, v) in &r.headers {
                hs = hs.insert(Header {
                    key: n,
                    value: Some(v.as_slice()),
                });
            }
            record = record.headers(hs);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The log-end offset of every partition of `topic`.
pub fn log_end(topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    parts
        .into_iter()
        .map(|p| (p, watermark(&c, topic, p)))
        .collect()
}

/// The high watermark of one partition, retrying while leadership settles (a topic just created
/// can answer "not leader for partition" for a moment).
fn watermark(c: &BaseConsumer, topic: &str, partition: i32) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok((_, high)) => return high,
            Err(e) if Instant::now() < deadline => {
                eprintln!("watermark of {topic}/{partition}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("watermark of {topic}/{partition}: {e}"),
        }
    }
}

/// The committed offsets of `group` on `topic` (partitions without a commit are left out).
pub fn committed(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let ends = log_end(topic);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition(topic, *p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        // The group coordinator may be loading or moving for a moment: retry.
        match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets of {group}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed offsets of {group}: {e}"),
        }
    };
    drop(tpl);
    let out = got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    drop(got);
    out
}

/// Waits until `topic` holds at least `n` records (over all partitions).
pub fn wait_for_records(topic: &str, n: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while log_end(topic).values().sum::<i64>() < n {
        assert!(
            Instant::now() < deadline,
            "{topic} never reached {n} records"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `group`'s committed offsets on `topic` equal the log-end offsets.
pub fn wait_committed_to_end(group: &str, topic: &str, timeout: Duration) -> BTreeMap<i32, i64> {
    let deadline = Instant::now() + timeout;
    let ends = log_end(topic);
    loop {
        let c = committed(group, topic);
        if c == ends {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "group {group}: committed {c:?} never reached the log end {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Reads every record of `topic` until at least `expected` arrived and the log end is reached,
/// failing after `timeout`.
pub fn read_all(topic: &str, expected: usize, timeout: Duration) -> Vec<Read> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = read_topic(topic);
        if out.len() >= expected {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: only {} of {expected} records arrived",
            out.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reads `topic` from the beginning up to its current log end.
pub fn read_topic(topic: &str) -> Vec<Read> {
    let ends = log_end(topic);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    drop(tpl);
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pos.iter().any(|(p, o)| *o < ends[p]) {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        pos.insert(m.partition(), m.offset() + 1);
        out.push(Read {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    out
}

/// The folder `scripts/kafka.sh` keeps the broker in (`KP_KAFKA_DIR`, default `<repo>/.kafka`).
pub fn kafka_dir() -> PathBuf {
    std::env::var_os("KP_KAFKA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".kafka"))
}

/// The first log segment of a partition, on the test broker's disk.
pub fn segment_file(topic: &str, partition: i32) -> PathBuf {
    kafka_dir()
        .join("data")
        .join(format!("{topic}-{partition}"))
        .join("00000000000000000000.log")
}

/// The secured listeners of the test broker and their credentials, as `scripts/kafka.sh` wrote
/// them to `listeners.env`.
pub struct Secured {
    pub ssl: String,
    pub sasl_ssl: String,
    pub mtls: String,
    /// Where a [`Proxy`] must listen for the PROXIED listener (advertised there).
    pub proxy: String,
    /// The PROXIED listener itself, which the proxy forwards to.
    pub proxied: String,
    pub tls_dir: PathBuf,
    pub scram_user: String,
    pub scram_password: String,
}

impl Secured {
    pub fn get() -> Secured {
        let path = kafka_dir().join("listeners.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; start the test broker with `scripts/kafka.sh start`, which makes its \
                 TLS and SASL listeners",
                path.display()
            )
        });
        let vars: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            vars.get(k)
                .unwrap_or_else(|| panic!("{k} missing from {}", path.display()))
                .to_string()
        };
        Secured {
            ssl: get("KP_KAFKA_SSL"),
            sasl_ssl: get("KP_KAFKA_SASL_SSL"),
            mtls: get("KP_KAFKA_MTLS"),
            proxy: get("KP_KAFKA_PROXY"),
            proxied: get("KP_KAFKA_PROXIED"),
            tls_dir: PathBuf::from(get("KP_KAFKA_TLS_DIR")),
            scram_user: get("KP_KAFKA_SCRAM_USER"),
            scram_password: get("KP_KAFKA_SCRAM_PASSWORD"),
        }
    }

    /// A file of the TLS material (`ca.pem`, `other-ca.pem`, `client.pem`, `client.key`).
    pub fn tls(&self, file: &str) -> String {
        self.tls_dir.join(file).display().to_string()
    }
}

/// A TCP proxy in front of the broker's PROXIED listener that a test can cut: every connection
/// through it drops and new ones are refused for a while, as if the broker were down for the
/// clients behind it (and only for them).
pub struct Proxy {
    cut_until: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(listen: &str, target: &str) -> Proxy {
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind(listen)
            .unwrap_or_else(|e| panic!("proxy on {listen}: {e} (one test at a time uses it)"));
        let cut_until: Arc<Mutex<Option<Instant>>> = Arc::default();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut, conns, target) = (cut_until.clone(), open.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut
                    .lock()
                    .unwrap()
                    .is_some_and(|until| Instant::now() < until)
                {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut list = conns.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { cut_until, open }
    }

    /// Drops every connection and refuses new ones for `outage`.
    pub fn cut(&self, outage: Duration) {
        *self.cut_until.lock().unwrap() = Some(Instant::now() + outage);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running kp

/// A `kp run` child process with its log in a file.
pub struct Kp {
    pub child: Child,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

/// Extra `-X` settings that make the classic protocol rebalance quickly in tests.
pub const FAST_CLASSIC: &[&str] = &[
    "-X",
    "session.timeout.ms=6000",
    "-X",
    "heartbeat.interval.ms=500",
];

impl Kp {
    /// Starts `kp run` on `plugins` against the test broker, with extra arguments.
    pub fn run(plugins: &Path, extra: &[&str]) -> Kp {
        Self::run_logging(
            plugins,
            extra,
            &std::env::var("KP_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
    }

    /// Like [`Kp::run`] with a given `KP_LOG` filter.
    pub fn run_logging(plugins: &Path, extra: &[&str], filter: &str) -> Kp {
        Self::run_against(brokers(), plugins, extra, filter)
    }

    /// Starts `kp run` against `bootstrap` (another listener of the test broker, say).
    pub fn run_against(bootstrap: &str, plugins: &Path, extra: &[&str], filter: &str) -> Kp {
        Self::start(bootstrap, plugins, extra, filter, &[])
    }

    /// Starts `kp run` on the test broker with extra environment variables.
    pub fn run_with_env(plugins: &Path, extra: &[&str], env: &[(&str, &str)]) -> Kp {
        Self::start(brokers(), plugins, extra, "info", env)
    }

    fn start(
        bootstrap: &str,
        plugins: &Path,
        extra: &[&str],
        filter: &str,
        env: &[(&str, &str)],
    ) -> Kp {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("kp.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(kp_bin());
        command
            .arg("run")
            .arg("--brokers")
            .arg(bootstrap)
            .arg("--plugins")
            .arg(plugins)
            .arg("--cache-dir")
            .arg(cache_dir())
            .args(extra)
            .env("KP_LOG", filter)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("starting kp");
        Kp {
            child,
            log,
            _logdir: logdir,
        }
    }

    /// Starts `kp dev` on `plugins` (its embedded broker) with extra arguments. Its standard
    /// output (what `--tail` and `--demo` print) goes to the log file too.
    pub fn dev(plugins: &Path, extra: &[&str]) -> Kp {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("kp.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(kp_bin())
            .arg("dev")
            .arg("--plugins")
            .arg(plugins)
            .arg("--cache-dir")
            .arg(cache_dir())
            .args(extra)
            .env("KP_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting kp dev");
        Kp {
            child,
            log,
            _logdir: logdir,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "kp exited ({status}) before logging {needle:?}:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "kp did not log {needle:?} within {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kp did not exit within {timeout:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(90));
        (status, self.logs())
    }
}

impl Drop for Kp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// What a process uses, from /proc

/// The most threads and the peak RSS (MiB) of a process, sampled while `until` is false.
pub fn watch_process(pid: u32, mut until: impl FnMut() -> bool) -> (u64, u64) {
    let mut threads = 0;
    let mut peak = 0;
    loop {
        let now = kp::ops::process_figures(Some(pid)).unwrap_or_default();
        threads = threads.max(now.threads);
        peak = peak.max(now.peak_rss_bytes >> 20);
        if until() {
            return (threads, peak);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
