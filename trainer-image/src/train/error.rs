//! Errors of a fine-tuning run, classified for the exit code.

/// What went wrong in a run. [`TrainError::is_invalid_input`] decides the exit
/// code: invalid input or configuration is not worth retrying (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad data, configuration or checkpoint: retrying cannot help.
    #[error("{0}")]
    InvalidInput(String),
    /// A model error (shapes, state dict keys, libtorch).
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// A tensor-parallel or data-parallel layer operation failed.
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
    /// A libtorch error outside the model.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A collective failed (a peer died or timed out).
    #[error("collective: {0}")]
    Comm(#[from] crate::comm::CommError),
    /// Reading or writing local files.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A training checkpoint could not be stored, committed or read (the store
    /// failed or is inconsistent); a retry may succeed.
    #[error("{0}")]
    Checkpoint(String),
    /// The ranks disagree: different checkpoints, evaluation shards or
    /// generator states came back from the collective.
    #[error("{0}")]
    RanksDisagree(String),
    /// The status or the metrics server failed (reporting, not training).
    /// The reporter's own error (`progress::ReportingError`), erased: the loop
    /// sits below the reporter and only passes the failure on.
    #[error(transparent)]
    Reporting(Box<dyn std::error::Error + Send + Sync>),
    /// A task's scores could not be computed or written.
    #[error("{0}")]
    Scores(String),
    /// A classification report could not be computed.
    #[error(transparent)]
    ClassificationReport(#[from] crate::scores::ClassificationReportError),
    /// The fused AdamW kernel failed.
    #[error("fused AdamW step failed: {0}")]
    Optimizer(String),
    /// An invariant of the training loop broke (a bug, worth a report).
    #[error("{0}")]
    Internal(String),
    /// A setup step (inputs, outputs) failed inside a run; a retry may succeed.
    #[error("{0}")]
    Setup(String),
}

impl TrainError {
    /// True when retrying the same run cannot succeed (exit code 2).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::InvalidInput(_))
    }
}

/// Result of the training modules.
pub type TrainResult<T> = std::result::Result<T, TrainError>;
