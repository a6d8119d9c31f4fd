//! Random generator state and Megatron's model-parallel RNG tracker.
//!
//! libtorch draws dropout masks from the *default* generator of the device
//! the op runs on. Megatron-LM keeps two streams per rank:
//!
//! * the default generator, seeded with the same `seed` on every rank of a
//!   tensor-parallel group, for dropout on replicated activations (embedding
//!   and hidden dropout), so all ranks of the group draw identical masks;
//! * a model-parallel generator (`model_parallel_cuda_manual_seed`), seeded
//!   with `seed + 2718 + tp_rank`, swapped in around dropout on
//!   tensor-parallel activations (attention probabilities of this rank's
//!   heads), so the ranks draw different masks for their different heads.
//!
//! [`ModelParallelRng`] is that second stream: [`ModelParallelRng::fork`]
//! runs a closure with the tracker's state in the default generator and puts
//! the default state back afterwards, as Megatron's
//! `CudaRNGStatesTracker.fork()` does. The free functions read and write the
//! default generators' states (the byte tensors `torch.get_rng_state()` and
//! `torch.cuda.get_rng_state(device)` return) for training checkpoints.
//!
//! The default generators are process-wide: one process runs one rank, and
//! forks must not run concurrently on several threads of a process.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tch::{Device, Kind, Tensor};

/// What Megatron adds to the seed for the model-parallel generator (before
/// adding the tensor-parallel rank).
pub const MODEL_PARALLEL_SEED_OFFSET: u64 = 2718;

unsafe extern "C" {
    fn mt_rng_get_state(
        device_type: c_int,
        index: i64,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn mt_rng_set_state(
        device_type: c_int,
        index: i64,
        state: *const c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn mt_rng_seeded_state(
        device_type: c_int,
        index: i64,
        seed: u64,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn mt_rng_initial_seed(
        device_type: c_int,
        index: i64,
        seed: *mut u64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// Errors reading or writing generator states.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    /// libtorch refused the operation (no CUDA, no such device, a state of
    /// the wrong size for this generator, ...).
    #[error("random generator of {device:?}: {message}")]
    Torch { device: Device, message: String },
    /// The device has no default generator this module can reach.
    #[error("random generator states are supported on CPU and CUDA devices, not {0:?}")]
    UnsupportedDevice(Device),
    /// A state tensor that cannot be a generator state.
    #[error(
        "invalid random generator state for {what}: {message} (restore a state saved from the same kind of device)"
    )]
    InvalidState { what: String, message: String },
    /// [`ModelParallelRng::fork`] was called inside a fork of the same tracker.
    #[error("ModelParallelRng::fork called inside a fork of the same tracker")]
    NestedFork,
}

/// Result alias for this module.
pub type Result<T, E = RngError> = std::result::Result<T, E>;

fn device_code(device: Device) -> Result<(c_int, i64)> {
    match device {
        Device::Cpu => Ok((0, 0)),
        Device::Cuda(i) => Ok((1, i as i64)),
        other => Err(RngError::UnsupportedDevice(other)),
    }
}

fn torch_error(device: Device, err: &[c_char]) -> RngError {
    // SAFETY: the shim NUL-terminates `err` (zero-initialised by the caller).
    let message = unsafe { CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    RngError::Torch { device, message }
}

fn owned(device: Device, ptr: *mut c_void, err: &[c_char]) -> Result<Tensor> {
    if ptr.is_null() {
        return Err(torch_error(device, err));
    }
    // SAFETY: the shim returned a fresh `new at::Tensor` that we now own.
    Ok(unsafe { Tensor::from_ptr(ptr.cast()) })
}

/// A copy of the state of `device`'s default generator: a 1-D uint8 CPU
/// tensor (`torch.get_rng_state()` for the CPU, `torch.cuda.get_rng_state(i)`
/// for `Device::Cuda(i)`).
pub fn rng_state(device: Device) -> Result<Tensor> {
    let (ty, index) = device_code(device)?;
    let mut err = [0 as c_char; 1024];
    // SAFETY: plain values in, an owned handle or null out.
    let ptr = unsafe { mt_rng_get_state(ty, index, err.as_mut_ptr(), err.len()) };
    owned(device, ptr, &err)
}

/// Replaces the state of `device`'s default generator with `state` (from
/// [`rng_state`] of the same kind of device).
pub fn set_rng_state(device: Device, state: &Tensor) -> Result<()> {
    let (ty, index) = device_code(device)?;
    let state = checked_state(state, &format!("the default generator of {device:?}"))?;
    let mut err = [0 as c_char; 1024];
    // SAFETY: `state` outlives the call; the shim only reads it.
    let rc = unsafe {
        mt_rng_set_state(
            ty,
            index,
            state.as_ptr() as *const c_void,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        return Err(torch_error(device, &err));
    }
    Ok(())
}

/// The seed `device`'s default generator was last seeded with
/// (`torch.initial_seed()`), e.g. by `tch::manual_seed`.
pub fn initial_seed(device: Device) -> Result<u64> {
    let (ty, index) = device_code(device)?;
    let mut err = [0 as c_char; 1024];
    let mut seed = 0u64;
    // SAFETY: `seed` is a valid out pointer for the call.
    let rc = unsafe { mt_rng_initial_seed(ty, index, &mut seed, err.as_mut_ptr(), err.len()) };
    if rc != 0 {
        return Err(torch_error(device, &err));
    }
    Ok(seed)
}

/// The state `device`'s default generator would have right after being
/// seeded with `seed`, computed without changing the generator.
pub fn seeded_rng_state(device: Device, seed: u64) -> Result<Tensor> {
    let (ty, index) = device_code(device)?;
    let mut err = [0 as c_char; 1024];
    // SAFETY: plain values in, an owned handle or null out.
    let ptr = unsafe { mt_rng_seeded_state(ty, index, seed, err.as_mut_ptr(), err.len()) };
    owned(device, ptr, &err)
}

/// The default CPU generator's state (`torch.get_rng_state()`).
pub fn cpu_rng_state() -> Tensor {
    // The CPU generator always exists and copying its state cannot fail.
    rng_state(Device::Cpu).expect("reading the default CPU generator's state")
}

/// Restores the default CPU generator (`torch.set_rng_state(state)`).
pub fn set_cpu_rng_state(state: &Tensor) -> Result<()> {
    set_rng_state(Device::Cpu, state)
}

/// The state of the default CUDA generator of `device` (`Device::Cuda(i)`);
/// an error on CPU-only builds and machines.
pub fn cuda_rng_state(device: Device) -> Result<Tensor> {
    cuda_only(device)?;
    rng_state(device)
}

/// Restores the default CUDA generator of `device`.
pub fn set_cuda_rng_state(device: Device, state: &Tensor) -> Result<()> {
    cuda_only(device)?;
    set_rng_state(device, state)
}

fn cuda_only(device: Device) -> Result<()> {
    match device {
        Device::Cuda(_) => Ok(()),
        other => Err(RngError::UnsupportedDevice(other)),
    }
}

/// A generator state must be a 1-D uint8 tensor; it is handed to libtorch as
/// a contiguous CPU tensor (as `torch.cuda.set_rng_state` does).
fn checked_state(state: &Tensor, what: &str) -> Result<Tensor> {
    let invalid = |message: String| RngError::InvalidState {
        what: what.to_string(),
        message,
    };
    if !state.defined() {
        return Err(invalid("the tensor is undefined".into()));
    }
    if state.kind() != Kind::Uint8 || state.dim() != 1 {
        return Err(invalid(format!(
            "expected a 1-D uint8 tensor, got {:?} of shape {:?}",
            state.kind(),
            state.size()
        )));
    }
    Ok(state.to_device(Device::Cpu).contiguous())
}

/// Puts the default generator's state back when dropped (also on unwinding).
struct RestoreDefault {
    device: Device,
    saved: Option<Tensor>,
}

impl RestoreDefault {
    fn finish(mut self) -> Result<()> {
        match self.saved.take() {
            Some(s) => set_rng_state(self.device, &s),
            None => Ok(()),
        }
    }
}

impl Drop for RestoreDefault {
    fn drop(&mut self) {
        if let Some(s) = self.saved.take() {
            // Only reached when unwinding or after an earlier error, which is
            // the error reported; a second failure has nothing to add.
            let _ = set_rng_state(self.device, &s);
        }
    }
}

/// Clears the fork flag when dropped.
struct ForkFlag<'a>(&'a AtomicBool);

impl Drop for ForkFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Tracker {
    device: Device,
    tp_rank: i64,
    seed: AtomicU64,
    state: Mutex<Tensor>,
    forking: AtomicBool,
}

fn tracker_seed(seed: i64, tp_rank: i64) -> u64 {
    (seed as u64)
        .wrapping_add(MODEL_PARALLEL_SEED_OFFSET)
        .wrapping_add(tp_rank as u64)
}

/// Megatron's model-parallel RNG tracker for one device: a generator state of
/// its own, seeded with `seed + 2718 + tp_rank`, that [`fork`](Self::fork)
/// swaps into the device's default generator.
///
/// Clones share the state (the model holds one; the checkpointer reads and
/// restores it through [`state`](Self::state) / [`set_state`](Self::set_state)).
#[derive(Clone, Debug)]
pub struct ModelParallelRng {
    inner: Arc<Tracker>,
}

impl ModelParallelRng {
    /// Megatron's `model_parallel_cuda_manual_seed(seed)` for the tracker:
    /// the model-parallel generator of `device` starts from seed
    /// `seed + 2718 + tp_rank`. Pass the same `seed` the default generator
    /// was seeded with (`tch::manual_seed(seed)`); this does not touch the
    /// default generator. Seeds wrap like `torch.manual_seed`'s (`as u64`).
    pub fn new(seed: i64, tp_rank: i64, device: Device) -> Result<Self> {
        let tracker_seed = tracker_seed(seed, tp_rank);
        let state = seeded_rng_state(device, tracker_seed)?;
        Ok(Self {
            inner: Arc::new(Tracker {
                device,
                tp_rank,
                seed: AtomicU64::new(tracker_seed),
                state: Mutex::new(state),
                forking: AtomicBool::new(false),
            }),
        })
    }

    /// Re-seeds the tracker (and every clone) with `seed + 2718 + tp_rank`,
    /// as `model_parallel_cuda_manual_seed(seed)` does; the default
    /// generator is untouched.
    pub fn manual_seed(&self, seed: i64) -> Result<()> {
        let t = &self.inner;
        let s = tracker_seed(seed, t.tp_rank);
        let state = seeded_rng_state(t.device, s)?;
        *t.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        t.seed.store(s, Ordering::SeqCst);
        Ok(())
    }

    /// [`new`](Self::new) with the seed `device`'s default generator was last
    /// seeded with (`torch.initial_seed()`): after `tch::manual_seed(seed)`
    /// this gives Megatron's seeding without passing the seed around.
    pub fn from_default_seed(tp_rank: i64, device: Device) -> Result<Self> {
        Self::new(initial_seed(device)? as i64, tp_rank, device)
    }

    /// The device whose default generator [`fork`](Self::fork) swaps.
    pub fn device(&self) -> Device {
        self.inner.device
    }

    /// The tracker's seed (`seed + 2718 + tp_rank`).
    pub fn seed(&self) -> u64 {
        self.inner.seed.load(Ordering::SeqCst)
    }

    /// The tensor-parallel rank the tracker was created for.
    pub fn tp_rank(&self) -> i64 {
        self.inner.tp_rank
    }

    /// Runs `f` with the tracker's state in the device's default generator:
    /// saves the default state, installs the tracker's, runs `f`, keeps the
    /// advanced state for the next fork and restores the default state (also
    /// when `f` panics). Random ops in `f` on this device draw from the
    /// tracker's stream; the default stream is left exactly as it was.
    pub fn fork<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let t = &self.inner;
        if t.forking.swap(true, Ordering::SeqCst) {
            return Err(RngError::NestedFork);
        }
        let _flag = ForkFlag(&t.forking);
        let restore = RestoreDefault {
            device: t.device,
            saved: Some(rng_state(t.device)?),
        };
        {
            let state = t.state.lock().unwrap_or_else(|e| e.into_inner());
            set_rng_state(t.device, &state)?;
        }
        let out = f();
        let advanced = rng_state(t.device)?;
        *t.state.lock().unwrap_or_else(|e| e.into_inner()) = advanced;
        restore.finish()?;
        Ok(out)
    }

    /// A copy of the tracker's generator state (for training checkpoints).
    pub fn state(&self) -> Tensor {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .copy()
    }

    /// Restores a state returned by [`state`](Self::state) (of a tracker on
    /// the same kind of device).
    pub fn set_state(&self, state: &Tensor) -> Result<()> {
        let what = format!("the model-parallel generator of {:?}", self.inner.device);
        let state = checked_state(state, &what)?;
        let mut current = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.size() != current.size() {
            return Err(RngError::InvalidState {
                what,
                message: format!(
                    "expected {} bytes, got {}",
                    current.size()[0],
                    state.size()[0]
                ),
            });
        }
        *current = state.copy();
        Ok(())
    }
}
