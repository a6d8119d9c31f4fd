//! State dicts: loading/saving a `VarStore` by canonical name, and the
//! tensor-parallel layout (which parameters are split along which dimension),
//! with helpers that cut full (TP=1) weights into a rank's shard and put
//! shards back together.

use std::collections::{BTreeMap, HashMap};

use tch::{Tensor, nn};

use super::StateDict;
use super::error::{ModelError, Result};
use crate::comm::ProcessGroup;

/// The dimension along which `name` is split across tensor-parallel ranks
/// (`None`: replicated), following Megatron-LM.
pub fn tp_split_dim(name: &str) -> Option<i64> {
    if name == "embeddings.word_embeddings.weight"
        || name.ends_with(".self_attention.query_key_value.weight")
        || name.ends_with(".self_attention.query_key_value.bias")
        || name.ends_with(".mlp.dense_h_to_4h.weight")
        || name.ends_with(".mlp.dense_h_to_4h.bias")
    {
        Some(0)
    } else if name.ends_with(".self_attention.dense.weight")
        || name.ends_with(".mlp.dense_4h_to_h.weight")
    {
        Some(1)
    } else {
        None
    }
}

/// This rank's shard of a full (TP=1) state dict: split parameters are cut
/// into `tp` contiguous chunks along [`tp_split_dim`], the rest are shared.
pub fn shard_state_dict(full: &StateDict, tp: i64, rank: i64) -> Result<StateDict> {
    full.iter()
        .map(|(name, t)| {
            let shard = match tp_split_dim(name) {
                None => t.shallow_clone(),
                Some(dim) => {
                    let n = t.size()[dim as usize];
                    if n % tp != 0 {
                        return Err(ModelError::NotDivisible {
                            what: name.clone(),
                            value: n,
                            tp,
                        });
                    }
                    t.f_narrow(dim, rank * (n / tp), n / tp)?.f_contiguous()?
                }
            };
            Ok((name.clone(), shard))
        })
        .collect()
}

/// Reassembles a full state dict from every rank's shard (in rank order).
pub fn merge_shards(shards: &[StateDict]) -> Result<StateDict> {
    let Some(first) = shards.first() else {
        return Ok(StateDict::new());
    };
    first
        .iter()
        .map(|(name, t)| {
            let merged = match tp_split_dim(name) {
                None => t.shallow_clone(),
                Some(dim) => {
                    let parts = shards
                        .iter()
                        .map(|s| {
                            s.get(name)
                                .ok_or_else(|| ModelError::MissingKey(name.clone()))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::f_cat(&parts, dim)?
                }
            };
            Ok((name.clone(), merged))
        })
        .collect()
}

/// Gathers every rank's shards over the tensor-parallel `group` into full
/// tensors (each rank gets the full state dict). `sd` must hold the same
/// names on every rank.
pub fn gather_state_dict(sd: &StateDict, group: &dyn ProcessGroup) -> Result<StateDict> {
    sd.iter()
        .map(|(name, t)| {
            let full = match tp_split_dim(name) {
                Some(dim) if group.size() > 1 => group
                    .all_gather_cat(&t.f_contiguous()?, dim)
                    .map_err(|e| ModelError::Comm(format!("gathering `{name}`: {e}")))?,
                _ => t.shallow_clone(),
            };
            Ok((name.clone(), full))
        })
        .collect()
}

/// The parameters of `vs` by canonical name (no copies: they share storage).
pub fn var_store_state_dict(vs: &nn::VarStore) -> StateDict {
    vs.variables().into_iter().collect()
}

/// Copies `sd` into the variables of `vs`, checking shapes. Every variable
/// must be present unless its name starts with one of `optional_prefixes`.
/// Returns the names in `sd` that `vs` does not have.
pub fn load_into_var_store(
    vs: &nn::VarStore,
    sd: &StateDict,
    optional_prefixes: &[&str],
) -> Result<Vec<String>> {
    let vars: HashMap<String, Tensor> = vs.variables();
    let sorted: BTreeMap<&String, &Tensor> = vars.iter().collect();
    // Check everything before touching any variable.
    for (name, var) in &sorted {
        match sd.get(*name) {
            None if optional_prefixes.iter().any(|p| name.starts_with(p)) => {}
            None => return Err(ModelError::MissingKey((*name).clone())),
            Some(src) if src.size() != var.size() => {
                return Err(ModelError::Shape {
                    key: (*name).clone(),
                    expected: var.size(),
                    got: src.size(),
                });
            }
            Some(_) => {}
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &sorted {
            if let Some(src) = sd.get(*name) {
                let mut var = var.shallow_clone();
                var.f_copy_(&src.f_to_device(var.device())?.f_to_kind(var.kind())?)?;
            }
        }
        Ok(())
    })?;
    Ok(sd
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_and_merge_round_trip() {
        let mut full = StateDict::new();
        full.insert(
            "embeddings.word_embeddings.weight".into(),
            Tensor::arange(8 * 3, (tch::Kind::Float, tch::Device::Cpu)).view([8, 3]),
        );
        full.insert(
            "encoder.layers.0.mlp.dense_4h_to_h.weight".into(),
            Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).view([3, 4]),
        );
        full.insert(
            "encoder.layers.0.mlp.dense_4h_to_h.bias".into(),
            Tensor::ones([3], (tch::Kind::Float, tch::Device::Cpu)),
        );
        let shards: Vec<StateDict> = (0..2)
            .map(|r| shard_state_dict(&full, 2, r).unwrap())
            .collect();
        assert_eq!(
            shards[1]["embeddings.word_embeddings.weight"].size(),
            [4, 3]
        );
        assert_eq!(
            shards[1]["encoder.layers.0.mlp.dense_4h_to_h.weight"].size(),
            [3, 2]
        );
        assert_eq!(
            shards[1]["encoder.layers.0.mlp.dense_4h_to_h.weight"].double_value(&[0, 0]),
            2.0
        );
        let merged = merge_shards(&shards).unwrap();
        for (k, v) in &full {
            assert!(merged[k].equal(v), "{k}");
        }
        assert!(shard_state_dict(&full, 3, 0).is_err());
    }
}
