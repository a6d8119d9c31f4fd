//! The measures the exactness step reports (all computed in f64 on the CPU).
//!
//! * fp32: max |ours - HF| over real (non-pad) positions, and for gradients
//!   the relative measure of tests/model_util: max |a - b| / max |b|, where
//!   gradients that are analytically zero (max |b| < 1e-4, e.g. the QA bias)
//!   are scaled by 1e-2 instead.
//! * bf16: relative L2 error ||a - b|| / ||b|| (per-element maxima of two
//!   bf16 computations are dominated by single roundings; the norm is not),
//!   over real positions for logits and over all gradients together.

use megatron_trainer::model::StateDict;
use tch::{Device, Kind, Tensor};

use super::error::{GpuCheckError, Result};

fn f64_cpu(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)
}

/// Max |a - b| where `mask` (broadcastable to the shapes, 1 = real) is set.
pub fn max_abs_diff(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> Result<f64> {
    let mut d = f64_cpu(a)?.f_sub(&f64_cpu(b)?)?.f_abs()?;
    if let Some(m) = mask {
        d = d.f_mul(&f64_cpu(m)?)?;
    }
    Ok(d.f_max()?.double_value(&[]))
}

/// ||a - b|| / ||b|| over the positions where `mask` is set.
pub fn rel_l2(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> Result<f64> {
    let (mut a, mut b) = (f64_cpu(a)?, f64_cpu(b)?);
    if let Some(m) = mask {
        let m = f64_cpu(m)?;
        a = a.f_mul(&m)?;
        b = b.f_mul(&m)?;
    }
    let den = b.f_norm()?.double_value(&[]);
    Ok(a.f_sub(&b)?.f_norm()?.double_value(&[]) / den.max(f64::MIN_POSITIVE))
}

/// tests/model_util's gradient measure (see the module docs).
pub fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (f64_cpu(a)?, f64_cpu(b)?);
    let scale = b.f_abs()?.f_max()?.double_value(&[]);
    let scale = if scale < 1e-4 { 1e-2 } else { scale };
    Ok(a.f_sub(&b)?.f_abs()?.f_max()?.double_value(&[]) / scale)
}

/// Checks that `ours` and `reference` name the same parameters.
pub fn same_names(ours: &StateDict, reference: &StateDict, what: &str) -> Result<()> {
    let (a, b): (Vec<_>, Vec<_>) = (ours.keys().collect(), reference.keys().collect());
    if a != b {
        let only_ours: Vec<_> = a.iter().filter(|k| !reference.contains_key(**k)).collect();
        let only_ref: Vec<_> = b.iter().filter(|k| !ours.contains_key(**k)).collect();
        return Err(GpuCheckError::Arg(format!(
            "{what}: gradients of different parameters (only ours: {only_ours:?}; only the \
             reference: {only_ref:?})"
        )));
    }
    Ok(())
}

/// The worst [`max_rel_diff`] over every gradient, with its parameter name.
pub fn worst_grad_rel_diff(ours: &StateDict, reference: &StateDict) -> Result<(f64, String)> {
    same_names(ours, reference, "fp32")?;
    let mut worst = (0.0, String::new());
    for (name, g) in reference {
        let d = max_rel_diff(&ours[name], g)?;
        if d > worst.0 || worst.1.is_empty() {
            worst = (d, name.clone());
        }
    }
    Ok(worst)
}

/// ||ours - ref|| / ||ref|| over all gradients together.
pub fn grads_rel_l2(ours: &StateDict, reference: &StateDict) -> Result<f64> {
    same_names(ours, reference, "bf16")?;
    let (mut num, mut den) = (0.0, 0.0);
    for (name, g) in reference {
        let (a, b) = (f64_cpu(&ours[name])?, f64_cpu(g)?);
        num += a
            .f_sub(&b)?
            .f_square()?
            .f_sum(Kind::Double)?
            .double_value(&[]);
        den += b.f_square()?.f_sum(Kind::Double)?.double_value(&[]);
    }
    Ok((num / den.max(f64::MIN_POSITIVE)).sqrt())
}
