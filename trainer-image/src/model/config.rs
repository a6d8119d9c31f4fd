//! `BertConfig`: the shape and numerics of a Megatron-BERT (or HF BERT) encoder,
//! with constructors for the pretrained 345M models and a parser for Megatron
//! (`hidden-size`), NeMo (`hidden_size`) and Hugging Face (`num_hidden_layers`)
//! JSON/YAML configs.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::error::{ModelError, Result};

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU, `x * Phi(x)` with erf (NeMo and Hugging Face).
    #[default]
    Gelu,
    /// The tanh approximation of GELU (Megatron's fused `bias_gelu`, `openai_gelu`).
    GeluTanh,
}

/// Which BERT block layout the encoder uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Megatron-LM BERT: no embedding LayerNorm, pre-LN layers, final LayerNorm.
    #[default]
    MegatronPreLn,
    /// Original BERT (HF `BertModel`): embedding LayerNorm, post-LN layers.
    BertPostLn,
}

/// Shape and numerics of a BERT encoder (see the trainer contract).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Unpadded tokenizer vocabulary size (e.g. 30522).
    pub vocab_size: i64,
    /// Rows of the word embedding in the checkpoint/model.
    pub padded_vocab_size: i64,
    pub hidden_size: i64,
    pub num_layers: i64,
    pub num_attention_heads: i64,
    /// Inner MLP width (4 * hidden by default).
    pub ffn_hidden_size: i64,
    pub max_position_embeddings: i64,
    pub type_vocab_size: i64,
    pub layernorm_epsilon: f64,
    pub activation: Activation,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub make_vocab_size_divisible_by: i64,
    pub architecture: Architecture,
}

impl BertConfig {
    /// Megatron-BERT 345M (24 layers, hidden 1024, 16 heads), vocab padded for TP=1.
    pub fn megatron_345m(vocab_size: i64) -> Self {
        let mut cfg = Self {
            vocab_size,
            padded_vocab_size: vocab_size,
            hidden_size: 1024,
            num_layers: 24,
            num_attention_heads: 16,
            ffn_hidden_size: 4096,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layernorm_epsilon: 1e-5,
            activation: Activation::Gelu,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            make_vocab_size_divisible_by: 128,
            architecture: Architecture::MegatronPreLn,
        };
        cfg.padded_vocab_size = cfg.padded_vocab_for(1);
        cfg
    }

    /// Config for a pretrained name: `megatron-bert-345m-uncased` (vocab 30522),
    /// `megatron-bert-345m-cased` (28996), `biomegatron-bert-345m-{uncased,cased}`
    /// (same vocabularies; BioMegatron with its own vocab uses `megatron_345m(n)`).
    pub fn pretrained(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        let vocab = match lower.trim_start_matches("bio") {
            "megatron-bert-345m-uncased" | "megatron_bert_345m_uncased" => 30522,
            "megatron-bert-345m-cased" | "megatron_bert_345m_cased" => 28996,
            _ => {
                return Err(ModelError::Config {
                    field: "pretrained_model_name".into(),
                    message: format!(
                        "unknown pretrained model `{name}`; known: megatron-bert-345m-uncased, \
                         megatron-bert-345m-cased, biomegatron-bert-345m-uncased, biomegatron-bert-345m-cased"
                    ),
                });
            }
        };
        Ok(Self::megatron_345m(vocab))
    }

    /// Vocabulary rows after Megatron's padding for tensor-parallel size `tp`:
    /// `vocab_size` rounded up to a multiple of `make_vocab_size_divisible_by * tp`.
    pub fn padded_vocab_for(&self, tp: i64) -> i64 {
        let multiple = (self.make_vocab_size_divisible_by.max(1)) * tp.max(1);
        (self.vocab_size + multiple - 1) / multiple * multiple
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks internal consistency and divisibility by the tensor-parallel size.
    pub fn validate(&self, tp: i64) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("padded_vocab_size", self.padded_vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("ffn_hidden_size", self.ffn_hidden_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (field, v) in positive {
            if v <= 0 {
                return Err(ModelError::Config {
                    field: field.into(),
                    message: format!("must be positive, got {v}"),
                });
            }
        }
        if self.padded_vocab_size < self.vocab_size {
            return Err(ModelError::Config {
                field: "padded_vocab_size".into(),
                message: format!(
                    "{} is smaller than vocab_size {}",
                    self.padded_vocab_size, self.vocab_size
                ),
            });
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(ModelError::Config {
                field: "num_attention_heads".into(),
                message: format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            });
        }
        for (p, name) in [
            (self.hidden_dropout, "hidden_dropout"),
            (self.attention_dropout, "attention_dropout"),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(ModelError::Config {
                    field: name.into(),
                    message: format!("must be in [0, 1), got {p}"),
                });
            }
        }
        if self.layernorm_epsilon <= 0.0 {
            return Err(ModelError::Config {
                field: "layernorm_epsilon".into(),
                message: format!("must be positive, got {}", self.layernorm_epsilon),
            });
        }
        let tp = tp.max(1);
        for (what, value) in [
            ("num_attention_heads", self.num_attention_heads),
            ("ffn_hidden_size", self.ffn_hidden_size),
            ("padded_vocab_size", self.padded_vocab_size),
        ] {
            if value % tp != 0 {
                return Err(ModelError::NotDivisible {
                    what: what.into(),
                    value,
                    tp,
                });
            }
        }
        Ok(())
    }

    /// Parses a Megatron (`hidden-size`, `num-layers`, `max-seq-length`), NeMo
    /// (`hidden_size`, `num_layers`) or Hugging Face (`num_hidden_layers`,
    /// `intermediate_size`, `layer_norm_eps`, `hidden_act`, `model_type`)
    /// config, JSON or YAML, possibly nested under `language_model` / `model`.
    /// The vocabulary size must be in the file (`vocab_size` or
    /// `padded_vocab_size`); otherwise use [`Self::from_json_or_yaml_with_vocab`].
    pub fn from_json_or_yaml(text: &str) -> Result<Self> {
        Self::parse(text, None)
    }

    /// Like [`Self::from_json_or_yaml`], using `vocab_size` (the tokenizer's) when
    /// the file has none (NeMo encoder configs and Megatron `config.json` don't).
    pub fn from_json_or_yaml_with_vocab(text: &str, vocab_size: i64) -> Result<Self> {
        Self::parse(text, Some(vocab_size))
    }

    fn parse(text: &str, vocab_default: Option<i64>) -> Result<Self> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                serde_yaml::from_str(text).map_err(|e| ModelError::ConfigSyntax(e.to_string()))?
            }
        };
        let keys = Keys::collect(&value)?;
        let base = Self::megatron_345m(1);
        let hidden_size = keys
            .int(&["hidden_size"])?
            .ok_or_else(|| missing("hidden_size"))?;
        let num_layers = keys
            .int(&["num_layers", "num_hidden_layers"])?
            .ok_or_else(|| missing("num_layers"))?;
        let num_attention_heads = keys
            .int(&["num_attention_heads"])?
            .ok_or_else(|| missing("num_attention_heads"))?;
        let make_vocab_size_divisible_by = keys
            .int(&["make_vocab_size_divisible_by"])?
            .unwrap_or(base.make_vocab_size_divisible_by);
        let padded = keys.int(&["padded_vocab_size"])?;
        let vocab_size = keys
            .int(&["vocab_size"])?
            .or(vocab_default)
            .or(padded)
            .ok_or_else(|| ModelError::Config {
                field: "vocab_size".into(),
                message:
                    "absent from the config; add `vocab_size` (the tokenizer's vocabulary size) \
                          or pass it with from_json_or_yaml_with_vocab"
                        .into(),
            })?;
        let activation = match keys.string(&["hidden_act", "activation"])?.as_deref() {
            None => {
                if keys.bool(&["openai_gelu"])?.unwrap_or(false) {
                    Activation::GeluTanh
                } else {
                    Activation::Gelu
                }
            }
            Some("gelu") | Some("gelu_erf") => Activation::Gelu,
            Some("gelu_tanh")
            | Some("gelu_new")
            | Some("gelu_pytorch_tanh")
            | Some("gelu_fast") => Activation::GeluTanh,
            Some(other) => {
                return Err(ModelError::Config {
                    field: "hidden_act".into(),
                    message: format!("unsupported activation `{other}`; use gelu or gelu_tanh"),
                });
            }
        };
        let architecture = match keys.string(&["architecture", "model_type"])?.as_deref() {
            None | Some("megatron_pre_ln") | Some("megatron-bert") | Some("megatron_bert") => {
                Architecture::MegatronPreLn
            }
            Some("bert_post_ln") | Some("bert") => Architecture::BertPostLn,
            Some(other) => {
                return Err(ModelError::Config {
                    field: "model_type".into(),
                    message: format!(
                        "unsupported architecture `{other}`; use megatron-bert (pre-LN) or bert (post-LN)"
                    ),
                });
            }
        };
        let mut cfg = Self {
            vocab_size,
            padded_vocab_size: 0,
            hidden_size,
            num_layers,
            num_attention_heads,
            ffn_hidden_size: keys
                .int(&["ffn_hidden_size", "intermediate_size"])?
                .unwrap_or(4 * hidden_size),
            max_position_embeddings: keys
                .int(&["max_position_embeddings", "max_seq_length"])?
                .unwrap_or(base.max_position_embeddings),
            type_vocab_size: keys
                .int(&["type_vocab_size", "num_tokentypes"])?
                .unwrap_or(base.type_vocab_size),
            layernorm_epsilon: keys
                .float(&["layernorm_epsilon", "layer_norm_eps", "layer_norm_epsilon"])?
                .unwrap_or(base.layernorm_epsilon),
            activation,
            hidden_dropout: keys
                .float(&["hidden_dropout", "hidden_dropout_prob"])?
                .unwrap_or(base.hidden_dropout),
            attention_dropout: keys
                .float(&["attention_dropout", "attention_probs_dropout_prob"])?
                .unwrap_or(base.attention_dropout),
            make_vocab_size_divisible_by,
            architecture,
        };
        cfg.padded_vocab_size = match padded {
            Some(p) => p,
            // HF configs store the embedding's row count as vocab_size: no padding.
            None if keys.has("model_type") => vocab_size,
            None => cfg.padded_vocab_for(1),
        };
        cfg.validate(1)?;
        Ok(cfg)
    }
}

fn missing(field: &str) -> ModelError {
    ModelError::Config {
        field: field.into(),
        message: "required but absent from the config".into(),
    }
}

/// Scalar keys of a config, normalized (`-` to `_`), searched at the top level
/// and under the usual nesting keys.
struct Keys(BTreeMap<String, Value>);

impl Keys {
    fn collect(value: &Value) -> Result<Self> {
        let Value::Object(top) = value else {
            return Err(ModelError::ConfigSyntax(
                "the config must be a mapping of keys to values".into(),
            ));
        };
        let mut map = BTreeMap::new();
        // Nested sections first so top-level keys win.
        for nest in ["model", "language_model", "encoder"] {
            if let Some(Value::Object(inner)) = top.get(nest) {
                for nest2 in ["language_model", "encoder"] {
                    if let Some(Value::Object(inner2)) = inner.get(nest2) {
                        insert_scalars(&mut map, inner2);
                    }
                }
                insert_scalars(&mut map, inner);
            }
        }
        insert_scalars(&mut map, top);
        Ok(Self(map))
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn first<'a>(&'a self, names: &[&'a str]) -> Option<(&'a str, &'a Value)> {
        names
            .iter()
            .find_map(|n| self.0.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    fn int(&self, names: &[&str]) -> Result<Option<i64>> {
        match self.first(names) {
            None => Ok(None),
            Some((name, v)) => v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Some)
                .ok_or_else(|| ModelError::Config {
                    field: name.into(),
                    message: format!("expected an integer, got {v}"),
                }),
        }
    }

    fn float(&self, names: &[&str]) -> Result<Option<f64>> {
        match self.first(names) {
            None => Ok(None),
            Some((name, v)) => v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Some)
                .ok_or_else(|| ModelError::Config {
                    field: name.into(),
                    message: format!("expected a number, got {v}"),
                }),
        }
    }

    fn bool(&self, names: &[&str]) -> Result<Option<bool>> {
        match self.first(names) {
            None => Ok(None),
            Some((name, v)) => v.as_bool().map(Some).ok_or_else(|| ModelError::Config {
                field: name.into(),
                message: format!("expected true or false, got {v}"),
            }),
        }
    }

    fn string(&self, names: &[&str]) -> Result<Option<String>> {
        match self.first(names) {
            None => Ok(None),
            Some((name, v)) => v
                .as_str()
                .map(|s| Some(s.trim().to_ascii_lowercase()))
                .ok_or_else(|| ModelError::Config {
                    field: name.into(),
                    message: format!("expected a string, got {v}"),
                }),
        }
    }
}

fn insert_scalars(map: &mut BTreeMap<String, Value>, obj: &serde_json::Map<String, Value>) {
    for (k, v) in obj {
        if !v.is_object() && !v.is_array() {
            map.insert(k.replace('-', "_"), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_matches_megatron() {
        let uncased = BertConfig::megatron_345m(30522);
        assert_eq!(uncased.padded_vocab_size, 30592);
        assert_eq!(uncased.padded_vocab_for(2), 30720);
        assert_eq!(uncased.padded_vocab_for(4), 30720);
        let cased = BertConfig::pretrained("megatron-bert-345m-cased").unwrap();
        assert_eq!(cased.padded_vocab_size, 29056);
        assert_eq!(cased.padded_vocab_for(2), 29184);
    }

    #[test]
    fn parses_megatron_dash_keys() {
        let cfg = BertConfig::from_json_or_yaml_with_vocab(
            r#"{"hidden-size": 1024, "num-attention-heads": 16, "num-layers": 24, "max-seq-length": 512}"#,
            30522,
        )
        .unwrap();
        assert_eq!(cfg, BertConfig::megatron_345m(30522));
    }

    #[test]
    fn parses_nemo_yaml_nested() {
        let yaml = "model:\n  language_model:\n    hidden_size: 64\n    num_layers: 2\n    \
                    num_attention_heads: 4\n    max_position_embeddings: 32\n  vocab_size: 100\n";
        let cfg = BertConfig::from_json_or_yaml(yaml).unwrap();
        assert_eq!(
            (cfg.hidden_size, cfg.num_layers, cfg.ffn_hidden_size),
            (64, 2, 256)
        );
        assert_eq!((cfg.vocab_size, cfg.padded_vocab_size), (100, 128));
    }

    #[test]
    fn parses_hf_bert() {
        let json = r#"{"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 99,
            "layer_norm_eps": 1e-12, "hidden_act": "gelu_new"}"#;
        let cfg = BertConfig::from_json_or_yaml(json).unwrap();
        assert_eq!(cfg.architecture, Architecture::BertPostLn);
        assert_eq!(cfg.activation, Activation::GeluTanh);
        assert_eq!((cfg.padded_vocab_size, cfg.ffn_hidden_size), (99, 128));
        assert_eq!(cfg.layernorm_epsilon, 1e-12);
    }

    #[test]
    fn errors_name_the_field() {
        let err =
            BertConfig::from_json_or_yaml(r#"{"hidden_size": 64, "num_layers": 2}"#).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
        let err = BertConfig::from_json_or_yaml(
            r#"{"hidden_size": "big", "num_layers": 2, "num_attention_heads": 4, "vocab_size": 10}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("hidden_size"), "{err}");
        let err = BertConfig::from_json_or_yaml(
            r#"{"hidden_size": 64, "num_layers": 2, "num_attention_heads": 4}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("vocab_size"), "{err}");
        let err = BertConfig::megatron_345m(30522).validate(3).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
    }
}
