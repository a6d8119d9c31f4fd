//! Errors of setting a job up (config, inputs, outputs, model), classified for
//! the exit code: invalid input is not worth retrying (exit 2), the rest may be.

use crate::checkpoint::CheckpointError;
use crate::comm::CommError;
use crate::model::ModelError;
use crate::pretrained::PretrainedError;
use crate::storage::StorageError;
use crate::tokenizer::TokenizerError;
use crate::train::TrainError;

/// What went wrong while preparing or running a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Bad configuration, a missing or malformed input: retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// Storage (S3 or local) failed; invalid when the location or settings are
    /// wrong or the object does not exist.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The model could not be built or loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Rendezvous or a collective failed.
    #[error(transparent)]
    Comm(#[from] CommError),
    /// A published model's weights could not be resolved.
    #[error(transparent)]
    Pretrained(#[from] PretrainedError),
    /// The training loop, a task, the reporter or the checkpointer failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The run needs the S3 store (an `s3://` input, outputs to the job's S3
    /// root) but the config has no `spec.storage`, which only a run on local
    /// files writing to `--output-dir` may leave out.
    #[error("{needed_by} needs the S3 store, but the config has no spec.storage: {fix}")]
    StorageRequired {
        /// What needs the store, naming the field or location.
        needed_by: String,
        /// How to fix it.
        fix: String,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The config's spec does not deserialize; `origin` names the file.
    #[error("{origin}: {source}")]
    Spec {
        /// The config file (or other source) read.
        origin: String,
        #[source]
        source: SpecError,
    },
    /// An input object changed while it was downloaded; a retry reads the new
    /// version.
    #[error(
        "{uri}: downloaded {downloaded} bytes but the object has {expected}; it changed during \
         the download, retry"
    )]
    InputChanged {
        /// The object's URI.
        uri: String,
        /// Bytes received.
        downloaded: u64,
        /// The size the listing reported.
        expected: u64,
    },
    /// The spec asks for GPUs this rank does not see. Retryable: the pod may
    /// land on a node whose GPUs work.
    #[error(
        "spec.parallelism.device is GPU but local rank {local_rank} sees {visible} CUDA \
         device(s): check the node's GPUs and the pod's nvidia.com/gpu limit, or set \
         spec.parallelism.device: CPU"
    )]
    NoGpu {
        /// This process's `LOCAL_RANK`.
        local_rank: usize,
        /// CUDA devices libtorch sees.
        visible: usize,
    },
    /// A report could not be printed as JSON (a bug: reports always serialize).
    #[error("encoding {what} as JSON: {source}")]
    EncodeJson {
        /// What was encoded.
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The spec could not be printed as YAML (a bug: specs always serialize).
    #[error("encoding {what} as YAML: {source}")]
    EncodeYaml {
        /// What was encoded.
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
}

impl JobError {
    /// An invalid-input error with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True when retrying the same job cannot succeed (exit code 2).
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Invalid(_)
            | Self::Spec { .. }
            | Self::Tokenizer(_)
            | Self::StorageRequired { .. } => true,
            Self::Storage(e) => e.is_invalid_input() || e.is_not_found(),
            Self::Checkpoint(e) => e.is_invalid_input(),
            Self::Model(e) => e.is_invalid_input(),
            Self::Comm(e) => matches!(e, CommError::Env { .. } | CommError::Config(_)),
            Self::Train(e) => e.is_invalid_input(),
            Self::Pretrained(e) => e.is_invalid_input(),
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            Self::InputChanged { .. }
            | Self::NoGpu { .. }
            | Self::EncodeJson { .. }
            | Self::EncodeYaml { .. } => false,
        }
    }

    /// The CamelCase reason written to `status.result` for a permanent failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Storage(e) if e.is_not_found() => "InputNotFound",
            Self::Storage(_) | Self::StorageRequired { .. } => "InvalidStorage",
            Self::Checkpoint(_) => "InvalidCheckpoint",
            Self::Model(_) => "InvalidModel",
            Self::Tokenizer(_) => "InvalidTokenizer",
            Self::Comm(_) => "InvalidParallelism",
            Self::Train(_) => "InvalidData",
            Self::Pretrained(e) => e.reason(),
            Self::Io { .. } => "InputNotFound",
            Self::Invalid(_) | Self::Spec { .. } => "InvalidInput",
            // Retryable, so never written as a permanent failure's reason.
            Self::InputChanged { .. } => "InputChanged",
            Self::NoGpu { .. } => "NoGpu",
            Self::EncodeJson { .. } | Self::EncodeYaml { .. } => "Internal",
        }
    }
}

impl From<JobError> for TrainError {
    fn from(e: JobError) -> Self {
        if e.is_invalid_input() {
            TrainError::InvalidInput(e.to_string())
        } else {
            TrainError::Setup(e.to_string())
        }
    }
}

pub use crds::storage::STORAGE_FIX;

/// Result of the job modules.
pub type JobResult<T> = std::result::Result<T, JobError>;

/// Why a spec does not deserialize; messages name the field (`spec.…`).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `spec` is a scalar or a list.
    #[error("spec must be a mapping")]
    NotAMapping,
    /// A field has the wrong type or value, or a required one is missing.
    #[error("{field}: {source}")]
    Field {
        /// The path from `spec`, e.g. `spec.training.globalBatchSize`.
        field: String,
        #[source]
        source: serde_json::Error,
    },
    /// Fields the CRD does not define (usually typos, which would otherwise
    /// be silently ignored).
    #[error(
        "unknown field(s) {}: remove them or fix their spelling (see `kubectl explain \
         megatronfinetune.spec`)",
        .fields.join(", ")
    )]
    UnknownFields {
        /// Their paths, e.g. `spec.training.epochs`.
        fields: Vec<String>,
    },
}
