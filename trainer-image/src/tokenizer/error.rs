//! Errors raised while building or running the tokenizer.

use std::path::PathBuf;

/// A tokenizer could not be built or could not encode its input.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The vocabulary file could not be read.
    #[error("cannot read vocabulary file {path}: {source}")]
    ReadVocab {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The vocabulary is unusable (empty, duplicate entries, missing special tokens).
    #[error("vocabulary {origin}: {problem}")]
    BadVocab {
        /// Where the vocabulary came from (file path or built-in name).
        origin: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A tokenizer name that has no built-in vocabulary.
    #[error(
        "tokenizer name {name:?} has no built-in vocabulary; known names: {known}. \
         Give the vocabulary with tokenizer.vocabFile (one WordPiece token per line) \
         and tokenizer.doLowerCase instead"
    )]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The names that resolve.
        known: String,
    },
    /// The `tokenizers` library refused the input or the configuration.
    #[error("tokenizer: {0}")]
    Encode(String),
}
