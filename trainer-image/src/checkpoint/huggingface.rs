//! Hugging Face `MegatronBert*` (pre-LN) and `Bert*` (post-LN) safetensors
//! checkpoints imported into canonical names: Q, K and V fused into
//! `query_key_value` in `[heads, 3, head_dim]` row order, the vocabulary
//! padded with zero rows to `make_vocab_size_divisible_by x tp`, then cut
//! for a tensor-parallel rank.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::error::{CheckpointError, Result};
use super::megatron::names::is_vocab;
use crate::model::{Architecture, BertConfig, StateDict};

/// What was imported.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HfInfo {
    pub dir: PathBuf,
    /// The safetensors files read, in order.
    pub files: Vec<PathBuf>,
    /// `model_type` from config.json (`megatron-bert`, `bert`).
    pub model_type: String,
    /// Keys that are not encoder parameters (task or pretraining heads, buffers).
    pub ignored_keys: Vec<String>,
}

/// True when `path` looks like a Hugging Face checkpoint directory (or a
/// safetensors file inside one).
pub fn is_hf_checkpoint(path: &Path) -> bool {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    };
    dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file()
            || path.extension().is_some_and(|e| e == "safetensors"))
}

/// The safetensors files and config of the checkpoint at `path` (directory
/// with config.json and model.safetensors or a sharded index, or one file).
fn files(path: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        return Ok((dir, vec![path.to_path_buf()]));
    }
    let single = path.join("model.safetensors");
    if single.is_file() {
        return Ok((path.to_path_buf(), vec![single]));
    }
    let index = path.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| CheckpointError::io(&index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CheckpointError::format(&index, e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| CheckpointError::format(&index, "no weight_map object"))?;
        let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        names.sort();
        names.dedup();
        return Ok((
            path.to_path_buf(),
            names.into_iter().map(|n| path.join(n)).collect(),
        ));
    }
    Err(CheckpointError::invalid(
        path,
        "no model.safetensors or model.safetensors.index.json (PyTorch .bin Hugging Face checkpoints: \
         convert them with `save_pretrained(safe_serialization=True)`)",
    ))
}

/// Loads rank `tp_rank` of `target_tp` from a Hugging Face checkpoint.
pub fn load(path: &Path, target_tp: i64, tp_rank: i64) -> Result<(BertConfig, StateDict, HfInfo)> {
    if target_tp < 1 || tp_rank < 0 || tp_rank >= target_tp {
        return Err(CheckpointError::invalid(
            path,
            format!("tensor-parallel rank {tp_rank} of size {target_tp} is not a valid rank"),
        ));
    }
    let (dir, files) = files(path)?;
    let config_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| CheckpointError::io(&config_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CheckpointError::format(&config_path, e.to_string()))?;
    let model_type = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let mut config = BertConfig::from_json_or_yaml(&text)
        .map_err(|e| CheckpointError::invalid(&config_path, e.to_string()))?;
    if model_type == "megatron-bert" {
        config.architecture = Architecture::MegatronPreLn;
    }

    let mut raw: BTreeMap<String, Tensor> = BTreeMap::new();
    for f in &files {
        let tensors =
            Tensor::read_safetensors(f).map_err(|e| CheckpointError::format(f, e.to_string()))?;
        raw.extend(tensors);
    }
    let (mut full, ignored) = to_canonical(&dir, raw, &config)?;
    let padded = config.padded_vocab_for(target_tp);
    config.padded_vocab_size = padded;
    for (name, t) in full.iter_mut() {
        if is_vocab(name) {
            *t = super::megatron::reshard_repad(t, padded)
                .map_err(|e| CheckpointError::torch(name.clone(), e))?;
        }
    }
    let shard = if target_tp == 1 {
        full
    } else {
        crate::model::shard_state_dict(&full, target_tp, tp_rank)
            .map_err(|e| CheckpointError::invalid(&dir, e.to_string()))?
    };
    let info = HfInfo {
        dir,
        files,
        model_type,
        ignored_keys: ignored,
    };
    Ok((config, shard, info))
}

/// Maps Hugging Face names to canonical names, fusing Q, K and V.
fn to_canonical(
    dir: &Path,
    raw: BTreeMap<String, Tensor>,
    cfg: &BertConfig,
) -> Result<(StateDict, Vec<String>)> {
    let post_ln = cfg.architecture == Architecture::BertPostLn;
    let mut out = StateDict::new();
    let mut qkv: BTreeMap<(String, String), [Option<Tensor>; 3]> = BTreeMap::new();
    let mut ignored = Vec::new();
    for (key, t) in raw {
        let k = key.strip_prefix("bert.").unwrap_or(&key);
        let k = k.replace(".gamma", ".weight").replace(".beta", ".bias");
        let mapped: Option<String> = if let Some(rest) = k.strip_prefix("embeddings.") {
            match rest {
                "word_embeddings.weight"
                | "position_embeddings.weight"
                | "token_type_embeddings.weight" => Some(k.clone()),
                "LayerNorm.weight" | "LayerNorm.bias" if post_ln => Some(format!(
                    "embeddings.layernorm.{}",
                    rest.rsplit('.').next().unwrap_or_default()
                )),
                _ => None,
            }
        } else if let Some(rest) = k.strip_prefix("encoder.layer.") {
            let (i, p) = rest.split_once('.').unwrap_or(("", ""));
            let (module, param) = p.rsplit_once('.').unwrap_or(("", ""));
            let layer = |m: &str| Some(format!("encoder.layers.{i}.{m}.{param}"));
            match module {
                "attention.self.query" | "attention.self.key" | "attention.self.value" => {
                    let slot = match module.rsplit('.').next() {
                        Some("query") => 0,
                        Some("key") => 1,
                        _ => 2,
                    };
                    qkv.entry((i.to_string(), param.to_string())).or_default()[slot] =
                        Some(t.shallow_clone());
                    continue;
                }
                "attention.output.dense" => layer("self_attention.dense"),
                "intermediate.dense" => layer("mlp.dense_h_to_4h"),
                "output.dense" => layer("mlp.dense_4h_to_h"),
                "attention.ln" if !post_ln => layer("input_layernorm"),
                "ln" if !post_ln => layer("post_attention_layernorm"),
                "attention.output.LayerNorm" if post_ln => layer("attention_output_layernorm"),
                "output.LayerNorm" if post_ln => layer("output_layernorm"),
                _ => None,
            }
        } else if matches!(k.as_str(), "encoder.ln.weight" | "encoder.ln.bias") && !post_ln {
            Some(k.replace("encoder.ln.", "encoder.final_layernorm."))
        } else if matches!(k.as_str(), "pooler.dense.weight" | "pooler.dense.bias") {
            Some(k.clone())
        } else {
            None
        };
        match mapped {
            Some(name) => {
                out.insert(name, t);
            }
            None => ignored.push(key),
        }
    }
    let heads = cfg.num_attention_heads;
    for ((layer, param), parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            return Err(CheckpointError::invalid(
                dir,
                format!("layer {layer}: attention.self query/key/value {param} incomplete"),
            ));
        };
        let fused = fuse_qkv(&q, &k, &v, heads).map_err(|e| {
            CheckpointError::invalid(dir, format!("layer {layer} query/key/value {param}: {e}"))
        })?;
        out.insert(
            format!("encoder.layers.{layer}.self_attention.query_key_value.{param}"),
            fused,
        );
    }
    if !out.contains_key("embeddings.word_embeddings.weight") {
        return Err(CheckpointError::invalid(
            dir,
            "no embeddings.word_embeddings.weight: not a Hugging Face BERT or MegatronBert checkpoint",
        ));
    }
    Ok((out, ignored))
}

/// Interleaves per-head rows: `[heads, 3, head_dim]` along dim 0.
fn fuse_qkv(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64) -> Result<Tensor, tch::TchError> {
    let size = q.size();
    let rows = size[0];
    let mut shape = vec![heads, rows / heads];
    shape.extend_from_slice(&size[1..]);
    let parts: Vec<Tensor> = [q, k, v]
        .iter()
        .map(|t| t.f_reshape(shape.as_slice()))
        .collect::<Result<_, _>>()?;
    let mut out_shape = vec![3 * rows];
    out_shape.extend_from_slice(&size[1..]);
    Tensor::f_stack(&parts, 1)?.f_reshape(out_shape.as_slice())
}
