//! `kp test`: runs a handler over input messages and compares its results with expected ones,
//! without Kafka.
//!
//! Both files are JSON lines in `kp replay`'s formats ([`crate::replay`]): the input one message
//! per line, the expected file one result per input message, in order. An expected line says only
//! what it cares about: **a field left out matches anything** (a timestamp, a trace header's value,
//! an error's wording), while every field written must match exactly, and a list must have the
//! same length, element by element. Success is always compared: a line without `error` expects
//! the handler to succeed (`{}` means "succeeds, with any outputs"). So
//!
//! ```json
//! {"outputs": [{"value": "HELLO", "headers": [{"name": "trace-id"}]}]}
//! {"error": {"kind": "bad-message"}}
//! ```
//!
//! expects one output whose value is `HELLO` and whose single header is named `trace-id` (any
//! value), then a bad-message failure with any message. `kp replay --plugin P --input IN > EXPECTED`
//! writes the whole results, to edit down to what matters.

use std::fmt;
use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::sandbox::LoadedPlugin;

/// Where an actual result differs from an expected one.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The case: the input message's line among the messages, from 1.
    pub case: usize,
    /// Where in the result: `outputs[0].value`, `error.kind`, or empty for the whole line.
    pub at: String,
    /// What the expected file says.
    pub expected: Option<Value>,
    /// What the handler gave; `None` when it gave nothing there.
    pub actual: Option<Value>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "nothing".to_string(),
        };
        let at = if self.at.is_empty() {
            String::new()
        } else {
            format!(" {}:", self.at)
        };
        write!(
            f,
            "case {}:{at} expected {}, got {}",
            self.case,
            show(&self.expected),
            show(&self.actual)
        )
    }
}

/// What `kp test` found.
#[derive(Debug)]
pub struct TestReport {
    /// Input messages run.
    pub cases: usize,
    /// Every difference, in case order.
    pub mismatches: Vec<Mismatch>,
    /// The handler's results, one per case (for a rewrite of the expected file).
    pub results: Vec<Value>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Runs `plugin` over `input` (replay's input format) and compares the results with `expected`
/// (the text of the expected file, named `expected_name` in errors).
pub fn run(
    plugin: Arc<LoadedPlugin>,
    input: impl BufRead,
    expected: &str,
    expected_name: &str,
) -> Result<TestReport> {
    let expected = parse_lines(expected, expected_name)?;
    let mut out = Vec::new();
    crate::replay::replay(plugin, input, &mut out)?;
    let results = parse_lines(
        std::str::from_utf8(&out).context("replay wrote something that is not UTF-8")?,
        "the results",
    )?;
    let mut mismatches = Vec::new();
    for case in 0..results.len().max(expected.len()) {
        match (expected.get(case), results.get(case)) {
            (Some(e), Some(a)) => compare_case(e, a, case + 1, &mut mismatches),
            (e, a) => mismatches.push(Mismatch {
                case: case + 1,
                at: String::new(),
                expected: e.cloned(),
                actual: a.cloned(),
            }),
        }
    }
    Ok(TestReport {
        cases: results.len(),
        mismatches,
        results,
    })
}

/// One JSON value per non-empty line.
fn parse_lines(text: &str, name: &str) -> Result<Vec<Value>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).with_context(|| format!("{name}, line {}", n + 1))
        })
        .collect()
}

/// Compares one case's result with its expected line.
fn compare_case(expected: &Value, actual: &Value, case: usize, out: &mut Vec<Mismatch>) {
    // Whether the handler succeeded is always compared: an expected line that names no error
    // expects outputs, even when it names nothing else.
    if expected.get("error").is_none() && actual.get("error").is_some() {
        out.push(Mismatch {
            case,
            at: "error".into(),
            expected: None,
            actual: actual.get("error").cloned(),
        });
    }
    compare(expected, actual, case, String::new(), out)
}

/// Compares `actual` with `expected`: the fields `expected` names must match; others are free.
fn compare(expected: &Value, actual: &Value, case: usize, at: String, out: &mut Vec<Mismatch>) {
    let differ = |out: &mut Vec<Mismatch>, at: String| {
        out.push(Mismatch {
            case,
            at,
            expected: Some(expected.clone()),
            actual: Some(actual.clone()),
        })
    };
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, want_value) in want {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match got.get(key) {
                    Some(got_value) => compare(want_value, got_value, case, path, out),
                    None => out.push(Mismatch {
                        case,
                        at: path,
                        expected: Some(want_value.clone()),
                        actual: None,
                    }),
                }
            }
        }
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                compare(w, g, case, format!("{at}[{i}]"), out);
            }
        }
        _ if expected == actual => {}
        _ => differ(out, at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(expected: Value, actual: Value) -> Vec<String> {
        let mut out = Vec::new();
        compare(&expected, &actual, 1, String::new(), &mut out);
        out.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn fields_left_out_match_anything_and_written_ones_must_match() {
        let actual = json!({"offset": 3, "outputs": [{"topic": "t", "key": null, "value": "HELLO",
            "headers": [{"name": "trace-id", "value": "5f2c"}]}]});
        assert!(diff(json!({"outputs": [{"value": "HELLO"}]}), actual.clone()).is_empty());
        assert!(
            diff(
                json!({"outputs": [{"headers": [{"name": "trace-id"}]}]}),
                actual.clone()
            )
            .is_empty()
        );
        assert!(diff(json!({}), actual.clone()).is_empty());
        assert_eq!(
            diff(json!({"outputs": [{"value": "hello"}]}), actual.clone()),
            ["case 1: outputs[0].value: expected \"hello\", got \"HELLO\""]
        );
        // A written null is a value: it must be null.
        assert_eq!(
            diff(json!({"outputs": [{"key": "k"}]}), actual.clone()).len(),
            1
        );
        // Lists: the same length, element by element.
        let two = diff(json!({"outputs": [{}, {}]}), actual.clone());
        assert_eq!(two.len(), 1, "{two:?}");
        assert!(two[0].starts_with("case 1: outputs: expected"), "{two:?}");
        // A field the result does not have.
        assert_eq!(
            diff(json!({"error": {"kind": "bad-message"}}), actual),
            ["case 1: error: expected {\"kind\":\"bad-message\"}, got nothing"]
        );
    }

    #[test]
    fn a_line_without_an_error_expects_success() {
        let trapped = json!({"offset": 0, "error": {"kind": "trap", "message": "boom"}});
        let mut out = Vec::new();
        compare_case(&json!({}), &trapped, 1, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].at, "error");
        out.clear();
        compare_case(&json!({"error": {}}), &trapped, 1, &mut out);
        assert!(out.is_empty(), "{out:?}");
        compare_case(
            &json!({}),
            &json!({"offset": 0, "outputs": []}),
            1,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn numbers_and_types_are_exact() {
        assert_eq!(diff(json!({"offset": 3}), json!({"offset": 4})).len(), 1);
        assert_eq!(diff(json!({"offset": "3"}), json!({"offset": 3})).len(), 1);
        assert!(diff(json!({"offset": 3}), json!({"offset": 3})).is_empty());
    }

    #[test]
    fn bad_expected_lines_are_named() {
        let e = parse_lines("{}\n\n{oops\n", "expected.jsonl").unwrap_err();
        assert!(format!("{e:#}").contains("expected.jsonl, line 3"), "{e:#}");
    }
}
