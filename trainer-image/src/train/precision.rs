//! Mixed precision: fp32 master weights with the forward (and loss) under
//! libtorch autocast in bf16 or fp16.
//!
//! * `fp32`: no autocast.
//! * `bf16`: autocast to bfloat16, on CUDA and on CPU (libtorch's CPU
//!   autocast supports bf16; it is fast on CPUs with AVX-512 BF16/AMX and
//!   slower than fp32 elsewhere, but numerically the same recipe as on GPUs).
//!   No loss scaling (bf16 has fp32's range).
//! * `fp16`: autocast to float16 with loss scaling ([`super::loss_scale`]);
//!   CUDA only: fp16 on CPU is rejected as invalid input.
//!
//! tch only toggles CUDA autocast in its default dtype, so this module
//! calls libtorch's `at::autocast` functions for a device type and dtype
//! directly (their C++ symbols, exported by `libtorch_cpu`; the argument
//! enums are one byte, passed like C integers).

use crds::Precision;
use tch::{Device, Kind};

use super::{TrainError, TrainResult};

unsafe extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_clear_cache();
}

// c10::DeviceType and c10::ScalarType values.
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

/// The autocast dtype of `precision` (None for fp32).
pub fn autocast_kind(precision: Precision) -> Option<Kind> {
    match precision {
        Precision::Fp32 => None,
        Precision::Bf16 => Some(Kind::BFloat16),
        Precision::Fp16 => Some(Kind::Half),
    }
}

/// Checks that `precision` can run on `device`.
pub fn check_precision(precision: Precision, device: Device) -> TrainResult<()> {
    if precision == Precision::Fp16 && device == Device::Cpu {
        return Err(TrainError::InvalidInput(
            "spec.training.precision fp16 needs a GPU (float16 autocast with loss scaling); \
             on CPU use bf16 or fp32"
                .into(),
        ));
    }
    Ok(())
}

/// Runs `f` with autocast for `precision` on `device` enabled (the previous
/// autocast settings of this thread are restored afterwards). With fp32 it
/// just runs `f`.
pub fn with_autocast<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    let dtype = match precision {
        Precision::Fp32 => return f(),
        Precision::Bf16 => SCALAR_BFLOAT16,
        Precision::Fp16 => SCALAR_HALF,
    };
    let device_type = match device {
        Device::Cuda(_) => DEVICE_CUDA,
        _ => DEVICE_CPU,
    };
    struct Restore {
        device_type: i8,
        enabled: bool,
        dtype: i8,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: plain calls into libtorch's thread-local autocast state.
            unsafe {
                if at_decrement_nesting() == 0 {
                    at_clear_cache();
                }
                at_set_autocast_enabled(self.device_type, self.enabled);
                at_set_autocast_dtype(self.device_type, self.dtype);
            }
        }
    }
    // SAFETY: as above; the guard undoes the changes even if `f` panics.
    let _restore = unsafe {
        let restore = Restore {
            device_type,
            enabled: at_is_autocast_enabled(device_type),
            dtype: at_get_autocast_dtype(device_type),
        };
        at_set_autocast_dtype(device_type, dtype);
        at_set_autocast_enabled(device_type, true);
        at_increment_nesting();
        restore
    };
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn bf16_autocast_on_cpu_changes_matmul_dtype_and_restores() {
        let a = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let inside = with_autocast(Precision::Bf16, Device::Cpu, || a.matmul(&a).kind());
        assert_eq!(inside, Kind::BFloat16);
        assert_eq!(a.matmul(&a).kind(), Kind::Float, "autocast is off again");
        let fp32 = with_autocast(Precision::Fp32, Device::Cpu, || a.matmul(&a).kind());
        assert_eq!(fp32, Kind::Float);
    }

    #[test]
    fn fp16_on_cpu_is_invalid_input() {
        let e = check_precision(Precision::Fp16, Device::Cpu).unwrap_err();
        assert!(e.is_invalid_input() && e.to_string().contains("fp16"));
        assert!(check_precision(Precision::Bf16, Device::Cpu).is_ok());
    }
}
