// Megatron's tensor-parallel "region" functions as libtorch autograd Functions.
//
// tch cannot define custom autograd functions, so this shim does. Each
// Function keeps the surrounding autograd graph intact and calls back into
// Rust (through a C function pointer plus a group id) to sum-all-reduce a
// tensor across the tensor-parallel group:
//   copy-to-region:     forward identity,    backward all-reduce
//   reduce-from-region: forward all-reduce,  backward identity
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

extern "C" {
// Takes ownership of `buffer` (a heap-allocated at::Tensor handle, freed with
// delete), sum-all-reduces it across group `group` and returns the handle of
// the result (owned by the caller), or nullptr after writing a NUL-terminated
// message of at most `err_len` bytes to `err`.
typedef at::Tensor* (*mt_all_reduce_fn)(uint64_t group, at::Tensor* buffer, char* err, size_t err_len);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor all_reduce_copy(int64_t fn_bits, int64_t group, const at::Tensor& t) {
  auto fn = reinterpret_cast<mt_all_reduce_fn>(static_cast<intptr_t>(fn_bits));
  auto* buffer = new at::Tensor(t.clone(at::MemoryFormat::Contiguous));
  char err[1024];
  err[0] = '\0';
  at::Tensor* out = fn(static_cast<uint64_t>(group), buffer, err, sizeof(err));
  if (out == nullptr) {
    err[sizeof(err) - 1] = '\0';
    throw std::runtime_error(std::string("tensor-parallel all-reduce failed: ") + err);
  }
  at::Tensor result = *out;
  delete out;
  return result;
}

struct CopyToRegion : public torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t fn, int64_t group) {
    ctx->saved_data["fn"] = fn;
    ctx->saved_data["group"] = group;
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor g = grads[0];
    if (g.defined()) {
      g = all_reduce_copy(ctx->saved_data["fn"].toInt(), ctx->saved_data["group"].toInt(), g);
    }
    return {g, at::Tensor(), at::Tensor()};
  }
};

struct ReduceFromRegion : public torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& x, int64_t fn, int64_t group) {
    return all_reduce_copy(fn, group, x);
  }
  static variable_list backward(AutogradContext* /*ctx*/, variable_list grads) {
    return {grads[0], at::Tensor(), at::Tensor()};
  }
};

void write_error(const std::exception& e, char* err, size_t err_len) {
  if (err_len == 0) return;
  std::strncpy(err, e.what(), err_len - 1);
  err[err_len - 1] = '\0';
}

}  // namespace

extern "C" {

// Applies copy-to-region to `*x`; returns a new handle or nullptr with `err` set.
at::Tensor* mt_copy_to_tp_region(const at::Tensor* x, mt_all_reduce_fn fn, uint64_t group, char* err,
                                 size_t err_len) {
  try {
    return new at::Tensor(CopyToRegion::apply(*x, static_cast<int64_t>(reinterpret_cast<intptr_t>(fn)),
                                              static_cast<int64_t>(group)));
  } catch (const std::exception& e) {
    write_error(e, err, err_len);
    return nullptr;
  }
}

// Applies reduce-from-region to `*x`; returns a new handle or nullptr with `err` set.
at::Tensor* mt_reduce_from_tp_region(const at::Tensor* x, mt_all_reduce_fn fn, uint64_t group, char* err,
                                     size_t err_len) {
  try {
    return new at::Tensor(ReduceFromRegion::apply(*x, static_cast<int64_t>(reinterpret_cast<intptr_t>(fn)),
                                                  static_cast<int64_t>(group)));
  } catch (const std::exception& e) {
    write_error(e, err, err_len);
    return nullptr;
  }
}

}  // extern "C"
