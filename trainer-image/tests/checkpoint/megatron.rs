//! Megatron-LM BERT checkpoints written by PyTorch the way Megatron-LM
//! writes them (checkpoint_version absent/1.0/2.0/3.0, both naming
//! generations, zip and legacy containers, TP 1/2/4) load at TP 1/2/4 as
//! exactly the slices of the reference full tensors; checkpoints written
//! here load in PyTorch.

use crate::support::checkpoint_util;
use crate::support::temp_dir::TempDir;

use std::collections::BTreeMap;
use std::path::Path;

use checkpoint_util::{assert_tensor_eq, read_safetensors, run_python};
use megatron_trainer::checkpoint::megatron::{self, LoadOptions, SaveOptions};
use megatron_trainer::model::{BertConfig, tp_split_dim};
use tch::Tensor;
use torch_pickle::Container;

const VOCAB: i64 = 100;
const DIVISIBLE: i64 = 8;

fn padded(tp: i64) -> i64 {
    let m = DIVISIBLE * tp;
    (VOCAB + m - 1) / m * m
}

fn make(dir: &Path, args: &[&str]) {
    let mut all = vec!["make", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run_python("ckpt_megatron.py", &all);
}

fn split_dim(name: &str) -> Option<i64> {
    if name == "lm_head.bias" {
        Some(0)
    } else {
        tp_split_dim(name)
    }
}

/// The reference shard of rank `rank` of `tp`, vocabulary re-padded to
/// `rows` rows (trimmed, or zero rows appended).
fn expected_shard(
    reference: &BTreeMap<String, Tensor>,
    tp: i64,
    rank: i64,
    rows: i64,
) -> BTreeMap<String, Tensor> {
    reference
        .iter()
        .map(|(name, t)| {
            let mut t = t.shallow_clone();
            if name == "embeddings.word_embeddings.weight" || name == "lm_head.bias" {
                let have = t.size()[0];
                t = if have >= rows {
                    t.narrow(0, 0, rows)
                } else {
                    let mut shape = t.size();
                    shape[0] = rows - have;
                    {
                        let zeros = Tensor::zeros(shape.as_slice(), (t.kind(), t.device()));
                        Tensor::cat(&[t, zeros], 0)
                    }
                };
            }
            if let Some(d) = split_dim(name) {
                let n = t.size()[d as usize];
                t = t.narrow(d, rank * n / tp, n / tp);
            }
            (name.clone(), t)
        })
        .collect()
}

fn check_all_targets(dir: &Path, ckpt_tp: i64, version: f64, container: Container) {
    let reference = read_safetensors(&dir.join("reference.safetensors"));
    let opts = LoadOptions {
        vocab_size: Some(VOCAB),
        include_pretraining_heads: true,
        ..Default::default()
    };
    for target in [1, 2, 4] {
        let rows = if target == ckpt_tp {
            padded(ckpt_tp)
        } else {
            padded(target)
        };
        for rank in 0..target {
            let (cfg, sd, info) = megatron::load_with(dir, target, rank, &opts)
                .unwrap_or_else(|e| panic!("load tp {target} rank {rank}: {e}"));
            assert_eq!(info.tensor_parallel_size, ckpt_tp);
            assert_eq!(info.checkpoint_version, version);
            assert_eq!(info.container, container);
            assert_eq!(cfg.padded_vocab_size, rows, "padded vocab at tp {target}");
            assert_eq!(
                (cfg.hidden_size, cfg.num_layers, cfg.num_attention_heads),
                (16, 2, 4)
            );
            assert_eq!(
                (
                    cfg.ffn_hidden_size,
                    cfg.max_position_embeddings,
                    cfg.vocab_size
                ),
                (64, 32, VOCAB)
            );
            let want = expected_shard(&reference, target, rank, rows);
            assert_eq!(
                sd.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "parameter names at tp {target}"
            );
            for (name, w) in &want {
                assert_tensor_eq(&format!("{name} (tp {target} rank {rank})"), &sd[name], w);
            }
        }
    }
}

#[test]
fn version0_old_names_legacy_tp2() {
    let dir = TempDir::new("mt-v0");
    make(
        dir.path(),
        &["--version", "0", "--tp", "2", "--naming", "old", "--legacy"],
    );
    check_all_targets(dir.path(), 2, 0.0, Container::Legacy);
}

#[test]
fn version1_old_names_tp4_and_tp1_legacy() {
    let dir = TempDir::new("mt-v1-tp4");
    make(
        dir.path(),
        &["--version", "1", "--tp", "4", "--naming", "old"],
    );
    check_all_targets(dir.path(), 4, 1.0, Container::Zip);
    let dir = TempDir::new("mt-v1-tp1");
    make(
        dir.path(),
        &["--version", "1", "--tp", "1", "--naming", "old", "--legacy"],
    );
    check_all_targets(dir.path(), 1, 1.0, Container::Legacy);
}

#[test]
fn version2_tp2() {
    let dir = TempDir::new("mt-v2");
    make(
        dir.path(),
        &["--version", "2", "--tp", "2", "--naming", "old"],
    );
    check_all_targets(dir.path(), 2, 2.0, Container::Zip);
}

#[test]
fn version3_new_names_release_tp1_and_tp4() {
    let dir = TempDir::new("mt-v3-tp1");
    make(dir.path(), &["--version", "3", "--tp", "1", "--release"]);
    check_all_targets(dir.path(), 1, 3.0, Container::Zip);
    let dir = TempDir::new("mt-v3-tp4");
    make(dir.path(), &["--version", "3", "--tp", "4"]);
    check_all_targets(dir.path(), 4, 3.0, Container::Zip);
}

#[test]
fn paths_to_iteration_dir_and_rank_file_and_defaults() {
    let dir = TempDir::new("mt-paths");
    make(dir.path(), &["--version", "3", "--tp", "2"]);
    let iter_dir = dir.join("iter_0000100");
    let (_, sd, info) = megatron::load(&iter_dir, 2, 1).unwrap();
    assert_eq!(info.iteration, Some(100));
    assert_eq!(info.rank_files.len(), 2);
    // Default options: no pretraining heads, the vocabulary padded for TP 4.
    assert!(
        sd.keys()
            .all(|k| !k.starts_with("lm_head") && !k.starts_with("binary_head"))
    );
    let (cfg, sd4, info4) = megatron::load(dir.path(), 4, 3).unwrap();
    assert_eq!(cfg.padded_vocab_size, padded(4));
    assert_eq!(
        sd4["embeddings.word_embeddings.weight"].size(),
        vec![padded(4) / 4, 16]
    );
    assert!(
        info4.ignored_keys.iter().any(|k| k == "lm_head.bias"),
        "{:?}",
        info4.ignored_keys
    );
    // A rank file of a TP=2 checkpoint resolves to the whole iteration.
    let file = iter_dir.join("mp_rank_01/model_optim_rng.pt");
    let (_, sd_file, _) = megatron::load(&file, 2, 1).unwrap();
    assert_tensor_eq(
        "qkv",
        &sd_file["encoder.layers.1.self_attention.query_key_value.weight"],
        &sd["encoder.layers.1.self_attention.query_key_value.weight"],
    );
}

#[test]
fn missing_args_needs_a_config() {
    let dir = TempDir::new("mt-noargs");
    make(dir.path(), &["--version", "3", "--tp", "1", "--no-args"]);
    let err = megatron::load(dir.path(), 1, 0).unwrap_err();
    assert!(err.is_invalid_input());
    assert!(err.to_string().contains("has no `args`"), "{err}");

    let mut cfg = BertConfig::megatron_345m(VOCAB);
    (
        cfg.hidden_size,
        cfg.num_layers,
        cfg.num_attention_heads,
        cfg.ffn_hidden_size,
    ) = (16, 2, 4, 64);
    cfg.max_position_embeddings = 32;
    cfg.make_vocab_size_divisible_by = DIVISIBLE;
    let opts = LoadOptions {
        config: Some(cfg),
        ..Default::default()
    };
    let (cfg, sd, info) = megatron::load_with(dir.path(), 2, 0, &opts).unwrap();
    assert!(!info.has_args);
    assert_eq!(cfg.padded_vocab_size, padded(2));
    assert_eq!(
        sd["embeddings.word_embeddings.weight"].size(),
        vec![padded(2) / 2, 16]
    );
}

#[test]
fn invalid_inputs_fail_cleanly() {
    let dir = TempDir::new("mt-invalid");
    let err = megatron::load(dir.path(), 1, 0).unwrap_err();
    assert!(
        err.is_invalid_input() && err.to_string().contains("not a Megatron-LM checkpoint"),
        "{err}"
    );
    let err = megatron::load(&dir.join("nope"), 1, 0).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    std::fs::write(dir.join("latest_checkpointed_iteration.txt"), "soon").unwrap();
    let err = megatron::load(dir.path(), 1, 0).unwrap_err();
    assert!(
        err.to_string().contains("iteration number or `release`"),
        "{err}"
    );
    let err = megatron::load(dir.path(), 2, 2).unwrap_err();
    assert!(err.to_string().contains("not a valid rank"), "{err}");
}

#[test]
fn writes_version3_checkpoints_pytorch_and_this_reader_load() {
    let src = TempDir::new("mt-write-src");
    make(
        src.path(),
        &["--version", "1", "--tp", "1", "--naming", "old"],
    );
    let opts = LoadOptions {
        vocab_size: Some(VOCAB),
        include_pretraining_heads: true,
        ..Default::default()
    };
    let (cfg, full, _) = megatron::load_with(src.path(), 1, 0, &opts).unwrap();

    let out = TempDir::new("mt-write-out");
    megatron::save(
        out.path(),
        &cfg,
        &full,
        &SaveOptions {
            tp: 2,
            iteration: Some(42),
        },
    )
    .unwrap();
    let ref_path = src.join("reference.safetensors");
    let stdout = run_python(
        "ckpt_megatron.py",
        &[
            "check",
            out.path().to_str().unwrap(),
            "2",
            ref_path.to_str().unwrap(),
        ],
    );
    assert!(stdout.contains("ok: 38 tensors over 2 ranks"), "{stdout}");

    let (cfg2, back, info) = megatron::load_with(out.path(), 1, 0, &opts).unwrap();
    assert_eq!(info.checkpoint_version, 3.0);
    assert_eq!(info.iteration, Some(42));
    assert_eq!(cfg2, cfg);
    for (name, t) in &full {
        assert_tensor_eq(name, &back[name], t);
    }
}
