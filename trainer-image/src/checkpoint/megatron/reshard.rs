//! Gathering a checkpoint's tensor-parallel shards and cutting them for
//! another tensor-parallel size.

use std::path::Path;

use tch::Tensor;

use super::names::{is_vocab, split_dim};
use crate::checkpoint::error::{CheckpointError, Result};
use crate::model::StateDict;

/// Rank `rank` of `tp` from the full set of a checkpoint's shards (in rank
/// order); vocabulary-sized tensors are padded with zero rows or trimmed to
/// `padded_vocab` rows first.
pub fn reshard(
    dir: &Path,
    mut shards: Vec<StateDict>,
    tp: i64,
    rank: i64,
    padded_vocab: i64,
) -> Result<StateDict> {
    let torch = |what: &str, e| CheckpointError::torch(format!("{}: {what}", dir.display()), e);
    let names: Vec<String> = shards[0].keys().cloned().collect();
    let mut out = StateDict::new();
    for name in names {
        let parts: Vec<Tensor> = shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                s.remove(&name).ok_or_else(|| {
                    CheckpointError::invalid(dir, format!("{name} is missing from mp_rank_{i:02}"))
                })
            })
            .collect::<Result<_>>()?;
        let full = match split_dim(&name) {
            None => {
                for (i, p) in parts.iter().enumerate().skip(1) {
                    if p.size() != parts[0].size() || !p.equal(&parts[0]) {
                        return Err(CheckpointError::invalid(
                            dir,
                            format!(
                                "{name} should be replicated but mp_rank_{i:02} differs from mp_rank_00"
                            ),
                        ));
                    }
                }
                parts.into_iter().next().expect("one shard")
            }
            Some(dim) => Tensor::f_cat(&parts, dim).map_err(|e| torch(&name, e))?,
        };
        let full = if is_vocab(&name) {
            repad(&full, padded_vocab).map_err(|e| torch(&name, e))?
        } else {
            full
        };
        let shard = match split_dim(&name) {
            None => full,
            Some(dim) => {
                let n = full.size()[dim as usize];
                if n % tp != 0 {
                    return Err(CheckpointError::invalid(
                        dir,
                        format!(
                            "{name}: {n} rows/columns do not divide over {tp} tensor-parallel ranks"
                        ),
                    ));
                }
                full.f_narrow(dim, rank * (n / tp), n / tp)
                    .and_then(|t| t.f_contiguous())
                    .map_err(|e| torch(&name, e))?
            }
        };
        out.insert(name, shard);
    }
    Ok(out)
}

/// `t` with exactly `rows` rows along dim 0: extra rows are zero, surplus
/// rows (vocabulary padding) are dropped.
pub fn repad(t: &Tensor, rows: i64) -> Result<Tensor, tch::TchError> {
    let have = t.size()[0];
    if have == rows {
        Ok(t.shallow_clone())
    } else if have > rows {
        t.f_narrow(0, 0, rows)
    } else {
        let mut shape = t.size();
        shape[0] = rows - have;
        let zeros = Tensor::f_zeros(shape.as_slice(), (t.kind(), t.device()))?;
        Tensor::f_cat(&[t.shallow_clone(), zeros], 0)
    }
}
