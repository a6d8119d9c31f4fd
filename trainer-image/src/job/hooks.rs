//! [`RunHooks`]: the training loop's observers for a job, forwarding steps
//! and validations to the progress [`Reporter`] and checkpoint requests to
//! the [`Checkpointer`] (whose saved checkpoints are reported in turn, and
//! with which the TensorBoard files are published).

use std::collections::BTreeMap;

use super::Outputs;
use crate::checkpoint::training::Checkpointer;
use crate::progress::Reporter;
use crate::train::{CheckpointRequest, StepStats, TrainHooks, TrainResult};

/// Reporter + checkpointer as one [`TrainHooks`].
pub struct RunHooks<'a> {
    /// Logs, metrics, TensorBoard and status.
    pub reporter: &'a mut Reporter,
    /// Training checkpoints (None: never saved).
    pub checkpointer: Option<&'a mut Checkpointer>,
    /// Where to publish `tensorboard/` after each saved checkpoint (global
    /// rank 0 with S3 outputs), so the run can be plotted while it trains.
    pub tensorboard: Option<(&'a Outputs, &'a tokio::runtime::Runtime)>,
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
        if let Some(saved) = checkpointer.save(request)? {
            // Published before the checkpoint is reported: once status names
            // it, the curves up to it are in the store too.
            if let Some((outputs, runtime)) = self.tensorboard {
                self.reporter.flush();
                // The run goes on without it; the next checkpoint or the end retries.
                if let Err(e) = outputs.publish_dir(runtime, "tensorboard") {
                    tracing::warn!(error = %e, "publishing the TensorBoard files failed");
                }
            }
            self.reporter.checkpoint_saved(saved.latest, saved.best);
        }
        Ok(())
    }
}
