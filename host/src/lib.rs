//! # kp: sandboxed WebAssembly message handlers on Kafka
//!
//! Map of the crate:
//! - [`manifest`]: `NAME.toml` beside `NAME.wasm`: topics, group, limits, guest config.
//! - [`sandbox`]: wasmtime engine, plugin loading and checking, guest instances, outcomes.
//! - [`replay`]: `kp replay`: run a handler over JSON lines, no Kafka.
//! - [`check`]: `kp check`: load a module and describe it.
//! - [`kafka`]: consuming, **the execution model** (worker threads running partitions in turns),
//!   **the commit rule**, producing outputs.
//! - [`runner`]: `kp run`: start everything, drain on shutdown; [`dev`]: the same on an embedded broker.
//! - [`registry`]: the running plugins, kept in line with the plugins folder (**hot reload**);
//!   [`watcher`]: notices file changes; [`status`]: what an operator sees.
//! - [`stop`]: the one stop signal for kp's threads, and joining them without losing a panic.
//! - [`ops`]: operating kp: Prometheus metrics, health and readiness, `/status`, resuming halted
//!   partitions (the `--http` listener).
//! - [`policy`]: the operator's policy: what each plugin may read, write and know (tenancy).
//! - [`config`]: the optional config file; [`files`]: writing files readers never see half of.
//! - [`guest`]: tools for handler authors: `kp new` (scaffolds) and `kp componentize`.
//! - [`version`]: `kp version`: versions and what this build of librdkafka can do (TLS, SASL, codecs).
//!
//! `main.rs` only parses the command line and calls into these.
//! The process's allocator is jemalloc, for Rust and librdkafka alike (`ALLOCATOR`, below; the
//! default feature `jemalloc`).

// The crate's maps name its internal modules too (`cargo doc --document-private-items` shows them).
#![allow(rustdoc::private_intra_doc_links)]
#![deny(unsafe_code)] // Two justified exceptions: loading cached compiled artifacts (sandbox::cache)
// and reading Kafka header names as bytes (kafka::record).

pub mod check;
pub mod config;
pub mod dev;
pub mod files;
pub mod guest;
pub mod kafka;
pub mod manifest;
pub mod ops;
pub mod policy;
pub(crate) mod registry;
pub mod replay;
pub mod runner;
pub mod sandbox;
pub(crate) mod status;
pub(crate) mod stop;
pub mod testing;
pub mod version;
pub(crate) mod watcher;

/// jemalloc serves every allocation in the process: Rust's, and (through the unprefixed `malloc`
/// symbols) librdkafka's. A message allocates on one thread and is freed on another (a worker
/// builds a record, the producer's threads free it), which glibc's allocator handles poorly:
/// with glibc, `malloc` and `free` were a fifth of kp's CPU time at full speed, and the Kafka
/// benchmark ran 17-25% slower (BENCHMARKS.md). In the library, not `main`, so the tests and
/// benchmarks run on the allocator that ships; behind the default feature `jemalloc`, so the fuzz
/// targets (which need the sanitizers' allocator) and an embedder can choose their own.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
