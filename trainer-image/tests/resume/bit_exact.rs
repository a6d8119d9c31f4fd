//! The proof: on CPU with dropout off, a run killed after the
//! checkpoint at step 6 and resumed in a new process (through S3) produces
//! the same losses for steps 7..12, and the same final weights, as an
//! uninterrupted run, bit for bit. At tensor-parallel size 1 and 2.
//!
//! Each phase runs in fresh processes (tests/support/common.rs: the test binary re-run
//! per rank): `full` (12 steps, no stop), `first` (stops after step 6, having
//! checkpointed at 4 (validation), 6 (interval)), `resume` (a new model,
//! restored from S3, trains to 12).

use crate::support::common;
use crate::support::resume_util;
use crate::support::storage_util;

use std::collections::BTreeMap;
use std::time::Duration;

use megatron_trainer::comm::init_from_env;
use megatron_trainer::data::Batch;
use megatron_trainer::model::{BertTaskModel, HeadOutput, sequence_classification_loss};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig};
use megatron_trainer::storage::{RetryPolicy, Store};
use megatron_trainer::train::{
    CheckpointRequest, StepStats, TrainError, TrainHooks, TrainResult, TrainTask, Trainer,
    TrainerConfig,
};
use resume_util::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

const SEQ: i64 = 8;
const TRAIN: usize = 20;
const VALID: usize = 6;

/// Fixed synthetic sequence classification data (no RNG involved).
struct Synthetic;

fn sample(i: usize) -> (Vec<i64>, i64) {
    let mut x = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut ids = vec![2i64];
    for _ in 1..SEQ {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ids.push(4 + ((x >> 33) % 90) as i64);
    }
    let label = (ids[1] + ids[2]) % 3;
    (ids, label)
}

fn batch(indices: impl Iterator<Item = usize>, device: Device) -> Batch {
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for i in indices {
        let (x, y) = sample(i);
        ids.extend(x);
        labels.push(y);
    }
    let input_ids = Tensor::from_slice(&ids).view([-1, SEQ]).to_device(device);
    Batch {
        attention_mask: input_ids.ones_like(),
        token_type_ids: input_ids.zeros_like(),
        input_ids,
        labels: Some(Tensor::from_slice(&labels).to_device(device)),
        start_positions: None,
        end_positions: None,
        loss_mask: None,
    }
}

impl TrainTask for Synthetic {
    fn num_train_samples(&self) -> usize {
        TRAIN
    }
    fn train_batch(&self, indices: &[usize], device: Device) -> TrainResult<Batch> {
        Ok(batch(indices.iter().copied(), device))
    }
    fn loss(&self, output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor> {
        let HeadOutput::SequenceLogits(logits) = output else {
            return Err(TrainError::Internal("expected sequence logits".into()));
        };
        Ok(sequence_classification_loss(
            logits,
            batch.labels.as_ref().unwrap(),
        )?)
    }
    fn has_validation(&self) -> bool {
        true
    }
    fn validate(&self, model: &BertTaskModel) -> TrainResult<BTreeMap<String, f64>> {
        let b = batch(1000..1000 + VALID, Device::Cpu);
        let loss = tch::no_grad(|| -> TrainResult<f64> {
            let out = model.forward(
                &b.input_ids,
                Some(&b.token_type_ids),
                Some(&b.attention_mask),
                false,
            )?;
            Ok(self.loss(&out, &b)?.double_value(&[]))
        })?;
        Ok([("val_loss".to_string(), loss)].into())
    }
}

struct Hooks {
    losses: Vec<(i64, f64)>,
    ckpt: Option<Checkpointer>,
    saved: Vec<u64>,
}

impl TrainHooks for Hooks {
    fn on_step(&mut self, stats: &StepStats) -> TrainResult<()> {
        self.losses.push((stats.step, stats.loss));
        Ok(())
    }
    fn on_validation(&mut self, _: i64, _: f64, _: &BTreeMap<String, f64>) -> TrainResult<()> {
        Ok(())
    }
    fn on_checkpoint(&mut self, request: CheckpointRequest<'_>) -> TrainResult<()> {
        if let Some(c) = self.ckpt.as_mut()
            && let Some(saved) = c.save(request)?
        {
            self.saved.push(saved.latest.step as u64);
        }
        Ok(())
    }
}

fn checkpointing() -> crds::CheckpointingSpec {
    spec(json!({"intervalSteps": 6, "keepLast": 2, "best": {"monitor": "val_loss", "topK": 1}}))
}

/// One rank of one phase (`RESUME_PHASE`), in a child process.
fn rank_body(tp_size: usize) {
    let phase = std::env::var("RESUME_PHASE").unwrap();
    let topo = init_from_env(tp_size).unwrap();
    let tp = TpGroup::new(topo.tp.clone());
    let mut model = tiny_model(&tp, 1234 + topo.dp_rank as i64);
    let training: crds::TrainingSpec = serde_json::from_value(json!({
        "maxSteps": 12, "globalBatchSize": 4, "microBatchSize": 2, "seed": 7,
        "validationIntervalSteps": 4, "gradientClipNorm": 1.0,
        "optimizer": {"learningRate": 1e-3, "weightDecay": 0.01},
        "scheduler": {"name": "linear", "warmupSteps": 2}
    }))
    .unwrap();
    let cfg = TrainerConfig::from_spec(&training, &checkpointing(), topo.dp_size, TRAIN).unwrap();
    let ckpt = (phase != "full").then(|| {
        let mut s3 = storage_util::s3_config(&std::env::var("RESUME_PREFIX").unwrap(), &[]);
        s3.retry = RetryPolicy {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let work = std::path::PathBuf::from(std::env::var("RESUME_WORK").unwrap())
            .join(&phase)
            .join(format!("rank{}", topo.rank));
        Checkpointer::new(
            CheckpointerConfig::from_topology("megatron_bert", work, checkpointing(), &topo)
                .with_remote(Store::s3(s3).unwrap()),
        )
        .unwrap()
    });
    let mut hooks = Hooks {
        losses: Vec::new(),
        ckpt,
        saved: Vec::new(),
    };
    let mut restored = None;
    if phase == "resume" {
        let c = hooks.ckpt.as_mut().unwrap();
        let point = c
            .find_latest()
            .unwrap()
            .expect("the checkpoint of the first phase");
        common::emit("resumed_from", point.step);
        restored = Some(c.restore(&point, &mut model).unwrap());
    }
    let mut trainer =
        Trainer::new(model, cfg, tp, topo.dp.clone(), topo.dp_rank, Device::Cpu).unwrap();
    if let Some(state) = restored {
        trainer.restore(state).unwrap();
    }
    if phase == "first" {
        trainer.set_stop_after_steps(Some(6));
    }
    trainer.fit(&Synthetic, &mut hooks).unwrap();
    let losses: Vec<String> = hooks
        .losses
        .iter()
        .map(|(s, l)| format!("{s}:{:016x}", l.to_bits()))
        .collect();
    common::emit("losses", losses.join(","));
    common::emit("saved", format!("{:?}", hooks.saved));
    let mut h = Sha256::new();
    for (k, t) in trainer.model().state_dict() {
        h.update(k.as_bytes());
        let t = t.contiguous().to_kind(Kind::Float);
        let v = Vec::<f32>::try_from(t.view([-1])).unwrap();
        for x in v {
            h.update(x.to_bits().to_le_bytes());
        }
    }
    common::emit("weights_sha256", hex::encode(h.finalize()));
}

fn losses(out: &common::RankOutput) -> Vec<String> {
    out.expect_value("losses")
        .split(',')
        .map(str::to_string)
        .collect()
}

fn run(test: &str, tp_size: usize) {
    let prefix = storage_util::unique_prefix(test);
    storage_util::ensure_bucket(storage_util::TEST_BUCKET);
    let work = test_dir(test);
    let phase = |p: &str| {
        common::Ranks::new(module_path!(), test, tp_size)
            .env("RESUME_PHASE", p)
            .env("RESUME_PREFIX", &prefix)
            .env("RESUME_WORK", work.display())
            .run_ok()
    };
    let full = phase("full");
    let first = phase("first");
    let resumed = phase("resume");
    for r in 0..tp_size {
        let (a, b, c) = (losses(&full[r]), losses(&first[r]), losses(&resumed[r]));
        assert_eq!(a.len(), 12, "rank {r}: {a:?}");
        assert_eq!(b, a[..6].to_vec(), "rank {r}: the first 6 steps");
        assert_eq!(first[r].expect_value("saved"), "[4, 6]", "rank {r}");
        assert_eq!(resumed[r].expect_value("resumed_from"), "6");
        assert_eq!(
            c,
            a[6..].to_vec(),
            "rank {r}: steps 7..12 after the resume, bit for bit"
        );
        assert_eq!(
            resumed[r].expect_value("weights_sha256"),
            full[r].expect_value("weights_sha256"),
            "rank {r}: final weights"
        );
        eprintln!("rank {r}: losses 7..12 identical: {c:?}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::s3(storage_util::s3_config(&prefix, &[])).unwrap();
    rt.block_on(storage_util::delete_all(&store));
}

#[test]
fn resumed_run_matches_uninterrupted_tp1() {
    if common::rank_child().is_some() {
        return rank_body(1);
    }
    run("resumed_run_matches_uninterrupted_tp1", 1);
}

#[test]
fn resumed_run_matches_uninterrupted_tp2() {
    if common::rank_child().is_some() {
        return rank_body(2);
    }
    run("resumed_run_matches_uninterrupted_tp2", 2);
}
