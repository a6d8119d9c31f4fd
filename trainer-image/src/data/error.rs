//! Errors raised while reading task data: each names the file, the line (or
//! JSON path) and the problem.

use std::path::PathBuf;

use crate::tokenizer::TokenizerError;

/// Task data could not be read or turned into features.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a text file breaks the format.
    #[error("{}:{line}: {problem}", file.display())]
    Line {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A file breaks the format as a whole (or at a JSON path).
    #[error("{}: {problem}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong, where, and how to fix it.
        problem: String,
    },
    /// A setting is out of range.
    #[error("data config: {0}")]
    Config(String),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

impl DataError {
    pub(crate) fn line(file: &std::path::Path, line: usize, problem: impl Into<String>) -> Self {
        Self::Line {
            file: file.to_path_buf(),
            line,
            problem: problem.into(),
        }
    }

    pub(crate) fn file(file: &std::path::Path, problem: impl Into<String>) -> Self {
        Self::File {
            file: file.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// Reads a whole UTF-8 file, naming it in the error.
pub(crate) fn read_text(file: &std::path::Path) -> Result<String, DataError> {
    let bytes = std::fs::read(file).map_err(|source| DataError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        DataError::line(file, line, "not valid UTF-8; save the file as UTF-8")
    })
}

/// Lines of a text file with their 1-based numbers; a final newline does not
/// make an extra empty line, `\r\n` endings are accepted.
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let empty = text.is_empty();
    body.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(move |_| !empty)
}
