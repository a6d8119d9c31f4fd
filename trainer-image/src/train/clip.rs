//! Global gradient-norm clipping across tensor-parallel shards, equal to
//! `torch.nn.utils.clip_grad_norm_` on the unsharded model.
//!
//! Each rank computes the L2 norm of each of its gradients (the kernel
//! `clip_grad_norm_` uses), squares and sums them in f64, counting split
//! parameters ([`tp_split_dim`]) on every rank and replicated ones only on
//! tensor-parallel rank 0 (their gradients agree across the group); the sum
//! is all-reduced over the group. Data-parallel gradients are averaged
//! before this, so every rank of the job gets the same norm, and an inf/NaN
//! gradient anywhere makes every rank's norm non-finite (which the fp16 loss
//! scaler uses to skip the step everywhere).

use tch::{Device, Kind, Tensor};

use super::TrainResult;
use crate::model::{BertTaskModel, StateDict, tp_split_dim};
use crate::parallel::TpGroup;

/// The global L2 norm of `grads` (this rank's gradients by canonical name)
/// over the tensor-parallel group.
pub fn global_grad_norm(grads: &StateDict, tp: &TpGroup) -> TrainResult<f64> {
    let first_rank = tp.rank() == 0;
    let norms: Vec<Tensor> = grads
        .iter()
        .filter(|(name, _)| first_rank || tp_split_dim(name).is_some())
        .map(|(_, g)| g.f_norm())
        .collect::<Result<_, _>>()?;
    let device = grads
        .values()
        .next()
        .map(Tensor::device)
        .unwrap_or(Device::Cpu);
    let mut sum_sq = if norms.is_empty() {
        Tensor::zeros([1], (Kind::Double, device))
    } else {
        Tensor::f_stack(&norms, 0)?
            .f_to_kind(Kind::Double)?
            .f_square()?
            .f_sum(Kind::Double)?
            .f_reshape([1])?
    };
    if tp.size() > 1 {
        tp.group().all_reduce_sum(&mut sum_sq)?;
    }
    Ok(sum_sq.f_double_value(&[0])?.sqrt())
}

/// Scales `grads` in place so their global norm is at most `max_norm`, with
/// PyTorch's coefficient `max_norm / (norm + 1e-6)` (applied only when below
/// 1; nothing is scaled when the norm is not finite). Returns the norm
/// before clipping.
pub fn clip_grads(grads: &StateDict, tp: &TpGroup, max_norm: f64) -> TrainResult<f64> {
    let norm = global_grad_norm(grads, tp)?;
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        tch::no_grad(|| -> TrainResult<()> {
            for g in grads.values() {
                let _ = g.shallow_clone().f_mul_scalar_(coef)?;
            }
            Ok(())
        })?;
    }
    Ok(norm)
}

/// Clips the gradients of `model` to the global norm `max_norm` (the whole
/// model's norm across the tensor-parallel group `tp`); returns the norm
/// before clipping.
pub fn clip_grad_norm(model: &BertTaskModel, tp: &TpGroup, max_norm: f64) -> TrainResult<f64> {
    clip_grads(&model.gradients(), tp, max_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_to_max_norm_and_returns_the_norm() {
        let mut grads = StateDict::new();
        grads.insert("a.weight".into(), Tensor::from_slice(&[3.0f32, 0.0]));
        grads.insert("b.bias".into(), Tensor::from_slice(&[4.0f32]));
        let tp = TpGroup::single();
        let norm = clip_grads(&grads, &tp, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let after = global_grad_norm(&grads, &tp).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        // Below the limit nothing changes.
        let norm2 = clip_grads(&grads, &tp, 10.0).unwrap();
        assert!((norm2 - after).abs() < 1e-12);
    }
}
