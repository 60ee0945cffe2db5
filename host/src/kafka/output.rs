//! Producing handler outputs. One idempotent producer serves every plugin; each record carries an
//! [`AckToken`] naming the message it came from, and the delivery callback hands the broker's
//! answer to that partition's [`PartitionProgress`].
//!
//! A failed output is one of two things ([`refused_for_good`]):
//! - **refused for good**: the record itself cannot be written, now or later: larger than
//!   `message.max.bytes` (the producer's or the topic's), a partition or topic that does not
//!   exist, a topic name the broker rejects, a write the client is not authorized to make, a
//!   record the broker calls invalid. That is the handler's doing, so the plugin's failure policy
//!   applies to the input message (dead-letter, skip or halt).
//! - anything else (the broker down, a leader moving, a timeout) is the cluster's, not the
//!   message's. librdkafka retries it; kp sets `message.timeout.ms=0` (retry until delivered)
//!   so an outage delays outputs and halts nothing. If an operator sets a finite
//!   `message.timeout.ms` and it runs out, the partition halts (the output may or may not have
//!   been written; kp cannot tell).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use super::progress::PartitionProgress;
use super::rdkafka_log;
use crate::sandbox::Output;

/// Identifies the message an output belongs to.
pub struct AckToken {
    pub progress: Arc<PartitionProgress>,
    pub offset: i64,
    /// A dead-letter record: its refusal halts the partition (it is the last resort).
    pub dead_letter: bool,
}

/// Routes delivery reports to partition progress, and librdkafka's log to `tracing`.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        rdkafka_log("producer", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(client = "producer", "librdkafka: {error}: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<AckToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<AckToken>) {
        let metrics = &token.progress.metrics;
        match result {
            Ok(_) => {
                if !token.dead_letter {
                    metrics.outputs.inc();
                }
                token.progress.acked(token.offset, Ok(()))
            }
            Err((error, record)) if !token.dead_letter && refused_for_good(error) => {
                metrics.delivery_errors.inc();
                token.progress.refused(
                    token.offset,
                    format!("the output to {:?} was refused: {error}", record.topic()),
                )
            }
            Err((error, _)) => {
                metrics.delivery_errors.inc();
                token.progress.acked(token.offset, Err(error.to_string()))
            }
        }
    }
}

pub type OutputProducer = ThreadedProducer<DeliveryContext>;

/// True when the broker (or librdkafka, before sending) refused a record for a reason that lies
/// in the record: sending it again would fail again.
pub fn refused_for_good(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    error.rdkafka_error_code().is_some_and(|code| {
        matches!(
            code,
            MessageSizeTooLarge
                | MessageBatchTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | InvalidRecord
                | UnknownPartition
                | UnknownTopic
                | UnknownTopicOrPartition
                | InvalidTopic
                | TopicAuthorizationFailed
                | PolicyViolation
                | InvalidArgument
        )
    })
}

/// Sends one output to `topic`. Waits (and retries) while librdkafka's queue is full; any other
/// immediate error is returned (and the record's token is dropped unacknowledged).
pub fn send(
    producer: &OutputProducer,
    topic: &str,
    output: &Output,
    token: AckToken,
) -> Result<(), KafkaError> {
    let mut record: BaseRecord<'_, [u8], [u8], Box<AckToken>> =
        BaseRecord::with_opaque_to(topic, Box::new(token));
    if let Some(key) = output.key.as_deref() {
        record = record.key(key);
    }
    if let Some(value) = output.value.as_deref() {
        record = record.payload(value);
    }
    if let Some(partition) = output.partition {
        record = record.partition(partition);
    }
    if !output.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(output.headers.len());
        for h in &output.headers {
            headers = headers.insert(KafkaHeader {
                key: &h.name,
                value: Some(h.value.as_slice()),
            });
        }
        record = record.headers(headers);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // The broker is slow or away: a wait on Kafka, not a stuck worker.
                super::executor::waiting_on_kafka();
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}
