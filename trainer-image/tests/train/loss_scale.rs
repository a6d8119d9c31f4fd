//! Dynamic loss scaling inside the loop, on CPU: the scaler is driven by a
//! `TrainerConfig` with `loss_scaling` set (what `from_spec` does for fp16;
//! the arithmetic here stays fp32, so the scaling itself is exact).
//!
//! * A power-of-two scale changes nothing: the losses equal an unscaled run's
//!   bit for bit.
//! * A step whose loss is infinite is skipped on every parameter (weights and
//!   optimizer step counts unchanged), reported as skipped, and halves the
//!   scale; after `growthInterval` clean steps the scale doubles.

use crate::support::train_util;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use megatron_trainer::comm::SingleProcess;
use megatron_trainer::data::Batch;
use megatron_trainer::model::{BertTaskModel, HeadConfig, HeadOutput, StateDict};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{TrainResult, TrainTask, Trainer, TrainerConfig};
use tch::{Device, Tensor};
use train_util::{QaData, Recorder, random_qa_data};

/// Makes the loss of the `inf_at`-th micro batch (1-based) infinite.
struct Overflowing {
    inner: QaData,
    calls: Cell<usize>,
    inf_at: usize,
}

impl TrainTask for Overflowing {
    fn num_train_samples(&self) -> usize {
        self.inner.num_train_samples()
    }
    fn train_batch(&self, indices: &[usize], device: Device) -> TrainResult<Batch> {
        self.inner.train_batch(indices, device)
    }
    fn loss(&self, output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor> {
        self.calls.set(self.calls.get() + 1);
        let loss = self.inner.loss(output, batch)?;
        Ok(if self.calls.get() == self.inf_at {
            loss * f64::INFINITY
        } else {
            loss
        })
    }
    fn has_validation(&self) -> bool {
        false
    }
    fn validate(&self, _model: &BertTaskModel) -> TrainResult<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }
}

fn config(scaling: Option<crds::LossScaling>) -> TrainerConfig {
    let training: crds::TrainingSpec = serde_json::from_value(serde_json::json!({
        "maxSteps": 6, "globalBatchSize": 4, "microBatchSize": 2,
        "optimizer": {"learningRate": 1e-3, "weightDecay": 0.01}, "seed": 1
    }))
    .unwrap();
    let mut cfg =
        TrainerConfig::from_spec(&training, &crds::CheckpointingSpec::default(), 1, 16).unwrap();
    cfg.loss_scaling = scaling;
    cfg
}

fn trainer(weights: &StateDict, scaling: Option<crds::LossScaling>) -> Trainer {
    let mut model = BertTaskModel::new(
        &train_util::tiny_config(0.0),
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )
    .unwrap();
    model.load_state_dict(weights).unwrap();
    Trainer::new(
        model,
        config(scaling),
        TpGroup::single(),
        Arc::new(SingleProcess),
        0,
        Device::Cpu,
    )
    .unwrap()
}

fn initial_weights() -> StateDict {
    let model = BertTaskModel::new(
        &train_util::tiny_config(0.0),
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )
    .unwrap();
    model
        .state_dict()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect()
}

fn snapshot(t: &Trainer) -> StateDict {
    t.model()
        .state_dict()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect()
}

fn scaling(growth_interval: i64) -> crds::LossScaling {
    crds::LossScaling {
        initial_scale: 1024.0,
        dynamic: true,
        growth_interval,
        min_scale: 1.0,
    }
}

#[test]
fn power_of_two_scale_leaves_the_losses_unchanged() {
    let weights = initial_weights();
    let data = random_qa_data(16, 12, 8);
    let mut plain = Recorder::default();
    trainer(&weights, None).fit(&data, &mut plain).unwrap();
    let mut scaled = Recorder::default();
    trainer(&weights, Some(scaling(1000)))
        .fit(&data, &mut scaled)
        .unwrap();
    let losses = |r: &Recorder| r.steps.iter().map(|s| s.loss).collect::<Vec<_>>();
    assert_eq!(losses(&plain), losses(&scaled));
    assert!(scaled.steps.iter().all(|s| s.loss_scale == Some(1024.0)));
    assert!(plain.steps.iter().all(|s| s.loss_scale.is_none()));
}

#[test]
fn overflow_skips_the_step_and_backs_off_then_grows() {
    let weights = initial_weights();
    // Two micro batches per step: the 3rd loss call is step 2's first.
    let task = Overflowing {
        inner: random_qa_data(16, 12, 8),
        calls: Cell::new(0),
        inf_at: 3,
    };
    let mut t = trainer(&weights, Some(scaling(2)));
    t.set_stop_after_steps(Some(1));
    let mut rec = Recorder::default();
    t.fit(&task, &mut rec).unwrap();
    let after_step1 = snapshot(&t);
    let steps_after_1 = t.state().optimizer.steps;

    t.set_stop_after_steps(Some(2));
    t.fit(&task, &mut rec).unwrap();
    let s2 = &rec.steps[1];
    assert!(s2.skipped, "the overflowing step is skipped");
    assert!(!s2.grad_norm.unwrap().is_finite());
    assert_eq!(s2.loss_scale, Some(512.0), "halved");
    for (name, w) in snapshot(&t) {
        assert!(
            w.equal(&after_step1[&name]),
            "`{name}` changed in a skipped step"
        );
    }
    assert_eq!(t.state().optimizer.steps, steps_after_1);
    assert_eq!(t.state().loss_scale.unwrap().growth_tracker, 0);

    t.set_stop_after_steps(None);
    t.fit(&task, &mut rec).unwrap();
    let scales: Vec<Option<f64>> = rec.steps.iter().map(|s| s.loss_scale).collect();
    let skipped: Vec<bool> = rec.steps.iter().map(|s| s.skipped).collect();
    assert_eq!(skipped, [false, true, false, false, false, false]);
    // Growth interval 2: clean steps 1 (1024 -> tracker 1), 3, 4 (-> 1024), 5, 6 (-> 2048).
    assert_eq!(
        scales,
        [1024.0, 512.0, 512.0, 1024.0, 1024.0, 2048.0].map(Some)
    );
    assert!(rec.steps[2..].iter().all(|s| s.loss.is_finite()));
}
