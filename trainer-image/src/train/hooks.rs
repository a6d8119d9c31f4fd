//! The seams of the training loop: the task it trains ([`TrainTask`]) and the
//! observers it calls ([`TrainHooks`]: progress reporting, checkpointing).

use std::collections::BTreeMap;

use tch::{Device, Tensor};

use super::TrainResult;
use crate::data::Batch;
use crate::model::{BertTaskModel, HeadOutput};

/// The data and loss of one downstream task, as the loop needs them.
pub trait TrainTask {
    /// Number of training features (after windowing/featurization).
    fn num_train_samples(&self) -> usize;
    /// The training features at `indices`, collated and on `device`.
    fn train_batch(&self, indices: &[usize], device: Device) -> TrainResult<Batch>;
    /// Mean loss of a micro batch (a scalar tensor with a graph).
    fn loss(&self, output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor>;
    /// Whether a validation split exists.
    fn has_validation(&self) -> bool;
    /// Evaluates the validation split (every rank of the run calls this, the
    /// model is in eval mode and no gradient is recorded); returns metrics by
    /// name (`val_loss`, `val_f1`, ... as `crds::Metric::as_str`).
    fn validate(&self, model: &BertTaskModel) -> TrainResult<BTreeMap<String, f64>>;
}

/// Figures of one optimizer step, for logs, metrics and status.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Optimizer steps done (1 after the first step).
    pub step: i64,
    /// Total optimizer steps of the run.
    pub total_steps: i64,
    /// Fractional epoch (samples consumed / training samples).
    pub epoch: f64,
    /// Mean training loss of this step's micro batches (over the DP group).
    pub loss: f64,
    /// Learning rate used by this step.
    pub learning_rate: f64,
    /// Global gradient norm before clipping (None when not computed).
    pub grad_norm: Option<f64>,
    /// fp16 loss scale (None unless dynamic loss scaling is on).
    pub loss_scale: Option<f64>,
    /// Samples per second of the whole job over the last logging window.
    pub samples_per_second: f64,
    /// Non-pad tokens per second of the whole job over the last window.
    pub tokens_per_second: f64,
    /// Seconds until the run ends at the current speed.
    pub eta_seconds: f64,
    /// Whether the step was skipped (fp16 overflow).
    pub skipped: bool,
}

/// Why a checkpoint is requested.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveReason {
    /// `spec.checkpointing.intervalSteps` reached.
    Interval,
    /// After a validation, with its metrics.
    Validation(BTreeMap<String, f64>),
    /// The end of training.
    Final,
    /// Training stops before its end on request (SIGTERM: an eviction, a
    /// suspend, a drained node); the next run resumes here.
    Stop,
}

/// What a checkpointer gets: the model and the loop's complete resumable state.
pub struct CheckpointRequest<'a> {
    /// Why.
    pub reason: SaveReason,
    /// This rank's model (its shards under canonical names).
    pub model: &'a BertTaskModel,
    /// The loop state (optimizer, schedule position, data position, RNG, ...).
    pub state: &'a super::state::TrainState,
}

/// Observers of a run. Every rank calls every hook at the same point of the
/// loop (so hooks may run collectives); hooks decide themselves what only
/// rank 0 does.
pub trait TrainHooks {
    /// After each optimizer step.
    fn on_step(&mut self, stats: &StepStats) -> TrainResult<()>;
    /// After each validation.
    fn on_validation(
        &mut self,
        step: i64,
        epoch: f64,
        metrics: &BTreeMap<String, f64>,
    ) -> TrainResult<()>;
    /// Saves a checkpoint (interval, after validation, final).
    fn on_checkpoint(&mut self, request: CheckpointRequest<'_>) -> TrainResult<()>;
}
