//! Stopping and resuming the loop: a run stopped after 4 of 10 steps
//! (`stop_after_steps`), whose state and weights go into a freshly built
//! model and trainer, continues with exactly the losses of an uninterrupted
//! run, bit for bit, with dropout on (so the generator states must be
//! restored too) and with gradient accumulation crossing epoch ends.

use crate::support::{common, train_util};

use std::sync::Arc;

use megatron_trainer::comm::SingleProcess;
use megatron_trainer::model::{BertTaskModel, HeadConfig};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{Trainer, TrainerConfig};
use tch::Device;
use train_util::{Recorder, random_qa_data};

const STEPS: i64 = 10;

fn config() -> TrainerConfig {
    let training: crds::TrainingSpec = serde_json::from_value(serde_json::json!({
        "maxSteps": STEPS, "globalBatchSize": 4, "microBatchSize": 2,
        "optimizer": {"learningRate": 1e-3, "weightDecay": 0.01},
        "scheduler": {"name": "cosine", "warmupSteps": 2},
        "validationIntervalSteps": 3, "seed": 5
    }))
    .unwrap();
    TrainerConfig::from_spec(&training, &crds::CheckpointingSpec::default(), 1, 13).unwrap()
}

fn trainer(seed: i64) -> Trainer {
    tch::manual_seed(seed);
    let model = BertTaskModel::new(
        &train_util::tiny_config(0.1),
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )
    .unwrap();
    Trainer::new(
        model,
        config(),
        TpGroup::single(),
        Arc::new(SingleProcess),
        0,
        Device::Cpu,
    )
    .unwrap()
}

#[test]
fn stopped_and_restored_run_continues_bit_for_bit() {
    common::alone(
        module_path!(),
        "stopped_and_restored_run_continues_bit_for_bit",
        || {
            let task = random_qa_data(13, 12, 99);
            let mut full = Recorder::default();
            trainer(1).fit(&task, &mut full).unwrap();
            let losses: Vec<f64> = full.steps.iter().map(|s| s.loss).collect();
            assert_eq!(losses.len(), STEPS as usize);

            let mut first = trainer(1);
            first.set_stop_after_steps(Some(4));
            let mut part1 = Recorder::default();
            let outcome = first.fit(&task, &mut part1).unwrap();
            assert_eq!(outcome.steps, 4);
            assert_eq!(
                part1.events,
                ["validation@3", "save-validation@3"],
                "no final validation or checkpoint when stopped early on request"
            );
            assert_eq!(
                part1.steps.iter().map(|s| s.loss).collect::<Vec<_>>(),
                losses[..4]
            );
            let state = first.state();
            assert_eq!(state.step, 4);
            let weights = first.model().state_dict();
            // Use the generators in between, as a restarted process would.
            let _ = tch::Tensor::randn([100], (tch::Kind::Float, Device::Cpu));

            // A different initialisation, overwritten by the checkpointed weights.
            tch::manual_seed(2);
            let mut model = BertTaskModel::new(
                &train_util::tiny_config(0.1),
                &HeadConfig::question_answering(),
                &TpGroup::single(),
                Device::Cpu,
            )
            .unwrap();
            model.load_state_dict(&weights).unwrap();
            let mut resumed = Trainer::new(
                model,
                config(),
                TpGroup::single(),
                Arc::new(SingleProcess),
                0,
                Device::Cpu,
            )
            .unwrap();
            resumed.restore(state).unwrap();
            drop(first);
            let mut part2 = Recorder::default();
            let outcome = resumed.fit(&task, &mut part2).unwrap();
            assert_eq!(outcome.steps, STEPS);
            let resumed_losses: Vec<f64> = part2.steps.iter().map(|s| s.loss).collect();
            assert_eq!(
                resumed_losses,
                losses[4..],
                "the resumed run must continue exactly"
            );
            assert_eq!(part2.steps[0].step, 5);
            assert_eq!(
                part2.events,
                [
                    "validation@6",
                    "save-validation@6",
                    "validation@9",
                    "save-validation@9",
                    "validation@10",
                    "final@10"
                ]
            );

            // Control: without the restored state (fresh optimizer, data order and
            // generators) the continuation differs.
            let mut model = BertTaskModel::new(
                &train_util::tiny_config(0.1),
                &HeadConfig::question_answering(),
                &TpGroup::single(),
                Device::Cpu,
            )
            .unwrap();
            model.load_state_dict(&weights).unwrap();
            let mut naive = Trainer::new(
                model,
                config(),
                TpGroup::single(),
                Arc::new(SingleProcess),
                0,
                Device::Cpu,
            )
            .unwrap();
            naive.set_stop_after_steps(Some(2));
            let mut part3 = Recorder::default();
            naive.fit(&task, &mut part3).unwrap();
            assert_ne!(part3.steps[0].loss, losses[4]);
        },
    );
}
