//! The MegatronFineTune API, group `megatron.dev`, version `v1alpha1`.
//!
//! One custom resource describes a fine-tuning (or evaluation) run of a Megatron-LM BERT on a
//! downstream task. The operator renders pods from it and the trainer reads the same spec as
//! its configuration. Validation happens at `kubectl apply` time through the schema and the
//! CEL rules generated from these types (`crds/megatron.dev_megatronfinetunes.yaml`).

pub mod checkpointing;
pub mod crd;
pub mod data;
pub mod metric;
pub mod model;
pub mod parallelism;
pub mod pod;
pub mod published;
pub mod run_policy;
pub mod schema;
pub mod spec;
pub mod status;
pub mod storage;
pub mod task;
pub mod tokenizer;
pub mod training;
pub mod uri;
pub mod validate;

pub use checkpointing::{BestCheckpoints, CheckpointingSpec, ResumePolicy, ResumeSpec};
pub use data::{DataSpec, Split};
pub use metric::{Metric, MetricMode};
pub use model::{
    Activation, Architecture, ArchitectureError, CheckpointDir, Initialization, MegatronCheckpoint,
    ModelConfig, ModelSpec, PretrainedModel,
};
pub use parallelism::{Device, ParallelismSpec, RankPlacement};
pub use pod::PodSpec;
pub use run_policy::{Backoff, CleanPodPolicy, RunPolicy};
pub use spec::{MegatronFineTune, MegatronFineTuneSpec, Mode};
pub use status::{
    Artifact, Artifacts, CheckpointStatus, DownloadProgress, MegatronFineTuneStatus, MetricsStatus,
    ModelPhase, ModelStatus, Outcome, Phase, Progress, TrainerResult,
};
pub use storage::{CredentialsSecretRef, StorageSpec};
pub use task::{
    Head, HeadSpec, QuestionAnsweringTask, RelationExtractionTask, Task, TaskSpec, TaskType,
    TextClassificationTask, TokenClassificationTask,
};
pub use tokenizer::{TokenizerName, TokenizerSpec};
pub use training::{
    EarlyStopping, LossScaling, OptimizerSpec, Precision, SchedulerName, SchedulerSpec,
    TrainingSpec,
};
pub use uri::{Location, Uri};
pub use validate::{Allow, FieldError};

/// API group.
pub const GROUP: &str = "megatron.dev";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// Name of the CustomResourceDefinition.
pub const CRD_NAME: &str = "megatronfinetunes.megatron.dev";
