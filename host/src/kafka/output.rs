//! Producing handler outputs. One idempotent producer serves every plugin; each record carries an
//! [`AckToken`] naming the message it came from, and the delivery callback hands the broker's
//! answer to that partition's [`PartitionProgress`].

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use super::progress::PartitionProgress;
use super::rdkafka_log;
use crate::sandbox::Output;

/// Identifies the message an output belongs to.
pub struct AckToken {
    pub progress: Arc<PartitionProgress>,
    pub offset: i64,
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
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.to_string()),
        };
        token.progress.acked(token.offset, outcome);
    }
}

pub type OutputProducer = ThreadedProducer<DeliveryContext>;

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
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}
