//! `spec.training`: schedule, batch sizes, optimizer and numerics.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metric::{Metric, MetricMode};

/// How long and how to train. In Evaluate mode only microBatchSize (or evalMicroBatchSize),
/// precision and seed apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.maxSteps) && has(self.maxEpochs))").field_path(".maxEpochs").message("spec.training: set either maxSteps or maxEpochs, not both"))]
#[x_kube(validation = Rule::new("self.globalBatchSize % self.microBatchSize == 0").field_path(".globalBatchSize").message(Message::Expression("'spec.training.globalBatchSize (%d) must be a multiple of spec.training.microBatchSize (%d)'.format([self.globalBatchSize, self.microBatchSize])".into())))]
#[x_kube(validation = Rule::new("!has(self.lossScaling) || self.precision == 'fp16'").field_path(".lossScaling").message("spec.training.lossScaling only applies to precision fp16: remove it or set precision: fp16"))]
pub struct TrainingSpec {
    /// Optimizer steps to run (one step = globalBatchSize samples). Exclusive with maxEpochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_steps: Option<i64>,

    /// Passes over the training split. Exclusive with maxSteps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_epochs: Option<i64>,

    /// Samples per optimizer step across all data-parallel replicas; a multiple of
    /// microBatchSize x spec.parallelism.dataParallelSize (the quotient is the number of
    /// gradient-accumulation micro-steps).
    #[schemars(range(min = 1, max = 1_048_576))]
    pub global_batch_size: i64,

    /// Samples per forward/backward pass on one data-parallel replica.
    #[schemars(range(min = 1, max = 65536))]
    pub micro_batch_size: i64,

    /// Samples per evaluation pass on one data-parallel replica. Default: microBatchSize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub eval_micro_batch_size: Option<i64>,

    /// Optimizer (AdamW).
    #[serde(default)]
    pub optimizer: OptimizerSpec,

    /// Learning-rate schedule.
    #[serde(default)]
    pub scheduler: SchedulerSpec,

    /// Clip the global gradient L2 norm to this value; 0 disables clipping.
    #[serde(default = "default_clip")]
    #[schemars(range(min = 0.0, max = 1.0e6))]
    pub gradient_clip_norm: f64,

    /// Numerics: fp32, bf16 (mixed, bf16 autocast) or fp16 (mixed, with loss scaling).
    #[serde(default)]
    pub precision: Precision,

    /// fp16 loss scaling (only with precision fp16; defaults to dynamic scaling from 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaling: Option<LossScaling>,

    /// Seed for initialization of new heads, dropout and data shuffling.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub seed: i64,

    /// Evaluate the validation split every N optimizer steps. Default: at the end of every
    /// epoch. Training always ends with a validation pass when spec.data.validation is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub validation_interval_steps: Option<i64>,

    /// Log and report progress (status.progress, status.metrics) every N optimizer steps.
    #[serde(default = "default_log_interval")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub log_interval_steps: i64,

    /// Stop when a validation metric stops improving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
}

fn default_clip() -> f64 {
    1.0
}
fn default_seed() -> i64 {
    1234
}
fn default_log_interval() -> i64 {
    10
}

/// Numeric precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Precision {
    /// 32-bit floats throughout.
    #[default]
    #[serde(rename = "fp32")]
    Fp32,
    /// bfloat16 autocast with fp32 master weights.
    #[serde(rename = "bf16")]
    Bf16,
    /// float16 autocast with fp32 master weights and loss scaling.
    #[serde(rename = "fp16")]
    Fp16,
}

/// Optimizer name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OptimizerName {
    /// Adam with decoupled weight decay (no decay on biases and LayerNorm weights).
    #[default]
    #[serde(rename = "adamw")]
    AdamW,
}

/// AdamW settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptimizerSpec {
    /// Optimizer: adamw.
    #[serde(default)]
    pub name: OptimizerName,

    /// Peak learning rate (after warmup).
    #[serde(default = "default_lr")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub learning_rate: f64,

    /// Decoupled weight decay; not applied to biases and LayerNorm weights.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub weight_decay: f64,

    /// Adam beta1 and beta2.
    #[serde(default = "default_betas")]
    #[schemars(inner(range(min = 0.0, max = 0.999999)))]
    pub betas: [f64; 2],

    /// Adam epsilon.
    #[serde(default = "default_eps")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub eps: f64,
}

fn default_lr() -> f64 {
    5e-5
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            name: OptimizerName::AdamW,
            learning_rate: default_lr(),
            weight_decay: 0.0,
            betas: default_betas(),
            eps: default_eps(),
        }
    }
}

/// Shape of the learning-rate decay after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SchedulerName {
    /// Linear warmup, then linear decay to minLearningRate at the last step (NeMo's WarmupAnnealing).
    #[default]
    #[serde(rename = "linear")]
    Linear,
    /// Linear warmup, then cosine decay to minLearningRate.
    #[serde(rename = "cosine")]
    Cosine,
    /// Linear warmup, then constant.
    #[serde(rename = "constant")]
    Constant,
}

/// Learning-rate schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.warmupSteps) && has(self.warmupRatio))").field_path(".warmupRatio").message("spec.training.scheduler: set either warmupSteps or warmupRatio, not both"))]
pub struct SchedulerSpec {
    /// Decay shape: linear, cosine or constant.
    #[serde(default)]
    pub name: SchedulerName,

    /// Steps of linear warmup from 0 to the peak learning rate. Default: no warmup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000_000))]
    pub warmup_steps: Option<i64>,

    /// Warmup as a fraction of the total steps (e.g. 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub warmup_ratio: Option<f64>,

    /// Learning rate at the end of the decay.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub min_learning_rate: f64,
}

impl SchedulerSpec {
    /// Warmup steps for a run of `total_steps`.
    pub fn warmup_steps(&self, total_steps: i64) -> i64 {
        match (self.warmup_steps, self.warmup_ratio) {
            (Some(steps), _) => steps.min(total_steps),
            (None, Some(ratio)) => ((total_steps as f64) * ratio).round() as i64,
            (None, None) => 0,
        }
    }
}

/// fp16 loss scaling (torch GradScaler semantics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LossScaling {
    /// Scale at the first step (the fixed scale when dynamic is false).
    #[serde(default = "default_initial_scale")]
    #[schemars(range(min = 1.0, max = 1.0e10))]
    pub initial_scale: f64,

    /// Adjust the scale: divide by 2 on overflow (skipping the step), double after
    /// growthInterval clean steps.
    #[serde(default = "default_true")]
    pub dynamic: bool,

    /// Clean steps before the scale doubles.
    #[serde(default = "default_growth_interval")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub growth_interval: i64,

    /// Lowest scale dynamic scaling may reach.
    #[serde(default = "default_min_scale")]
    #[schemars(range(min = 0.0, max = 1.0e10))]
    pub min_scale: f64,
}

fn default_initial_scale() -> f64 {
    65536.0
}
fn default_true() -> bool {
    true
}
fn default_growth_interval() -> i64 {
    2000
}
fn default_min_scale() -> f64 {
    1.0
}

impl Default for LossScaling {
    fn default() -> Self {
        Self {
            initial_scale: default_initial_scale(),
            dynamic: true,
            growth_interval: default_growth_interval(),
            min_scale: default_min_scale(),
        }
    }
}

/// Early stopping on a validation metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStopping {
    /// Metric to watch (must be one the task reports).
    pub monitor: Metric,

    /// min or max. Default: min for val_loss, max for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<MetricMode>")]
    pub mode: Option<MetricMode>,

    /// Validations without improvement before stopping.
    #[serde(default = "default_patience")]
    #[schemars(range(min = 1, max = 10000))]
    pub patience: i32,

    /// Smallest change that counts as an improvement.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0e9))]
    pub min_delta: f64,
}

fn default_patience() -> i32 {
    3
}

impl EarlyStopping {
    /// `mode` or the metric's default.
    pub fn mode(&self) -> MetricMode {
        self.mode.unwrap_or(self.monitor.default_mode())
    }
}

impl TrainingSpec {
    /// Micro-batches accumulated per optimizer step on each data-parallel replica.
    pub fn gradient_accumulation_steps(&self, data_parallel: i64) -> i64 {
        self.global_batch_size / (self.micro_batch_size * data_parallel.max(1))
    }

    /// Evaluation micro-batch size.
    pub fn eval_micro_batch_size(&self) -> i64 {
        self.eval_micro_batch_size.unwrap_or(self.micro_batch_size)
    }

    /// Optimizer steps of the run, given the number of training samples (after windowing).
    pub fn total_steps(&self, train_samples: i64) -> Option<i64> {
        match (self.max_steps, self.max_epochs) {
            (Some(steps), _) => Some(steps),
            (None, Some(epochs)) => Some(epochs * self.steps_per_epoch(train_samples)),
            (None, None) => None,
        }
    }

    /// Optimizer steps per pass over `train_samples` (the last partial batch is kept).
    pub fn steps_per_epoch(&self, train_samples: i64) -> i64 {
        (train_samples.max(1) + self.global_batch_size - 1) / self.global_batch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let t: TrainingSpec = serde_json::from_value(serde_json::json!({
            "maxEpochs": 2, "globalBatchSize": 32, "microBatchSize": 4
        }))
        .unwrap();
        assert_eq!(t.precision, Precision::Fp32);
        assert_eq!(t.optimizer.betas, [0.9, 0.999]);
        assert_eq!(t.optimizer.learning_rate, 5e-5);
        assert_eq!(t.gradient_clip_norm, 1.0);
        assert_eq!(t.gradient_accumulation_steps(2), 4);
        assert_eq!(t.eval_micro_batch_size(), 4);
        assert_eq!(t.steps_per_epoch(100), 4);
        assert_eq!(t.total_steps(100), Some(8));
        assert_eq!(t.scheduler.warmup_steps(8), 0);
    }

    #[test]
    fn warmup_ratio_and_early_stopping_mode() {
        let s = SchedulerSpec {
            warmup_ratio: Some(0.1),
            ..Default::default()
        };
        assert_eq!(s.warmup_steps(1000), 100);
        let e: EarlyStopping =
            serde_json::from_value(serde_json::json!({"monitor": "val_f1"})).unwrap();
        assert_eq!((e.mode(), e.patience), (MetricMode::Max, 3));
    }
}
