//! Gradient bookkeeping for training steps.

use std::ffi::c_void;

use tch::Tensor;

unsafe extern "C" {
    fn mt_clear_grads(tensors: *const *const c_void, n: usize);
}

/// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`):
/// the next backward stores fresh gradients instead of adding into zeroed
/// buffers, which saves a memset and an add over every parameter per step
/// and frees the memory in between. `Tensor::grad()` is undefined afterwards.
pub fn clear_grads(params: &[Tensor]) {
    let ptrs: Vec<*const c_void> = params.iter().map(|p| p.as_ptr() as *const c_void).collect();
    // SAFETY: every pointer is a live at::Tensor owned by `params` for the call.
    unsafe { mt_clear_grads(ptrs.as_ptr(), ptrs.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn clear_grads_undefines_and_next_backward_is_fresh() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&p * 2.0).sum(Kind::Float).backward();
        assert_eq!(p.grad().double_value(&[0]), 2.0);
        clear_grads(std::slice::from_ref(&p));
        assert!(!p.grad().defined());
        (&p * 3.0).sum(Kind::Float).backward();
        assert_eq!(
            p.grad().double_value(&[0]),
            3.0,
            "no accumulation into the old gradient"
        );
    }
}
