//! `spec.model`: where the weights come from and the network's architecture.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tokenizer::TokenizerName;
pub use crate::tokenizer::{CASED_VOCAB_SIZE, UNCASED_VOCAB_SIZE};
use crate::uri::Uri;

/// Pretrained Megatron-LM BERT names, as NeMo's `model.language_model.pretrained_model_name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PretrainedModel {
    /// Megatron-BERT 345M (24 layers, hidden 1024, 16 heads), uncased BERT vocabulary (30522).
    #[serde(rename = "megatron-bert-345m-uncased")]
    MegatronBert345mUncased,
    /// Megatron-BERT 345M, cased BERT vocabulary (28996).
    #[serde(rename = "megatron-bert-345m-cased")]
    MegatronBert345mCased,
    /// BioMegatron 345M (PubMed), uncased BERT vocabulary (30522).
    #[serde(rename = "biomegatron-bert-345m-uncased")]
    BioMegatronBert345mUncased,
    /// BioMegatron 345M (PubMed), cased BERT vocabulary (28996).
    #[serde(rename = "biomegatron-bert-345m-cased")]
    BioMegatronBert345mCased,
    /// Any Megatron-LM BERT with the uncased BERT tokenizer: needs `checkpoint` and `config`/`configFile`.
    #[serde(rename = "megatron-bert-uncased")]
    MegatronBertUncased,
    /// Any Megatron-LM BERT with the cased BERT tokenizer: needs `checkpoint` and `config`/`configFile`.
    #[serde(rename = "megatron-bert-cased")]
    MegatronBertCased,
}

/// Attention heads of every published 345M model (CEL rules use the same number).
pub const HEADS_345M: i64 = 16;

impl PretrainedModel {
    /// Every name, in the order the CRD lists them.
    pub const ALL: [PretrainedModel; 6] = [
        Self::MegatronBert345mUncased,
        Self::MegatronBert345mCased,
        Self::BioMegatronBert345mUncased,
        Self::BioMegatronBert345mCased,
        Self::MegatronBertUncased,
        Self::MegatronBertCased,
    ];

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MegatronBert345mUncased => "megatron-bert-345m-uncased",
            Self::MegatronBert345mCased => "megatron-bert-345m-cased",
            Self::BioMegatronBert345mUncased => "biomegatron-bert-345m-uncased",
            Self::BioMegatronBert345mCased => "biomegatron-bert-345m-cased",
            Self::MegatronBertUncased => "megatron-bert-uncased",
            Self::MegatronBertCased => "megatron-bert-cased",
        }
    }

    /// True for the two generic names, which carry no weights or architecture of their own.
    pub fn is_generic(self) -> bool {
        matches!(self, Self::MegatronBertUncased | Self::MegatronBertCased)
    }

    /// Whether text is lower-cased before WordPiece tokenization.
    pub fn lower_case(self) -> bool {
        matches!(
            self,
            Self::MegatronBert345mUncased
                | Self::BioMegatronBert345mUncased
                | Self::MegatronBertUncased
        )
    }

    /// The tokenizer this model was trained with.
    pub fn tokenizer(self) -> TokenizerName {
        if self.lower_case() {
            TokenizerName::MegatronBertUncased
        } else {
            TokenizerName::MegatronBertCased
        }
    }

    /// Unpadded vocabulary size of the model's tokenizer.
    pub fn vocab_size(self) -> i64 {
        self.tokenizer().vocab_size()
    }

    /// The published architecture (None for the generic names).
    pub fn architecture(self) -> Option<Architecture> {
        (!self.is_generic()).then(|| Architecture::bert_345m(self.vocab_size()))
    }
}

impl std::fmt::Display for PretrainedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the encoder's weights start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Initialization {
    /// From pretrained weights: `checkpoint`, `nemo`, or the published name's (a job with
    /// none of them fails at once instead of training from random weights).
    #[default]
    Pretrained,
    /// From random weights (seeded), for tests and benchmarks: the architecture comes from
    /// the published name or `config`/`configFile`.
    Random,
}

/// The pretrained model: exactly one source of weights (`pretrained`, `checkpoint` or `nemo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.nemo) || has(self.pretrained) || has(self.checkpoint) || (has(self.initialization) && self.initialization == 'Random' && (has(self.config) || has(self.configFile)))").message("spec.model needs a source: set spec.model.pretrained (a published name), spec.model.checkpoint (a Megatron-LM checkpoint) or spec.model.nemo (a .nemo file)"))]
#[x_kube(validation = Rule::new("!has(self.nemo) || !(has(self.pretrained) || has(self.checkpoint) || has(self.config) || has(self.configFile))").field_path(".nemo").message("spec.model.nemo restores a complete model: remove spec.model.pretrained, spec.model.checkpoint, spec.model.config and spec.model.configFile"))]
#[x_kube(validation = Rule::new("!(has(self.config) && has(self.configFile))").field_path(".configFile").message("spec.model: set either spec.model.config or spec.model.configFile, not both"))]
#[x_kube(validation = Rule::new("!has(self.pretrained) || !(self.pretrained in ['megatron-bert-uncased', 'megatron-bert-cased']) || ((has(self.checkpoint) || (has(self.initialization) && self.initialization == 'Random')) && (has(self.config) || has(self.configFile)))").field_path(".pretrained").message(Message::Expression("'spec.model.pretrained ' + self.pretrained + ' is a generic Megatron-LM BERT: set spec.model.checkpoint (the Megatron-LM checkpoint, or initialization: Random) and spec.model.config or spec.model.configFile (its architecture)'".into())))]
#[x_kube(validation = Rule::new("!has(self.initialization) || self.initialization != 'Random' || !(has(self.checkpoint) || has(self.nemo))").field_path(".initialization").message("spec.model.initialization Random trains from random weights, so spec.model.checkpoint and spec.model.nemo would be ignored: remove them, or remove initialization (Pretrained is the default)"))]
#[x_kube(validation = Rule::new("has(self.pretrained) || !has(self.checkpoint) || has(self.config) || has(self.configFile)").field_path(".checkpoint").message("spec.model.checkpoint without spec.model.pretrained needs the architecture: set spec.model.config or spec.model.configFile"))]
#[x_kube(validation = Rule::new("!has(self.pretrained) || self.pretrained in ['megatron-bert-uncased', 'megatron-bert-cased'] || (!has(self.configFile) && (!has(self.config) || !(has(self.config.hiddenSize) || has(self.config.numAttentionHeads) || has(self.config.numLayers) || has(self.config.maxPositionEmbeddings) || has(self.config.ffnHiddenSize) || has(self.config.vocabSize) || has(self.config.typeVocabSize) || has(self.config.layerNormEpsilon) || has(self.config.activation) || has(self.config.makeVocabSizeDivisibleBy))))").field_path(".config").message(Message::Expression("'spec.model.config: the architecture of ' + self.pretrained + ' is fixed; only hiddenDropout and attentionDropout may be set (and not configFile). For another architecture use pretrained megatron-bert-uncased or megatron-bert-cased with a checkpoint'".into())))]
#[x_kube(validation = Rule::new("!has(self.config) || (has(self.pretrained) && !(self.pretrained in ['megatron-bert-uncased', 'megatron-bert-cased'])) || (has(self.config.hiddenSize) && has(self.config.numAttentionHeads) && has(self.config.numLayers) && has(self.config.maxPositionEmbeddings))").field_path(".config").message("spec.model.config must set hiddenSize, numAttentionHeads, numLayers and maxPositionEmbeddings for a Megatron-LM checkpoint"))]
pub struct ModelSpec {
    /// A pretrained name (NeMo's pretrained_model_name). The four published 345M names fix the
    /// architecture and tokenizer; their weights are read from `checkpoint` when set, otherwise
    /// downloaded (see `initialization` for the sources) and checked (size, sha256). The generic names megatron-bert-uncased/-cased only pick
    /// the tokenizer and require `checkpoint` plus `config` or `configFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<PretrainedModel>")]
    pub pretrained: Option<PretrainedModel>,

    /// A Megatron-LM checkpoint to start from (NeMo's lm_checkpoint / --bert_checkpoint):
    /// any tensor-parallel size, resharded to spec.parallelism.tensorParallelSize on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<MegatronCheckpoint>,

    /// A .nemo file to restore (NeMo's restore_from): weights, task head, architecture and
    /// tokenizer all come from the file. Required in Evaluate mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.endsWith('.nemo')").message("spec.model.nemo must name a .nemo file (ending in .nemo), e.g. s3://bucket/models/squad.nemo"))]
    pub nemo: Option<Uri>,

    /// Pretrained (default) or Random. Pretrained weights come from `checkpoint`, `nemo`, or the
    /// published name, resolved in this order: the job bucket's shared model cache
    /// (`s3://<bucket>/<prefix>/_cache/models/<name>/<version>/`, filled by the first job that
    /// downloads), the cluster's mirror (the operator's `--model-mirror`: an S3 prefix or HTTP(S)
    /// base URL with NGC's file layout), then NGC itself. A job whose weights are found nowhere
    /// fails at once, naming every place tried. Random is for tests and benchmarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<Initialization>")]
    pub initialization: Option<Initialization>,

    /// The architecture, inline (NeMo's model.language_model.config). Required with a generic
    /// name or a bare checkpoint; with a published name only the dropouts may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ModelConfig>,

    /// The architecture as a Megatron-LM JSON (`hidden-size` keys) or NeMo YAML/JSON
    /// (`hidden_size` keys) file (NeMo's config_file / --bert_config). Exclusive with `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<Uri>,
}

/// A Megatron-LM checkpoint: `<location>/{iter_NNNNNNN|release}/mp_rank_NN/model_optim_rng.pt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.iteration) || !self.location.matches('(iter_[0-9]{7}|release)/?$')").field_path(".iteration").message("spec.model.checkpoint.iteration: location already names an iteration directory; remove iteration or point location at the checkpoint root"))]
pub struct MegatronCheckpoint {
    /// The checkpoint root (holding latest_checkpointed_iteration.txt and iter_NNNNNNN/ or
    /// release/ directories), or one iteration directory itself (ending in iter_NNNNNNN or release).
    pub location: Uri,

    /// Which iter_NNNNNNN directory to load from the root. Default: the one named in
    /// latest_checkpointed_iteration.txt (which may say `release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9_999_999))]
    pub iteration: Option<i64>,
}

/// Which directory of a Megatron-LM checkpoint to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointDir {
    /// `location` is the iteration directory itself.
    Given(Uri),
    /// `location/iter_%07d`.
    Iteration(Uri),
    /// Read `location/latest_checkpointed_iteration.txt` to find it.
    Latest {
        /// The checkpoint root.
        root: Uri,
        /// The tracker file to read.
        tracker: Uri,
    },
}

impl MegatronCheckpoint {
    /// File naming the newest iteration in a Megatron-LM checkpoint root.
    pub const TRACKER_FILE: &'static str = "latest_checkpointed_iteration.txt";

    /// Resolves `location` + `iteration` to the directory to load (or how to find it).
    pub fn dir(&self) -> CheckpointDir {
        let name = self.location.file_name();
        let is_iter_dir = name == "release"
            || (name.len() == 12
                && name.starts_with("iter_")
                && name[5..].bytes().all(|b| b.is_ascii_digit()));
        match self.iteration {
            _ if is_iter_dir => CheckpointDir::Given(self.location.clone()),
            Some(it) => CheckpointDir::Iteration(self.location.join(&format!("iter_{it:07}"))),
            None => CheckpointDir::Latest {
                root: self.location.clone(),
                tracker: self.location.join(Self::TRACKER_FILE),
            },
        }
    }
}

/// GELU variant of the MLP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Activation {
    /// Exact (erf) GELU, as NeMo runs Megatron-BERT.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh-approximated GELU (Megatron-LM's fused/OpenAI GELU).
    #[serde(rename = "gelu_tanh")]
    GeluTanh,
}

/// Architecture of a Megatron-LM BERT; unset fields take the defaults named on each field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.hiddenSize) || !has(self.numAttentionHeads) || self.hiddenSize % self.numAttentionHeads == 0").field_path(".hiddenSize").message(Message::Expression("'spec.model.config.hiddenSize (%d) must be a multiple of spec.model.config.numAttentionHeads (%d)'.format([self.hiddenSize, self.numAttentionHeads])".into())))]
pub struct ModelConfig {
    /// Width of the hidden states (Megatron-LM --hidden-size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub hidden_size: Option<i64>,

    /// Attention heads per layer; spec.parallelism.tensorParallelSize must divide it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub num_attention_heads: Option<i64>,

    /// Transformer layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub num_layers: Option<i64>,

    /// Rows of the position embedding; longest input sequence (Megatron-LM --max-position-embeddings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 131072))]
    pub max_position_embeddings: Option<i64>,

    /// MLP inner width. Default: 4 x hiddenSize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub ffn_hidden_size: Option<i64>,

    /// Unpadded vocabulary size. Default: the tokenizer's (30522 uncased, 28996 cased, or the
    /// vocab file's line count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub vocab_size: Option<i64>,

    /// Token type (segment) embeddings. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub type_vocab_size: Option<i64>,

    /// LayerNorm epsilon. Default: 1e-5 (Megatron-LM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.1))]
    pub layer_norm_epsilon: Option<f64>,

    /// MLP activation: gelu (exact erf, default) or gelu_tanh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<Activation>")]
    pub activation: Option<Activation>,

    /// Dropout on hidden states during fine-tuning. Default: 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub hidden_dropout: Option<f64>,

    /// Dropout on attention probabilities during fine-tuning. Default: 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub attention_dropout: Option<f64>,

    /// The word embedding is padded to a multiple of this x tensorParallelSize rows. Default: 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub make_vocab_size_divisible_by: Option<i64>,
}

/// A complete architecture: [`ModelConfig`] with every default applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Architecture {
    /// Width of the hidden states.
    pub hidden_size: i64,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Transformer layers.
    pub num_layers: i64,
    /// Position embedding rows.
    pub max_position_embeddings: i64,
    /// MLP inner width.
    pub ffn_hidden_size: i64,
    /// Unpadded vocabulary size.
    pub vocab_size: i64,
    /// Token type embeddings.
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// MLP activation.
    pub activation: Activation,
    /// Hidden dropout.
    pub hidden_dropout: f64,
    /// Attention dropout.
    pub attention_dropout: f64,
    /// Vocabulary padding unit (per tensor-parallel rank).
    pub make_vocab_size_divisible_by: i64,
}

impl Architecture {
    /// The published 345M shape (NeMo's CONFIGS["345m"]) with the given vocabulary.
    pub fn bert_345m(vocab_size: i64) -> Self {
        Self {
            hidden_size: 1024,
            num_attention_heads: HEADS_345M,
            num_layers: 24,
            max_position_embeddings: 512,
            ffn_hidden_size: 4096,
            vocab_size,
            type_vocab_size: 2,
            layer_norm_epsilon: 1e-5,
            activation: Activation::Gelu,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            make_vocab_size_divisible_by: 128,
        }
    }

    /// Rows of the word embedding: vocab rounded up to makeVocabSizeDivisibleBy x `tensor_parallel`.
    pub fn padded_vocab_size(&self, tensor_parallel: i64) -> i64 {
        let unit = self.make_vocab_size_divisible_by * tensor_parallel.max(1);
        (self.vocab_size + unit - 1) / unit * unit
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}

/// Why [`ModelSpec::architecture`] could not produce a complete architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchitectureError {
    /// The architecture lives in a file (or a .nemo) the caller must read first.
    #[error("spec.model's architecture is in {0}: read it and call ModelConfig::resolve")]
    InFile(Uri),
    /// Inline config lacks a required field.
    #[error("spec.model.config.{0} is required for this model")]
    Missing(&'static str),
    /// Nothing names an architecture.
    #[error("spec.model has no architecture: set spec.model.pretrained or spec.model.config")]
    Unknown,
}

impl ModelConfig {
    /// Fills unset fields from `base` (a published architecture) or the Megatron-LM defaults.
    /// `vocab_size` is the tokenizer's size, used when the config names none.
    pub fn resolve(
        &self,
        base: Option<&Architecture>,
        vocab_size: i64,
    ) -> Result<Architecture, ArchitectureError> {
        let need =
            |v: Option<i64>, b: Option<i64>, name| v.or(b).ok_or(ArchitectureError::Missing(name));
        let hidden_size = need(self.hidden_size, base.map(|b| b.hidden_size), "hiddenSize")?;
        Ok(Architecture {
            hidden_size,
            num_attention_heads: need(
                self.num_attention_heads,
                base.map(|b| b.num_attention_heads),
                "numAttentionHeads",
            )?,
            num_layers: need(self.num_layers, base.map(|b| b.num_layers), "numLayers")?,
            max_position_embeddings: need(
                self.max_position_embeddings,
                base.map(|b| b.max_position_embeddings),
                "maxPositionEmbeddings",
            )?,
            ffn_hidden_size: self
                .ffn_hidden_size
                .or(base.map(|b| b.ffn_hidden_size))
                .unwrap_or(4 * hidden_size),
            vocab_size: self
                .vocab_size
                .or(base.map(|b| b.vocab_size))
                .unwrap_or(vocab_size),
            type_vocab_size: self
                .type_vocab_size
                .or(base.map(|b| b.type_vocab_size))
                .unwrap_or(2),
            layer_norm_epsilon: self
                .layer_norm_epsilon
                .or(base.map(|b| b.layer_norm_epsilon))
                .unwrap_or(1e-5),
            activation: self
                .activation
                .or(base.map(|b| b.activation))
                .unwrap_or_default(),
            hidden_dropout: self
                .hidden_dropout
                .or(base.map(|b| b.hidden_dropout))
                .unwrap_or(0.1),
            attention_dropout: self
                .attention_dropout
                .or(base.map(|b| b.attention_dropout))
                .unwrap_or(0.1),
            make_vocab_size_divisible_by: self
                .make_vocab_size_divisible_by
                .or(base.map(|b| b.make_vocab_size_divisible_by))
                .unwrap_or(128),
        })
    }
}

impl ModelSpec {
    /// The published name in use, if any.
    pub fn published(&self) -> Option<PretrainedModel> {
        self.pretrained.filter(|p| !p.is_generic())
    }

    /// True when the spec asks for random initial weights.
    pub fn is_random(&self) -> bool {
        self.initialization == Some(Initialization::Random)
    }

    /// The effective architecture when it is known without reading files: a published name
    /// (with any dropout overrides) or an inline config. `tokenizer_vocab_size` fills
    /// `vocabSize` when the config leaves it out (see `TokenizerSpec::vocab_size`).
    pub fn architecture(
        &self,
        tokenizer_vocab_size: i64,
    ) -> Result<Architecture, ArchitectureError> {
        if let Some(file) = self.config_file.as_ref().or(self.nemo.as_ref()) {
            return Err(ArchitectureError::InFile(file.clone()));
        }
        let base = self.published().and_then(PretrainedModel::architecture);
        match (&self.config, base) {
            (Some(config), base) => config.resolve(base.as_ref(), tokenizer_vocab_size),
            (None, Some(base)) => Ok(base),
            (None, None) => Err(ArchitectureError::Unknown),
        }
    }

    /// Attention heads when known from the spec alone (what the CEL divisibility rule checks).
    pub fn known_attention_heads(&self) -> Option<i64> {
        self.config
            .as_ref()
            .and_then(|c| c.num_attention_heads)
            .or_else(|| self.published().map(|_| HEADS_345M))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_table_matches_nemo() {
        for p in PretrainedModel::ALL {
            let arch = p.architecture();
            assert_eq!(arch.is_none(), p.is_generic(), "{p}");
            if let Some(a) = arch {
                assert_eq!(
                    (
                        a.hidden_size,
                        a.num_layers,
                        a.num_attention_heads,
                        a.max_position_embeddings
                    ),
                    (1024, 24, 16, 512)
                );
                assert_eq!(a.ffn_hidden_size, 4096);
                let expected = if p.as_str().ends_with("-uncased") {
                    30522
                } else {
                    28996
                };
                assert_eq!(a.vocab_size, expected, "{p}");
            }
            assert_eq!(p.lower_case(), p.as_str().ends_with("-uncased"));
            // serde name == as_str
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
    }

    #[test]
    fn vocab_padding_matches_megatron() {
        let uncased = Architecture::bert_345m(UNCASED_VOCAB_SIZE);
        assert_eq!(uncased.padded_vocab_size(1), 30592);
        assert_eq!(uncased.padded_vocab_size(2), 30720);
        assert_eq!(uncased.padded_vocab_size(4), 30720);
        let cased = Architecture::bert_345m(CASED_VOCAB_SIZE);
        assert_eq!(cased.padded_vocab_size(1), 29056);
        assert_eq!(cased.padded_vocab_size(2), 29184);
    }

    #[test]
    fn effective_architecture() {
        let published = ModelSpec {
            pretrained: Some(PretrainedModel::BioMegatronBert345mCased),
            config: Some(ModelConfig {
                hidden_dropout: Some(0.2),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = published.architecture(1).unwrap();
        assert_eq!(a.hidden_dropout, 0.2);
        assert_eq!(a.vocab_size, CASED_VOCAB_SIZE);
        assert_eq!(published.known_attention_heads(), Some(16));

        let tiny = ModelSpec {
            checkpoint: Some(MegatronCheckpoint {
                location: "s3://bkt/ckpt".into(),
                iteration: None,
            }),
            config: Some(ModelConfig {
                hidden_size: Some(64),
                num_attention_heads: Some(4),
                num_layers: Some(2),
                max_position_embeddings: Some(128),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = tiny.architecture(30522).unwrap();
        assert_eq!(
            (a.ffn_hidden_size, a.vocab_size, a.type_vocab_size),
            (256, 30522, 2)
        );
        assert_eq!(a.head_dim(), 16);

        let missing = ModelSpec {
            pretrained: Some(PretrainedModel::MegatronBertCased),
            config: Some(ModelConfig {
                hidden_size: Some(64),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            missing.architecture(1),
            Err(ArchitectureError::Missing("numAttentionHeads"))
        );
        let file = ModelSpec {
            pretrained: Some(PretrainedModel::MegatronBertCased),
            config_file: Some("/cfg/config.json".into()),
            ..Default::default()
        };
        assert!(matches!(
            file.architecture(1),
            Err(ArchitectureError::InFile(_))
        ));
    }

    #[test]
    fn checkpoint_dir_resolution() {
        let root = |it| MegatronCheckpoint {
            location: "s3://bkt/megatron/bert/".into(),
            iteration: it,
        };
        assert_eq!(
            root(Some(80000)).dir(),
            CheckpointDir::Iteration("s3://bkt/megatron/bert/iter_0080000".into())
        );
        assert_eq!(
            root(None).dir(),
            CheckpointDir::Latest {
                root: "s3://bkt/megatron/bert/".into(),
                tracker: "s3://bkt/megatron/bert/latest_checkpointed_iteration.txt".into()
            }
        );
        let given = MegatronCheckpoint {
            location: "/raid/megatron/bert/iter_0080000".into(),
            iteration: None,
        };
        assert_eq!(given.dir(), CheckpointDir::Given(given.location.clone()));
        let release = MegatronCheckpoint {
            location: "/raid/bert/release/".into(),
            iteration: None,
        };
        assert!(matches!(release.dir(), CheckpointDir::Given(_)));
    }
}
