// Gradient helpers tch lacks: dropping a parameter's gradient (PyTorch's
// zero_grad(set_to_none=True)), so the next backward writes a fresh gradient
// instead of accumulating into a zeroed buffer.
#include <ATen/ATen.h>

extern "C" {

// Resets the gradient of each of the `n` tensors to undefined.
void mt_clear_grads(at::Tensor* const* tensors, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    tensors[i]->mutable_grad().reset();
  }
}

}  // extern "C"
