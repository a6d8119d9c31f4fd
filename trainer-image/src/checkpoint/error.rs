//! Errors of checkpoint reading and writing.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing a checkpoint.
///
/// Every variant except [`CheckpointError::Io`] and [`CheckpointError::Torch`]
/// means the input itself is invalid (not worth retrying).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not follow the expected format.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// The checkpoint is readable but its contents cannot be used as asked.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// libtorch rejected an operation.
    #[error("{context}: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },
}

impl CheckpointError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error in `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Unusable contents in `path`.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A libtorch error while doing `context`.
    pub fn torch(context: impl Into<String>, source: tch::TchError) -> Self {
        Self::Torch {
            context: context.into(),
            source,
        }
    }

    /// True when the input is invalid (retrying will not help); false for
    /// I/O and libtorch failures, which may be transient.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Format { .. } | Self::Invalid { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::PermissionDenied
            ),
            Self::Torch { .. } => false,
        }
    }
}

/// Result with a [`CheckpointError`].
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;
