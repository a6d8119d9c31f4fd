//! Gradient synchronisation across data-parallel replicas.
//!
//! Within a tensor-parallel group no gradient sync is needed: sharded
//! parameters own their gradients, and replicated parameters (LayerNorms,
//! row-parallel biases, position embeddings, heads) see identical inputs and
//! output gradients on every rank, so their gradients already agree.
//! Across data-parallel replicas every gradient must be averaged.

use tch::Tensor;

use super::error::{ParallelError, Result};
use crate::comm::ProcessGroup;

/// Averages the `.grad()` of every parameter over `group` (the data-parallel
/// group), flattening them into one buffer per dtype so there is one
/// collective per step. Parameters without a gradient are skipped (every rank
/// must skip the same ones, which holds when all run the same model).
pub fn all_reduce_gradients_mean(params: &[Tensor], group: &dyn ProcessGroup) -> Result<()> {
    if group.size() == 1 {
        return Ok(());
    }
    let grads: Vec<Tensor> = params
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect();
    let mut by_kind: Vec<(tch::Kind, Vec<&Tensor>)> = Vec::new();
    for g in &grads {
        match by_kind.iter_mut().find(|(k, _)| *k == g.kind()) {
            Some((_, v)) => v.push(g),
            None => by_kind.push((g.kind(), vec![g])),
        }
    }
    let scale = 1.0 / group.size() as f64;
    for (_, gs) in by_kind {
        let flats: Vec<Tensor> = gs.iter().map(|g| g.reshape([-1])).collect();
        let mut buffer = Tensor::f_cat(&flats, 0)?;
        group
            .all_reduce_sum(&mut buffer)
            .map_err(|e| ParallelError::Comm(e.to_string()))?;
        let _ = buffer.f_mul_scalar_(scale)?;
        let mut offset = 0;
        for g in gs {
            let n = g.numel() as i64;
            let mut g = g.shallow_clone();
            g.f_copy_(&buffer.f_narrow(0, offset, n)?.f_view_as(&g)?)?;
            offset += n;
        }
    }
    Ok(())
}
