//! Helpers for the training-loop tests: running a reference script into a
//! temporary directory, a fixed-batch QA [`TrainTask`] and a recording
//! [`TrainHooks`].
#![allow(dead_code)]

use std::collections::BTreeMap;

use megatron_trainer::data::Batch;
use megatron_trainer::model::{BertTaskModel, HeadOutput, StateDict, question_answering_loss};
use megatron_trainer::train::{
    CheckpointRequest, SaveReason, StepStats, TrainError, TrainHooks, TrainResult, TrainTask,
};
use std::path::Path;
use std::process::Command;
use tch::{Device, Tensor};

/// Runs `tests/python/<script>` with `args` under `$MEGATRON_PYTHON`; panics
/// with its stderr when it fails.
pub fn run_python(python: &Path, script: &str, args: &[&std::ffi::OsStr]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .expect("running the Python reference");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fixed QA features served by index (what a real task does after featurization).
pub struct QaData {
    /// `input_ids`, `attention_mask`, `token_type_ids`, `start_positions`, `end_positions`.
    pub data: StateDict,
}

impl QaData {
    fn select(&self, key: &str, indices: &[usize], device: Device) -> Tensor {
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        self.data[key]
            .index_select(0, &Tensor::from_slice(&idx))
            .to_device(device)
    }
}

impl TrainTask for QaData {
    fn num_train_samples(&self) -> usize {
        self.data["input_ids"].size()[0] as usize
    }

    fn train_batch(&self, indices: &[usize], device: Device) -> TrainResult<Batch> {
        Ok(Batch {
            input_ids: self.select("input_ids", indices, device),
            attention_mask: self.select("attention_mask", indices, device),
            token_type_ids: self.select("token_type_ids", indices, device),
            labels: None,
            start_positions: Some(self.select("start_positions", indices, device)),
            end_positions: Some(self.select("end_positions", indices, device)),
            loss_mask: None,
        })
    }

    fn loss(&self, output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor> {
        let HeadOutput::Span {
            start_logits,
            end_logits,
        } = output
        else {
            return Err(TrainError::InvalidInput("expected a span head".into()));
        };
        Ok(question_answering_loss(
            start_logits,
            end_logits,
            batch.start_positions.as_ref().unwrap(),
            batch.end_positions.as_ref().unwrap(),
        )?)
    }

    fn has_validation(&self) -> bool {
        true
    }

    fn validate(&self, model: &BertTaskModel) -> TrainResult<BTreeMap<String, f64>> {
        let b = self.train_batch(&[0, 1, 2, 3], Device::Cpu)?;
        let out = model.forward(
            &b.input_ids,
            Some(&b.token_type_ids),
            Some(&b.attention_mask),
            false,
        )?;
        let loss = self.loss(&out, &b)?.double_value(&[]);
        Ok([("val_loss".to_string(), loss)].into())
    }
}

/// Records what the loop reports.
#[derive(Default)]
pub struct Recorder {
    /// Every step's figures.
    pub steps: Vec<StepStats>,
    /// `validation@STEP`, `interval@STEP`, `save-validation@STEP`, `final@STEP`.
    pub events: Vec<String>,
}

impl TrainHooks for Recorder {
    fn on_step(&mut self, stats: &StepStats) -> TrainResult<()> {
        self.steps.push(stats.clone());
        Ok(())
    }

    fn on_validation(
        &mut self,
        step: i64,
        _epoch: f64,
        metrics: &BTreeMap<String, f64>,
    ) -> TrainResult<()> {
        assert!(metrics["val_loss"].is_finite());
        self.events.push(format!("validation@{step}"));
        Ok(())
    }

    fn on_checkpoint(&mut self, request: CheckpointRequest<'_>) -> TrainResult<()> {
        let kind = match request.reason {
            SaveReason::Interval => "interval",
            SaveReason::Validation(_) => "save-validation",
            SaveReason::Final => "final",
            SaveReason::Stop => "stop",
        };
        self.events.push(format!("{kind}@{}", request.state.step));
        Ok(())
    }
}

/// A tiny Megatron-BERT configuration (hidden 32, 2 layers, 4 heads) with
/// `dropout` for hidden states and attention probabilities.
pub fn tiny_config(dropout: f64) -> megatron_trainer::model::BertConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 100, "padded_vocab_size": 128, "hidden_size": 32, "num_layers": 2,
        "num_attention_heads": 4, "ffn_hidden_size": 128, "max_position_embeddings": 32,
        "type_vocab_size": 2, "layernorm_epsilon": 1e-5, "activation": "gelu",
        "hidden_dropout": dropout, "attention_dropout": dropout,
        "make_vocab_size_divisible_by": 128, "architecture": "megatron_pre_ln"
    }))
    .expect("a valid BertConfig")
}

/// `n` random QA features of `seq` tokens (random lengths and answer
/// spans) from `seed`, drawn without libtorch's default generator (tests
/// of one binary share it across threads).
pub fn random_qa_data(n: i64, seq: i64, seed: u64) -> QaData {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut ids, mut mask, mut types, mut start, mut end) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let len = rng.gen_range(seq / 2..=seq);
        for j in 0..seq {
            let real = j < len;
            ids.push(if real { rng.gen_range(1..100) } else { 0 });
            mask.push(i64::from(real));
            types.push(i64::from(real && j >= len / 2));
        }
        let s = rng.gen_range(1..seq / 2);
        start.push(s);
        end.push(s + rng.gen_range(0..2));
    }
    let mat = |v: Vec<i64>| Tensor::from_slice(&v).reshape([n, seq]);
    QaData {
        data: [
            ("input_ids", mat(ids)),
            ("attention_mask", mat(mask)),
            ("token_type_ids", mat(types)),
            ("start_positions", Tensor::from_slice(&start)),
            ("end_positions", Tensor::from_slice(&end)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}
