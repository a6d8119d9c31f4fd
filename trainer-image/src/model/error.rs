//! Errors of model construction, configuration parsing and state-dict loading.

/// Everything that can go wrong building, configuring or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration file or value is invalid; `field` names the key to fix.
    #[error("invalid model config field `{field}`: {message}")]
    Config { field: String, message: String },
    /// A configuration file could not be parsed as JSON or YAML.
    #[error("model config is neither valid JSON nor YAML: {0}")]
    ConfigSyntax(String),
    /// A parameter the model needs is absent from the state dict.
    #[error("state dict is missing parameter `{0}`")]
    MissingKey(String),
    /// A state dict holds parameters this model does not have.
    #[error(
        "state dict has parameters this model does not know: {0:?} (wrong architecture or head?)"
    )]
    UnexpectedKeys(Vec<String>),
    /// A parameter has the wrong shape for this model and tensor-parallel rank.
    #[error(
        "parameter `{key}` has shape {got:?}, the model expects {expected:?} (check the config and the tensor-parallel size of the shard)"
    )]
    Shape {
        key: String,
        expected: Vec<i64>,
        got: Vec<i64>,
    },
    /// The tensor-parallel size does not divide a dimension that must be split.
    #[error("tensor-parallel size {tp} does not divide {what} ({value})")]
    NotDivisible { what: String, value: i64, tp: i64 },
    /// Invalid inputs to a forward pass or loss.
    #[error("invalid model input: {0}")]
    Input(String),
    /// A collective failed.
    #[error("collective failed: {0}")]
    Comm(String),
    /// The model-parallel generator could not be set up.
    #[error("model-parallel generator: {0}")]
    Rng(#[from] crate::parallel::random::RngError),
    /// A tensor-parallel layer failed.
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
    /// libtorch raised an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl ModelError {
    /// True when retrying cannot help (a bad config, shape or input); false for
    /// libtorch and collective failures.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Torch(_) | Self::Comm(_) | Self::Rng(_) => false,
            Self::Parallel(e) => e.is_invalid_input(),
            _ => true,
        }
    }
}

/// Result alias for model operations.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
