//! `status`: what the operator and the trainer report.
//!
//! Ownership (server-side apply field managers): the operator (`megatron-operator`) writes
//! phase, conditions, observedGeneration, restarts, ranks, pods, startTime and completionTime;
//! rank 0 of the trainer (`megatron-trainer`, through the status subresource with the per-job
//! ServiceAccount) writes progress, metrics, latestCheckpoint, bestCheckpoint, artifacts and,
//! last of all before exiting, result.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::uri::Uri;

/// Coarse lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted; pods are being created or scheduled.
    Pending,
    /// Every rank is up and training (or evaluating).
    Running,
    /// A failure, hang or lost node stopped the gang; it restarts after the backoff.
    Restarting,
    /// Finished: rank 0 reported success for the current attempt; the gang is scaled to zero.
    Succeeded,
    /// Gave up (restarts exhausted, deadline passed, or the trainer reported a permanent error).
    Failed,
    /// spec.runPolicy.suspend is true; no pods run.
    Suspended,
    /// Waiting for Kueue to admit the job (label `kueue.x-k8s.io/queue-name`), at first or
    /// after an eviction; no pods run. Re-admitted, it resumes from its latest checkpoint.
    Queued,
}

impl Phase {
    /// The phase as written in status (and in `kubectl get` and Events).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Restarting => "Restarting",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Suspended => "Suspended",
            Self::Queued => "Queued",
        }
    }

    /// Succeeded or Failed.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Condition types (status "True"/"False"/"Unknown", kstatus-compatible).
pub mod condition_types {
    /// kstatus: the job is doing what it should (Running or Succeeded).
    pub const READY: &str = "Ready";
    /// All pods are scheduled and every rank joined the process group.
    pub const RUNNING: &str = "Running";
    /// The job finished successfully (terminal).
    pub const SUCCEEDED: &str = "Succeeded";
    /// The job failed permanently (terminal).
    pub const FAILED: &str = "Failed";
    /// The gang is stopped because of spec.runPolicy.suspend.
    pub const SUSPENDED: &str = "Suspended";
    /// kstatus: the operator is still converging on the spec (True while Pending/Restarting).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: progress is blocked and needs a person (e.g. a missing Secret or bad image).
    pub const STALLED: &str = "Stalled";
    /// The pretrained weights are resolved (False with reason Fetching while they download).
    pub const MODEL_READY: &str = "ModelReady";
    /// Kueue holds the job: not admitted yet (reason WaitingForAdmission) or evicted (reason
    /// Evicted, the message carries Kueue's reason: Preempted, PodsReadyTimeout, ...).
    pub const QUEUED: &str = "Queued";
}

/// Reasons of the Queued condition.
pub mod queue_reasons {
    /// Kueue has not admitted the job's Workload yet.
    pub const WAITING_FOR_ADMISSION: &str = "WaitingForAdmission";
    /// Kueue evicted the running gang; it waits to be admitted again.
    pub const EVICTED: &str = "Evicted";
    /// Kueue admitted the job (condition False).
    pub const ADMITTED: &str = "Admitted";
}

/// Reasons of the ModelReady condition.
pub mod model_reasons {
    /// The weights are downloading (the message says bytes, rate and ETA).
    pub const FETCHING: &str = "Fetching";
    /// The weights are local and verified (the message names the source).
    pub const RESOLVED: &str = "Resolved";
}

/// Observed state of a MegatronFineTune.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MegatronFineTuneStatus {
    /// Pending, Running, Restarting, Succeeded, Failed, Suspended or Queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<Phase>")]
    pub phase: Option<Phase>,

    /// Conditions by type: Running, Succeeded, Failed, Suspended, Queued, Reconciling, Stalled,
    /// Ready, ModelReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Gang restarts so far (compared with spec.runPolicy.maxRestarts).
    #[serde(default)]
    pub restarts: i32,

    /// Restarts that count against spec.runPolicy.maxRestarts: those with no checkpoint newer
    /// than at the previous restart (restarts that made progress are free). Operator-owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_restarts: Option<i32>,

    /// When the last gang restart was decided; its backoff runs from here. Operator-owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<Time>,

    /// latestCheckpoint.step when the last restart was decided. Operator-owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_checkpoint_step: Option<i64>,

    /// Times Kueue evicted the running gang (preemption, PodsReady timeout, ...); each went back
    /// to Queued and resumed from its latest checkpoint. Not counted against maxRestarts.
    /// Operator-owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions: Option<i32>,

    /// World size (tensorParallelSize x dataParallelSize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<i64>,

    /// Pods of the gang that are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pods: Option<i64>,

    /// The pretrained weights this job started from: where they came from and what they are.
    /// Written by the trainer (field manager `megatron-trainer-model`) while they are fetched
    /// and once they are loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelStatus>,

    /// Training progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,

    /// Latest training and evaluation metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsStatus>,

    /// Newest complete checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_checkpoint: Option<CheckpointStatus>,

    /// Best checkpoint by spec.checkpointing.best.monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_checkpoint: Option<CheckpointStatus>,

    /// Files produced by a successful run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,

    /// When the first gang started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the job reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The trainer's final report (see [`TrainerResult`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TrainerResult>,
}

/// Where a job's pretrained weights are in their resolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ModelPhase {
    /// Downloading from the mirror or NGC (see `download`).
    #[default]
    Fetching,
    /// The files are local and verified; `config` is filled once they are loaded.
    Ready,
}

/// The pretrained weights of a job (`status.model`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// The published name (spec.model.pretrained).
    pub name: String,
    /// NGC's version of the published model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Fetching or Ready.
    pub phase: ModelPhase,
    /// Where the weights' bytes came from for this attempt (the shared cache, the mirror or NGC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The shared cache entry that holds them for later jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Hex sha256 of the weights file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size of the weights file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// A download in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadProgress>,
    /// The architecture the weights were loaded with (from the checkpoint's args, else the
    /// published one), e.g. "24 layers, hidden 1024, 16 heads, vocabulary 30522".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// When this was last written (a download in progress counts as liveness for hang detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Time>,
}

/// Bytes, rate and ETA of a download.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadProgress {
    /// The file being downloaded.
    pub file: String,
    /// Bytes received so far (resumed bytes included).
    pub bytes: i64,
    /// Size of the file, when the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Recent rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
    /// Estimated seconds left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
}

impl DownloadProgress {
    /// "model_optim_rng.pt: 412.0 of 1340.2 MB at 85.3 MB/s, ETA 11s" for logs and conditions.
    pub fn summary(&self) -> String {
        let mb = |b: i64| b as f64 / 1e6;
        let mut s = match self.total_bytes {
            Some(t) => format!("{}: {:.1} of {:.1} MB", self.file, mb(self.bytes), mb(t)),
            None => format!("{}: {:.1} MB", self.file, mb(self.bytes)),
        };
        if let Some(r) = self.bytes_per_second {
            s += &format!(" at {:.1} MB/s", r / 1e6);
        }
        if let Some(e) = self.eta_seconds {
            s += &format!(", ETA {e}s");
        }
        s
    }
}

/// Training progress, updated every spec.training.logIntervalSteps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Optimizer steps completed.
    pub step: i64,
    /// Steps of the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<i64>,
    /// 100 x step / totalSteps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Human summary for `kubectl get`, e.g. "1200/5000 (24%)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Fractional epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<f64>,
    /// Estimated seconds left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// Training samples per second (whole job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_second: Option<f64>,
    /// Non-padding tokens per second (whole job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// When the latest step finished (the operator's hang detection reads this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step_time: Option<Time>,
}

impl Progress {
    /// Builds progress with percent and summary filled from step and total.
    pub fn at(step: i64, total_steps: Option<i64>) -> Self {
        let percent = total_steps
            .filter(|t| *t > 0)
            .map(|t| (100.0 * step as f64 / t as f64).clamp(0.0, 100.0));
        let summary = Some(match (total_steps, percent) {
            (Some(t), Some(p)) => format!("{step}/{t} ({p:.0}%)"),
            _ => format!("{step}"),
        });
        Self {
            step,
            total_steps,
            percent,
            summary,
            ..Default::default()
        }
    }
}

/// Latest metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsStatus {
    /// Training loss averaged over the last logging interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Current learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Global gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// fp16 loss scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// Latest validation metrics by name (val_loss, val_f1, val_exact_match, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validation: BTreeMap<String, f64>,
    /// Step of the latest validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_step: Option<i64>,
    /// Test-split metrics (after training, or the Evaluate run), named like validation's
    /// with a test_ prefix (test_loss, test_f1, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub test: BTreeMap<String, f64>,
}

/// A saved checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    /// Optimizer step it holds.
    pub step: i64,
    /// Its directory (`step-NNNNNNNNNNNN` under the job's checkpoints root).
    pub uri: Uri,
    /// When it became complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Name of the monitored metric, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
    /// Its value at this checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    /// Seconds the save took (every rank's file written and uploaded, the set committed).
    /// The operator sizes the grace period of a gang it stops from it, so that the
    /// checkpoint the ranks save on SIGTERM fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

/// Output files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifacts {
    /// The fine-tuned model as a .nemo (one mp_rank_NN per tensor-parallel rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nemo: Option<Artifact>,
    /// Predictions on the test split (JSON), when a test split ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<Artifact>,
}

/// One output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Where it is.
    pub uri: Uri,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Lower-case hex SHA-256 of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// Outcome the trainer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    /// Training/evaluation finished and artifacts are uploaded.
    Succeeded,
    /// A permanent error (bad data, bad config, missing file): restarting will not help.
    Failed,
}

/// The completion protocol: rank 0 writes this once, after uploading artifacts, and then keeps
/// running until the operator scales the gang to zero (StatefulSet pods always restart, so
/// exiting would run the trainer again). The operator marks the job Succeeded when
/// result.outcome is Succeeded and its attempt equals status.restarts; outcome Failed ends the
/// job without restarts. A rank exiting with no result for the current attempt is a transient
/// failure and triggers a gang restart, except exit code 2 (invalid input), which fails the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainerResult {
    /// Succeeded or Failed.
    pub outcome: Outcome,
    /// The gang attempt that wrote it (status.restarts at its start, from MEGATRON_ATTEMPT).
    pub attempt: i32,
    /// CamelCase machine-readable reason (e.g. Completed, EarlyStopped, InvalidData).
    #[schemars(length(max = 128))]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 4096))]
    pub message: String,
    /// Final optimizer step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// When it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_summary() {
        let p = Progress::at(1200, Some(5000));
        assert_eq!(p.percent, Some(24.0));
        assert_eq!(p.summary.as_deref(), Some("1200/5000 (24%)"));
        assert_eq!(Progress::at(7, None).summary.as_deref(), Some("7"));
        assert_eq!(Progress::at(10, Some(0)).percent, None);
    }
}
