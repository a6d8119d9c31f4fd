//! Errors of a reconciliation.

/// Why a reconciliation failed; [`Error::reason`] says what kind of failure it is.
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
    /// The job's `kueue.x-k8s.io/priority-class` names no WorkloadPriorityClass.
    #[error(
        "label kueue.x-k8s.io/priority-class names WorkloadPriorityClass {name:?}, which cannot \
         be read ({source}): create it or fix the label"
    )]
    PriorityClass {
        /// The class named.
        name: String,
        /// Why it could not be read.
        source: kube::Error,
    },
}

/// What kind of failure an [`Error`] is: the reconciler's retry decision and the
/// `megatron_operator_reconcile_errors_total{reason}` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// 409: the object changed since it was read.
    Conflict,
    /// Another API error.
    Api,
    /// The client failed (connection, TLS, decoding).
    Client,
    /// A child could not be serialized.
    Serialize,
    /// The trainer configuration could not be rendered.
    Render,
    /// The object lacks name, namespace or uid.
    Metadata,
    /// An Event could not be published.
    Event,
    /// The reconciliation timed out.
    Timeout,
    /// A Kueue object the job names is missing.
    Kueue,
}

impl ErrorReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Api => "api",
            Self::Client => "client",
            Self::Serialize => "serialize",
            Self::Render => "render",
            Self::Metadata => "metadata",
            Self::Event => "event",
            Self::Timeout => "timeout",
            Self::Kueue => "kueue",
        }
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => ErrorReason::Conflict,
            Error::Kube(kube::Error::Api(_)) => ErrorReason::Api,
            Error::Kube(_) => ErrorReason::Client,
            Error::Serialize { .. } => ErrorReason::Serialize,
            Error::Render(_) => ErrorReason::Render,
            Error::MissingMetadata(_) => ErrorReason::Metadata,
            Error::Event(_) => ErrorReason::Event,
            Error::Timeout(_) => ErrorReason::Timeout,
            Error::PriorityClass { .. } => ErrorReason::Kueue,
        }
    }
}

/// Result of reconciliation steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
