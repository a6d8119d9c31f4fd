//! The one error type of the gpu-check example: every failure says what was
//! being done, so a device log read once explains itself.

use megatron_trainer::comm::CommError;
use megatron_trainer::model::ModelError;
use megatron_trainer::train::TrainError;

/// Why a gpu-check subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuCheckError {
    /// `--device cuda` without a GPU libtorch can use: never a silent CPU run.
    #[error(
        "--device cuda, but libtorch sees no GPU: is LD_LIBRARY_PATH pointing at the CUDA \
         torch wheel's lib (scripts/gpu-check sets it)?"
    )]
    NoCuda,
    /// A command-line value is invalid.
    #[error("invalid argument: {0}")]
    Arg(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("collective: {0}")]
    Comm(#[from] CommError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading or writing a file, or starting a process.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A child process (a rank or a batch probe) failed or hung.
    #[error("{what}: {detail}")]
    Child { what: String, detail: String },
    /// The CPU rehearsal's stand-in for a full card (`--simulate-oom-above`):
    /// worded like libtorch's error, so the batch search treats it the same.
    #[error("CUDA out of memory (simulated above micro batch {0})")]
    SimulatedOom(i64),
    /// A shared library or symbol could not be loaded.
    #[error("loading {what}: {detail}")]
    Library { what: String, detail: String },
}

/// Result of the gpu-check subcommands.
pub type Result<T> = std::result::Result<T, GpuCheckError>;

/// Wraps an I/O error with what was being done.
pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GpuCheckError {
    let context = context.into();
    move |source| GpuCheckError::Io { context, source }
}
