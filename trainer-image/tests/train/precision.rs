//! Precision handling on CPU: bf16 runs under libtorch's CPU autocast (the
//! losses follow the fp32 run closely but not bit for bit, which shows the
//! autocast is active), and fp16, which needs a GPU, is rejected as invalid
//! input naming the field.

use crate::support::train_util;

use std::sync::Arc;

use megatron_trainer::comm::SingleProcess;
use megatron_trainer::model::{BertTaskModel, HeadConfig, StateDict};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{Trainer, TrainerConfig};
use tch::Device;
use train_util::{Recorder, random_qa_data};

fn config(precision: &str) -> TrainerConfig {
    let training: crds::TrainingSpec = serde_json::from_value(serde_json::json!({
        "maxSteps": 4, "globalBatchSize": 4, "microBatchSize": 4,
        "optimizer": {"learningRate": 1e-3}, "precision": precision, "seed": 3
    }))
    .unwrap();
    TrainerConfig::from_spec(&training, &crds::CheckpointingSpec::default(), 1, 16).unwrap()
}

/// A trainer for a tiny model with `weights` (or a random initialisation).
/// Tests of one binary run on parallel threads and share the default
/// generator, so runs that must agree get their weights explicitly.
fn trainer(
    precision: &str,
    weights: Option<&StateDict>,
) -> megatron_trainer::train::TrainResult<Trainer> {
    let mut model = BertTaskModel::new(
        &train_util::tiny_config(0.0),
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )
    .unwrap();
    if let Some(w) = weights {
        model.load_state_dict(w).unwrap();
    }
    Trainer::new(
        model,
        config(precision),
        TpGroup::single(),
        Arc::new(SingleProcess),
        0,
        Device::Cpu,
    )
}

fn losses(precision: &str, weights: &StateDict) -> Vec<f64> {
    let task = random_qa_data(16, 12, 4);
    let mut rec = Recorder::default();
    trainer(precision, Some(weights))
        .unwrap()
        .fit(&task, &mut rec)
        .unwrap();
    rec.steps.iter().map(|s| s.loss).collect()
}

#[test]
fn bf16_autocast_on_cpu_tracks_fp32() {
    let weights: StateDict = trainer("fp32", None)
        .unwrap()
        .into_model()
        .state_dict()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect();
    let fp32 = losses("fp32", &weights);
    let bf16 = losses("bf16", &weights);
    println!("fp32 {fp32:?}\nbf16 {bf16:?}");
    assert_ne!(fp32, bf16, "bf16 autocast must change the arithmetic");
    for (a, b) in fp32.iter().zip(&bf16) {
        assert!((a - b).abs() < 0.02, "bf16 loss {b} strays from fp32 {a}");
    }
}

#[test]
fn fp16_on_cpu_is_invalid_input() {
    let e = trainer("fp16", None).unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    assert!(e.to_string().contains("spec.training.precision"), "{e}");
}
