//! AdamW and the learning-rate schedules against PyTorch and Hugging Face
//! (`tests/python/train_optimizer_reference.py`): the same parameters and
//! gradients through `torch.optim.AdamW(fused=True)` with weight-decay
//! groups and HF's warmup schedule must give bit-identical parameters, and
//! our schedules the same learning rates as HF's.

use crate::support::common;
use crate::support::model_util;
use crate::support::temp_dir::TempDir;
use crate::support::train_util;

use crds::{OptimizerSpec, SchedulerName, SchedulerSpec};
use megatron_trainer::model::{StateDict, clear_grads};
use megatron_trainer::train::optimizer::AdamW;
use megatron_trainer::train::schedule::LrSchedule;
use tch::{Kind, Tensor};

fn reference() -> TempDir {
    let dir = TempDir::new("train-opt");
    train_util::run_python(
        &common::python(),
        "train_optimizer_reference.py",
        &["--out".as_ref(), dir.as_os_str()],
    );
    dir
}

/// Sets `p.grad()` to exactly `g` (d/dp sum(p * g) = g).
fn set_grad(p: &Tensor, g: &Tensor) {
    (p * g).sum(Kind::Float).backward();
}

#[test]
fn adamw_matches_torch_bit_for_bit_with_decay_groups_and_warmup() {
    let dir = reference();
    let sd = model_util::read(dir.join("adamw.safetensors"));
    let params: StateDict = sd
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("init.")?;
            Some((name.to_string(), v.copy().set_requires_grad(true)))
        })
        .collect();
    let spec = OptimizerSpec {
        learning_rate: 3e-3,
        weight_decay: 0.05,
        betas: [0.85, 0.995],
        eps: 1e-6,
        ..Default::default()
    };
    let mut opt = AdamW::new(
        params
            .iter()
            .map(|(n, p)| (n.clone(), p.shallow_clone()))
            .collect(),
        &spec,
    );
    assert_eq!(
        opt.decayed_parameters(),
        [
            "embeddings.word_embeddings.weight",
            "encoder.layers.0.mlp.dense_h_to_4h.weight"
        ]
    );
    let sched = LrSchedule::new(
        &SchedulerSpec {
            name: SchedulerName::Linear,
            warmup_steps: Some(2),
            ..Default::default()
        },
        spec.learning_rate,
        7,
    );
    let lrs = Vec::<f64>::try_from(&sd["lr"]).unwrap();
    let tensors: Vec<Tensor> = params.values().map(Tensor::shallow_clone).collect();
    for (step, &torch_lr) in lrs.iter().enumerate() {
        assert_eq!(sched.lr(step as i64), torch_lr, "lr of step {step}");
        for (name, p) in &params {
            if let Some(g) = sd.get(&format!("grad.{step}.{name}")) {
                set_grad(p, g);
            }
        }
        opt.step(sched.lr(step as i64)).unwrap();
        clear_grads(&tensors);
        for (name, p) in &params {
            let want = &sd[&format!("param.{step}.{name}")];
            let diff = (p - want).abs().max().double_value(&[]);
            assert!(
                p.detach().equal(want),
                "step {step}: `{name}` differs from torch by up to {diff:e}"
            );
        }
    }
    let state = opt.state();
    assert_eq!(
        state.steps["encoder.final_layernorm.bias"], 6,
        "skipped step 3"
    );
    assert_eq!(state.steps["encoder.layers.0.mlp.dense_h_to_4h.bias"], 7);
}

#[test]
fn schedules_match_hugging_face() {
    let dir = reference();
    let text = std::fs::read_to_string(dir.join("schedules.json")).unwrap();
    let hf: std::collections::BTreeMap<String, Vec<f64>> = serde_json::from_str(&text).unwrap();
    let case = |name: SchedulerName, warmup: i64, min: f64| SchedulerSpec {
        name,
        warmup_steps: Some(warmup),
        warmup_ratio: None,
        min_learning_rate: min,
    };
    let cases = [
        ("linear_w3", case(SchedulerName::Linear, 3, 0.0), 2e-5),
        ("linear_w0", case(SchedulerName::Linear, 0, 0.0), 1e-3),
        ("cosine_w2", case(SchedulerName::Cosine, 2, 0.0), 5e-5),
        ("cosine_min_w2", case(SchedulerName::Cosine, 2, 1e-6), 5e-5),
        ("constant_w4", case(SchedulerName::Constant, 4, 0.0), 3e-4),
    ];
    for (key, spec, peak) in cases {
        let s = LrSchedule::new(&spec, peak, 10);
        for (step, want) in hf[key].iter().enumerate() {
            let got = s.lr(step as i64);
            assert!(
                (got - want).abs() <= 1e-15 * want.abs().max(1e-12),
                "{key} step {step}: ours {got:e}, HF {want:e}"
            );
        }
    }
}
