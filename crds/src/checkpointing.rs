//! `spec.checkpointing`: when to save, what to keep, and how to resume.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metric::{Metric, MetricMode};
use crate::uri::Uri;

/// Checkpoints (one file per tensor-parallel rank, `mp_rank_NN/<file>.ckpt`, written under the
/// job's storage root `checkpoints/step-NNNNNNNNNNNN/`; a checkpoint is complete once its
/// `manifest.json`, listing every file's size and sha256, exists).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.keepLast > 0 || has(self.best)").field_path(".keepLast").message("spec.checkpointing keeps nothing: set keepLast to 1 or more, or set spec.checkpointing.best"))]
pub struct CheckpointingSpec {
    /// Save every N optimizer steps. Default: only at validations (onValidation) and at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub interval_steps: Option<i64>,

    /// Also save after every validation pass.
    #[serde(default = "default_true")]
    pub on_validation: bool,

    /// Newest checkpoints to keep (older ones are deleted unless kept by `best`); 0 keeps only
    /// the best ones (resume then restarts from the best).
    #[serde(default = "default_keep_last")]
    #[schemars(range(min = 0, max = 1000))]
    pub keep_last: i32,

    /// Additionally keep the best checkpoints by a validation metric (NeMo's save_top_k).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestCheckpoints>,

    /// What to do when the gang (re)starts.
    #[serde(default)]
    pub resume: ResumeSpec,
}

fn default_true() -> bool {
    true
}
fn default_keep_last() -> i32 {
    2
}

impl Default for CheckpointingSpec {
    fn default() -> Self {
        Self {
            interval_steps: None,
            on_validation: true,
            keep_last: default_keep_last(),
            best: None,
            resume: ResumeSpec::default(),
        }
    }
}

/// Keep the top-k checkpoints by a metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestCheckpoints {
    /// How many to keep.
    #[serde(default = "default_top_k")]
    #[schemars(range(min = 1, max = 100))]
    pub top_k: i32,

    /// Metric ranking them (must be one the task reports; needs spec.data.validation).
    pub monitor: Metric,

    /// min or max. Default: min for val_loss, max for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<MetricMode>")]
    pub mode: Option<MetricMode>,
}

fn default_top_k() -> i32 {
    1
}

impl BestCheckpoints {
    /// `mode` or the metric's default.
    pub fn mode(&self) -> MetricMode {
        self.mode.unwrap_or(self.monitor.default_mode())
    }
}

/// Resume policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ResumePolicy {
    /// Continue from the newest complete checkpoint of this job, if any; else start fresh.
    #[default]
    Auto,
    /// Always start from the pretrained model (a restart loses progress).
    Never,
    /// First start from the checkpoint at `from` (e.g. another job's), then behave like Auto.
    From,
}

/// How a (re)started gang picks its starting point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.policy == 'From' ? has(self.from) : !has(self.from)").field_path(".policy").message("spec.checkpointing.resume.from is required with policy From and only allowed with it"))]
pub struct ResumeSpec {
    /// Auto (default), Never or From.
    #[serde(default)]
    pub policy: ResumePolicy,

    /// With policy From: a checkpoint directory written by this operator (`.../checkpoints/step-NNNNNNNNNNNN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Uri>,
}
