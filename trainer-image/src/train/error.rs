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
    /// Anything else that may succeed on a retry (storage, reporting, ...).
    #[error("{0}")]
    Other(String),
}

impl TrainError {
    /// True when retrying the same run cannot succeed (exit code 2).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::InvalidInput(_))
    }
}

/// Result of the training modules.
pub type TrainResult<T> = std::result::Result<T, TrainError>;
