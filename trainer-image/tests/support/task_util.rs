//! Helpers of the task_* tests: specs, tiny models, generated data sets and
//! the Python recomputation of the metrics (tests/python/task_reference.py).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use megatron_trainer::model::{Activation, Architecture, BertConfig, BertTaskModel, HeadConfig};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::tokenizer::BertTokenizer;
use tch::Device;

use super::data_common;

/// A spec from the `task` object and the `training` object (defaults: micro
/// batches of 4, 1 epoch), with every other part at a minimal valid value.
pub fn spec(task: serde_json::Value, training: serde_json::Value) -> crds::MegatronFineTuneSpec {
    let mut t = serde_json::json!({"maxEpochs": 1, "globalBatchSize": 4, "microBatchSize": 4});
    if let (Some(base), Some(extra)) = (t.as_object_mut(), training.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
        if extra.contains_key("maxSteps") {
            base.remove("maxEpochs");
        }
    }
    serde_json::from_value(serde_json::json!({
        "task": task,
        "model": {"pretrained": "megatron-bert-345m-uncased"},
        "data": {},
        "training": t,
        "storage": {"bucket": "b", "credentialsSecretRef": {"name": "s"}},
    }))
    .expect("a valid spec")
}

/// The uncased BERT tokenizer.
pub fn uncased() -> BertTokenizer {
    BertTokenizer::from_vocab_file(&data_common::vocab("bert-base-uncased-vocab.txt"), true)
        .unwrap()
}

/// The cased BERT tokenizer (token classification tells capitals apart).
pub fn cased() -> BertTokenizer {
    BertTokenizer::from_vocab_file(&data_common::vocab("bert-base-cased-vocab.txt"), false).unwrap()
}

/// A tiny Megatron-BERT config for `vocab` tokens.
pub fn tiny_config(vocab: usize, hidden: i64, layers: i64, heads: i64) -> BertConfig {
    let mut c = BertConfig {
        vocab_size: vocab as i64,
        padded_vocab_size: vocab as i64,
        hidden_size: hidden,
        num_layers: layers,
        num_attention_heads: heads,
        ffn_hidden_size: 4 * hidden,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        layernorm_epsilon: 1e-5,
        activation: Activation::Gelu,
        hidden_dropout: 0.1,
        attention_dropout: 0.1,
        make_vocab_size_divisible_by: 128,
        architecture: Architecture::MegatronPreLn,
    };
    c.padded_vocab_size = c.padded_vocab_for(1);
    c
}

/// A randomly initialised single-rank model, seeded.
pub fn model(config: &BertConfig, head: &HeadConfig, seed: i64) -> BertTaskModel {
    tch::manual_seed(seed);
    BertTaskModel::new(config, head, &TpGroup::single(), Device::Cpu).unwrap()
}

/// Generated data set directories by (train, dev) sizes.
type Cache = std::sync::Mutex<Vec<((usize, usize), PathBuf)>>;

/// The generated data sets (tests/python/data_make_datasets.py), made once
/// per test process: `train` training and `dev` validation examples per task.
pub fn datasets(train: usize, dev: usize) -> PathBuf {
    static DIRS: OnceLock<Cache> = OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = dirs.iter().find(|(k, _)| *k == (train, dev)) {
        return d.clone();
    }
    let dir = data_common::temp_dir(&format!("task-gen-{train}-{dev}"));
    let status = std::process::Command::new(super::common::python())
        .arg(data_common::manifest_dir().join("tests/python/data_make_datasets.py"))
        .args(["--out", dir.to_str().unwrap(), "--seed", "7"])
        .args(["--train", &train.to_string(), "--dev", &dev.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "data_make_datasets.py failed");
    dirs.push(((train, dev), dir.clone()));
    dir
}

/// Relation names of the generated relation data set, by id.
pub const RELATIONS: [&str; 3] = ["CPR:3", "CPR:4", "false"];

/// The Python recomputation of a split's metrics from the data files and a
/// predictions file: `{"metrics": {...}}` with the trainer's names (without prefix).
pub fn reference_metrics(request: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let out = data_common::python("task_reference.py", &request);
    out["metrics"].as_object().expect("metrics object").clone()
}

/// Asserts every reference metric equals ours (`prefix_name`) within 1e-9.
pub fn assert_metrics_match(
    ours: &std::collections::BTreeMap<String, f64>,
    prefix: &str,
    reference: &serde_json::Map<String, serde_json::Value>,
) {
    assert!(!reference.is_empty());
    for (name, v) in reference {
        let key = format!("{prefix}_{name}");
        let want = v.as_f64().unwrap();
        let got = *ours
            .get(&key)
            .unwrap_or_else(|| panic!("metric {key} missing from {ours:?}"));
        assert!(
            (got - want).abs() <= 1e-9,
            "{key}: ours {got}, Python {want}"
        );
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
