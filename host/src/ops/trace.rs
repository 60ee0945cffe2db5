//! W3C trace context through kp. A record that carries a `traceparent` header is handled in a
//! span of that trace (`kp handle`, kind consumer, with the plugin, version, topic, partition,
//! offset and outcome), and every record kp produces for it (outputs and dead letters) carries
//! a `traceparent` of its own: a `kp produce` span (kind producer) in the same trace, child of
//! the handling span (a dead letter's, of the record's own span). A `traceparent` a handler
//! copied or set on an output is replaced: downstream, the trace goes through kp.
//!
//! Spans are exported through OTLP over HTTP when the standard variables are set
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, with
//! `OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf` (default) or `http/json`, and the `OTEL_BSP_*`
//! batch settings). Otherwise nothing is traced: kp's spans would exist nowhere, so records keep
//! whatever `traceparent` the handler gives them (a handler that copies the record's headers
//! keeps the trace connected). The exporter speaks plain `http://` (a collector or agent beside
//! kp); TLS to the collector is not built in, and an `https://` endpoint is refused at start. A
//! record without `traceparent` costs one scan of its header names; a `traceparent` longer than
//! the W3C format allows is ignored without being parsed.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::sandbox::{Header, LoadedPlugin, Message, Output};

/// The W3C header kp reads and writes.
pub const TRACEPARENT: &str = "traceparent";

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// True when spans go somewhere.
    exporting: bool,
}

fn tracing() -> &'static Tracing {
    static TRACING: OnceLock<Tracing> = OnceLock::new();
    TRACING.get_or_init(|| {
        let endpoint_set = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        let mut builder = SdkTracerProvider::builder();
        let mut exporting = false;
        let https = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|v| v.trim_start().starts_with("https:")));
        if endpoint_set && https {
            tracing::error!(
                "OTEL_EXPORTER_OTLP_*ENDPOINT is https: this build exports spans over plain http \
                 only (to a collector or agent beside kp); no spans are exported"
            );
        } else if endpoint_set {
            match opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
            {
                Ok(exporter) => {
                    builder = builder.with_batch_exporter(exporter);
                    exporting = true;
                }
                Err(e) => tracing::error!(
                    "OTEL_EXPORTER_OTLP_*: cannot set up the span exporter, no spans are exported: {}",
                    without_userinfo(&e.to_string())
                ),
            }
        }
        let provider = builder
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("kp")
                    .build(),
            )
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "kp");
        Tracing {
            provider,
            tracer,
            exporting,
        }
    })
}

/// Starts the exporter if the environment asks for one (at start, so a bad setting is said
/// then); spans are sent in batches from a thread of the OpenTelemetry SDK.
pub fn init() {
    if tracing().exporting {
        tracing::info!("exporting trace spans through OTLP (OTEL_EXPORTER_OTLP_* is set)");
    }
}

/// Sends what is batched (at exit).
pub fn flush() {
    let t = tracing();
    if t.exporting {
        if let Err(e) = t.provider.force_flush() {
            tracing::warn!("flushing trace spans at exit: {e}");
        }
        let _ = t.provider.shutdown();
    }
}

/// `text` with any `user:password@` after a `://` removed.
fn without_userinfo(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest.find(['/', ' ', '"']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            out.push_str("…@");
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// Reads W3C headers from a record's headers (names compared as the spec says: lowercase).
struct Headers<'a>(&'a [Header]);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|h| h.name.eq_ignore_ascii_case(key))
            .and_then(|h| std::str::from_utf8(&h.value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.name.as_str()).collect()
    }
}

/// The context a record carries, if it carries a valid `traceparent`.
fn remote_context(headers: &[Header]) -> Option<Context> {
    // 55 bytes in version 00; room for a later version's extra fields, no more.
    if !headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case(TRACEPARENT) && h.value.len() <= 128)
    {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// The handling of one traced record.
pub struct HandleSpan {
    context: Context,
}

/// A span for handling `message` with `plugin`, if the record carries a trace.
pub fn handle_span(message: &Message, plugin: &LoadedPlugin, attempt: u32) -> Option<HandleSpan> {
    if !tracing().exporting {
        return None;
    }
    let parent = remote_context(&message.headers)?;
    let t = tracing();
    let span = t
        .tracer
        .span_builder("kp handle")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("kp.plugin", plugin.name().to_string()),
            KeyValue::new("kp.plugin.version", plugin.version().to_string()),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", message.topic.clone()),
            KeyValue::new(
                "messaging.destination.partition.id",
                message.partition.to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", message.offset),
            KeyValue::new("kp.attempt", i64::from(attempt)),
        ])
        .start_with_context(&t.tracer, &parent);
    Some(HandleSpan {
        context: parent.with_span(span),
    })
}

/// A `traceparent` for one record produced under `parent`: a producer span of its own.
fn produce_header(parent: &Context, topic: &str) -> Header {
    let t = tracing();
    let mut span = t
        .tracer
        .span_builder("kp produce")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", topic.to_string()),
        ])
        .start_with_context(&t.tracer, parent);
    let sc = span.span_context().clone();
    span.end();
    Header {
        name: TRACEPARENT.into(),
        value: format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
        .into_bytes(),
    }
}

/// Puts `header` in place of any `traceparent` in `headers`.
fn replace_traceparent(headers: &mut Vec<Header>, header: Header) {
    headers.retain(|h| !h.name.eq_ignore_ascii_case(TRACEPARENT));
    headers.push(header);
}

impl HandleSpan {
    /// Gives each output a `traceparent` of its own, child of this span.
    pub fn mark_outputs(&self, outputs: &mut [Output], default_topic: Option<&str>) {
        for out in outputs {
            let topic = out.topic.as_deref().or(default_topic).unwrap_or("");
            let header = produce_header(&self.context, topic);
            replace_traceparent(&mut out.headers, header);
        }
    }

    /// Ends the span with the handler's outcome (`ok`, or the failure kind).
    pub fn end(self, outcome: &str) {
        let span = self.context.span();
        span.set_attribute(KeyValue::new("kp.outcome", outcome.to_string()));
        if outcome != "ok" {
            span.set_status(Status::error(outcome.to_string()));
        }
        span.end();
    }
}

/// Gives a dead-letter record built from a traced record a `traceparent` of its own, child of
/// the record's own span.
pub fn mark_dead_letter(record: &mut Output, topic: &str) {
    if !tracing().exporting {
        return;
    }
    if let Some(parent) = remote_context(&record.headers) {
        let header = produce_header(&parent, topic);
        replace_traceparent(&mut record.headers, header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn an_output_gets_its_own_traceparent_in_the_same_trace() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent = remote_context(&[header("traceparent", incoming)]).expect("valid");
        let mut headers = vec![header("traceparent", incoming), header("x", "y")];
        replace_traceparent(&mut headers, produce_header(&parent, "out"));
        let tp: Vec<&Header> = headers.iter().filter(|h| h.name == "traceparent").collect();
        assert_eq!(tp.len(), 1);
        let value = std::str::from_utf8(&tp[0].value).unwrap();
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "same trace");
        assert_ne!(parts[2], "b7ad6b7169203331", "a span of its own");
        assert_eq!(parts[3], "01", "sampled as its parent");
    }

    #[test]
    fn records_without_a_valid_traceparent_are_not_traced() {
        assert!(remote_context(&[]).is_none());
        assert!(remote_context(&[header("traceparent", "garbage")]).is_none());
        assert!(
            remote_context(&[header(
                "traceparent",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01"
            )])
            .is_none()
        );
    }
}
