//! BERT WordPiece tokenisation, identical to Hugging Face `BertTokenizerFast`
//! (built on the `tokenizers` crate), and the built-in Megatron vocabularies.

mod bert;
mod builtin;
mod error;

pub use bert::{BertTokenizer, Encoded, MAX_INPUT_CHARS_PER_WORD, PairWindows};
pub use builtin::BuiltinVocab;
pub use error::TokenizerError;
