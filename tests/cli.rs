//! The `kp` command line without Kafka: `kp check`, `kp replay`, `kp new`, `kp componentize`,
//! `kp --help`.

mod support;

use std::process::Command;

use support::{PluginDir, kp, kp_bin, module, text};

#[test]
fn help_lists_every_subcommand() {
    let out = Command::new(kp_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["run", "dev", "check", "replay", "new", "componentize"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from:\n{help}"
        );
    }
}

#[test]
fn check_describes_a_good_module() {
    let path = module("chaos");
    let out = kp(&["check", path.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for needle in [
        "kp:plugin/handler-world@0.1.0",
        "chaos-in -> chaos-out",
        "timeout 1000 ms",
        "memory 32 MiB",
        "greeting",
    ] {
        assert!(report.contains(needle), "{needle} missing from:\n{report}");
    }
}

#[test]
fn check_fails_with_a_reason_on_bad_input() {
    let dir = PluginDir::new();
    dir.add_raw("junk", b"\x7fELF not wasm");
    let path = dir.path().join("junk.wasm");
    let out = kp(&["check", path.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("junk.wasm") && err.contains("not a WebAssembly file"),
        "{err}"
    );

    let missing = kp(&["check", "/nonexistent/x.wasm"], "");
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("/nonexistent/x.wasm"));
}

#[test]
fn replay_round_trips_binary_data_and_reports_errors() {
    let path = module("chaos");
    let input = concat!(
        r#"{"key": "echo", "value": {"base64": "AP8A"}, "headers": [{"name": "h", "value": {"base64": "/w=="}}, {"name": "h", "value": "two"}]}"#,
        "\n",
        r#"{"key": "panic"}"#,
        "\n\n",
        r#"{"key": "fanout:2", "value": null, "offset": 99}"#,
        "\n",
    );
    let out = kp(
        &["replay", "--plugin", path.to_str().unwrap(), "--input", "-"],
        input,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let first = &lines[0]["outputs"][0];
    assert_eq!(first["value"], serde_json::json!({"base64": "AP8A"}));
    assert_eq!(first["key"], "echo");
    assert_eq!(first["topic"], "chaos-out");
    assert_eq!(
        first["headers"][0],
        serde_json::json!({"name": "h", "value": {"base64": "/w=="}})
    );
    assert_eq!(
        first["headers"][1],
        serde_json::json!({"name": "h", "value": "two"})
    );
    assert_eq!(lines[1]["error"]["kind"], "trap");
    assert_eq!(lines[2]["offset"], 99);
    assert_eq!(lines[2]["outputs"].as_array().unwrap().len(), 2);
    assert_eq!(lines[2]["outputs"][0]["value"], serde_json::Value::Null);
}

#[test]
fn replay_names_the_bad_input_line() {
    let path = module("uppercase");
    let out = kp(
        &["replay", "--plugin", path.to_str().unwrap()],
        "{\"value\": \"ok\"}\n{\"vaule\": 1}\n",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("input line 2"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("OK"),
        "the good line was handled before"
    );
}

#[test]
fn replay_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"value\": \"abc\"}\n").unwrap();
    let path = module("uppercase");
    let out = kp(
        &[
            "replay",
            "--plugin",
            path.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("\"ABC\""));
}

#[test]
fn new_and_componentize_refuse_bad_input_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("x");
    let bad_name = Command::new(kp_bin())
        .args(["new", "Bad_Name", "--lang", "c", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(!bad_name.status.success());
    assert!(
        text(&bad_name.stderr).contains("lowercase letters"),
        "{}",
        text(&bad_name.stderr)
    );
    assert!(!project.exists(), "nothing is written for a refused name");

    let not_wasm = dir.path().join("notes.txt");
    std::fs::write(&not_wasm, "hello").unwrap();
    let out = dir.path().join("out.wasm");
    let refused = Command::new(kp_bin())
        .arg("componentize")
        .arg(&not_wasm)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("notes.txt") && stderr.contains("not a WebAssembly core module"),
        "{stderr}"
    );
    assert!(!out.exists());

    // A component is not a core module: componentize says to check it instead.
    let already = Command::new(kp_bin())
        .arg("componentize")
        .arg(module("uppercase"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        text(&already.stderr).contains("already a component"),
        "{}",
        text(&already.stderr)
    );
}
