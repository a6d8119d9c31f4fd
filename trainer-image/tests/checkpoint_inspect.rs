//! `megatron-trainer inspect` on a Megatron checkpoint, and its exit code
//! for invalid input.

mod checkpoint_util;

use std::process::Command;

use checkpoint_util::{TempDir, run_python};

fn inspect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_megatron-trainer"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn inspects_a_megatron_checkpoint() {
    let dir = TempDir::new("inspect");
    let root = dir.path().to_str().unwrap();
    run_python(
        "ckpt_megatron.py",
        &[
            "make",
            root,
            "--version",
            "1",
            "--tp",
            "2",
            "--naming",
            "old",
        ],
    );

    let out = inspect(&[root]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "format:               megatron (zip torch.save container)",
        "iteration:            100",
        "checkpoint_version:   1.0",
        "tensor parallel size: 2",
        "layers 2, hidden 16, heads 4, ffn 64, max positions 32, padded vocab 112 (divisible by 8)",
        "model.language_model.transformer.layers.1.attention.query_key_value.weight",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    let out = inspect(&[root, "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["format"], "megatron");
    assert_eq!(json["container"], "zip");
    assert_eq!(json["checkpoint_version"], 1.0);
    assert_eq!(json["tensor_parallel_size"], 2);
    assert_eq!(json["config"]["hidden_size"], 16);
    let qkv = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["name"]
                == "model.language_model.transformer.layers.0.attention.query_key_value.weight"
        })
        .unwrap();
    assert_eq!(qkv["dtype"], "float16");
    assert_eq!(qkv["shape"], serde_json::json!([24, 16]));
}

#[test]
fn invalid_input_exits_2() {
    let dir = TempDir::new("inspect-bad");
    let out = inspect(&[dir.join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let bad = dir.join("garbage.pt");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let out = inspect(&[bad.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a torch.save file"));

    let out = inspect(&[dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Megatron-LM checkpoint"));
}
