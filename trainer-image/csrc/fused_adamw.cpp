// AdamW through libtorch's fused kernel (`torch.optim.AdamW(fused=True)`,
// Hugging Face's `adamw_torch_fused`), which tch does not expose: one pass
// over each parameter instead of the ~10 elementwise kernels of the
// per-tensor path.
//
// Like torch.optim's `_fused_adam`, the step counters (float32 scalars on
// the parameters' device) are incremented first and the kernel then reads
// them for the bias corrections. Errors are reported through `err` (a
// NUL-terminated message of at most `err_len` bytes) instead of thrown.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <cstring>
#include <exception>
#include <vector>

namespace {

std::vector<at::Tensor> gather(at::Tensor* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

void write_error(const char* msg, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) return;
  std::strncpy(err, msg, err_len - 1);
  err[err_len - 1] = '\0';
}

}  // namespace

extern "C" {

// One AdamW step of `n` parameters of one dtype and device with gradients
// `grads`, moments `exp_avgs`/`exp_avg_sqs` and step counters `steps`.
// Returns 0 on success, -1 with `err` set otherwise.
int mt_fused_adamw(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* exp_avgs,
                   at::Tensor* const* exp_avg_sqs, at::Tensor* const* steps, size_t n, double lr,
                   double beta1, double beta2, double weight_decay, double eps, char* err,
                   size_t err_len) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> step_list = gather(steps, n);
    at::_foreach_add_(step_list, 1);
    at::_fused_adamw_(gather(params, n), gather(grads, n), gather(exp_avgs, n),
                      gather(exp_avg_sqs, n), {}, step_list, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false, std::nullopt, std::nullopt);
    return 0;
  } catch (const c10::Error& e) {
    write_error(e.what_without_backtrace(), err, err_len);
  } catch (const std::exception& e) {
    write_error(e.what(), err, err_len);
  }
  return -1;
}

}  // extern "C"
