//! The fine-tuning loop against Hugging Face + PyTorch: from the same random
//! tiny Megatron-BERT (hidden 64, 2 layers, 4 heads, vocab 100 padded to
//! 128) and the same QA micro batches, with dropout off and fp32, our 20
//! training losses equal those of `MegatronBertForQuestionAnswering` trained
//! with `torch.optim.AdamW` (weight-decay groups), HF's linear warmup
//! schedule and `clip_grad_norm_` (`tests/python/train_trajectory_reference.py`)
//! within 1e-4, at TP=1, TP=2 and DP=2 (real processes, CPU ring backend).
//!
//! The parent computes the micro batches of every step from the trainer's
//! sampler and accumulation rule (a short step at each epoch end: 22
//! samples), hands them to the reference, then runs our `Trainer` and
//! compares. The TP=1 case also checks the order of the hooks (validation
//! every 5 steps, interval checkpoints every 4, one final save).

use crate::support::common;
use crate::support::model_util;
use crate::support::temp_dir::TempDir;
use crate::support::train_util;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use megatron_trainer::comm::{self, ProcessGroup, SingleProcess};
use megatron_trainer::data::{DataPosition, DistributedSampler};
use megatron_trainer::model::{BertTaskModel, HeadConfig, shard_state_dict};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{Trainer, TrainerConfig};
use tch::Device;
use train_util::{QaData, Recorder};

const REF_DIR_VAR: &str = "TRAIN_TEST_REFERENCE_DIR";
const SAMPLES: usize = 22;
const STEPS: i64 = 20;
const MICRO: usize = 2;
const GLOBAL: usize = 4;
const SEED: u64 = 7;
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 0.01;
const WARMUP: i64 = 3;
const CLIP: f64 = 0.5;

fn config(dp: usize) -> TrainerConfig {
    let training: crds::TrainingSpec = serde_json::from_value(serde_json::json!({
        "maxSteps": STEPS,
        "globalBatchSize": GLOBAL,
        "microBatchSize": MICRO,
        "optimizer": {"learningRate": LR, "weightDecay": WEIGHT_DECAY},
        "scheduler": {"name": "linear", "warmupSteps": WARMUP},
        "gradientClipNorm": CLIP,
        "validationIntervalSteps": 5,
        "logIntervalSteps": 5,
        "seed": SEED,
    }))
    .unwrap();
    let ckpt: crds::CheckpointingSpec =
        serde_json::from_value(serde_json::json!({"intervalSteps": 4, "onValidation": true}))
            .unwrap();
    TrainerConfig::from_spec(&training, &ckpt, dp, SAMPLES).unwrap()
}

/// The micro batches of every step, over all data-parallel ranks (rank
/// order), following the trainer's rule: `accumulation` micro batches per
/// step, fewer when the epoch runs out.
fn plan(dp: usize) -> Vec<Vec<Vec<usize>>> {
    let accumulation = GLOBAL / (MICRO * dp);
    let samplers: Vec<DistributedSampler> = (0..dp)
        .map(|r| DistributedSampler::new(SAMPLES, dp, r, true, SEED).unwrap())
        .collect();
    let per_epoch = samplers[0].num_samples();
    let mut iters: Vec<_> = samplers
        .iter()
        .map(|s| s.batches_from(DataPosition::default(), MICRO))
        .collect();
    let mut index = 0;
    (0..STEPS)
        .map(|_| {
            let n = accumulation.min((per_epoch - index).div_ceil(MICRO));
            let mut step = Vec::new();
            let mut next = DataPosition::default();
            for it in iters.iter_mut() {
                for _ in 0..n {
                    let (batch, pos) = it.next().unwrap();
                    step.push(batch);
                    next = pos;
                }
            }
            index = next.index;
            step
        })
        .collect()
}

fn reference(dp: usize) -> TempDir {
    let dir = TempDir::new("train-trajectory");
    let plan = serde_json::json!({
        "samples": SAMPLES, "lr": LR, "weight_decay": WEIGHT_DECAY, "warmup_steps": WARMUP,
        "total_steps": STEPS, "clip": CLIP, "steps": plan(dp),
    });
    let plan_path = dir.join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    train_util::run_python(
        &common::python(),
        "train_trajectory_reference.py",
        &[
            "--plan".as_ref(),
            plan_path.as_os_str(),
            "--out".as_ref(),
            dir.as_os_str(),
        ],
    );
    dir
}

/// Trains this rank and returns the recorded hooks.
fn train(dir: &Path, tp: TpGroup, dp: Arc<dyn ProcessGroup>, dp_rank: usize) -> Recorder {
    let cfg = model_util::config(dir);
    let weights = model_util::read(dir.join("weights.safetensors"));
    let shard = shard_state_dict(&weights, tp.size(), tp.rank()).unwrap();
    tch::manual_seed(SEED as i64 + dp_rank as i64);
    let mut model =
        BertTaskModel::new(&cfg, &HeadConfig::question_answering(), &tp, Device::Cpu).unwrap();
    model.load_state_dict(&shard).unwrap();
    let task = QaData {
        data: model_util::read(dir.join("data.safetensors")),
    };
    let mut trainer = Trainer::new(
        model,
        config(dp.size()),
        tp,
        dp.clone(),
        dp_rank,
        Device::Cpu,
    )
    .unwrap();
    let mut rec = Recorder::default();
    let outcome = trainer.fit(&task, &mut rec).unwrap();
    assert_eq!(outcome.steps, STEPS);
    assert!(!outcome.stopped_early);
    assert!(outcome.last_validation.is_some());
    rec
}

struct Trajectory {
    losses: Vec<f64>,
    lrs: Vec<f64>,
    grad_norms: Vec<f64>,
}

fn trajectory(dir: &Path) -> Trajectory {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trajectory.json")).unwrap())
            .unwrap();
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    Trajectory {
        losses: list("losses"),
        lrs: list("lrs"),
        grad_norms: list("grad_norms"),
    }
}

/// Compares our per-step losses, learning rates and gradient norms with the
/// reference; returns the largest loss difference.
fn compare(label: &str, ours: &[(f64, f64, f64)], want: &Trajectory) -> f64 {
    assert_eq!(ours.len(), want.losses.len(), "{label}: step count");
    let mut worst = 0.0f64;
    for (i, &(loss, lr, norm)) in ours.iter().enumerate() {
        let d = (loss - want.losses[i]).abs();
        worst = worst.max(d);
        assert!(
            d <= 1e-4,
            "{label} step {}: loss {loss} vs Hugging Face {} (diff {d:e})\nours: {:?}\nHF:   {:?}",
            i + 1,
            want.losses[i],
            ours.iter().map(|o| o.0).collect::<Vec<_>>(),
            want.losses
        );
        assert!(
            (lr - want.lrs[i]).abs() <= 1e-15,
            "{label} step {}: lr {lr} vs {}",
            i + 1,
            want.lrs[i]
        );
        let dn = (norm - want.grad_norms[i]).abs() / want.grad_norms[i];
        assert!(
            dn <= 1e-4,
            "{label} step {}: grad norm {norm} vs {}",
            i + 1,
            want.grad_norms[i]
        );
    }
    // The run must actually learn and clip, or the comparison proves little.
    assert!(
        want.losses[STEPS as usize - 1] < want.losses[0] - 0.1,
        "{label}: the reference loss should fall: {:?}",
        want.losses
    );
    assert!(
        want.grad_norms.iter().any(|&n| n > CLIP),
        "clipping is exercised"
    );
    worst
}

fn figures(rec: &Recorder) -> Vec<(f64, f64, f64)> {
    rec.steps
        .iter()
        .map(|s| (s.loss, s.learning_rate, s.grad_norm.unwrap()))
        .collect()
}

#[test]
fn tp1_trajectory_matches_hugging_face() {
    let dir = reference(1);
    let rec = train(&dir, TpGroup::single(), Arc::new(SingleProcess), 0);
    let worst = compare("TP=1", &figures(&rec), &trajectory(&dir));
    println!("TP=1: max |loss - HF loss| over {STEPS} steps = {worst:e}");
    assert_eq!(
        rec.events,
        [
            "interval@4",
            "validation@5",
            "save-validation@5",
            "interval@8",
            "validation@10",
            "save-validation@10",
            "interval@12",
            "validation@15",
            "save-validation@15",
            "interval@16",
            "validation@20",
            "final@20"
        ]
    );
    let last = rec.steps.last().unwrap();
    assert_eq!((last.step, last.total_steps), (STEPS, STEPS));
    // 22 samples, 4 per step, 6 steps per epoch (the sixth has 2 samples):
    // 20 steps = 3 epochs + 2 steps of 4 samples.
    let expected_epoch = 3.0 + 8.0 / 22.0;
    assert!(
        (last.epoch - expected_epoch).abs() < 1e-12,
        "epoch {}",
        last.epoch
    );
    assert!(last.samples_per_second > 0.0 && last.tokens_per_second > last.samples_per_second);
}

fn multi_rank(test: &str, tp_size: usize) {
    if common::rank_child().is_some() {
        tch::set_num_threads(1);
        let dir = PathBuf::from(std::env::var(REF_DIR_VAR).unwrap());
        let topo = comm::init_from_env(tp_size).expect("rendezvous");
        let rec = train(
            &dir,
            TpGroup::new(topo.tp.clone()),
            topo.dp.clone(),
            topo.dp_rank,
        );
        common::emit("figures", serde_json::to_string(&figures(&rec)).unwrap());
        return;
    }
    let dp = 2 / tp_size;
    let dir = reference(dp);
    let outs = common::Ranks::new(module_path!(), test, 2)
        .env(REF_DIR_VAR, dir.display())
        .run_ok();
    let want = trajectory(&dir);
    let all: Vec<Vec<(f64, f64, f64)>> = outs
        .iter()
        .map(|o| serde_json::from_str(o.expect_value("figures")).unwrap())
        .collect();
    assert_eq!(all[0], all[1], "ranks report the same figures");
    let worst = compare(test, &all[0], &want);
    println!("{test}: max |loss - HF loss| over {STEPS} steps = {worst:e}");
}

#[test]
fn tp2_trajectory_matches_hugging_face() {
    multi_rank("tp2_trajectory_matches_hugging_face", 2);
}

#[test]
fn dp2_trajectory_matches_hugging_face() {
    multi_rank("dp2_trajectory_matches_hugging_face", 1);
}
