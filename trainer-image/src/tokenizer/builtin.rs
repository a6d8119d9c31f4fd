//! The standard BERT vocabularies carried inside the trainer (see
//! `assets/vocab/SOURCE.md`) and the Megatron/NeMo names that resolve to them.

use super::TokenizerError;

/// A vocabulary embedded in the trainer binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinVocab {
    /// Google's BERT-Base uncased vocabulary (30522 entries); lower-cases input.
    BertUncased,
    /// Google's BERT-Base cased vocabulary (28996 entries); keeps case.
    BertCased,
}

const UNCASED: &str = include_str!("../../assets/vocab/bert-base-uncased-vocab.txt");
const CASED: &str = include_str!("../../assets/vocab/bert-base-cased-vocab.txt");

/// Names accepted by [`BuiltinVocab::from_name`] (NeMo's Megatron tokenizer and
/// pretrained-model names), with the vocabulary each resolves to.
pub const NAMES: &[(&str, BuiltinVocab)] = &[
    ("megatron-bert-uncased", BuiltinVocab::BertUncased),
    ("megatron-bert-345m-uncased", BuiltinVocab::BertUncased),
    ("bert-base-uncased", BuiltinVocab::BertUncased),
    ("bert-large-uncased", BuiltinVocab::BertUncased),
    ("megatron-bert-cased", BuiltinVocab::BertCased),
    ("megatron-bert-345m-cased", BuiltinVocab::BertCased),
    ("bert-base-cased", BuiltinVocab::BertCased),
    ("bert-large-cased", BuiltinVocab::BertCased),
];

impl BuiltinVocab {
    /// Resolves a tokenizer or pretrained-model name. BioMegatron names are not
    /// resolved (those models shipped their own vocabulary): the error tells the
    /// user to give `tokenizer.vocabFile`.
    pub fn from_name(name: &str) -> Result<Self, TokenizerError> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, v)| *v)
            .ok_or_else(|| TokenizerError::UnknownName {
                name: name.to_string(),
                known: NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            })
    }

    /// The vocabulary text, one token per line, line number = token id.
    pub fn text(self) -> &'static str {
        match self {
            Self::BertUncased => UNCASED,
            Self::BertCased => CASED,
        }
    }

    /// Whether this vocabulary expects lower-cased, accent-stripped input.
    pub fn lowercase(self) -> bool {
        matches!(self, Self::BertUncased)
    }

    /// A short name for messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::BertUncased => "built-in bert-base-uncased",
            Self::BertCased => "built-in bert-base-cased",
        }
    }
}
