//! The loop's resolved numbers: `spec.training` and `spec.checkpointing`
//! turned into steps, batch sizes and intervals for one data-parallel layout
//! and training-set size, with the spec's cross-field rules checked.

use crds::{
    CheckpointingSpec, EarlyStopping, LossScaling, OptimizerSpec, Precision, SchedulerSpec,
    TrainingSpec,
};

use super::{TrainError, TrainResult};

/// Everything [`super::fit::Trainer`] needs to know about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerConfig {
    /// Optimizer steps of the whole run.
    pub total_steps: i64,
    /// Optimizer steps per pass over the training set.
    pub steps_per_epoch: i64,
    /// Samples per forward/backward on one data-parallel rank.
    pub micro_batch_size: usize,
    /// Micro batches per optimizer step on each rank (fewer in the last step
    /// of an epoch when the epoch runs out).
    pub accumulation_steps: usize,
    /// Samples per optimizer step over all data-parallel ranks.
    pub global_batch_size: i64,
    /// Data-parallel replicas.
    pub dp_size: usize,
    /// Training features.
    pub train_samples: usize,
    /// AdamW settings and peak learning rate.
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule.
    pub scheduler: SchedulerSpec,
    /// Global gradient-norm limit (None: no clipping).
    pub clip_norm: Option<f64>,
    /// Numerics.
    pub precision: Precision,
    /// Loss scaling (fp16 only).
    pub loss_scaling: Option<LossScaling>,
    /// Seed of the data order (and, by the caller, of initialisation and dropout).
    pub seed: u64,
    /// Shuffle the training set every epoch.
    pub shuffle: bool,
    /// Validate every N steps (None: at the end of every epoch).
    pub validation_interval_steps: Option<i64>,
    /// Progress reporting interval (the throughput window).
    pub log_interval_steps: i64,
    /// Save every N steps (None: only at validations and at the end).
    pub checkpoint_interval_steps: Option<i64>,
    /// Save after every validation.
    pub checkpoint_on_validation: bool,
    /// Early stopping on a validation metric.
    pub early_stopping: Option<EarlyStopping>,
    /// Return after this many optimizer steps in total (counting restored
    /// ones) without final validation or checkpoint, as if the process were
    /// stopped there: for resume tests and time-boxed runs.
    pub stop_after_steps: Option<i64>,
}

fn invalid(msg: String) -> TrainError {
    TrainError::InvalidInput(msg)
}

impl TrainerConfig {
    /// Resolves `training` and `checkpointing` for `dp_size` data-parallel
    /// replicas and `train_samples` training features.
    pub fn from_spec(
        training: &TrainingSpec,
        checkpointing: &CheckpointingSpec,
        dp_size: usize,
        train_samples: usize,
    ) -> TrainResult<Self> {
        if dp_size == 0 {
            return Err(invalid("data-parallel size must be at least 1".into()));
        }
        if train_samples == 0 {
            return Err(invalid(
                "the training split produced no features: check spec.data.train".into(),
            ));
        }
        let (gbs, mbs, dp) = (
            training.global_batch_size,
            training.micro_batch_size,
            dp_size as i64,
        );
        if gbs < 1 || mbs < 1 {
            return Err(invalid(format!(
                "spec.training.globalBatchSize ({gbs}) and microBatchSize ({mbs}) must be at least 1"
            )));
        }
        if gbs % (mbs * dp) != 0 {
            return Err(invalid(format!(
                "spec.training.globalBatchSize ({gbs}) must be a multiple of microBatchSize ({mbs}) \
                 x data-parallel size ({dp_size}) = {}; e.g. set globalBatchSize to {}",
                mbs * dp,
                (gbs / (mbs * dp)).max(1) * mbs * dp
            )));
        }
        let total_steps = match training.total_steps(train_samples as i64) {
            None => {
                return Err(invalid(
                    "spec.training: set maxSteps or maxEpochs to say how long to train".into(),
                ));
            }
            Some(s) if s < 1 => {
                return Err(invalid(format!(
                    "spec.training resolves to {s} optimizer steps; it must be at least 1"
                )));
            }
            Some(s) => s,
        };
        let opt = &training.optimizer;
        if training.scheduler.min_learning_rate > opt.learning_rate {
            return Err(invalid(format!(
                "spec.training.scheduler.minLearningRate ({}) is above \
                 spec.training.optimizer.learningRate ({})",
                training.scheduler.min_learning_rate, opt.learning_rate
            )));
        }
        for (i, b) in opt.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(invalid(format!(
                    "spec.training.optimizer.betas[{i}] must be in [0, 1), got {b}"
                )));
            }
        }
        if training.gradient_clip_norm < 0.0 || !training.gradient_clip_norm.is_finite() {
            return Err(invalid(format!(
                "spec.training.gradientClipNorm must be 0 (off) or positive, got {}",
                training.gradient_clip_norm
            )));
        }
        if training.loss_scaling.is_some() && training.precision != Precision::Fp16 {
            return Err(invalid(
                "spec.training.lossScaling applies only with precision fp16; remove it or set \
                 precision: fp16"
                    .into(),
            ));
        }
        if training.seed < 0 {
            return Err(invalid(format!(
                "spec.training.seed must not be negative, got {}",
                training.seed
            )));
        }
        Ok(Self {
            total_steps,
            steps_per_epoch: training.steps_per_epoch(train_samples as i64),
            micro_batch_size: mbs as usize,
            accumulation_steps: training.gradient_accumulation_steps(dp) as usize,
            global_batch_size: gbs,
            dp_size,
            train_samples,
            optimizer: opt.clone(),
            scheduler: training.scheduler.clone(),
            clip_norm: (training.gradient_clip_norm > 0.0).then_some(training.gradient_clip_norm),
            precision: training.precision,
            loss_scaling: (training.precision == Precision::Fp16)
                .then(|| training.loss_scaling.clone().unwrap_or_default()),
            seed: training.seed as u64,
            shuffle: true,
            validation_interval_steps: training.validation_interval_steps,
            log_interval_steps: training.log_interval_steps.max(1),
            checkpoint_interval_steps: checkpointing.interval_steps,
            checkpoint_on_validation: checkpointing.on_validation,
            early_stopping: training.early_stopping.clone(),
            stop_after_steps: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn training(v: serde_json::Value) -> TrainingSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn resolves_steps_and_accumulation() {
        let t = training(serde_json::json!({
            "maxEpochs": 2, "globalBatchSize": 32, "microBatchSize": 4,
            "gradientClipNorm": 0.0
        }));
        let c = TrainerConfig::from_spec(&t, &CheckpointingSpec::default(), 2, 100).unwrap();
        assert_eq!(
            (c.total_steps, c.steps_per_epoch, c.accumulation_steps),
            (8, 4, 4)
        );
        assert_eq!(c.clip_norm, None);
        assert_eq!(c.loss_scaling, None);
    }

    #[test]
    fn rejects_bad_batch_sizes_and_missing_length() {
        let t = training(serde_json::json!({
            "maxSteps": 5, "globalBatchSize": 30, "microBatchSize": 4
        }));
        let e = TrainerConfig::from_spec(&t, &CheckpointingSpec::default(), 2, 100).unwrap_err();
        assert!(
            e.is_invalid_input() && e.to_string().contains("globalBatchSize (30)"),
            "{e}"
        );
        let t = training(serde_json::json!({"globalBatchSize": 8, "microBatchSize": 4}));
        let e = TrainerConfig::from_spec(&t, &CheckpointingSpec::default(), 1, 100).unwrap_err();
        assert!(e.to_string().contains("maxSteps or maxEpochs"), "{e}");
        let t = training(serde_json::json!({
            "maxSteps": 5, "globalBatchSize": 8, "microBatchSize": 4, "precision": "bf16",
            "lossScaling": {"initialScale": 1024.0}
        }));
        let e = TrainerConfig::from_spec(&t, &CheckpointingSpec::default(), 1, 100).unwrap_err();
        assert!(e.to_string().contains("lossScaling"), "{e}");
    }
}
