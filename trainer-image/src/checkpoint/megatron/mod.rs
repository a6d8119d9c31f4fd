//! Megatron-LM BERT checkpoints: loading a tensor-parallel rank's shard in
//! canonical names from any checkpoint version, naming generation and
//! tensor-parallel size, and writing checkpoint_version 3.0 checkpoints.

pub mod args;
pub mod layout;
pub mod names;
pub mod qkv;
mod reshard;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;
use torch_pickle::{Container, Value};

use crate::checkpoint::error::{CheckpointError, Result};
use crate::model::{BertConfig, StateDict};

pub use reshard::repad as reshard_repad;
pub use writer::{SaveOptions, save};

/// What a loaded checkpoint was.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckpointInfo {
    /// The iteration directory (or the file's directory).
    pub dir: PathBuf,
    /// Every rank file of the checkpoint, in rank order.
    pub rank_files: Vec<PathBuf>,
    pub container: Container,
    pub iteration: Option<i64>,
    pub release: bool,
    /// `checkpoint_version` (0 when absent).
    pub checkpoint_version: f64,
    /// The checkpoint's own tensor-parallel size.
    pub tensor_parallel_size: i64,
    /// True when the checkpoint carried `args` (the config came from them).
    pub has_args: bool,
    /// dtype of the word embeddings (`float16`, ...).
    pub dtype: String,
    /// Model keys that are not encoder parameters (pretraining heads unless
    /// asked for, extra states), flattened.
    pub ignored_keys: Vec<String>,
}

/// How to load a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The tokenizer's (unpadded) vocabulary size. Megatron does not record
    /// it; it decides how many rows are padding when the vocabulary is
    /// re-padded for a smaller tensor-parallel size.
    pub vocab_size: Option<i64>,
    /// The config to use when the checkpoint has no `args`.
    pub config: Option<BertConfig>,
    /// Also return `lm_head.*` and `binary_head.*` (for conversions).
    pub include_pretraining_heads: bool,
}

/// Loads tensor-parallel rank `tp_rank` of `target_tp` from the Megatron
/// checkpoint at `path` (checkpoint root, iteration directory or `.pt`
/// file): canonical names, QKV in `[heads, 3, head_dim]` order, resharded
/// from the checkpoint's tensor-parallel size, vocabulary re-padded for
/// `target_tp`.
pub fn load(
    path: &Path,
    target_tp: i64,
    tp_rank: i64,
) -> Result<(BertConfig, StateDict, CheckpointInfo)> {
    load_with(path, target_tp, tp_rank, &LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(
    path: &Path,
    target_tp: i64,
    tp_rank: i64,
    opts: &LoadOptions,
) -> Result<(BertConfig, StateDict, CheckpointInfo)> {
    if target_tp < 1 || tp_rank < 0 || tp_rank >= target_tp {
        return Err(CheckpointError::invalid(
            path,
            format!("tensor-parallel rank {tp_rank} of size {target_tp} is not a valid rank"),
        ));
    }
    let resolved = layout::resolve(path)?;
    let k = resolved.rank_files.len() as i64;
    // Same tensor-parallel size: only this rank's file is needed.
    let wanted: Vec<usize> = if k == target_tp {
        vec![tp_rank as usize]
    } else {
        (0..k as usize).collect()
    };

    let mut shards: Vec<StateDict> = Vec::new();
    let mut header: Option<(Value, Container)> = None;
    let mut ignored = Vec::new();
    for &r in &wanted {
        let file = &resolved.rank_files[r];
        let (mut value, container) = torch_pickle::load(file)?;
        let (shard, skipped) = extract_shard(file, &value, opts.include_pretraining_heads)?;
        if header.is_none() {
            ignored = skipped;
            // Keep only the small entries for the header.
            if let Value::Dict(d) = &mut value {
                d.entries.retain(|(k, _)| {
                    matches!(
                        k.as_str(),
                        Some("args" | "checkpoint_version" | "iteration")
                    )
                });
            }
            header = Some((value, container));
        }
        shards.push(shard);
    }
    let (top, container) = header.expect("at least one rank file");
    let first_file = &resolved.rank_files[wanted[0]];
    let version = top
        .get("checkpoint_version")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let args = top.get("args").filter(|a| !a.is_none());
    if let Some(args_tp) = args.and_then(args::tensor_parallel_size)
        && args_tp != k
    {
        return Err(CheckpointError::invalid(
            &resolved.dir,
            format!(
                "args say tensor_model_parallel_size {args_tp} but {k} rank file(s) were found; \
                 point at the iteration directory holding every mp_rank_NN"
            ),
        ));
    }
    let mut config = match (args, &opts.config) {
        (Some(a), _) => args::config_from_args(a, opts.vocab_size).map_err(|source| {
            CheckpointError::IncompleteArgs {
                path: first_file.to_path_buf(),
                source,
            }
        })?,
        (None, Some(c)) => {
            let mut c = c.clone();
            if let Some(v) = opts.vocab_size {
                c.vocab_size = v;
            }
            c
        }
        (None, None) => {
            return Err(CheckpointError::invalid(
                first_file,
                "the checkpoint has no `args`, so its model config is unknown; give the config \
                 explicitly (a config file or a pretrained model name)",
            ));
        }
    };
    let word = shards[0]
        .get("embeddings.word_embeddings.weight")
        .expect("checked by extract_shard");
    let dtype = torch_pickle::dtype_name(word.kind()).to_string();
    config.padded_vocab_size = word.size()[0] * k;

    let heads = config.num_attention_heads;
    if heads % k != 0 {
        return Err(CheckpointError::invalid(
            first_file,
            format!("{heads} attention heads do not divide over {k} tensor-parallel ranks"),
        ));
    }
    if version < 2.0 {
        let head_dim = config.hidden_size / heads;
        for (i, shard) in shards.iter_mut().enumerate() {
            for (name, t) in shard.iter_mut() {
                if name.contains(".query_key_value.") {
                    *t = qkv::to_canonical(t, version, heads / k, head_dim).map_err(|source| {
                        CheckpointError::Qkv {
                            path: resolved.rank_files[wanted[i]].clone(),
                            tensor: name.clone(),
                            source: Box::new(source),
                        }
                    })?;
                }
            }
        }
    }

    let state = if k == target_tp {
        shards.pop().expect("one shard")
    } else {
        let target_padded =
            if config.padded_vocab_size % (config.make_vocab_size_divisible_by * target_tp) == 0
                && opts.vocab_size.is_none()
            {
                config.padded_vocab_size
            } else {
                config.padded_vocab_for(target_tp)
            };
        let state = reshard::reshard(&resolved.dir, shards, target_tp, tp_rank, target_padded)?;
        config.padded_vocab_size = target_padded;
        state
    };
    let info = CheckpointInfo {
        dir: resolved.dir.clone(),
        rank_files: resolved.rank_files.clone(),
        container,
        iteration: top
            .get("iteration")
            .and_then(Value::as_i64)
            .or(resolved.iteration),
        release: resolved.release,
        checkpoint_version: version,
        tensor_parallel_size: k,
        has_args: args.is_some(),
        dtype,
        ignored_keys: ignored,
    };
    Ok((config, state, info))
}

/// The model entry of a checkpoint (`model`, unwrapping `module`), or the
/// top level when it is itself a flat state dict (NeMo weights).
pub fn model_entry(top: &Value) -> &Value {
    let mut model = top
        .get("model")
        .or_else(|| top.get("state_dict"))
        .unwrap_or(top);
    while let Some(inner) = model.get("module") {
        model = inner;
    }
    model
}

/// One rank file's encoder parameters in canonical names, and the model
/// keys that were skipped.
fn extract_shard(file: &Path, top: &Value, heads: bool) -> Result<(StateDict, Vec<String>)> {
    let model = model_entry(top);
    let mut shard = BTreeMap::new();
    let mut skipped = Vec::new();
    model.visit_tensors(
        "",
        &mut |key, t: &Tensor| match names::canonical(key, heads) {
            Some(name) => {
                shard.insert(name, t.shallow_clone());
            }
            None => skipped.push(key.to_string()),
        },
    );
    for required in [
        "embeddings.word_embeddings.weight",
        "encoder.layers.0.self_attention.query_key_value.weight",
    ] {
        if !shard.contains_key(required) {
            let found: Vec<_> = skipped.iter().take(5).cloned().collect();
            return Err(CheckpointError::invalid(
                file,
                format!(
                    "not a Megatron-LM BERT checkpoint: no {required} (under `model`: \
                     language_model.embedding / language_model.transformer|encoder); first keys seen: {found:?}"
                ),
            ));
        }
    }
    Ok((shard, skipped))
}
