//! Synthetic SQuAD-shaped training data and the hooks the speed and
//! checkpoint subcommands run `Trainer::fit` with.
//!
//! Sample `i` is a function of `i` alone (no generator involved), full
//! length (no padding: every position is a real token, so tokens per step is
//! batch x sequence), question then context segment, a 4-token answer span.
//! The batch is built on the CPU and copied to the device, as the real task's
//! collation does.

use std::collections::BTreeMap;
use std::time::Instant;

use megatron_trainer::data::Batch;
use megatron_trainer::model::{BertTaskModel, HeadOutput, question_answering_loss};
use megatron_trainer::resume::Checkpointer;
use megatron_trainer::train::{
    CheckpointRequest, StepStats, TrainError, TrainHooks, TrainResult, TrainTask,
};
use tch::{Device, Tensor};

/// `samples` synthetic QA features of length `seq` over a `vocab`-token vocabulary.
pub struct SyntheticQa {
    pub samples: usize,
    pub seq: i64,
    pub vocab: i64,
}

fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

impl SyntheticQa {
    fn sample(&self, i: usize, ids: &mut Vec<i64>) -> i64 {
        let mut x = lcg(i as u64 ^ 0x9e37_79b9_7f4a_7c15);
        for _ in 0..self.seq {
            x = lcg(x);
            ids.push(1 + ((x >> 33) as i64) % (self.vocab - 1));
        }
        1 + ((lcg(x) >> 33) as i64) % (self.seq / 2 - 4).max(1)
    }
}

impl TrainTask for SyntheticQa {
    fn num_train_samples(&self) -> usize {
        self.samples
    }

    fn train_batch(&self, indices: &[usize], device: Device) -> TrainResult<Batch> {
        let (b, s) = (indices.len() as i64, self.seq);
        let mut ids = Vec::with_capacity((b * s) as usize);
        let starts: Vec<i64> = indices.iter().map(|&i| self.sample(i, &mut ids)).collect();
        let types: Vec<i64> = (0..b)
            .flat_map(|_| (0..s).map(move |j| i64::from(j >= s / 2)))
            .collect();
        let input_ids = Tensor::from_slice(&ids).f_view([b, s])?;
        let start = Tensor::from_slice(&starts);
        Ok(Batch {
            attention_mask: input_ids.f_ones_like()?.f_to_device(device)?,
            token_type_ids: Tensor::from_slice(&types)
                .f_view([b, s])?
                .f_to_device(device)?,
            input_ids: input_ids.f_to_device(device)?,
            end_positions: Some((&start + 3).f_to_device(device)?),
            start_positions: Some(start.f_to_device(device)?),
            labels: None,
            loss_mask: None,
        })
    }

    fn loss(&self, output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor> {
        let HeadOutput::Span {
            start_logits,
            end_logits,
        } = output
        else {
            return Err(TrainError::InvalidInput("span head expected".into()));
        };
        let (Some(start), Some(end)) = (&batch.start_positions, &batch.end_positions) else {
            return Err(TrainError::InvalidInput("span targets expected".into()));
        };
        Ok(question_answering_loss(
            start_logits,
            end_logits,
            start,
            end,
        )?)
    }

    fn has_validation(&self) -> bool {
        false
    }

    fn validate(&self, _model: &BertTaskModel) -> TrainResult<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }
}

/// Records each step's end time and loss; saves through `checkpointer` when
/// the loop asks at step `save_at` (timing the save; other requests, such as
/// the final one, are not needed by the checks and would only cost time).
#[derive(Default)]
pub struct Recorder {
    pub step_ends: Vec<Instant>,
    pub losses: Vec<f64>,
    pub checkpointer: Option<Checkpointer>,
    pub save_at: i64,
    pub save_seconds: Vec<f64>,
}

impl TrainHooks for Recorder {
    fn on_step(&mut self, stats: &StepStats) -> TrainResult<()> {
        self.step_ends.push(Instant::now());
        self.losses.push(stats.loss);
        Ok(())
    }

    fn on_validation(&mut self, _: i64, _: f64, _: &BTreeMap<String, f64>) -> TrainResult<()> {
        Ok(())
    }

    fn on_checkpoint(&mut self, request: CheckpointRequest<'_>) -> TrainResult<()> {
        if let Some(c) = self.checkpointer.as_mut()
            && request.state.step == self.save_at
        {
            let t0 = Instant::now();
            c.save(request)?;
            self.save_seconds.push(t0.elapsed().as_secs_f64());
        }
        Ok(())
    }
}
