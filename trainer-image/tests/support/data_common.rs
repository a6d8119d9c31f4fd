//! Shared helpers of the data_* and metrics_* tests: run a Python reference
//! helper from tests/python with the reference environment's interpreter.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Runs `tests/python/<script>` with `request` as JSON on stdin; returns its JSON answer.
pub fn python(script: &str, request: &serde_json::Value) -> serde_json::Value {
    let path = manifest_dir().join("tests/python").join(script);
    let mut child = Command::new(super::common::python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", super::common::python().display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helper printed JSON")
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn vocab(name: &str) -> PathBuf {
    manifest_dir().join("assets/vocab").join(name)
}

/// A fresh directory under the system temp dir, removed first.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("megatron-data-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sentences of real English text (the license texts shipped with Debian),
/// falling back to the crate's own sources when they are absent.
pub fn real_sentences() -> Vec<String> {
    let mut text = String::new();
    for f in ["Apache-2.0", "GPL-3", "MPL-2.0", "Artistic"] {
        if let Ok(t) = std::fs::read_to_string(format!("/usr/share/common-licenses/{f}")) {
            text.push_str(&t);
            text.push(' ');
        }
    }
    if text.is_empty() {
        text = std::fs::read_to_string(manifest_dir().join("src/data/squad/feature.rs")).unwrap();
    }
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split_inclusive(['.', ';'])
        .map(|s| s.trim().to_string())
        .filter(|s| s.split_whitespace().count() >= 4)
        .collect()
}
