//! Stopping on request (a SIGTERM noted by one rank): every rank of a TP2 x
//! DP2 gang stops after the same step and saves there, although only one
//! of them was asked. A rank stopping alone would leave the others waiting in
//! the next step's collectives, and this test would hang.

use crate::support::{common, train_util};

use std::sync::atomic::{AtomicU32, Ordering};

use megatron_trainer::comm;
use megatron_trainer::model::{BertTaskModel, HeadConfig};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{Trainer, TrainerConfig};
use tch::Device;
use train_util::{Recorder, random_qa_data};

/// The step from which the last rank asks to stop.
const ASK_AT: u32 = 3;

static CHECKS: AtomicU32 = AtomicU32::new(0);

/// Asked once per step: only rank 3, and only from step [`ASK_AT`] on.
fn last_rank_asks() -> bool {
    let step = CHECKS.fetch_add(1, Ordering::SeqCst) + 1;
    std::env::var("RANK").as_deref() == Ok("3") && step >= ASK_AT
}

fn trainer(topo: &comm::Topology) -> Trainer {
    let training: crds::TrainingSpec = serde_json::from_value(serde_json::json!({
        "maxSteps": 10, "globalBatchSize": 4, "microBatchSize": 1,
        "optimizer": {"learningRate": 1e-3}, "validationIntervalSteps": 5, "seed": 5
    }))
    .unwrap();
    let cfg =
        TrainerConfig::from_spec(&training, &crds::CheckpointingSpec::default(), 2, 16).unwrap();
    tch::manual_seed(1);
    let tp = TpGroup::new(topo.tp.clone());
    let model = BertTaskModel::new(
        &train_util::tiny_config(0.0),
        &HeadConfig::question_answering(),
        &tp,
        Device::Cpu,
    )
    .unwrap();
    Trainer::new(model, cfg, tp, topo.dp.clone(), topo.dp_rank, Device::Cpu).unwrap()
}

#[test]
fn one_rank_asking_stops_every_rank_at_the_same_step() {
    let test = "one_rank_asking_stops_every_rank_at_the_same_step";
    if common::rank_child().is_some() {
        tch::set_num_threads(1);
        let topo = comm::init_from_env(2).expect("rendezvous");
        let mut trainer = trainer(&topo);
        trainer.set_stop_check(last_rank_asks);
        let mut rec = Recorder::default();
        let outcome = trainer.fit(&random_qa_data(16, 12, 7), &mut rec).unwrap();
        common::emit("interrupted", outcome.interrupted);
        common::emit("steps", outcome.steps);
        common::emit("events", rec.events.join(","));
        return;
    }
    let outs = common::Ranks::new(module_path!(), test, 4)
        .timeout(std::time::Duration::from_secs(120))
        .run_ok();
    for out in &outs {
        assert_eq!(out.expect_value("interrupted"), "true");
        assert_eq!(out.expect_value("steps"), ASK_AT.to_string());
        assert_eq!(
            out.expect_value("events"),
            format!("stop@{ASK_AT}"),
            "no validation was due; the stop saves once"
        );
    }
}
