//! The model config from a Megatron checkpoint's `args` (argparse.Namespace).

use torch_pickle::Value;

use crate::model::{Activation, Architecture, BertConfig};

/// Tensor-parallel size recorded in `args` (`tensor_model_parallel_size`,
/// or `model_parallel_size` in Megatron-LM < 2.0).
pub fn tensor_parallel_size(args: &Value) -> Option<i64> {
    args.get("tensor_model_parallel_size")
        .or_else(|| args.get("model_parallel_size"))
        .and_then(Value::as_i64)
}

/// A field of `args` that the model config cannot do without.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("args.{field} is missing or not an integer")]
pub struct MissingArg {
    /// The argparse name, e.g. `hidden_size`.
    pub field: &'static str,
}

/// Builds a [`BertConfig`] from `args`; `vocab_size` is the unpadded
/// tokenizer vocabulary when known (Megatron does not record it; without
/// it the padded size stands in). Names the first missing required field on
/// failure.
pub fn config_from_args(args: &Value, vocab_size: Option<i64>) -> Result<BertConfig, MissingArg> {
    let int = |k: &str| args.get(k).and_then(Value::as_i64);
    let float = |k: &str| args.get(k).and_then(Value::as_f64);
    let req = |field: &'static str| int(field).ok_or(MissingArg { field });
    let hidden_size = req("hidden_size")?;
    let padded_vocab_size = req("padded_vocab_size")?;
    let activation = if args.get("openai_gelu").and_then(Value::as_bool) == Some(true) {
        Activation::GeluTanh
    } else {
        Activation::Gelu
    };
    Ok(BertConfig {
        vocab_size: vocab_size
            .or_else(|| int("vocab_size"))
            .unwrap_or(padded_vocab_size),
        padded_vocab_size,
        hidden_size,
        num_layers: req("num_layers")?,
        num_attention_heads: req("num_attention_heads")?,
        ffn_hidden_size: int("ffn_hidden_size").unwrap_or(4 * hidden_size),
        max_position_embeddings: req("max_position_embeddings")?,
        type_vocab_size: int("num_tokentypes").filter(|n| *n > 0).unwrap_or(2),
        layernorm_epsilon: float("layernorm_epsilon").unwrap_or(1e-5),
        activation,
        hidden_dropout: float("hidden_dropout").unwrap_or(0.1),
        attention_dropout: float("attention_dropout").unwrap_or(0.1),
        make_vocab_size_divisible_by: int("make_vocab_size_divisible_by").unwrap_or(128),
        architecture: Architecture::MegatronPreLn,
    })
}
