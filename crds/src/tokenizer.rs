//! `spec.tokenizer`: the WordPiece vocabulary and casing.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::uri::Uri;

/// Vocabulary size of the uncased BERT WordPiece vocabulary (bert-large-uncased).
pub const UNCASED_VOCAB_SIZE: i64 = 30522;
/// Vocabulary size of the cased BERT WordPiece vocabulary (bert-large-cased).
pub const CASED_VOCAB_SIZE: i64 = 28996;

/// Built-in WordPiece vocabularies (NeMo's Megatron tokenizer names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TokenizerName {
    /// The uncased BERT vocabulary (30522 tokens), lower-cases input.
    #[serde(rename = "megatron-bert-uncased")]
    MegatronBertUncased,
    /// The cased BERT vocabulary (28996 tokens), keeps case.
    #[serde(rename = "megatron-bert-cased")]
    MegatronBertCased,
}

impl TokenizerName {
    /// Number of tokens in the vocabulary.
    pub fn vocab_size(self) -> i64 {
        match self {
            Self::MegatronBertUncased => UNCASED_VOCAB_SIZE,
            Self::MegatronBertCased => CASED_VOCAB_SIZE,
        }
    }

    /// Whether this vocabulary expects lower-cased input.
    pub fn lower_case(self) -> bool {
        matches!(self, Self::MegatronBertUncased)
    }
}

/// The tokenizer: a built-in vocabulary or a vocab.txt file (NeMo's model.tokenizer). Defaults
/// to the pretrained name's vocabulary; a .nemo carries its own (leave this unset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.vocabFile)").message("spec.tokenizer: set exactly one of spec.tokenizer.name (megatron-bert-uncased or megatron-bert-cased) or spec.tokenizer.vocabFile"))]
pub struct TokenizerSpec {
    /// A built-in vocabulary (NeMo's tokenizer_name): megatron-bert-uncased or megatron-bert-cased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<TokenizerName>")]
    pub name: Option<TokenizerName>,

    /// A WordPiece vocab.txt (one token per line, line number = id), e.g. BioMegatron's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_file: Option<Uri>,

    /// Lower-case text before tokenizing. Default: true for uncased names/models, false otherwise
    /// (a vocabFile defaults to the pretrained name's casing, or false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_lower_case: Option<bool>,
}
