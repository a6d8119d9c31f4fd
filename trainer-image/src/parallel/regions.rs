//! Megatron's tensor-parallel region functions, as autograd functions.
//!
//! * [`copy_to_tensor_parallel_region`]: identity forward, sum-all-reduce of
//!   the gradient in backward (inputs of column-parallel layers).
//! * [`reduce_from_tensor_parallel_region`]: sum-all-reduce forward, identity
//!   backward (outputs of row-parallel layers and the vocab-parallel embedding).
//!
//! tch cannot define autograd functions or tensor hooks, so both are
//! `torch::autograd::Function`s in a small C++ shim (`csrc/tp_regions.cpp`,
//! built by `build.rs` against the same libtorch). Their backward (and the
//! reduce's forward) call back into Rust through [`all_reduce_callback`] with a
//! group id from a process-wide registry, which runs
//! [`ProcessGroup::all_reduce_sum`]. Keeping them as graph nodes means one
//! `loss.backward()` does the whole tensor-parallel backward, including
//! all-reduces at exactly the points Megatron does them, with no segmented
//! forward/backward bookkeeping. Errors in a backward collective surface as
//! the `Err` of `Tensor::f_backward`.
//!
//! With a group of size 1 both functions are the identity and no node is added.

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, Weak};

use tch::Tensor;

use super::error::{ParallelError, Result};
use crate::comm::ProcessGroup;

type AllReduceFn = unsafe extern "C" fn(u64, *mut c_void, *mut c_char, usize) -> *mut c_void;

unsafe extern "C" {
    fn mt_copy_to_tp_region(
        x: *const c_void,
        fn_: AllReduceFn,
        group: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn mt_reduce_from_tp_region(
        x: *const c_void,
        fn_: AllReduceFn,
        group: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
}

/// Groups reachable from the C++ shim by index. Entries are weak: a graph that
/// outlives its group fails its backward with an error instead of touching
/// freed memory.
static REGISTRY: Mutex<Vec<Weak<dyn ProcessGroup>>> = Mutex::new(Vec::new());

/// A tensor-parallel process group registered with the autograd shim.
#[derive(Clone, Debug)]
pub struct TpGroup {
    group: Arc<dyn ProcessGroup>,
    id: u64,
}

impl TpGroup {
    /// Registers `group` (once per distinct group object) for use in autograd.
    pub fn new(group: Arc<dyn ProcessGroup>) -> Self {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let existing = reg.iter().position(|w| {
            w.upgrade()
                .is_some_and(|g| std::ptr::addr_eq(Arc::as_ptr(&g), Arc::as_ptr(&group)))
        });
        let id = match existing {
            Some(i) => i,
            None => {
                reg.push(Arc::downgrade(&group));
                reg.len() - 1
            }
        } as u64;
        Self { group, id }
    }

    /// The single-process group (TP = 1).
    pub fn single() -> Self {
        Self::new(Arc::new(crate::comm::SingleProcess))
    }

    /// This rank within the tensor-parallel group.
    pub fn rank(&self) -> i64 {
        self.group.rank() as i64
    }

    /// The tensor-parallel size.
    pub fn size(&self) -> i64 {
        self.group.size() as i64
    }

    /// The underlying process group.
    pub fn group(&self) -> &Arc<dyn ProcessGroup> {
        &self.group
    }
}

fn write_err(msg: &str, err: *mut c_char, err_len: usize) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let bytes = msg.as_bytes();
    let n = bytes.len().min(err_len - 1);
    // SAFETY: the shim passes a buffer of `err_len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// Called by the shim: takes ownership of `buffer`, all-reduces it across
/// registered group `group` and hands back the result's handle.
unsafe extern "C" fn all_reduce_callback(
    group: u64,
    buffer: *mut c_void,
    err: *mut c_char,
    err_len: usize,
) -> *mut c_void {
    // SAFETY: the shim allocates `buffer` with `new at::Tensor` for us to own,
    // which is what tch's Drop (`delete`) expects.
    let mut t = unsafe { Tensor::from_ptr(buffer.cast()) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let g = REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group as usize)
            .and_then(Weak::upgrade);
        match g {
            None => Err(format!(
                "tensor-parallel group {group} was dropped while its autograd graph was still in use"
            )),
            Some(g) => g.all_reduce_sum(&mut t).map_err(|e| e.to_string()),
        }
    }));
    let message = match outcome {
        Ok(Ok(())) => {
            let t = std::mem::ManuallyDrop::new(t);
            return t.as_ptr() as *mut c_void;
        }
        Ok(Err(m)) => m,
        Err(_) => "panic inside the all-reduce".to_string(),
    };
    write_err(&message, err, err_len);
    std::ptr::null_mut()
}

type ShimFn =
    unsafe extern "C" fn(*const c_void, AllReduceFn, u64, *mut c_char, usize) -> *mut c_void;

fn apply(shim: ShimFn, x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    let mut err = [0 as c_char; 1024];
    // SAFETY: `x` outlives the call; the shim returns a new owned handle or null.
    let out = unsafe {
        shim(
            x.as_ptr() as *const c_void,
            all_reduce_callback,
            group.id,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if out.is_null() {
        // SAFETY: the shim NUL-terminates `err`.
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        return Err(ParallelError::Comm(msg.to_string_lossy().into_owned()));
    }
    // SAFETY: `out` is a fresh `new at::Tensor` we now own.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// Identity forward; all-reduces the gradient across `group` in backward.
pub fn copy_to_tensor_parallel_region(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    if group.size() == 1 {
        return Ok(x.shallow_clone());
    }
    apply(mt_copy_to_tp_region, x, group)
}

/// All-reduces across `group` in forward; identity in backward.
pub fn reduce_from_tensor_parallel_region(x: &Tensor, group: &TpGroup) -> Result<Tensor> {
    if group.size() == 1 {
        return Ok(x.shallow_clone());
    }
    apply(mt_reduce_from_tp_region, x, group)
}
