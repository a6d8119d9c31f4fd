//! Writing Megatron-LM checkpoints (checkpoint_version 3.0, `encoder` /
//! `self_attention` names, Namespace `args`) from a full canonical state
//! dict, at any tensor-parallel size.

use std::path::Path;

use torch_pickle::{Dict, Object, Value, dtype_name};

use super::names::{is_vocab, megatron_path, split_dim};
use super::reshard::repad;
use crate::checkpoint::error::{CheckpointError, Result};
use crate::model::{Activation, BertConfig, StateDict};

/// Where and how to write a Megatron checkpoint.
#[derive(Clone, Debug)]
pub struct SaveOptions {
    /// Tensor-parallel size of the written checkpoint.
    pub tp: i64,
    /// The iteration (`iter_%07d/`); `None` writes `release/`.
    pub iteration: Option<i64>,
}

/// Writes `full` (a TP=1 canonical state dict, QKV in canonical order) as a
/// Megatron-LM checkpoint under `root`: `latest_checkpointed_iteration.txt`
/// and `{iter_%07d|release}/mp_rank_NN/model_optim_rng.pt`, the vocabulary
/// padded for `opts.tp`. Pretraining heads (`lm_head.*`, `binary_head.*`)
/// are written when present; other non-encoder names are rejected.
pub fn save(root: &Path, config: &BertConfig, full: &StateDict, opts: &SaveOptions) -> Result<()> {
    let tp = opts.tp;
    if tp < 1 || config.num_attention_heads % tp != 0 || config.ffn_hidden_size % tp != 0 {
        return Err(CheckpointError::invalid(
            root,
            format!("tensor-parallel size {tp} does not divide the heads and the MLP width"),
        ));
    }
    let padded = config.padded_vocab_for(tp);
    let dir_name = match opts.iteration {
        Some(it) => format!("iter_{it:07}"),
        None => "release".into(),
    };
    let torch = |name: &str, e| CheckpointError::torch(format!("writing {name}"), e);
    for rank in 0..tp {
        let mut model = Dict::new(false);
        for (name, t) in full {
            let path = megatron_path(name).ok_or_else(|| {
                CheckpointError::invalid(
                    root,
                    format!("{name} has no place in a Megatron-LM BERT checkpoint"),
                )
            })?;
            let t = if is_vocab(name) {
                repad(t, padded).map_err(|e| torch(name, e))?
            } else {
                t.shallow_clone()
            };
            let shard = match split_dim(name) {
                None => t,
                Some(dim) => {
                    let n = t.size()[dim as usize];
                    if n % tp != 0 {
                        return Err(CheckpointError::invalid(
                            root,
                            format!("{name}: {n} rows/columns do not divide over {tp} ranks"),
                        ));
                    }
                    t.f_narrow(dim, rank * (n / tp), n / tp)
                        .map_err(|e| torch(name, e))?
                }
            };
            insert_path(&mut model, &path, Value::Tensor(shard));
        }
        let dtype = full
            .get("embeddings.word_embeddings.weight")
            .map(|t| t.kind())
            .unwrap_or(tch::Kind::Float);
        let mut top = Dict::new(false);
        top.insert("args", namespace(config, tp, padded, dtype));
        top.insert("checkpoint_version", Value::Float(3.0));
        top.insert("iteration", Value::Int(opts.iteration.unwrap_or(0)));
        top.insert("model", Value::Dict(model));
        let rank_dir = root.join(&dir_name).join(format!("mp_rank_{rank:02}"));
        std::fs::create_dir_all(&rank_dir).map_err(|e| CheckpointError::io(&rank_dir, e))?;
        torch_pickle::save(&rank_dir.join("model_optim_rng.pt"), &Value::Dict(top))?;
    }
    let tracker = root.join("latest_checkpointed_iteration.txt");
    let text = opts
        .iteration
        .map(|i| i.to_string())
        .unwrap_or_else(|| "release".into());
    std::fs::write(&tracker, text).map_err(|e| CheckpointError::io(&tracker, e))
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    let (first, rest) = path.split_first().expect("non-empty path");
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    if dict.get(first).is_none() {
        dict.insert(first.clone(), Value::Dict(Dict::new(true)));
    }
    let slot = dict
        .entries
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(first))
        .map(|(_, v)| v)
        .expect("inserted above");
    if let Value::Dict(inner) = slot {
        insert_path(inner, rest, value);
    }
}

/// Megatron's `args` for this config, as an `argparse.Namespace`.
fn namespace(config: &BertConfig, tp: i64, padded: i64, dtype: tch::Kind) -> Value {
    let mut a = Dict::new(false);
    let ints = [
        ("num_layers", config.num_layers),
        ("hidden_size", config.hidden_size),
        ("ffn_hidden_size", config.ffn_hidden_size),
        ("num_attention_heads", config.num_attention_heads),
        (
            "kv_channels",
            config.hidden_size / config.num_attention_heads,
        ),
        ("max_position_embeddings", config.max_position_embeddings),
        ("padded_vocab_size", padded),
        ("vocab_size", config.vocab_size),
        (
            "make_vocab_size_divisible_by",
            config.make_vocab_size_divisible_by,
        ),
        ("tensor_model_parallel_size", tp),
        ("pipeline_model_parallel_size", 1),
        ("num_tokentypes", config.type_vocab_size),
    ];
    for (k, v) in ints {
        a.insert(k, Value::Int(v));
    }
    a.insert("layernorm_epsilon", Value::Float(config.layernorm_epsilon));
    a.insert("hidden_dropout", Value::Float(config.hidden_dropout));
    a.insert("attention_dropout", Value::Float(config.attention_dropout));
    a.insert(
        "openai_gelu",
        Value::Bool(config.activation == Activation::GeluTanh),
    );
    a.insert("fp16", Value::Bool(dtype == tch::Kind::Half));
    a.insert("bf16", Value::Bool(dtype == tch::Kind::BFloat16));
    a.insert("params_dtype", Value::global("torch", dtype_name(dtype)));
    Value::Object(Box::new(Object {
        class: Value::global("argparse", "Namespace"),
        args: vec![],
        state: Some(Value::Dict(a)),
        items: vec![],
    }))
}
