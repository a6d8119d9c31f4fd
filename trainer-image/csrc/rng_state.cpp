// Access to libtorch's default random generators, which tch does not expose:
// reading and writing a generator's state (what torch.get_rng_state() /
// torch.cuda.get_rng_state(device) return: a CPU uint8 tensor) and reading
// the seed it was last seeded with (torch.initial_seed()).
//
// `device_type` is 0 for the CPU generator and 1 for the CUDA generator of
// device `index`. Every function holds the generator's mutex while it works
// (libtorch's rule for generator access) and reports errors through `err`
// (a NUL-terminated message of at most `err_len` bytes) instead of throwing.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

namespace {

void write_error(const char* msg, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) return;
  std::strncpy(err, msg, err_len - 1);
  err[err_len - 1] = '\0';
}

// The default generator of the requested device; throws with a clear message
// when CUDA is asked for but this libtorch or machine has none.
at::Generator default_generator(int device_type, int64_t index) {
  if (device_type == 0) {
    return at::detail::getDefaultCPUGenerator();
  }
  if (device_type != 1) {
    throw std::invalid_argument("unknown device type " + std::to_string(device_type));
  }
  if (!at::globalContext().hasCUDA()) {
    throw std::runtime_error("CUDA is not available (CPU-only libtorch or no GPU visible)");
  }
  int64_t count = at::detail::getCUDAHooks().deviceCount();
  if (index < 0 || index >= count) {
    throw std::out_of_range("CUDA device " + std::to_string(index) + " does not exist (" +
                            std::to_string(count) + " visible)");
  }
  return at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index)));
}

// Runs `body`, turning exceptions into an error message; returns success.
template <typename F>
bool guarded(F&& body, char* err, size_t err_len) {
  try {
    body();
    return true;
  } catch (const c10::Error& e) {
    write_error(e.what_without_backtrace(), err, err_len);
  } catch (const std::exception& e) {
    write_error(e.what(), err, err_len);
  }
  return false;
}

}  // namespace

extern "C" {

// A copy of the generator's state (new handle owned by the caller), or nullptr with `err` set.
at::Tensor* mt_rng_get_state(int device_type, int64_t index, char* err, size_t err_len) {
  at::Tensor* out = nullptr;
  guarded(
      [&] {
        at::Generator gen = default_generator(device_type, index);
        std::lock_guard<std::mutex> lock(gen.mutex());
        out = new at::Tensor(gen.get_state());
      },
      err, err_len);
  return out;
}

// Replaces the generator's state with `*state`; returns 0, or -1 with `err` set.
int mt_rng_set_state(int device_type, int64_t index, const at::Tensor* state, char* err, size_t err_len) {
  bool ok = guarded(
      [&] {
        at::Generator gen = default_generator(device_type, index);
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(*state);
      },
      err, err_len);
  return ok ? 0 : -1;
}

// The state the generator has right after being seeded with `seed`, computed
// without disturbing it (its own state is restored before returning). Returns
// a new handle or nullptr with `err` set.
at::Tensor* mt_rng_seeded_state(int device_type, int64_t index, uint64_t seed, char* err, size_t err_len) {
  at::Tensor* out = nullptr;
  guarded(
      [&] {
        at::Generator gen = default_generator(device_type, index);
        std::lock_guard<std::mutex> lock(gen.mutex());
        at::Tensor saved = gen.get_state();
        gen.set_current_seed(seed);
        at::Tensor seeded = gen.get_state();
        gen.set_state(saved);
        out = new at::Tensor(seeded);
      },
      err, err_len);
  return out;
}

// The seed the generator was last seeded with (torch.initial_seed()) into
// `*seed`; returns 0, or -1 with `err` set.
int mt_rng_initial_seed(int device_type, int64_t index, uint64_t* seed, char* err, size_t err_len) {
  bool ok = guarded(
      [&] {
        at::Generator gen = default_generator(device_type, index);
        std::lock_guard<std::mutex> lock(gen.mutex());
        *seed = gen.current_seed();
      },
      err, err_len);
  return ok ? 0 : -1;
}

}  // extern "C"
