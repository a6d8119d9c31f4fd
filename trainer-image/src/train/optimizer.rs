//! AdamW with exactly the arithmetic of `torch.optim.AdamW` (the per-tensor
//! `foreach=False` path PyTorch takes on CPU), so a run matches a PyTorch or
//! Hugging Face fine-tune step for step.
//!
//! Per parameter with a gradient, at its step `t` (counted per parameter):
//! ```text
//! p  *= 1 - lr * weight_decay                 (decay group only)
//! m   = lerp(m, g, 1 - beta1)
//! v   = v * beta2 + (1 - beta2) * g * g
//! p  += (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//! Each line runs the same ATen kernels PyTorch runs (`mul_`, `lerp_`,
//! `addcmul_`, `sqrt`, `div`, `add_`, `addcdiv_`). tch's `addcmul_` and
//! `addcdiv_` lack the `value` argument, so `value * a` is computed first
//! into a preallocated scratch buffer and passed with value 1: the kernels
//! evaluate `self + value * a * b` and `self + value * a / b` left to right,
//! so `self + 1 * (value * a) * b` rounds exactly the same way. Results
//! agree with PyTorch bit for bit (tests/train_optimizer.rs), and no step
//! allocates parameter-sized memory.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use super::{OptimizerState, TrainError, TrainResult};

/// Whether AdamW decays `name`: not biases, not LayerNorm parameters (our
/// canonical LayerNorm names all contain `layernorm`), like Hugging Face's
/// and NeMo's parameter groups.
pub fn applies_weight_decay(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("layernorm"))
}

#[derive(Debug)]
struct ParamSlot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: i64,
    decay: bool,
}

/// AdamW over named parameters (this rank's shards under canonical names).
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<ParamSlot>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Two flat buffers per dtype, as long as the largest parameter.
    scratch: Vec<(Kind, Tensor, Tensor)>,
}

impl AdamW {
    /// An optimizer for `params` (name, parameter) with `spec`'s betas, eps
    /// and weight decay; the learning rate comes with each [`AdamW::step`].
    /// Parameters keep their order; moments start at zero.
    pub fn new(params: Vec<(String, Tensor)>, spec: &crds::OptimizerSpec) -> Self {
        let slots: Vec<ParamSlot> = params
            .into_iter()
            .map(|(name, param)| {
                let zeros = || param.zeros_like().detach();
                ParamSlot {
                    decay: applies_weight_decay(&name),
                    exp_avg: zeros(),
                    exp_avg_sq: zeros(),
                    step: 0,
                    name,
                    param,
                }
            })
            .collect();
        let mut scratch: Vec<(Kind, Tensor, Tensor)> = Vec::new();
        for s in &slots {
            let (kind, n) = (s.param.kind(), s.param.numel() as i64);
            match scratch.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, a, _)) if a.numel() as i64 >= n => {}
                Some(entry) => {
                    let opts = (kind, s.param.device());
                    entry.1 = Tensor::empty([n], opts);
                    entry.2 = Tensor::empty([n], opts);
                }
                None => {
                    let opts = (kind, s.param.device());
                    scratch.push((kind, Tensor::empty([n], opts), Tensor::empty([n], opts)));
                }
            }
        }
        let [beta1, beta2] = spec.betas;
        Self {
            slots,
            beta1,
            beta2,
            eps: spec.eps,
            weight_decay: spec.weight_decay,
            scratch,
        }
    }

    /// Names of the parameters in the weight-decay group.
    pub fn decayed_parameters(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// One AdamW update with learning rate `lr` of every parameter that has a
    /// gradient (parameters without one are skipped and keep their step
    /// count, as in PyTorch).
    pub fn step(&mut self, lr: f64) -> TrainResult<()> {
        let (beta1, beta2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let scratch = &self.scratch;
        tch::no_grad(|| -> TrainResult<()> {
            for s in &mut self.slots {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let shape = s.param.size();
                let n = s.param.numel() as i64;
                let (_, a, b) = scratch
                    .iter()
                    .find(|(k, _, _)| *k == s.param.kind())
                    .ok_or_else(|| {
                        TrainError::Other(format!("no optimizer scratch for `{}`", s.name))
                    })?;
                let tmp = a.f_narrow(0, 0, n)?.f_view(shape.as_slice())?;
                let mut denom = b.f_narrow(0, 0, n)?.f_view(shape.as_slice())?;
                s.step += 1;
                if wd != 0.0 && s.decay {
                    let _ = s.param.f_mul_scalar_(1.0 - lr * wd)?;
                }
                let _ = s.exp_avg.f_lerp_(&grad, 1.0 - beta1)?;
                // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                let _ = s.exp_avg_sq.f_mul_scalar_(beta2)?;
                let scaled_grad = grad.f_mul_scalar_out(&tmp, 1.0 - beta2)?;
                let _ = s.exp_avg_sq.f_addcmul_(&scaled_grad, &grad)?;
                let t = s.step as f64;
                let bias_correction1 = 1.0 - beta1.powf(t);
                let bias_correction2 = 1.0 - beta2.powf(t);
                let step_size = lr / bias_correction1;
                let bias_correction2_sqrt = bias_correction2.powf(0.5);
                // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                let _ = s.exp_avg_sq.f_sqrt_out(&denom)?;
                let _ = denom.f_div_scalar_(bias_correction2_sqrt)?;
                let _ = denom.f_add_scalar_(eps)?;
                // param.addcdiv_(exp_avg, denom, value=-step_size)
                let scaled_avg = s.exp_avg.f_mul_scalar_out(&tmp, -step_size)?;
                let _ = s.param.f_addcdiv_(&scaled_avg, &denom)?;
            }
            Ok(())
        })
    }

    /// The moments and step counts by parameter name. The tensors share
    /// storage with the optimizer: serialize them before the next step.
    pub fn state(&self) -> OptimizerState {
        let mut st = OptimizerState::default();
        for s in &self.slots {
            st.exp_avg.insert(s.name.clone(), s.exp_avg.shallow_clone());
            st.exp_avg_sq
                .insert(s.name.clone(), s.exp_avg_sq.shallow_clone());
            st.steps.insert(s.name.clone(), s.step);
        }
        st
    }

    /// Copies a saved state in. Every parameter must be present with its
    /// shape, and no other names may appear (a checkpoint of another model
    /// or tensor-parallel layout is rejected).
    pub fn load_state(&mut self, state: OptimizerState) -> TrainResult<()> {
        let OptimizerState {
            exp_avg,
            exp_avg_sq,
            steps,
        } = state;
        check_names("exp_avg", &exp_avg, &self.slots)?;
        check_names("exp_avg_sq", &exp_avg_sq, &self.slots)?;
        for s in &self.slots {
            if !steps.contains_key(&s.name) {
                return Err(invalid(format!(
                    "optimizer state has no step count for parameter `{}`",
                    s.name
                )));
            }
            for (what, t) in [
                ("exp_avg", &exp_avg[&s.name]),
                ("exp_avg_sq", &exp_avg_sq[&s.name]),
            ] {
                if t.size() != s.param.size() {
                    return Err(invalid(format!(
                        "optimizer state `{what}` of `{}` has shape {:?}, the parameter {:?}: \
                         the checkpoint was written for another model or tensor-parallel size",
                        s.name,
                        t.size(),
                        s.param.size()
                    )));
                }
            }
        }
        tch::no_grad(|| -> TrainResult<()> {
            for s in &mut self.slots {
                let dev_kind = |t: &Tensor| -> TrainResult<Tensor> {
                    Ok(t.f_to_device(s.param.device())?.f_to_kind(s.param.kind())?)
                };
                s.exp_avg.f_copy_(&dev_kind(&exp_avg[&s.name])?)?;
                s.exp_avg_sq.f_copy_(&dev_kind(&exp_avg_sq[&s.name])?)?;
                s.step = steps[&s.name];
            }
            Ok(())
        })
    }
}

fn invalid(msg: String) -> TrainError {
    TrainError::InvalidInput(msg)
}

fn check_names(what: &str, sd: &BTreeMap<String, Tensor>, slots: &[ParamSlot]) -> TrainResult<()> {
    if let Some(s) = slots.iter().find(|s| !sd.contains_key(&s.name)) {
        return Err(invalid(format!(
            "optimizer state `{what}` has no entry for parameter `{}`: the checkpoint was \
             written for another model",
            s.name
        )));
    }
    if let Some(extra) = sd.keys().find(|k| !slots.iter().any(|s| &s.name == *k)) {
        return Err(invalid(format!(
            "optimizer state `{what}` has an entry for `{extra}`, which this model does not have"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_groups() {
        assert!(applies_weight_decay(
            "encoder.layers.0.mlp.dense_h_to_4h.weight"
        ));
        assert!(applies_weight_decay("embeddings.word_embeddings.weight"));
        assert!(!applies_weight_decay(
            "encoder.layers.0.mlp.dense_h_to_4h.bias"
        ));
        assert!(!applies_weight_decay(
            "encoder.layers.0.input_layernorm.weight"
        ));
        assert!(!applies_weight_decay("encoder.final_layernorm.bias"));
    }

    #[test]
    fn load_state_rejects_wrong_shapes_and_names() {
        let p = Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("w".into(), p)], &crds::OptimizerSpec::default());
        let mut st = opt.state();
        st.exp_avg.insert(
            "w".into(),
            Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)),
        );
        let e = opt.load_state(st).unwrap_err();
        assert!(
            e.is_invalid_input() && e.to_string().contains("shape"),
            "{e}"
        );
        let mut st = opt.state();
        st.exp_avg_sq.insert(
            "other".into(),
            Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
        );
        let e = opt.load_state(st).unwrap_err();
        assert!(e.to_string().contains("`other`"), "{e}");
    }
}
