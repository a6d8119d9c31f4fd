//! Device plumbing tch does not expose: synchronizing, the device memory in
//! use, and libtorch's global TF32 / deterministic-algorithm switches.
//!
//! The switches are members of `at::Context`; like `train::precision` does
//! for autocast, they are called through their C++ symbols (exported by
//! `libtorch_cpu`): a non-virtual member takes `this` as its first argument.

use std::ffi::{c_int, c_void};

use tch::Device;

use super::error::{GpuCheckError, Result};

unsafe extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context18setAllowTF32CuBLASEb"]
    fn at_set_allow_tf32_cublas(ctx: *mut c_void, allow: bool);
    #[link_name = "_ZNK2at7Context15allowTF32CuBLASEv"]
    fn at_allow_tf32_cublas(ctx: *const c_void) -> bool;
    #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
    fn at_set_allow_tf32_cudnn(ctx: *mut c_void, allow: bool);
    #[link_name = "_ZN2at7Context26setDeterministicAlgorithmsEbb"]
    fn at_set_deterministic(ctx: *mut c_void, on: bool, warn_only: bool);
}

/// `cuda` (GPU 0; an error when libtorch sees none) or `cpu`.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err(GpuCheckError::NoCuda),
        other => Err(GpuCheckError::Arg(format!(
            "--device {other}: expected cuda or cpu"
        ))),
    }
}

/// Waits for the device's queued work (timings end here).
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// fp32 matmuls in true fp32: TF32 off for cuBLAS and cuDNN (libtorch's
/// default for cuBLAS, set anyway so the run does not depend on it).
pub fn disable_tf32() {
    // SAFETY: plain setters on libtorch's process-wide context.
    unsafe {
        let ctx = at_global_context();
        at_set_allow_tf32_cublas(ctx, false);
        at_set_allow_tf32_cudnn(ctx, false);
    }
}

/// Whether cuBLAS may use TF32 for fp32 matmuls (reported with the figures).
pub fn tf32_cublas() -> bool {
    // SAFETY: a const getter on libtorch's context.
    unsafe { at_allow_tf32_cublas(at_global_context()) }
}

/// Deterministic kernels: without them two runs of the same steps differ in
/// the last bits, and a bit-exact resume cannot be told apart from a broken
/// one. Only the strict mode makes memory-efficient attention's backward
/// deterministic (one key split instead of atomics); with `warn_only` it just
/// warns. Strict mode makes ops without a deterministic kernel fail, and
/// cuBLAS needs `CUBLAS_WORKSPACE_CONFIG=:4096:8` (scripts/gpu-check sets it).
pub fn deterministic_algorithms(warn_only: bool) {
    // SAFETY: a plain setter on libtorch's context.
    unsafe { at_set_deterministic(at_global_context(), true, warn_only) }
}

/// What libtorch says about CUDA, for the log: whether it is available, the
/// device count, and what allocating on GPU 0 answers. The answer tells a
/// binary that lacks libtorch_cuda ("Cannot initialize CUDA without
/// ATen_cuda library", the CUDA hooks were never registered) from a machine
/// without a GPU ("Found no NVIDIA driver").
pub fn info() -> serde_json::Value {
    let probe = match tch::Tensor::f_zeros([1], (tch::Kind::Float, Device::Cuda(0))) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string().lines().next().unwrap_or_default().to_string(),
    };
    serde_json::json!({
        "cuda_available": tch::Cuda::is_available(),
        "device_count": tch::Cuda::device_count(),
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        "allocate_on_cuda0": probe,
    })
}

type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;

/// Memory the step used, in MiB, and how it was measured. CUDA: device memory
/// in use (total - free), i.e. the caching allocator's reservations plus the
/// CUDA context; the allocator never returns memory on its own, so read after
/// the steps it is their peak (Python's side reads it the same way). CPU:
/// this process's peak RSS.
pub fn memory_in_use_mib(device: Device) -> Result<(f64, &'static str)> {
    let Device::Cuda(_) = device else {
        return Ok((peak_rss_mib()?, "cpu VmHWM"));
    };
    sync(device);
    let lib = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]
        .iter()
        // SAFETY: the CUDA runtime is already loaded by libtorch_cuda; this only looks it up.
        .find_map(|n| unsafe { libloading::Library::new(n) }.ok())
        .ok_or_else(|| GpuCheckError::Library {
            what: "the CUDA runtime".into(),
            detail: "no libcudart.so.13/.12 on the library path".into(),
        })?;
    // SAFETY: the signature is cudaMemGetInfo's.
    let get: libloading::Symbol<MemGetInfo> =
        unsafe { lib.get(b"cudaMemGetInfo") }.map_err(|e| GpuCheckError::Library {
            what: "cudaMemGetInfo".into(),
            detail: e.to_string(),
        })?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: valid out-pointers; the current device is the one libtorch used (GPU 0).
    let rc = unsafe { get(&mut free, &mut total) };
    if rc != 0 {
        return Err(GpuCheckError::Library {
            what: "cudaMemGetInfo".into(),
            detail: format!("error code {rc}"),
        });
    }
    Ok((
        (total - free) as f64 / (1u64 << 20) as f64,
        "cuda total-free after the timed steps",
    ))
}

fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(super::error::io("reading /proc/self/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(kb / 1024.0)
}
