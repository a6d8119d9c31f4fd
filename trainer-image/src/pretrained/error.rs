//! Why published weights could not be resolved.

use crate::storage::StorageError;

/// A failure to resolve, download or verify a published model's files.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// No source had the weights (or none could be reached): retrying the job cannot help
    /// until a source is configured.
    #[error(
        "spec.model.pretrained {name}: the weights were found nowhere; tried:\n{tried}\nFix: set \
         spec.model.checkpoint to a copy of the weights, configure the cluster's model mirror \
         (Helm value models.mirror / operator flag --model-mirror: an s3:// prefix or http(s) \
         URL with NGC's layout), or allow the pods to reach {ngc}",
        tried = .tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n"),
        ngc = crds::published::NGC_BASE_URL
    )]
    NotFound {
        /// The published name.
        name: String,
        /// Every place tried, with what it answered.
        tried: Vec<String>,
    },
    /// The bytes a source served do not match the expected digest, on every attempt.
    #[error(
        "{uri}: sha256 {got} after {attempts} attempt(s), expected {expected}: the source serves \
         corrupt or different bytes (nothing was cached); fix or re-upload the file at the source"
    )]
    Corrupt {
        /// What was downloaded.
        uri: String,
        /// The digest the source or the table promised.
        expected: String,
        /// The digest of the last attempt's bytes.
        got: String,
        /// Attempts made.
        attempts: usize,
    },
    /// A source answered with a size other than the one it announced.
    #[error("{uri}: received {got} bytes, expected {expected}")]
    Truncated {
        /// What was downloaded.
        uri: String,
        /// Announced size.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// An HTTP request failed (connection, timeout, or a status other than 200/206/404).
    #[error("{uri}: {message}")]
    Http {
        /// The URL.
        uri: String,
        /// What happened.
        message: String,
    },
    /// `MEGATRON_MODEL_MIRROR` (or a similar setting) is not a usable location.
    #[error("{variable}={value:?}: {why}")]
    BadSetting {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and the fix.
        why: String,
    },
    /// The shared cache's manifest or a local marker does not parse.
    #[error("{uri}: {source}")]
    Manifest {
        /// The file.
        uri: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Another pod did not finish the download within the wait.
    #[error(
        "waited {seconds}s for the first pod to put {name} in the shared cache ({uri}); see \
         that pod's log"
    )]
    WaitedTooLong {
        /// The published name.
        name: String,
        /// The cache entry waited for.
        uri: String,
        /// Seconds waited.
        seconds: u64,
    },
    /// Reading or writing the job's S3 store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl PretrainedError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True when retrying the job cannot help (exit code 2).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. } | Self::Corrupt { .. } | Self::BadSetting { .. }
        )
    }

    /// The CamelCase reason for `status.result`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "ModelNotFound",
            Self::Corrupt { .. } => "ModelCorrupt",
            Self::BadSetting { .. } => "InvalidModelMirror",
            _ => "ModelDownloadFailed",
        }
    }
}

/// Result of the pretrained module.
pub type Result<T, E = PretrainedError> = std::result::Result<T, E>;
