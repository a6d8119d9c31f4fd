//! `megatron-trainer inspect` on a Megatron checkpoint and on .nemo
//! archives, and its exit code for invalid input.

use crate::support::checkpoint_util;
use crate::support::nemo_util;
use crate::support::temp_dir::TempDir;

use std::process::Command;

use checkpoint_util::run_python;
use megatron_trainer::model::HeadConfig;
use nemo_util::{tiny_config, write_tiny_nemo};

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

/// Parameters of the merged model a .nemo of `full` at tensor-parallel size
/// `tp` holds: no pooler, the vocabulary padded for `tp`.
fn merged_parameters(full: &megatron_trainer::model::StateDict, tp: i64) -> i64 {
    let cfg = tiny_config();
    let stored: i64 = full
        .iter()
        .filter(|(k, _)| !k.starts_with("pooler."))
        .map(|(_, t)| t.numel() as i64)
        .sum();
    stored + (cfg.padded_vocab_for(tp) - cfg.padded_vocab_size) * cfg.hidden_size
}

#[test]
fn inspects_a_nemo() {
    let dir = TempDir::new("inspect-nemo");
    let cfg = tiny_config();
    let labels: Vec<String> = ["O", "B-Disease", "I-Disease"].map(String::from).into();
    let ner = dir.join("ner.nemo");
    let full = write_tiny_nemo(
        &ner,
        &cfg,
        &HeadConfig::token_classification(3),
        Some(&labels),
        2,
        1,
    );
    let out = inspect(&[ner.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parameters = merged_parameters(&full, 2);
    for needle in [
        "format:               nemo (gzip tar archive)".to_owned(),
        "checkpoint_version:   3.0".to_owned(),
        "tensor parallel size: 2".to_owned(),
        format!(
            "config:               layers 2, hidden 64, heads 4, ffn 256, max positions 32, padded vocab {} ",
            cfg.padded_vocab_for(2)
        ),
        "task:                 token-classification (NeMo TokenClassificationModel); head: 2 layer(s), 3 classes".to_owned(),
        "pretrained model:     megatron-bert-uncased".to_owned(),
        "_vocab.txt, 100 tokens, lower case".to_owned(),
        "labels (3):           O, B-Disease, I-Disease".to_owned(),
        format!(
            "weights:              2 member(s) (mp_rank_00/model_weights.ckpt, mp_rank_01/model_weights.ckpt): \
             {} tensors, {parameters} parameters, float32,",
            full.len() - 2
        ),
        "tensors (mp_rank_00/model_weights.ckpt: ".to_owned(),
        "bert_model.language_model.encoder.layers.1.self_attention.query_key_value.weight".to_owned(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("NeMo version"), "not recorded: {text}");

    let out = inspect(&[ner.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["format"], "nemo");
    assert_eq!(json["tensor_parallel_size"], 2);
    assert_eq!(json["checkpoint_version"], 3.0);
    let c = &json["config"];
    assert_eq!(
        [
            &c["num_layers"],
            &c["hidden_size"],
            &c["num_attention_heads"],
            &c["ffn_hidden_size"],
            &c["vocab_size"]
        ],
        [2, 64, 4, 256, 100]
    );
    assert_eq!(c["padded_vocab_size"], cfg.padded_vocab_for(2));
    let n = &json["nemo"];
    assert_eq!(n["compression"], "gzip");
    assert_eq!(n["task"], "token_classification");
    assert_eq!(n["head"]["num_classes"], 3);
    assert_eq!(n["head"]["num_layers"], 2);
    assert_eq!(n["vocabulary"]["size"], 100);
    assert!(
        n["vocabulary"]["file"]
            .as_str()
            .unwrap()
            .ends_with("_vocab.txt")
    );
    assert_eq!(n["do_lower_case"], true);
    assert_eq!(n["labels"], serde_json::json!(labels));
    let w = &n["weights"];
    assert_eq!(w["parameters"], parameters);
    assert_eq!(w["bytes"], parameters * 4);
    assert_eq!(w["dtypes"], serde_json::json!(["float32"]));
    assert_eq!(w["has_head_weights"], true);
    assert_eq!(
        w["members"],
        serde_json::json!([
            "mp_rank_00/model_weights.ckpt",
            "mp_rank_01/model_weights.ckpt"
        ])
    );
    // Rank 0's tensors as stored: the split QKV holds half the rows.
    let qkv = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["name"]
                == "bert_model.language_model.encoder.layers.0.self_attention.query_key_value.weight"
        })
        .unwrap();
    assert_eq!(qkv["shape"], serde_json::json!([96, 64]));

    // TP=1 question answering: one weights member, no labels.
    let qa = dir.join("qa.nemo");
    let full = write_tiny_nemo(&qa, &cfg, &HeadConfig::question_answering(), None, 1, 2);
    let out = inspect(&[qa.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "tensor parallel size: 1".to_owned(),
        "task:                 question-answering (NeMo QAModel); head: 1 layer(s), 2 classes"
            .to_owned(),
        format!(
            "weights:              1 member(s) (model_weights.ckpt): {} tensors, {} parameters",
            full.len() - 2,
            merged_parameters(&full, 1)
        ),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("labels ("), "{text}");
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

    // A tar that is no .nemo.
    let other = dir.join("other.nemo");
    let mut tar = tar::Builder::new(std::fs::File::create(&other).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_mode(0o644);
    tar.append_data(&mut header, "notes.txt", &b"hi"[..])
        .unwrap();
    tar.finish().unwrap();
    drop(tar);
    let out = inspect(&[other.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("model_config.yaml is missing: not a .nemo archive")
    );

    let out = inspect(&[dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Megatron-LM checkpoint"));
}
