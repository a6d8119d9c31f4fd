//! [`RunHooks`]: the training loop's observers for a job, forwarding steps
//! and validations to the progress [`Reporter`] and checkpoint requests to
//! the [`Checkpointer`] (whose saved checkpoints are reported in turn, and
//! with which the TensorBoard files and the run's log are published).

use std::collections::BTreeMap;

use super::{Outputs, RunLogFile};
use crate::progress::Reporter;
use crate::resume::Checkpointer;
use crate::train::{CheckpointRequest, StepStats, TrainHooks, TrainResult};

/// Reporter + checkpointer as one [`TrainHooks`].
pub struct RunHooks<'a> {
    /// Logs, metrics, TensorBoard and status.
    pub reporter: &'a mut Reporter,
    /// Training checkpoints (None: never saved).
    pub checkpointer: Option<&'a mut Checkpointer>,
    /// What to publish after each saved checkpoint (S3 outputs).
    pub publish: Option<Publish<'a>>,
}

/// Outputs published with each checkpoint, so the run can be plotted and
/// its log read while it trains.
pub struct Publish<'a> {
    /// The job's outputs.
    pub outputs: &'a Outputs,
    /// The runtime uploads run on.
    pub runtime: &'a tokio::runtime::Runtime,
    /// Publish `tensorboard/` (global rank 0).
    pub tensorboard: bool,
    /// This rank's log.
    pub log: Option<&'a RunLogFile>,
}

impl TrainHooks for RunHooks<'_> {
    fn on_step(&mut self, stats: &StepStats) -> TrainResult<()> {
        self.reporter.step(stats);
        Ok(())
    }

    fn on_validation(
        &mut self,
        step: i64,
        epoch: f64,
        metrics: &BTreeMap<String, f64>,
    ) -> TrainResult<()> {
        self.reporter.validation(step, epoch, metrics);
        Ok(())
    }

    fn on_checkpoint(&mut self, request: CheckpointRequest<'_>) -> TrainResult<()> {
        let Some(checkpointer) = self.checkpointer.as_deref_mut() else {
            return Ok(());
        };
        let step = request.state.step;
        let started = std::time::Instant::now();
        if let Some(mut saved) = checkpointer.save(request)? {
            let seconds = started.elapsed().as_secs_f64();
            self.reporter.checkpoint_written(seconds, saved.bytes);
            if saved.latest.step == step {
                saved.latest.duration_seconds = Some(seconds);
            }
            // Published before the checkpoint is reported: once status names
            // it, the curves up to it are in the store too.
            if let Some(p) = &self.publish {
                // The run goes on without them; the next checkpoint or the end retries.
                if p.tensorboard {
                    self.reporter.flush();
                    if let Err(e) = p.outputs.publish_dir(p.runtime, "tensorboard") {
                        tracing::warn!(error = %e, "publishing the TensorBoard files failed");
                    }
                }
                if let Some(log) = p.log {
                    log.publish(p.outputs, p.runtime);
                }
            }
            self.reporter.checkpoint_saved(saved.latest, saved.best);
        }
        Ok(())
    }
}
