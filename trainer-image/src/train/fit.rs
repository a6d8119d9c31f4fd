//! [`Trainer`]: the fine-tuning loop over a [`TrainTask`], with gradient
//! accumulation, data parallelism, tensor-parallel gradient clipping, AdamW,
//! the learning-rate schedule, mixed precision, validation, early stopping
//! and checkpoint requests, resumable from a [`TrainState`].
//!
//! # One optimizer step
//! 1. Up to `accumulation_steps` micro batches (fewer when the epoch runs
//!    out, so a step never spans two epochs): indices from a
//!    [`DistributedSampler`] seeded with `seed` (data-parallel ranks read
//!    disjoint shards; the ranks of a tensor-parallel group read the same
//!    batch), forward in train mode (under autocast for bf16/fp16), the
//!    task's loss divided by the step's micro-batch count (times the loss
//!    scale for fp16), backward.
//! 2. Gradients averaged over the data-parallel group.
//! 3. fp16: gradients unscaled; a non-finite global norm skips the update.
//! 4. Global-norm clipping across tensor-parallel shards.
//! 5. AdamW with `lr = schedule.lr(step)`; gradients dropped.
//! 6. [`TrainHooks::on_step`] with the loss averaged over the data-parallel
//!    group and the throughput of the last `log_interval_steps` steps.
//!
//! Then, when due, validation ([`TrainHooks::on_validation`], early
//! stopping, and [`SaveReason::Validation`] when `checkpointing.onValidation`)
//! and the interval checkpoint ([`SaveReason::Interval`], unless this step
//! already saved after validation). The last step (the run's end or an early
//! stop) saves once, with [`SaveReason::Final`], right after that step's
//! validation (the final validation runs if the step had none scheduled):
//! hooks that rank checkpoints by a metric take it from the `on_validation`
//! call just before.
//!
//! # Stopping early on request
//! With a stop check ([`Trainer::set_stop_check`], e.g. a SIGTERM noted by
//! the rank), every step also agrees on whether any rank was asked to stop:
//! the flag is summed over the tensor-parallel group, then rides in the
//! data-parallel all-reduce of the step's figures, so every rank sees the
//! same answer for the same step. Once it is yes, the ranks finish that step
//! (with its validation, if one is due), save with [`SaveReason::Stop`] (unless
//! the step saved already) and return with [`FitOutcome::interrupted`] set;
//! the next run resumes from that checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::clip::{clip_grads, global_grad_norm};
use super::config::TrainerConfig;
use super::early_stop::EarlyStopper;
use super::loss_scale::LossScaler;
use super::optimizer::AdamW;
use super::precision::{check_precision, with_autocast};
use super::schedule::LrSchedule;
use super::throughput::Throughput;
use super::{
    CheckpointRequest, RngStates, SaveReason, StepStats, TrainError, TrainHooks, TrainResult,
    TrainState, TrainTask,
};
use crate::comm::ProcessGroup;
use crate::data::{DataError, DataPosition, DistributedSampler};
use crate::model::{BertTaskModel, StateDict, clear_grads};
use crate::parallel::{TpGroup, all_reduce_gradients_mean, random};

/// How a [`Trainer::fit`] call ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOutcome {
    /// Optimizer steps done (counting restored ones).
    pub steps: i64,
    /// Fractional epoch reached.
    pub epoch: f64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Metrics of the last validation, if any ran.
    pub last_validation: Option<BTreeMap<String, f64>>,
    /// A stop was requested: training ended early with a [`SaveReason::Stop`]
    /// checkpoint, not at its last step.
    pub interrupted: bool,
}

/// The fine-tuning loop of one rank.
pub struct Trainer {
    model: BertTaskModel,
    cfg: TrainerConfig,
    tp: TpGroup,
    dp: Arc<dyn ProcessGroup>,
    dp_rank: usize,
    device: Device,
    params: Vec<(String, Tensor)>,
    tensors: Vec<Tensor>,
    optimizer: AdamW,
    schedule: LrSchedule,
    scaler: Option<LossScaler>,
    early_stop: EarlyStopper,
    step: i64,
    position: DataPosition,
    consumed_samples: i64,
    stop_check: Option<fn() -> bool>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .field("position", &self.position)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn data_error(e: DataError) -> TrainError {
    match e {
        DataError::Config(m) => TrainError::InvalidInput(m),
        other => TrainError::InvalidInput(other.to_string()),
    }
}

impl Trainer {
    /// A trainer for `model` (this rank's shards, on `device`) in
    /// tensor-parallel group `tp` and data-parallel group `dp` (where this
    /// rank is `dp_rank`). Fails on a precision the device cannot run or a
    /// data-parallel group that does not match `cfg.dp_size`.
    pub fn new(
        model: BertTaskModel,
        cfg: TrainerConfig,
        tp: TpGroup,
        dp: Arc<dyn ProcessGroup>,
        dp_rank: usize,
        device: Device,
    ) -> TrainResult<Self> {
        check_precision(cfg.precision, device)?;
        if dp.size() != cfg.dp_size || dp.rank() != dp_rank {
            return Err(TrainError::InvalidInput(format!(
                "the data-parallel group has {} ranks (this is rank {}), but the trainer was \
                 configured for {} ranks with this as rank {dp_rank}",
                dp.size(),
                dp.rank(),
                cfg.dp_size
            )));
        }
        let mut params: Vec<(String, Tensor)> = model
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let optimizer = AdamW::new(
            params
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            &cfg.optimizer,
        );
        let schedule =
            LrSchedule::new(&cfg.scheduler, cfg.optimizer.learning_rate, cfg.total_steps);
        let scaler = cfg.loss_scaling.as_ref().map(LossScaler::new).transpose()?;
        let early_stop = EarlyStopper::new(cfg.early_stopping.clone());
        Ok(Self {
            model,
            cfg,
            tp,
            dp,
            dp_rank,
            device,
            params,
            tensors,
            optimizer,
            schedule,
            scaler,
            early_stop,
            step: 0,
            position: DataPosition::default(),
            consumed_samples: 0,
            stop_check: None,
        })
    }

    /// Asks `check` at every step whether this rank should stop (see the
    /// [module docs](self)); without one it never does. Every rank of a run
    /// must be given one, or none: the check adds a collective.
    pub fn set_stop_check(&mut self, check: fn() -> bool) {
        self.stop_check = Some(check);
    }

    /// This rank's stop request summed over its tensor-parallel group, so
    /// that the group's ranks put the same value into the step's figures.
    fn stop_votes(&self) -> TrainResult<Tensor> {
        let vote = self.stop_check.is_some_and(|check| check());
        let mut votes = Tensor::from(f64::from(u8::from(vote))).f_to_device(self.device)?;
        if self.stop_check.is_some() && self.tp.size() > 1 {
            self.tp.group().all_reduce_sum(&mut votes)?;
        }
        Ok(votes)
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.cfg
    }

    /// Sets [`TrainerConfig::stop_after_steps`] (return after that many
    /// steps in total, without final validation or checkpoint).
    pub fn set_stop_after_steps(&mut self, steps: Option<i64>) {
        self.cfg.stop_after_steps = steps;
    }

    /// Optimizer steps done.
    pub fn step(&self) -> i64 {
        self.step
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// The model being trained.
    pub fn model(&self) -> &BertTaskModel {
        &self.model
    }

    /// The trained model.
    pub fn into_model(self) -> BertTaskModel {
        self.model
    }

    fn epoch_of(&self, position: DataPosition) -> f64 {
        let per_epoch = self.cfg.train_samples.div_ceil(self.cfg.dp_size).max(1);
        position.epoch as f64 + position.index as f64 / per_epoch as f64
    }

    /// The loop's resumable state. Optimizer tensors share storage with the
    /// optimizer: serialize them before training on.
    pub fn state(&self) -> TrainState {
        TrainState {
            step: self.step,
            epoch: self.epoch_of(self.position),
            data_position: self.position,
            consumed_samples: self.consumed_samples,
            optimizer: self.optimizer.state(),
            loss_scale: self.scaler.as_ref().map(LossScaler::state),
            early_stopping: self.early_stop.state(),
            rng: self.rng_states(),
        }
    }

    /// The generator states dropout draws from: the default CPU generator,
    /// the default CUDA generator of a GPU rank, and the model's
    /// model-parallel generator (attention dropout).
    fn rng_states(&self) -> RngStates {
        RngStates {
            cpu: Some(random::cpu_rng_state()),
            cuda: match self.device {
                Device::Cuda(_) => random::cuda_rng_state(self.device)
                    .map_err(|e| {
                        tracing::warn!(error = %e, "the checkpoint lacks the CUDA generator state")
                    })
                    .ok(),
                _ => None,
            },
            model_parallel: Some(self.model.encoder.model_parallel_rng().state()),
        }
    }

    fn restore_rng(&self, rng: &RngStates) -> TrainResult<()> {
        let invalid = |e: random::RngError| {
            TrainError::InvalidInput(format!("checkpoint random generator state: {e}"))
        };
        if let Some(cpu) = &rng.cpu {
            random::set_cpu_rng_state(cpu).map_err(invalid)?;
        }
        if let (Some(cuda), Device::Cuda(_)) = (&rng.cuda, self.device) {
            random::set_cuda_rng_state(self.device, cuda).map_err(invalid)?;
        }
        if let Some(mp) = &rng.model_parallel {
            self.model
                .encoder
                .model_parallel_rng()
                .set_state(mp)
                .map_err(invalid)?;
        }
        Ok(())
    }

    /// Continues from a checkpointed state: the next step is the one an
    /// uninterrupted run would take (same data, optimizer moments, learning
    /// rate, loss scale, early-stopping record and dropout generators; a
    /// state without generator states leaves the generators as they are).
    /// The model's weights are restored separately.
    pub fn restore(&mut self, state: TrainState) -> TrainResult<()> {
        if state.step < 0 {
            return Err(TrainError::InvalidInput(format!(
                "checkpoint step {} is negative",
                state.step
            )));
        }
        self.optimizer.load_state(state.optimizer)?;
        if let (Some(s), Some(ls)) = (&mut self.scaler, state.loss_scale) {
            s.load_state(ls)?;
        }
        self.restore_rng(&state.rng)?;
        self.early_stop.load_state(state.early_stopping);
        self.step = state.step;
        self.position = state.data_position;
        self.consumed_samples = state.consumed_samples;
        Ok(())
    }

    fn grads(&self) -> StateDict {
        self.params
            .iter()
            .filter_map(|(n, t)| {
                let g = t.grad();
                g.defined().then(|| (n.clone(), g))
            })
            .collect()
    }

    /// Trains until `total_steps` (or early stopping, or `stop_after_steps`),
    /// calling `hooks` as described in the [module docs](self).
    pub fn fit(
        &mut self,
        task: &dyn TrainTask,
        hooks: &mut dyn TrainHooks,
    ) -> TrainResult<FitOutcome> {
        let samples = task.num_train_samples();
        if samples != self.cfg.train_samples {
            return Err(TrainError::Internal(format!(
                "the task has {samples} training features but the trainer was configured for \
                 {} (TrainerConfig::from_spec must get the task's num_train_samples)",
                self.cfg.train_samples
            )));
        }
        let sampler = DistributedSampler::new(
            samples,
            self.cfg.dp_size,
            self.dp_rank,
            self.cfg.shuffle,
            self.cfg.seed,
        )
        .map_err(data_error)?;
        let per_epoch = sampler.num_samples();
        let mb = self.cfg.micro_batch_size;
        let total = self.cfg.total_steps;
        let end = self.cfg.stop_after_steps.map_or(total, |s| s.min(total));
        let mut batches = sampler.batches_from(self.position, mb);
        let mut throughput = Throughput::new(self.cfg.log_interval_steps as usize);
        let mut last_validation: Option<BTreeMap<String, f64>> = None;
        let mut validated_at: Option<i64> = None;
        let mut stopped_early = false;
        let mut interrupted = false;

        while self.step < end {
            let started = Instant::now();
            let index = if self.position.index >= per_epoch {
                0
            } else {
                self.position.index
            };
            let n_micro = self
                .cfg
                .accumulation_steps
                .min((per_epoch - index).div_ceil(mb))
                .max(1);
            let (loss_sum, tokens, local_samples) = self.accumulate(task, &mut batches, n_micro)?;
            let mut figures = Tensor::f_stack(
                &[
                    loss_sum,
                    tokens.f_to_kind(Kind::Double)?,
                    Tensor::from(local_samples as f64).f_to_device(self.device)?,
                    self.stop_votes()?,
                ],
                0,
            )?;
            if self.dp.size() > 1 {
                self.dp.all_reduce_sum(&mut figures)?;
                all_reduce_gradients_mean(&self.tensors, self.dp.as_ref())?;
            }
            let figures = Vec::<f64>::try_from(figures.f_to_device(Device::Cpu)?)?;
            let loss = figures[0] / (n_micro * self.cfg.dp_size) as f64;
            let (job_tokens, job_samples) = (figures[1], figures[2]);
            let stop_requested = figures[3] > 0.0;

            let (grad_norm, skipped) = self.update_weights()?;
            self.step += 1;
            self.consumed_samples += job_samples as i64;
            throughput.record(started.elapsed(), job_samples, job_tokens);
            hooks.on_step(&StepStats {
                step: self.step,
                total_steps: total,
                epoch: self.epoch_of(self.position),
                loss,
                learning_rate: self.schedule.lr(self.step - 1),
                grad_norm,
                loss_scale: self.scaler.as_ref().map(LossScaler::scale),
                samples_per_second: throughput.samples_per_second(),
                tokens_per_second: throughput.tokens_per_second(),
                eta_seconds: throughput.seconds_per_step() * (total - self.step) as f64,
                skipped,
            })?;
            if self.step >= total {
                break;
            }
            let epoch_ended = self.position.index == 0 || self.position.index >= per_epoch;
            let validation_due = task.has_validation()
                && match self.cfg.validation_interval_steps {
                    Some(n) => self.step % n == 0,
                    None => epoch_ended,
                };
            let mut saved = false;
            if validation_due {
                let (metrics, stop) = self.validate(task, hooks)?;
                validated_at = Some(self.step);
                last_validation = Some(metrics.clone());
                if stop {
                    stopped_early = true;
                    break;
                }
                if self.cfg.checkpoint_on_validation {
                    self.checkpoint(hooks, SaveReason::Validation(metrics))?;
                    saved = true;
                }
            }
            if !saved
                && self
                    .cfg
                    .checkpoint_interval_steps
                    .is_some_and(|n| self.step % n == 0)
            {
                self.checkpoint(hooks, SaveReason::Interval)?;
                saved = true;
            }
            // After this step's validation: skipping it would change what early
            // stopping and the best checkpoint see, so a resumed run would differ.
            if stop_requested {
                tracing::info!(
                    step = self.step,
                    "stop requested: saving a checkpoint and ending the run here"
                );
                if !saved {
                    self.checkpoint(hooks, SaveReason::Stop)?;
                }
                interrupted = true;
                break;
            }
        }

        if stopped_early || self.step >= total {
            if !stopped_early && task.has_validation() && validated_at != Some(self.step) {
                let (metrics, _) = self.validate(task, hooks)?;
                last_validation = Some(metrics);
            }
            self.checkpoint(hooks, SaveReason::Final)?;
        }
        Ok(FitOutcome {
            steps: self.step,
            epoch: self.epoch_of(self.position),
            stopped_early,
            last_validation,
            interrupted,
        })
    }

    /// Forward/backward of `n_micro` micro batches; returns the sum of their
    /// (unscaled) losses, their non-pad tokens and samples.
    fn accumulate(
        &mut self,
        task: &dyn TrainTask,
        batches: &mut dyn Iterator<Item = (Vec<usize>, DataPosition)>,
        n_micro: usize,
    ) -> TrainResult<(Tensor, Tensor, usize)> {
        let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
        let mut tokens = Tensor::zeros([], (Kind::Int64, self.device));
        let mut samples = 0usize;
        let scale = self.scaler.as_ref().map(LossScaler::scale);
        for _ in 0..n_micro {
            let (indices, next) = batches
                .next()
                .ok_or_else(|| TrainError::Internal("the sampler ran out of batches".into()))?;
            let batch = task.train_batch(&indices, self.device)?;
            let loss = with_autocast(self.cfg.precision, self.device, || -> TrainResult<_> {
                let out = self.model.forward(
                    &batch.input_ids,
                    Some(&batch.token_type_ids),
                    Some(&batch.attention_mask),
                    true,
                )?;
                task.loss(&out, &batch)
            })?;
            let mut scaled = if n_micro > 1 {
                loss.f_div_scalar(n_micro as i64)?
            } else {
                loss.shallow_clone()
            };
            if let Some(s) = scale {
                scaled = scaled.f_mul_scalar(s)?;
            }
            scaled.f_backward()?;
            loss_sum = loss_sum.f_add(&loss.detach().f_to_kind(Kind::Double)?)?;
            tokens = tokens.f_add(&batch.attention_mask.f_sum(Kind::Int64)?)?;
            samples += indices.len();
            self.position = next;
        }
        Ok((loss_sum, tokens, samples))
    }

    /// Unscale (fp16), clip, AdamW, drop gradients. Returns the pre-clip
    /// global norm (when computed) and whether the update was skipped.
    fn update_weights(&mut self) -> TrainResult<(Option<f64>, bool)> {
        let grads = self.grads();
        if let Some(s) = &self.scaler {
            let inv = 1.0 / s.scale();
            tch::no_grad(|| -> TrainResult<()> {
                for g in grads.values() {
                    let _ = g.shallow_clone().f_mul_scalar_(inv)?;
                }
                Ok(())
            })?;
        }
        let norm = match self.cfg.clip_norm {
            Some(max) => Some(clip_grads(&grads, &self.tp, max)?),
            None if self.scaler.is_some() => Some(global_grad_norm(&grads, &self.tp)?),
            None => None,
        };
        drop(grads);
        let apply = match &mut self.scaler {
            Some(s) => s.update(!norm.is_some_and(f64::is_finite)),
            None => true,
        };
        if apply {
            self.optimizer.step(self.schedule.lr(self.step))?;
        }
        clear_grads(&self.tensors);
        Ok((norm, !apply))
    }

    /// Evaluates the validation split now and reports it through
    /// [`TrainHooks::on_validation`] at the current step, without early
    /// stopping or a checkpoint. Called before [`Self::fit`] on a fresh run it
    /// gives the untrained model's baseline, the validation at step 0; it
    /// changes nothing the run then does. Every rank of the run calls it.
    pub fn validate_now(
        &self,
        task: &dyn TrainTask,
        hooks: &mut dyn TrainHooks,
    ) -> TrainResult<BTreeMap<String, f64>> {
        let metrics = self.evaluate(task)?;
        hooks.on_validation(self.step, self.epoch_of(self.position), &metrics)?;
        Ok(metrics)
    }

    fn evaluate(&self, task: &dyn TrainTask) -> TrainResult<BTreeMap<String, f64>> {
        tch::no_grad(|| {
            with_autocast(self.cfg.precision, self.device, || {
                task.validate(&self.model)
            })
        })
    }

    fn validate(
        &mut self,
        task: &dyn TrainTask,
        hooks: &mut dyn TrainHooks,
    ) -> TrainResult<(BTreeMap<String, f64>, bool)> {
        let metrics = self.evaluate(task)?;
        hooks.on_validation(self.step, self.epoch_of(self.position), &metrics)?;
        let stop = self.early_stop.observe(&metrics)?;
        Ok((metrics, stop))
    }

    fn checkpoint(&self, hooks: &mut dyn TrainHooks, reason: SaveReason) -> TrainResult<()> {
        let state = self.state();
        hooks.on_checkpoint(CheckpointRequest {
            reason,
            model: &self.model,
            state: &state,
        })
    }
}
