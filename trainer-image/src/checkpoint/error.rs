//! Errors of checkpoint reading and writing.

use std::path::PathBuf;

use torch_pickle::PickleError;

use super::megatron::args::MissingArg;
use super::megatron::qkv::QkvError;
use super::nemo::model_config::ModelConfigError;
use crate::model::ModelError;

/// Everything that can go wrong reading or writing a checkpoint.
///
/// Every variant except [`CheckpointError::Io`] and [`CheckpointError::Torch`]
/// (and a [`CheckpointError::Pickle`] that is an I/O error) means the input
/// itself is invalid (not worth retrying).
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
    /// A `.nemo` archive's `model_config.yaml` cannot be restored. The
    /// sources of this and the next variants are boxed to keep this enum as
    /// small as before they carried typed causes.
    #[error("{path}: model_config.yaml: {source}")]
    NemoModelConfig {
        path: PathBuf,
        #[source]
        source: Box<ModelConfigError>,
    },
    /// The architecture (an encoder config file, an inline config or a
    /// published name) is not a usable model config; `context` names where
    /// it came from.
    #[error("{path}: {context}: {source}")]
    ModelConfig {
        path: PathBuf,
        context: String,
        #[source]
        source: Box<ModelError>,
    },
    /// A Megatron checkpoint's `args` lack a field the model config needs.
    #[error("{path}: {source}; the checkpoint args are incomplete")]
    IncompleteArgs {
        path: PathBuf,
        #[source]
        source: MissingArg,
    },
    /// A QKV tensor of an older Megatron checkpoint version could not be put
    /// in the canonical row order; `tensor` names it.
    #[error("{path}: {tensor}: {source}")]
    Qkv {
        path: PathBuf,
        tensor: String,
        #[source]
        source: Box<QkvError>,
    },
    /// A `torch.save` file could not be read or written (the error names
    /// the file). Boxed to keep this enum, and every `Result` carrying it,
    /// small.
    #[error(transparent)]
    Pickle(Box<PickleError>),
}

impl From<PickleError> for CheckpointError {
    fn from(e: PickleError) -> Self {
        Self::Pickle(Box::new(e))
    }
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
            Self::Format { .. }
            | Self::Invalid { .. }
            | Self::NemoModelConfig { .. }
            | Self::ModelConfig { .. }
            | Self::IncompleteArgs { .. }
            | Self::Qkv { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::PermissionDenied
            ),
            Self::Torch { .. } => false,
            Self::Pickle(e) => e.is_invalid_input(),
        }
    }

    /// True when a file or directory could not be opened, read or written
    /// (as opposed to having unusable contents).
    pub fn is_io(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Pickle(e) => e.is_io(),
            _ => false,
        }
    }
}

/// Result with a [`CheckpointError`].
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;
