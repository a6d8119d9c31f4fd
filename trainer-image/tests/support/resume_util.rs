//! Shared pieces of the resume tests: a tiny model, a filled-in TrainState,
//! checkpointing specs and exact comparisons.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use megatron_trainer::data::DataPosition;
use megatron_trainer::model::{BertConfig, BertTaskModel, HeadConfig, StateDict};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{
    EarlyStopState, LossScaleState, OptimizerState, RngStates, TrainState,
};
use tch::{Device, Kind, Tensor};

/// A 2-layer, hidden-32 Megatron-BERT for tensor-parallel size `tp`, dropout off.
pub fn tiny_config(tp: i64) -> BertConfig {
    let mut c = BertConfig::megatron_345m(100);
    c.hidden_size = 32;
    c.num_layers = 2;
    c.num_attention_heads = 4;
    c.ffn_hidden_size = 64;
    c.max_position_embeddings = 64;
    c.hidden_dropout = 0.0;
    c.attention_dropout = 0.0;
    c.make_vocab_size_divisible_by = 8;
    c.padded_vocab_size = c.padded_vocab_for(tp);
    c
}

/// A tiny sequence-classification model (3 classes) seeded with `seed`.
pub fn tiny_model(tp: &TpGroup, seed: i64) -> BertTaskModel {
    tch::manual_seed(seed);
    BertTaskModel::new(
        &tiny_config(tp.size()),
        &HeadConfig::sequence_classification(3),
        tp,
        Device::Cpu,
    )
    .expect("building the tiny model")
}

/// A state with every field set to something recognisable, the same for the
/// same `seed` (computed, not drawn: tests run in parallel threads and share
/// the global generator).
pub fn filled_state(model: &BertTaskModel, step: i64, seed: i64) -> TrainState {
    let mut optimizer = OptimizerState::default();
    for (i, (name, t)) in model.state_dict().into_iter().enumerate() {
        let x =
            Tensor::arange(t.numel() as i64, (Kind::Float, Device::Cpu)).view(t.size().as_slice());
        let phase = seed as f64 * 1.3 + i as f64 * 0.7;
        optimizer
            .exp_avg
            .insert(name.clone(), (&x * 0.37 + phase).sin() * 1e-3);
        optimizer
            .exp_avg_sq
            .insert(name.clone(), (&x * 0.11 + phase).cos().square() * 1e-6);
        optimizer.steps.insert(name, step);
    }
    TrainState {
        step,
        epoch: step as f64 / 7.0,
        data_position: DataPosition {
            epoch: (step / 7) as u64,
            index: (step % 7) as usize * 4,
        },
        consumed_samples: step * 4,
        optimizer,
        loss_scale: Some(LossScaleState {
            scale: 32768.0,
            growth_tracker: 17,
        }),
        early_stopping: EarlyStopState {
            best: Some(0.123456789),
            bad_validations: 2,
        },
        rng: RngStates {
            // A real generator state (of a generator seeded with `seed`), so
            // Python can draw from it.
            cpu: Some(
                megatron_trainer::parallel::random::seeded_rng_state(Device::Cpu, seed as u64)
                    .unwrap(),
            ),
            cuda: None,
            model_parallel: Some(
                Tensor::arange_start(seed, seed + 16, (Kind::Int64, Device::Cpu))
                    .to_kind(Kind::Uint8),
            ),
        },
    }
}

/// Exact (bitwise) equality of two tensors, with the name in the message.
pub fn assert_same(name: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.size(), b.size(), "{name}: shape");
    assert_eq!(a.kind(), b.kind(), "{name}: dtype");
    assert!(a.equal(b), "{name}: values differ");
}

/// Exact equality of two state dicts.
pub fn assert_same_dict(what: &str, a: &StateDict, b: &StateDict) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: names"
    );
    for (k, t) in a {
        assert_same(&format!("{what}.{k}"), t, &b[k]);
    }
}

/// Exact equality of everything in two train states.
pub fn assert_same_state(a: &TrainState, b: &TrainState) {
    assert_eq!(a.step, b.step);
    assert_eq!(a.epoch.to_bits(), b.epoch.to_bits());
    assert_eq!(a.data_position, b.data_position);
    assert_eq!(a.consumed_samples, b.consumed_samples);
    assert_eq!(a.loss_scale, b.loss_scale);
    assert_eq!(a.early_stopping, b.early_stopping);
    assert_same_dict("exp_avg", &a.optimizer.exp_avg, &b.optimizer.exp_avg);
    assert_same_dict(
        "exp_avg_sq",
        &a.optimizer.exp_avg_sq,
        &b.optimizer.exp_avg_sq,
    );
    assert_eq!(a.optimizer.steps, b.optimizer.steps);
    for (n, x, y) in [
        ("rng.cpu", &a.rng.cpu, &b.rng.cpu),
        ("rng.cuda", &a.rng.cuda, &b.rng.cuda),
        (
            "rng.model_parallel",
            &a.rng.model_parallel,
            &b.rng.model_parallel,
        ),
    ] {
        match (x, y) {
            (Some(x), Some(y)) => assert_same(n, x, y),
            (None, None) => {}
            _ => panic!("{n}: present in one state only"),
        }
    }
}

/// A checkpointing spec from its YAML/JSON form.
pub fn spec(json: serde_json::Value) -> crds::CheckpointingSpec {
    serde_json::from_value(json).expect("a valid checkpointing spec")
}

/// A fresh directory under the target dir's tmp, removed first.
pub fn test_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("resume-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Files under `dir` (relative, sorted), skipping nothing.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Validation metrics with `val_loss`.
pub fn val_loss(v: f64) -> BTreeMap<String, f64> {
    [
        ("val_loss".to_string(), v),
        ("val_accuracy".to_string(), 50.0),
    ]
    .into()
}
