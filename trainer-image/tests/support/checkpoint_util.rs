//! Helpers shared by the checkpoint tests: the reference Python, scratch
//! directories, and tensor comparison.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use tch::Tensor;

/// Runs `tests/python/<script> args...`, panicking with its output on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(super::common::python())
        .arg(&path)
        .args(args)
        .output()
        .expect("spawning the reference python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Tensors from a safetensors file by name.
pub fn read_safetensors(path: &Path) -> std::collections::BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Asserts same dtype, shape and bit-identical values.
pub fn assert_tensor_eq(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.kind(), want.kind(), "{name}: dtype");
    assert_eq!(got.size(), want.size(), "{name}: shape");
    assert!(
        got.equal(want),
        "{name}: values differ\n got {got}\nwant {want}"
    );
}
