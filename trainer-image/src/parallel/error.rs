//! Errors of the tensor-parallel layers (the model wraps them; this module
//! knows nothing of models, as Megatron-LM's `tensor_parallel` does not).

/// What can go wrong splitting a layer over ranks or running its collectives.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// The tensor-parallel size does not divide a dimension that must be split.
    #[error("tensor-parallel size {tp} does not divide {what} ({value})")]
    NotDivisible {
        /// The split dimension.
        what: String,
        /// Its size.
        value: i64,
        /// The tensor-parallel size.
        tp: i64,
    },
    /// A collective failed.
    #[error("collective failed: {0}")]
    Comm(String),
    /// libtorch raised an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl ParallelError {
    /// True for a shape that cannot be split: retrying cannot help.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::NotDivisible { .. })
    }
}

/// Result of the tensor-parallel layers.
pub type Result<T, E = ParallelError> = std::result::Result<T, E>;
