//! The training checkpoint file: Python's `torch.load(weights_only=True)`
//! opens what we write and sees the expected keys, shapes and values; the
//! NeMo layout in the working directory; and a restore into a fresh model
//! gives back every tensor and every field of the state bit for bit.

use crate::support::common;
use crate::support::resume_util;

use std::collections::BTreeMap;
use std::process::Command;

use megatron_trainer::parallel::TpGroup;
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig};
use megatron_trainer::train::{CheckpointRequest, SaveReason};
use resume_util::*;
use serde_json::json;
use tch::Tensor;

#[test]
fn python_torch_load_reads_our_checkpoint_and_restore_is_exact() {
    let dir = test_dir("format");
    let tp = TpGroup::single();
    let model = tiny_model(&tp, 1);
    let state = filled_state(&model, 9, 2);
    let mut cfg = CheckpointerConfig::single_process(
        "megatron_bert",
        dir.join("work"),
        spec(json!({"best": {"monitor": "val_loss", "topK": 2}})),
    );
    cfg.hyper_parameters = json!({"task": "TextClassification", "num_classes": 3, "lr": 5e-5});
    let mut ckpt = Checkpointer::new(cfg).unwrap();
    let saved = ckpt
        .save(CheckpointRequest {
            reason: SaveReason::Validation(val_loss(0.3456)),
            model: &model,
            state: &state,
        })
        .unwrap()
        .expect("a first save at a new step commits");
    assert_eq!(saved.latest.step, 9);
    assert_eq!(saved.latest.metric_name.as_deref(), Some("val_loss"));
    assert_eq!(saved.best.as_ref().map(|b| b.step), Some(9));
    assert!(
        saved
            .latest
            .uri
            .as_str()
            .ends_with("work/step-000000000009"),
        "{:?}",
        saved.latest.uri
    );

    // The NeMo view and the committed set.
    assert_eq!(
        list_files(&dir.join("work")),
        vec![
            "mp_rank_00/megatron_bert--val_loss=0.35-epoch=1.ckpt",
            "mp_rank_00/megatron_bert-last.ckpt",
            "step-000000000009/manifest.json",
            "step-000000000009/mp_rank_00/megatron_bert--val_loss=0.35-epoch=1.ckpt",
        ]
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("work/step-000000000009/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["metadata"]["tp_size"], 1);
    assert_eq!(manifest["metadata"]["reason"], "validation");
    assert_eq!(manifest["metadata"]["metric"], 0.3456);

    // Python reads every file we wrote.
    let mut python_draw = Tensor::new();
    for file in [
        "work/mp_rank_00/megatron_bert-last.ckpt",
        "work/step-000000000009/mp_rank_00/megatron_bert--val_loss=0.35-epoch=1.ckpt",
    ] {
        let out = dir.join(format!("py-{}", file.len()));
        let status = Command::new(common::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/resume_load.py"
            ))
            .arg(dir.join(file))
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "resume_load.py failed on {file}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        check_summary(&summary, &model, &state);
        let tensors: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(out.join("tensors.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        for (k, t) in model.state_dict() {
            assert_same(&k, &tensors[&format!("state_dict.{k}")], &t);
        }
        for (k, t) in &state.optimizer.exp_avg {
            assert_same(k, &tensors[&format!("opt.{k}.exp_avg")], t);
            assert_same(
                k,
                &tensors[&format!("opt.{k}.exp_avg_sq")],
                &state.optimizer.exp_avg_sq[k],
            );
        }
        assert_same(
            "cpu rng",
            &tensors["rng.torch_rng_state"],
            state.rng.cpu.as_ref().unwrap(),
        );
        assert_same(
            "tracker rng",
            &tensors["rng.tracker.model-parallel-rng"],
            state.rng.model_parallel.as_ref().unwrap(),
        );
        python_draw = tensors["rng.draw"].shallow_clone();
    }

    // A fresh process-like restore: a new checkpointer over the same directory.
    let mut fresh = tiny_model(&tp, 99);
    assert!(
        !fresh.state_dict()["classifier.mlp.layer0.weight"]
            .equal(&model.state_dict()["classifier.mlp.layer0.weight"])
    );
    let mut again = Checkpointer::new(CheckpointerConfig::single_process(
        "megatron_bert",
        dir.join("work"),
        spec(json!({"best": {"monitor": "val_loss", "topK": 2}})),
    ))
    .unwrap();
    let point = again.find_latest().unwrap().expect("the committed set");
    assert_eq!(point.step, 9);
    assert_eq!(again.best().len(), 1, "top-k rebuilt from the manifest");
    let restored = again.restore(&point, &mut fresh).unwrap();
    assert_same_dict("model", &fresh.state_dict(), &model.state_dict());
    assert_same_state(&restored, &state);
    // The restored CPU generator state draws what Python draws from it.
    megatron_trainer::parallel::random::set_cpu_rng_state(restored.rng.cpu.as_ref().unwrap())
        .unwrap();
    let ours = Tensor::rand([5], (tch::Kind::Double, tch::Device::Cpu));
    assert_same("draw after torch.set_rng_state", &ours, &python_draw);
    // A second save at the resumed step is a no-op (the set exists).
    let none = again
        .save(CheckpointRequest {
            reason: SaveReason::Final,
            model: &fresh,
            state: &restored,
        })
        .unwrap();
    assert!(none.is_none());
}

fn check_summary(
    s: &serde_json::Value,
    model: &megatron_trainer::model::BertTaskModel,
    state: &megatron_trainer::train::TrainState,
) {
    let keys: Vec<&str> = s["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for k in [
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "global_step",
        "epoch",
        "native_amp_scaling_state",
        "early_stopping",
        "rng_states",
        "data_position",
        "consumed_samples",
        "tp_rank",
        "tp_size",
        "hyper_parameters",
    ] {
        assert!(keys.contains(&k), "missing key {k} in {keys:?}");
    }
    assert_eq!(s["format"], "megatron-trainer.training-checkpoint");
    assert_eq!(s["global_step"], 9);
    assert_eq!(s["epoch"], 1);
    assert_eq!(
        s["fractional_epoch"].as_f64().unwrap().to_bits(),
        state.epoch.to_bits()
    );
    assert_eq!(s["data_position"], json!({"epoch": 1, "index": 8}));
    assert_eq!(s["consumed_samples"], 36);
    assert_eq!(s["tp_rank"], 0);
    assert_eq!(s["tp_size"], 1);
    assert_eq!(
        s["lr_schedulers"],
        json!([{"last_epoch": 9, "_step_count": 10}])
    );
    assert_eq!(
        s["early_stopping"],
        json!({"best_score": 0.123456789, "wait_count": 2})
    );
    assert_eq!(
        s["native_amp_scaling_state"],
        json!({"scale": 32768.0, "_growth_tracker": 17})
    );
    assert_eq!(
        s["hyper_parameters"],
        json!({"task": "TextClassification", "num_classes": 3, "lr": 5e-5})
    );
    assert_eq!(s["state_dict_is_ordered"], "OrderedDict");
    assert_eq!(s["dtypes"], json!(["torch.float32"]));
    assert_eq!(s["step_dtypes"], json!([["torch.float32", []]]));
    assert_eq!(s["rng_dtypes"], json!(["torch.uint8"]));
    let sd = model.state_dict();
    for (k, t) in &sd {
        assert_eq!(s["shapes"][k], json!(t.size()), "{k}");
    }
    let names: Vec<&String> = state.optimizer.exp_avg.keys().collect();
    assert_eq!(s["param_names"], json!(names));
    for n in names {
        assert_eq!(s["steps"][n], 9.0, "{n}");
    }
}
