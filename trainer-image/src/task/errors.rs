//! Turning data and configuration problems into [`TrainError::InvalidInput`].

use std::path::Path;

use crate::data::DataError;
use crate::train::TrainError;

/// A data error (it names the file, the line and the problem) as invalid input.
pub(crate) fn data_error(e: DataError) -> TrainError {
    TrainError::InvalidInput(e.to_string())
}

/// A problem at `file:line`.
pub(crate) fn at_line(file: &Path, line: usize, problem: impl std::fmt::Display) -> TrainError {
    TrainError::InvalidInput(format!("{}:{line}: {problem}", file.display()))
}

/// A problem with a whole file.
pub(crate) fn in_file(file: &Path, problem: impl std::fmt::Display) -> TrainError {
    TrainError::InvalidInput(format!("{}: {problem}", file.display()))
}

/// A problem with a spec field.
pub(crate) fn spec_field(field: &str, problem: impl std::fmt::Display) -> TrainError {
    TrainError::InvalidInput(format!("{field}: {problem}"))
}
