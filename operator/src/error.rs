//! Errors of a reconciliation.

/// Why a reconciliation failed; `reason()` labels the error metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// A child object could not be serialized.
    #[error("could not serialize {what}: {source}")]
    Serialize {
        /// Which object.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// Rendering the trainer configuration failed.
    #[error("could not render the trainer configuration: {0}")]
    Render(#[from] serde_yaml::Error),
    /// The object lacks a field every stored object has (name, namespace, uid).
    #[error("MegatronFineTune has no {0}")]
    MissingMetadata(&'static str),
    /// The reconciliation took too long.
    #[error("reconciliation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Publishing an Event failed.
    #[error("could not publish event: {0}")]
    Event(kube::Error),
}

impl Error {
    /// Short label for `megatron_operator_reconcile_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Serialize { .. } => "serialize",
            Error::Render(_) => "render",
            Error::MissingMetadata(_) => "metadata",
            Error::Event(_) => "event",
            Error::Timeout(_) => "timeout",
        }
    }
}

/// Result of reconciliation steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
