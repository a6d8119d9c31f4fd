//! Everything the loop needs to continue exactly where it stopped: the
//! content of a training checkpoint besides the model weights.

use crate::data::DataPosition;
use crate::model::StateDict;

/// AdamW state of this rank's parameters, by canonical parameter name.
#[derive(Debug, Default)]
pub struct OptimizerState {
    /// First moments (`exp_avg`), shaped like the parameters.
    pub exp_avg: StateDict,
    /// Second moments (`exp_avg_sq`).
    pub exp_avg_sq: StateDict,
    /// Per-parameter step counts (AdamW bias correction); equal to the
    /// optimizer steps taken unless steps were skipped.
    pub steps: std::collections::BTreeMap<String, i64>,
}

/// Dynamic fp16 loss scaler state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaleState {
    /// Current scale.
    pub scale: f64,
    /// Good steps since the last change (grows the scale at the interval).
    pub growth_tracker: i64,
}

/// Early stopping / best-metric bookkeeping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EarlyStopState {
    /// Best monitored value seen so far.
    pub best: Option<f64>,
    /// Validations in a row without improvement.
    pub bad_validations: i32,
}

/// Random number generator states (libtorch generator state byte tensors).
#[derive(Debug, Default)]
pub struct RngStates {
    /// Default CPU generator (`torch.get_rng_state()`), uint8.
    pub cpu: Option<tch::Tensor>,
    /// Default CUDA generator of this rank's device, uint8.
    pub cuda: Option<tch::Tensor>,
    /// Model-parallel (per tensor-parallel rank) generator used by attention dropout.
    pub model_parallel: Option<tch::Tensor>,
}

/// The loop's complete resumable state (weights live in the model).
#[derive(Debug, Default)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: i64,
    /// Fractional epoch at `step`.
    pub epoch: f64,
    /// Next sample of this rank's shard (the sampler resumes from here).
    pub data_position: DataPosition,
    /// Samples consumed by the whole job.
    pub consumed_samples: i64,
    /// Optimizer moments and step counts.
    pub optimizer: OptimizerState,
    /// fp16 loss scaler, when used.
    pub loss_scale: Option<LossScaleState>,
    /// Early stopping bookkeeping.
    pub early_stopping: EarlyStopState,
    /// Generator states.
    pub rng: RngStates,
}
