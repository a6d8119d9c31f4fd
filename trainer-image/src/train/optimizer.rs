//! AdamW with exactly the arithmetic of `torch.optim.AdamW(fused=True)`, the
//! optimizer Hugging Face's Trainer runs as `adamw_torch_fused`, so a run
//! matches a PyTorch or Hugging Face fine-tune step for step
//! (tests/train/optimizer.rs checks bit-identity).
//!
//! Per parameter with a gradient, at its step `t` (counted per parameter):
//! ```text
//! p  *= 1 - lr * weight_decay                 (decay group only)
//! m   = lerp(m, g, 1 - beta1)
//! v   = v * beta2 + (1 - beta2) * g * g
//! p  -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//! libtorch's fused kernel (`at::_fused_adamw_`, reached through
//! `csrc/fused_adamw.cpp` because tch does not expose it) does all of it in
//! one pass over each parameter, in place: no step allocates
//! parameter-sized memory. Parameters are stepped in groups of one weight
//! decay, dtype and device, as torch.optim groups them.

use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_void};

use tch::{Device, Kind, Tensor};

use super::{OptimizerState, TrainError, TrainResult};

unsafe extern "C" {
    fn mt_fused_adamw(
        params: *const *const c_void,
        grads: *const *const c_void,
        exp_avgs: *const *const c_void,
        exp_avg_sqs: *const *const c_void,
        steps: *const *const c_void,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

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
    /// The step count as the fused kernel reads it: a float32 scalar on the
    /// parameter's device, like torch.optim's fused `state["step"]`.
    step_tensor: Tensor,
    /// The same count, kept here so reading it never waits for the device.
    step: i64,
    decay: bool,
}

/// The tensors of one fused call: parameters of one decay group, dtype and
/// device that have gradients.
#[derive(Default)]
struct FusedGroup {
    params: Vec<*const c_void>,
    grads: Vec<*const c_void>,
    exp_avgs: Vec<*const c_void>,
    exp_avg_sqs: Vec<*const c_void>,
    steps: Vec<*const c_void>,
}

/// AdamW over named parameters (this rank's shards under canonical names).
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<ParamSlot>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
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
                    step_tensor: Tensor::zeros([], (Kind::Float, param.device())),
                    step: 0,
                    name,
                    param,
                }
            })
            .collect();
        let [beta1, beta2] = spec.betas;
        Self {
            slots,
            beta1,
            beta2,
            eps: spec.eps,
            weight_decay: spec.weight_decay,
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
        let grads: Vec<Tensor> = self.slots.iter().map(|s| s.param.grad()).collect();
        let mut groups: Vec<((bool, Kind, Device), FusedGroup)> = Vec::new();
        for (s, grad) in self.slots.iter_mut().zip(&grads) {
            if !grad.defined() {
                continue;
            }
            let key = (s.decay, s.param.kind(), s.param.device());
            let g = match groups.iter().position(|(k, _)| *k == key) {
                Some(i) => &mut groups[i].1,
                None => {
                    groups.push((key, FusedGroup::default()));
                    &mut groups.last_mut().expect("just pushed").1
                }
            };
            g.params.push(s.param.as_ptr() as *const c_void);
            g.grads.push(grad.as_ptr() as *const c_void);
            g.exp_avgs.push(s.exp_avg.as_ptr() as *const c_void);
            g.exp_avg_sqs.push(s.exp_avg_sq.as_ptr() as *const c_void);
            g.steps.push(s.step_tensor.as_ptr() as *const c_void);
            s.step += 1;
        }
        for ((decay, _, _), g) in &groups {
            let wd = if *decay { self.weight_decay } else { 0.0 };
            let mut err = [0 as c_char; 512];
            // SAFETY: every pointer is a live at::Tensor owned by `self.slots`
            // or `grads` for the duration of the call; the vectors are equally
            // long; `err` is zeroed and its length is passed.
            let rc = unsafe {
                mt_fused_adamw(
                    g.params.as_ptr(),
                    g.grads.as_ptr(),
                    g.exp_avgs.as_ptr(),
                    g.exp_avg_sqs.as_ptr(),
                    g.steps.as_ptr(),
                    g.params.len(),
                    lr,
                    self.beta1,
                    self.beta2,
                    wd,
                    self.eps,
                    err.as_mut_ptr(),
                    err.len(),
                )
            };
            if rc != 0 {
                // SAFETY: the shim NUL-terminated `err`.
                let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
                return Err(TrainError::Optimizer(msg.into_owned()));
            }
        }
        Ok(())
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
            match steps.get(&s.name) {
                None => {
                    return Err(invalid(format!(
                        "optimizer state has no step count for parameter `{}`",
                        s.name
                    )));
                }
                Some(&n) if n < 0 => {
                    return Err(invalid(format!(
                        "optimizer state has step count {n} for parameter `{}`; it cannot be \
                         negative (a corrupt checkpoint?)",
                        s.name
                    )));
                }
                Some(_) => {}
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
                // copy_ moves and casts in one: one tensor at a time crosses to the device.
                s.exp_avg.f_copy_(&exp_avg[&s.name])?;
                s.exp_avg_sq.f_copy_(&exp_avg_sq[&s.name])?;
                s.step = steps[&s.name];
                let _ = s.step_tensor.f_fill_(s.step as f64)?;
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
        let mut st = opt.state();
        st.steps.insert("w".into(), -3);
        let e = opt.load_state(st).unwrap_err();
        assert!(e.is_invalid_input() && e.to_string().contains("-3"), "{e}");
    }
}
