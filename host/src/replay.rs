//! `kp replay`: run a handler over messages read from JSON lines, without Kafka, and print the
//! results as JSON lines.
//!
//! ## Input: one message per line
//! ```json
//! {"topic": "orders", "partition": 0, "offset": 7, "timestamp": 1700000000000,
//!  "key": "k1", "value": {"base64": "AAEC"}, "headers": [{"name": "h", "value": "v"}]}
//! ```
//! Every field is optional: `topic` defaults to `replay`, `partition` to 0, `offset` to the
//! line's index (from 0), `timestamp` to none, `key`/`value` to null, `headers` to none.
//!
//! **Bytes** (`key`, `value`, header values) are binary-safe: a JSON string stands for its UTF-8
//! bytes, `{"base64": "..."}` for arbitrary bytes (standard alphabet, padded), and `null` for
//! absent (no key; a tombstone value).
//!
//! ## Output: one line per input message
//! `{"offset": 7, "outputs": [{"topic": "...", "partition": null, "key": ..., "value": ..., "headers": [...]}]}`
//! or `{"offset": 7, "error": {"kind": "trap", "message": "..."}}`. Bytes are written as a string
//! when they are valid UTF-8 and as `{"base64": "..."}` otherwise, so nothing is lost. An output's
//! `topic` is the one the host would produce to: the handler's, else the manifest's `output-topic`,
//! else null.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sandbox::LoadedPlugin;
use crate::sandbox::{
    HandlerFailure, Header, Message, Output, PluginInstance, Timestamp, TimestampType,
};
use std::sync::Arc;

/// One input line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp: Option<i64>,
    #[serde(default)]
    key: Value,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    headers: Vec<HeaderLine>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    name: String,
    value: Value,
}

/// Decodes a binary-safe JSON value: string → UTF-8 bytes, `{"base64": ..}` → bytes, null → none.
pub fn decode_bytes(value: &Value) -> Result<Option<Vec<u8>>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
        Value::Object(map) if map.len() == 1 && map.contains_key("base64") => {
            match &map["base64"] {
                Value::String(b) => Ok(Some(BASE64.decode(b).context("bad base64")?)),
                _ => bail!("\"base64\" must hold a string"),
            }
        }
        other => bail!("bytes must be a string, {{\"base64\": \"...\"}} or null, not {other}"),
    }
}

/// Encodes bytes for output: a string when valid UTF-8, else `{"base64": ...}`.
pub fn encode_bytes(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => serde_json::json!({ "base64": BASE64.encode(b) }),
        },
    }
}

/// Parses one input line into a message (`index` supplies the default offset).
pub fn parse_line(line: &str, index: i64) -> Result<Message> {
    let input: InputLine = serde_json::from_str(line)?;
    let headers = input
        .headers
        .iter()
        .map(|h| {
            let value = decode_bytes(&h.value)
                .with_context(|| format!("header {:?}", h.name))?
                .with_context(|| format!("header {:?}: a header value cannot be null", h.name))?;
            Ok(Header {
                name: h.name.clone(),
                value,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Message {
        topic: input.topic.unwrap_or_else(|| "replay".into()),
        partition: input.partition.unwrap_or(0),
        offset: input.offset.unwrap_or(index),
        timestamp: input.timestamp.map(|millis| Timestamp {
            millis,
            kind: TimestampType::CreateTime,
        }),
        key: decode_bytes(&input.key).context("key")?,
        value: decode_bytes(&input.value).context("value")?,
        headers,
    })
}

/// Renders the result of one message as a JSON value.
pub fn render_result(
    plugin: &LoadedPlugin,
    offset: i64,
    result: &Result<Vec<Output>, HandlerFailure>,
) -> Value {
    match result {
        Ok(outputs) => {
            let outputs: Vec<Value> = outputs
                .iter()
                .map(|o| {
                    let topic = o.topic.clone().or_else(|| plugin.manifest.output_topic.clone());
                    let headers: Vec<Value> = o
                        .headers
                        .iter()
                        .map(|h| serde_json::json!({"name": h.name, "value": encode_bytes(Some(&h.value))}))
                        .collect();
                    serde_json::json!({
                        "topic": topic,
                        "partition": o.partition,
                        "key": encode_bytes(o.key.as_deref()),
                        "value": encode_bytes(o.value.as_deref()),
                        "headers": headers,
                    })
                })
                .collect();
            serde_json::json!({"offset": offset, "outputs": outputs})
        }
        Err(failure) => serde_json::json!({
            "offset": offset,
            "error": {"kind": failure.kind().to_string(), "message": failure.to_string()},
        }),
    }
}

/// Totals of one replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub messages: u64,
    pub outputs: u64,
    pub failures: u64,
}

/// Runs `plugin` over every line of `input`, writing one result line per message to `out`.
/// A line that is not a valid message stops the replay with its line number.
pub fn replay(
    plugin: Arc<LoadedPlugin>,
    input: impl BufRead,
    mut out: impl Write,
) -> Result<ReplaySummary> {
    let mut instance = PluginInstance::new(plugin.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", plugin.path.display()))?;
    let mut summary = ReplaySummary::default();
    let mut index = 0i64;
    for (n, line) in input.lines().enumerate() {
        let line = line.context("reading input")?;
        if line.trim().is_empty() {
            continue;
        }
        let message = parse_line(&line, index).with_context(|| format!("input line {}", n + 1))?;
        index += 1;
        let result = instance.handle(&message);
        summary.messages += 1;
        match &result {
            Ok(outputs) => summary.outputs += outputs.len() as u64,
            Err(_) => summary.failures += 1,
        }
        serde_json::to_writer(&mut out, &render_result(&plugin, message.offset, &result))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let raw: Vec<u8> = (0..=255).collect();
        let encoded = encode_bytes(Some(&raw));
        assert!(encoded.get("base64").is_some());
        assert_eq!(decode_bytes(&encoded).unwrap().unwrap(), raw);
        assert_eq!(encode_bytes(Some(b"hi")), Value::String("hi".into()));
        assert_eq!(
            decode_bytes(&Value::String("hi".into())).unwrap().unwrap(),
            b"hi"
        );
        assert_eq!(decode_bytes(&Value::Null).unwrap(), None);
        assert_eq!(encode_bytes(None), Value::Null);
        assert_eq!(
            decode_bytes(&Value::String(String::new())).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert!(decode_bytes(&serde_json::json!(5)).is_err());
        assert!(decode_bytes(&serde_json::json!({"base64": "***"})).is_err());
        assert!(decode_bytes(&serde_json::json!({"hex": "00"})).is_err());
    }

    #[test]
    fn lines_parse_with_defaults() {
        let m = parse_line(r#"{"value": "v"}"#, 9).unwrap();
        assert_eq!((m.topic.as_str(), m.partition, m.offset), ("replay", 0, 9));
        assert_eq!(m.key, None);
        assert_eq!(m.value.as_deref(), Some(&b"v"[..]));
        let m = parse_line(
            r#"{"topic":"t","partition":2,"offset":5,"timestamp":7,"key":{"base64":"AP8="},"headers":[{"name":"a","value":"1"},{"name":"a","value":{"base64":"AA=="}}]}"#,
            0,
        )
        .unwrap();
        assert_eq!(m.key.as_deref(), Some(&[0u8, 255][..]));
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.headers[1].value, vec![0]);
        assert_eq!(m.timestamp.unwrap().millis, 7);
        assert!(parse_line(r#"{"valu": "v"}"#, 0).is_err());
        assert!(parse_line(r#"{"headers":[{"name":"a","value":null}]}"#, 0).is_err());
    }
}
