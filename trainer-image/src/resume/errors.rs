//! Classification of storage and file errors for the run's exit code:
//! bad configuration or unusable checkpoints are invalid input (exit 2),
//! everything else (an unreachable server, a full disk) may pass on a retry.

use crate::checkpoint::CheckpointError;
use crate::storage::StorageError;
use crate::train::TrainError;

/// A storage error as a [`TrainError`].
pub fn storage(context: &str, e: StorageError) -> TrainError {
    let msg = format!("{context}: {e}");
    if e.is_invalid_input() {
        TrainError::InvalidInput(msg)
    } else {
        TrainError::Checkpoint(msg)
    }
}

/// A checkpoint file error as a [`TrainError`].
pub fn file(context: &str, e: CheckpointError) -> TrainError {
    let msg = format!("{context}: {e}");
    if e.is_invalid_input() && !e.is_io() {
        TrainError::InvalidInput(msg)
    } else {
        TrainError::Checkpoint(msg)
    }
}

/// A local I/O error naming what was done.
pub fn io(context: String, source: std::io::Error) -> TrainError {
    TrainError::Io { context, source }
}
