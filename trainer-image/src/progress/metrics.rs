//! Prometheus metrics of a run (prefix `megatron_trainer_`), served by rank 0
//! on `/metrics` in the OpenMetrics text format.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A gauge holding an `f64`.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Label of the validation and test metric families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    /// The metric's name, e.g. `val_f1` or `test_exact_match`.
    pub metric: String,
}

/// Every metric the trainer exports. Cheap to share behind an `Arc`.
pub struct TrainerMetrics {
    registry: Registry,
    /// Optimizer steps done.
    pub step: Gauge,
    /// Optimizer steps of the whole run.
    pub total_steps: Gauge,
    /// Fractional epoch.
    pub epoch: FloatGauge,
    /// Training loss (mean over the last logging interval).
    pub loss: FloatGauge,
    /// Learning rate of the latest step.
    pub learning_rate: FloatGauge,
    /// Global gradient norm before clipping, of the latest step.
    pub grad_norm: FloatGauge,
    /// fp16 loss scale.
    pub loss_scale: FloatGauge,
    /// Training samples per second (whole job).
    pub samples_per_second: FloatGauge,
    /// Non-padding tokens per second (whole job).
    pub tokens_per_second: FloatGauge,
    /// Estimated seconds until the run ends.
    pub eta_seconds: FloatGauge,
    /// Unix time when the latest step finished.
    pub last_step_timestamp_seconds: FloatGauge,
    /// Steps skipped because of an fp16 overflow.
    pub skipped_steps: Counter,
    /// Latest validation metrics by name.
    pub validation: Family<MetricLabels, FloatGauge>,
    /// Step of the latest validation.
    pub validation_step: Gauge,
    /// Test-split metrics by name.
    pub test: Family<MetricLabels, FloatGauge>,
    /// Checkpoints saved by this process.
    pub checkpoints_saved: Counter,
    /// Step of the newest saved checkpoint.
    pub latest_checkpoint_step: Gauge,
    /// Seconds each checkpoint took to save (write, upload, commit).
    pub checkpoint_duration_seconds: Histogram,
    /// Bytes of the checkpoints saved (every rank's files); over the duration's sum, the
    /// write throughput to the store.
    pub checkpoint_bytes: Counter,
    /// The gang attempt (`status.restarts` when this gang started).
    pub attempt: Gauge,
    /// Status writes the API server refused or that failed to arrive.
    pub status_write_errors: Counter,
}

impl Default for TrainerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("megatron_trainer");
        macro_rules! metric {
            ($name:literal, $help:literal, $metric:expr) => {{
                let metric = $metric;
                registry.register($name, $help, metric.clone());
                metric
            }};
        }
        Self {
            step: metric!("step", "Optimizer steps done", Gauge::default()),
            total_steps: metric!(
                "total_steps",
                "Optimizer steps of the whole run",
                Gauge::default()
            ),
            epoch: metric!("epoch", "Fractional epoch", FloatGauge::default()),
            loss: metric!(
                "loss",
                "Training loss, mean over the last logging interval",
                FloatGauge::default()
            ),
            learning_rate: metric!(
                "learning_rate",
                "Learning rate of the latest step",
                FloatGauge::default()
            ),
            grad_norm: metric!(
                "grad_norm",
                "Global gradient norm before clipping",
                FloatGauge::default()
            ),
            loss_scale: metric!("loss_scale", "fp16 loss scale", FloatGauge::default()),
            samples_per_second: metric!(
                "samples_per_second",
                "Training samples per second (whole job)",
                FloatGauge::default()
            ),
            tokens_per_second: metric!(
                "tokens_per_second",
                "Non-padding tokens per second (whole job)",
                FloatGauge::default()
            ),
            eta_seconds: metric!(
                "eta_seconds",
                "Estimated seconds until the run ends",
                FloatGauge::default()
            ),
            last_step_timestamp_seconds: metric!(
                "last_step_timestamp_seconds",
                "Unix time when the latest step finished",
                FloatGauge::default()
            ),
            skipped_steps: metric!(
                "skipped_steps",
                "Steps skipped because of an fp16 overflow",
                Counter::default()
            ),
            validation: metric!(
                "validation",
                "Latest validation metrics by name",
                Family::default()
            ),
            validation_step: metric!(
                "validation_step",
                "Step of the latest validation",
                Gauge::default()
            ),
            test: metric!("test", "Test-split metrics by name", Family::default()),
            checkpoints_saved: metric!(
                "checkpoints_saved",
                "Checkpoints saved by this process",
                Counter::default()
            ),
            latest_checkpoint_step: metric!(
                "latest_checkpoint_step",
                "Step of the newest saved checkpoint",
                Gauge::default()
            ),
            checkpoint_duration_seconds: metric!(
                "checkpoint_duration_seconds",
                "Seconds each checkpoint took to save (every rank's file written and uploaded, the set committed)",
                Histogram::new(exponential_buckets(0.25, 2.0, 14))
            ),
            checkpoint_bytes: metric!(
                "checkpoint_bytes",
                "Bytes of the checkpoints saved (every rank's files)",
                Counter::default()
            ),
            attempt: metric!(
                "attempt",
                "Gang attempt (status.restarts when this gang started)",
                Gauge::default()
            ),
            status_write_errors: metric!(
                "status_write_errors",
                "Status writes that the API server refused or that failed",
                Counter::default()
            ),
            registry,
        }
    }
}

impl TrainerMetrics {
    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Sets the gauges of a metric family from `(name, value)` pairs.
    pub fn set_family<'a>(
        family: &Family<MetricLabels, FloatGauge>,
        values: impl IntoIterator<Item = (&'a String, &'a f64)>,
    ) {
        for (name, value) in values {
            family
                .get_or_create(&MetricLabels {
                    metric: name.clone(),
                })
                .set(*value);
        }
    }
}
