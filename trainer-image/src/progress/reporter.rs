//! [`Reporter`]: one place the run reports to; it fans out to logs,
//! Prometheus metrics, TensorBoard and the job's status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crds::{Artifacts, CheckpointStatus, Outcome, Progress, TrainerResult};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::background::{Background, BackgroundError, StatusTarget};
use super::config::{JobRef, ReporterConfig};
use super::logging::{format_duration, format_metrics};
use super::metrics::TrainerMetrics;
use super::status::{StatusWaitError, StatusWriter};
use super::tensorboard::EventWriter;
use crate::train::{StepStats, TrainError, TrainResult};

/// Why the reporter failed: reporting, not training, so never invalid input.
#[derive(Debug, thiserror::Error)]
pub enum ReportingError {
    /// `/metrics` or the status writer could not be started.
    #[error(transparent)]
    Start(#[from] BackgroundError),
    /// The run's result was not written to the job's status.
    #[error("reporting the result ({reason}) of MegatronFineTune {namespace}/{name}: {source}")]
    Result {
        /// The result's reason, e.g. `Completed`.
        reason: String,
        namespace: String,
        name: String,
        #[source]
        source: StatusWaitError,
    },
}

/// The loop passes the failure on without knowing the reporter's types.
impl From<ReportingError> for TrainError {
    fn from(e: ReportingError) -> Self {
        Self::Reporting(Box::new(e))
    }
}

/// Reports a run's progress. On rank 0: structured logs every log interval,
/// Prometheus gauges (`/metrics` when an address is configured), TensorBoard
/// scalars (when a directory is configured) and the job's status (when a job
/// is configured; written by a background thread, never blocking training).
/// On other ranks it only logs at debug level.
///
/// TensorBoard tags: `train/loss` (mean over the log interval),
/// `train/learning_rate`, `train/grad_norm`, `train/loss_scale`, `train/epoch`,
/// `throughput/samples_per_second`, `throughput/tokens_per_second`, and the
/// validation and test metrics under their own names (`val_f1`, `test_loss`, ...).
pub struct Reporter {
    rank0: bool,
    job: Option<JobRef>,
    log_interval: i64,
    finish_timeout: Duration,
    metrics: Arc<TrainerMetrics>,
    tensorboard: Option<EventWriter>,
    status: Option<StatusWriter>,
    background: Option<Background>,
    window: LossWindow,
    last_step: i64,
}

/// Mean training loss over the steps since the last log.
#[derive(Default)]
struct LossWindow {
    sum: f64,
    steps: u32,
}

impl LossWindow {
    fn take_mean(&mut self) -> Option<f64> {
        let mean = (self.steps > 0).then(|| self.sum / f64::from(self.steps));
        *self = Self::default();
        mean
    }
}

impl Reporter {
    /// Starts reporting: on rank 0 creates the TensorBoard file, binds
    /// `/metrics` and connects to the API server. Errors name what failed
    /// (an unusable directory, a taken port, no Kubernetes configuration).
    pub fn new(config: ReporterConfig) -> TrainResult<Self> {
        let metrics = Arc::new(TrainerMetrics::default());
        let mut reporter = Self {
            rank0: config.is_rank0,
            job: config.job.clone(),
            log_interval: config.log_interval_steps.max(1),
            finish_timeout: config.finish_timeout,
            metrics: metrics.clone(),
            tensorboard: None,
            status: None,
            background: None,
            window: LossWindow::default(),
            last_step: 0,
        };
        if !config.is_rank0 {
            return Ok(reporter);
        }
        if let Some(job) = &config.job {
            metrics.attempt.set(i64::from(job.attempt));
        }
        if let Some(dir) = &config.tensorboard_dir {
            let writer = EventWriter::create(dir).map_err(|e| TrainError::Io {
                context: format!("creating a TensorBoard event file in {}", dir.display()),
                source: e,
            })?;
            tracing::info!(file = %writer.path().display(), "writing TensorBoard events");
            reporter.tensorboard = Some(writer);
        }
        let status = config.job.clone().map(|job| StatusTarget {
            job,
            kubeconfig: config.kubeconfig.clone(),
            interval: config.status_interval,
            writer: StatusWriter::default(),
        });
        reporter.status = status.as_ref().map(|s| s.writer.clone());
        if config.metrics_addr.is_some() || status.is_some() {
            reporter.background = Some(
                Background::start(metrics, config.metrics_addr, status)
                    .map_err(ReportingError::Start)?,
            );
        }
        Ok(reporter)
    }

    /// The job this reporter writes the status of.
    pub fn job(&self) -> Option<&JobRef> {
        self.job.as_ref()
    }

    /// The address `/metrics` is served on (the bound port when port 0 was
    /// configured); `None` without a server.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.background.as_ref().and_then(Background::metrics_addr)
    }

    /// The TensorBoard event file being written, if any.
    pub fn tensorboard_file(&self) -> Option<&Path> {
        self.tensorboard.as_ref().map(EventWriter::path)
    }

    /// The Prometheus metrics (also readable without a server).
    pub fn metrics(&self) -> &TrainerMetrics {
        &self.metrics
    }

    /// Records an optimizer step: progress (with lastStepTime) and gauges on
    /// every step; logs, TensorBoard scalars and training metrics in the
    /// status every log interval and at the last step.
    pub fn step(&mut self, stats: &StepStats) {
        self.last_step = stats.step;
        self.window.sum += stats.loss;
        self.window.steps += 1;
        let log_now = stats.step % self.log_interval == 0 || stats.step >= stats.total_steps;
        if !self.rank0 {
            if log_now {
                let loss = self.window.take_mean();
                tracing::debug!(step = stats.step, loss, "training progress (not rank 0)");
            }
            return;
        }
        let now = Timestamp::now();
        self.set_step_gauges(stats, now);
        if let Some(status) = &self.status {
            status.update(false, |s| {
                s.progress = Some(Progress {
                    epoch: Some(stats.epoch),
                    eta_seconds: Some(stats.eta_seconds.max(0.0).round() as i64),
                    samples_per_second: Some(stats.samples_per_second),
                    tokens_per_second: Some(stats.tokens_per_second),
                    last_step_time: Some(Time(now)),
                    ..Progress::at(stats.step, Some(stats.total_steps))
                });
            });
        }
        if !log_now {
            return;
        }
        let loss = self.window.take_mean().unwrap_or(stats.loss);
        self.metrics.loss.set(loss);
        tracing::info!(
            step = stats.step,
            total_steps = stats.total_steps,
            loss,
            lr = stats.learning_rate,
            grad_norm = stats.grad_norm,
            loss_scale = stats.loss_scale,
            samples_per_second = stats.samples_per_second,
            tokens_per_second = stats.tokens_per_second,
            eta = %format_duration(stats.eta_seconds),
            epoch = stats.epoch,
            "training progress"
        );
        let mut scalars = vec![
            ("train/loss", loss),
            ("train/learning_rate", stats.learning_rate),
            ("train/epoch", stats.epoch),
            ("throughput/samples_per_second", stats.samples_per_second),
            ("throughput/tokens_per_second", stats.tokens_per_second),
        ];
        scalars.extend(stats.grad_norm.map(|g| ("train/grad_norm", g)));
        scalars.extend(stats.loss_scale.map(|s| ("train/loss_scale", s)));
        self.write_scalars(stats.step, scalars);
        if let Some(status) = &self.status {
            status.update(false, |s| {
                let m = s.metrics.get_or_insert_with(Default::default);
                m.train_loss = Some(loss);
                m.learning_rate = Some(stats.learning_rate);
                m.grad_norm = stats.grad_norm;
                m.loss_scale = stats.loss_scale;
            });
        }
    }

    /// Records a validation at `step`: logged, in TensorBoard and the gauges,
    /// and written to the status at once.
    pub fn validation(&mut self, step: i64, epoch: f64, metrics: &BTreeMap<String, f64>) {
        if !self.rank0 {
            tracing::debug!(step, metrics = %format_metrics(metrics), "validation (not rank 0)");
            return;
        }
        tracing::info!(step, epoch, metrics = %format_metrics(metrics), "validation");
        TrainerMetrics::set_family(&self.metrics.validation, metrics);
        self.metrics.validation_step.set(step);
        self.write_scalars(step, metrics.iter().map(|(k, v)| (k.as_str(), *v)));
        if let Some(status) = &self.status {
            status.update(true, |s| {
                let m = s.metrics.get_or_insert_with(Default::default);
                m.validation = metrics.clone();
                m.validation_step = Some(step);
            });
        }
    }

    /// Records test-split metrics (names with a `test_` prefix), at the last step.
    pub fn test_metrics(&mut self, metrics: &BTreeMap<String, f64>) {
        if !self.rank0 {
            tracing::debug!(metrics = %format_metrics(metrics), "test metrics (not rank 0)");
            return;
        }
        tracing::info!(step = self.last_step, metrics = %format_metrics(metrics), "test metrics");
        TrainerMetrics::set_family(&self.metrics.test, metrics);
        self.write_scalars(
            self.last_step,
            metrics.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        if let Some(status) = &self.status {
            status.update(true, |s| {
                s.metrics.get_or_insert_with(Default::default).test = metrics.clone();
            });
        }
    }

    /// Records how long a checkpoint took to save and how large it was (rank 0 only),
    /// for the write-throughput metrics.
    pub fn checkpoint_written(&mut self, seconds: f64, bytes: u64) {
        if !self.rank0 {
            return;
        }
        self.metrics.checkpoint_duration_seconds.observe(seconds);
        self.metrics.checkpoint_bytes.inc_by(bytes);
    }

    /// Records a saved checkpoint (and the best one, when it changed); written
    /// to the status at once (the operator decides from latestCheckpoint.step
    /// whether a restart counts).
    pub fn checkpoint_saved(&mut self, latest: CheckpointStatus, best: Option<CheckpointStatus>) {
        if !self.rank0 {
            tracing::debug!(step = latest.step, "checkpoint saved (not rank 0)");
            return;
        }
        tracing::info!(
            step = latest.step,
            uri = %latest.uri,
            best = best.as_ref().map(|b| b.uri.to_string()),
            "checkpoint saved"
        );
        self.metrics.checkpoints_saved.inc();
        self.metrics.latest_checkpoint_step.set(latest.step);
        if let Some(status) = &self.status {
            status.update(true, |s| {
                s.latest_checkpoint = Some(latest);
                if best.is_some() {
                    s.best_checkpoint = best;
                }
            });
        }
    }

    /// Records the run's output files; written to the status at once.
    pub fn artifacts(&mut self, artifacts: Artifacts) {
        if !self.rank0 {
            return;
        }
        tracing::info!(
            nemo = artifacts.nemo.as_ref().map(|a| a.uri.to_string()),
            predictions = artifacts.predictions.as_ref().map(|a| a.uri.to_string()),
            "artifacts"
        );
        if let Some(status) = &self.status {
            status.update(true, |s| s.artifacts = Some(artifacts));
        }
    }

    /// Writes the attempt's result (with everything pending) and blocks until
    /// the API server accepted it: transient errors are retried up to the
    /// configured finish timeout; a permanent one (object gone, RBAC) returns
    /// at once. Without a job (or off rank 0) it only logs.
    pub fn finish(
        &mut self,
        outcome: Outcome,
        reason: &str,
        message: &str,
        step: Option<i64>,
    ) -> TrainResult<()> {
        if !self.rank0 {
            tracing::debug!(?outcome, reason, "finished (not rank 0)");
            return Ok(());
        }
        self.flush();
        tracing::info!(?outcome, reason, message, step, "run finished");
        let (Some(status), Some(job)) = (&self.status, &self.job) else {
            return Ok(());
        };
        let result = TrainerResult {
            outcome,
            attempt: job.attempt,
            reason: reason.to_owned(),
            message: message.to_owned(),
            step,
            time: Some(Time(Timestamp::now())),
        };
        status.update(true, |s| s.result = Some(result));
        status.wait_written(self.finish_timeout).map_err(|source| {
            ReportingError::Result {
                reason: reason.to_owned(),
                namespace: job.namespace.clone(),
                name: job.name.clone(),
                source,
            }
            .into()
        })
    }

    /// Flushes the TensorBoard file (every write is flushed already).
    pub fn flush(&mut self) {
        if let Some(tb) = &mut self.tensorboard
            && let Err(e) = tb.flush()
        {
            tracing::warn!(file = %tb.path().display(), "flushing TensorBoard events: {e}");
        }
    }

    fn set_step_gauges(&self, stats: &StepStats, now: Timestamp) {
        let m = &self.metrics;
        m.step.set(stats.step);
        m.total_steps.set(stats.total_steps);
        m.epoch.set(stats.epoch);
        m.learning_rate.set(stats.learning_rate);
        if let Some(g) = stats.grad_norm {
            m.grad_norm.set(g);
        }
        if let Some(s) = stats.loss_scale {
            m.loss_scale.set(s);
        }
        m.samples_per_second.set(stats.samples_per_second);
        m.tokens_per_second.set(stats.tokens_per_second);
        m.eta_seconds.set(stats.eta_seconds);
        m.last_step_timestamp_seconds
            .set(now.as_millisecond() as f64 / 1000.0);
        if stats.skipped {
            m.skipped_steps.inc();
        }
    }

    /// Appends scalars to TensorBoard; a failing disk disables it with one warning.
    fn write_scalars<'a>(&mut self, step: i64, values: impl IntoIterator<Item = (&'a str, f64)>) {
        let Some(tb) = &mut self.tensorboard else {
            return;
        };
        if let Err(e) = tb.scalars(step, values) {
            tracing::warn!(
                file = %tb.path().display(),
                "writing TensorBoard events failed, not writing more: {e}"
            );
            self.tensorboard = None;
        }
    }
}

// The reporter may move to another thread with the hooks that own it.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Reporter>();
};
