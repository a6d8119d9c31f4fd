//! NCCL collectives for CUDA tensors, with NCCL and the CUDA runtime loaded
//! at run time (`libloading`), so CPU builds and CPU-only machines need no CUDA.
//!
//! Why not `cudarc`: cudarc 0.19's dynamic loader looks for `libnccl.so`,
//! `libnccl.so.13`, `.12`, ... `.1` but never `libnccl.so.2`, the only file
//! the `nvidia-nccl-cu13` wheel ships and the soname libtorch loads, and it
//! panics instead of returning an error when a library is missing. The dozen
//! NCCL entry points used here have had a stable C ABI since NCCL 2.0.
//!
//! Calls run on the device's legacy default stream (where libtorch runs its
//! kernels unless told otherwise), then this thread waits for the stream with
//! the group's timeout, checking NCCL's asynchronous error state, and aborts
//! the communicator if a peer stops answering.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tch::Kind;

use super::group::{CommError, NcclLoadError};
use super::store::StoreClient;

type NcclResult = c_int;
type Comm = *mut c_void;
type Stream = *mut c_void;

#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; 128],
}

const NCCL_SUCCESS: NcclResult = 0;
const NCCL_IN_PROGRESS: NcclResult = 7;
const NCCL_SUM: c_int = 0;
const CUDA_SUCCESS: c_int = 0;
const CUDA_ERROR_NOT_READY: c_int = 600;

struct Lib {
    _nccl: libloading::Library,
    _cudart: libloading::Library,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> NcclResult,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> NcclResult,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> NcclResult,
    all_gather:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, Comm, Stream) -> NcclResult,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> NcclResult,
    comm_abort: unsafe extern "C" fn(Comm) -> NcclResult,
    comm_destroy: unsafe extern "C" fn(Comm) -> NcclResult,
    async_error: unsafe extern "C" fn(Comm, *mut NcclResult) -> NcclResult,
    error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
    set_device: unsafe extern "C" fn(c_int) -> c_int,
    stream_query: unsafe extern "C" fn(Stream) -> c_int,
    cuda_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

/// Opens the first of `names` that loads; else `failed` with every name
/// and its error (`name: error; ...`).
fn open_first(
    names: &[String],
    failed: impl FnOnce(String) -> NcclLoadError,
) -> Result<libloading::Library, NcclLoadError> {
    let mut errors = Vec::new();
    for n in names {
        // SAFETY: loading NCCL / the CUDA runtime runs only their initializers.
        match unsafe { libloading::Library::new(n) } {
            Ok(l) => return Ok(l),
            Err(e) => errors.push(format!("{n}: {e}")),
        }
    }
    Err(failed(errors.join("; ")))
}

impl Lib {
    fn load() -> Result<Self, NcclLoadError> {
        if !tch::Cuda::is_available() {
            return Err(NcclLoadError::CudaUnavailable);
        }
        let mut nccl_names = vec!["libnccl.so.2".to_string(), "libnccl.so".to_string()];
        if let Ok(p) = std::env::var("MEGATRON_NCCL_LIBRARY") {
            nccl_names.insert(0, p);
        }
        let nccl = open_first(&nccl_names, |tried| NcclLoadError::Nccl { tried })?;
        let cudart_names = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"].map(String::from);
        let cudart = open_first(&cudart_names, |tried| NcclLoadError::CudaRuntime { tried })?;
        macro_rules! sym {
            ($lib:expr, $name:literal) => {
                // SAFETY: the declared signature matches the C prototype in nccl.h / cuda_runtime_api.h.
                *unsafe { $lib.get($name.as_bytes()) }.map_err(|e| NcclLoadError::Symbol {
                    library: stringify!($lib),
                    symbol: $name,
                    message: e.to_string(),
                })?
            };
        }
        Ok(Self {
            get_unique_id: sym!(nccl, "ncclGetUniqueId"),
            comm_init_rank: sym!(nccl, "ncclCommInitRank"),
            all_reduce: sym!(nccl, "ncclAllReduce"),
            all_gather: sym!(nccl, "ncclAllGather"),
            broadcast: sym!(nccl, "ncclBroadcast"),
            comm_abort: sym!(nccl, "ncclCommAbort"),
            comm_destroy: sym!(nccl, "ncclCommDestroy"),
            async_error: sym!(nccl, "ncclCommGetAsyncError"),
            error_string: sym!(nccl, "ncclGetErrorString"),
            set_device: sym!(cudart, "cudaSetDevice"),
            stream_query: sym!(cudart, "cudaStreamQuery"),
            cuda_error_string: sym!(cudart, "cudaGetErrorString"),
            _nccl: nccl,
            _cudart: cudart,
        })
    }

    fn nccl_err(&self, call: &str, r: NcclResult) -> CommError {
        // SAFETY: ncclGetErrorString returns a static C string.
        let msg = unsafe { CStr::from_ptr((self.error_string)(r)) }.to_string_lossy();
        CommError::Nccl(format!("{call} failed: {msg} (code {r})"))
    }

    fn check(&self, call: &str, r: NcclResult) -> Result<(), CommError> {
        if r == NCCL_SUCCESS || r == NCCL_IN_PROGRESS {
            Ok(())
        } else {
            Err(self.nccl_err(call, r))
        }
    }

    fn set_device(&self, device: i32) -> Result<(), CommError> {
        // SAFETY: plain CUDA runtime call.
        let r = unsafe { (self.set_device)(device) };
        if r != CUDA_SUCCESS {
            // SAFETY: returns a static C string.
            let msg = unsafe { CStr::from_ptr((self.cuda_error_string)(r)) }.to_string_lossy();
            return Err(CommError::Nccl(format!(
                "cudaSetDevice({device}) failed: {msg}"
            )));
        }
        Ok(())
    }
}

static LIB: OnceLock<Result<Lib, NcclLoadError>> = OnceLock::new();

fn lib() -> Result<&'static Lib, CommError> {
    LIB.get_or_init(Lib::load)
        .as_ref()
        .map_err(|e| CommError::NcclUnavailable(e.clone()))
}

/// Checks whether NCCL can be used here (CUDA available and libraries loadable).
pub fn nccl_available() -> Result<(), CommError> {
    lib().map(|_| ())
}

/// NCCL's dtype code for a tensor kind (`None` when NCCL has no such type).
pub(crate) fn nccl_dtype(kind: Kind) -> Option<c_int> {
    Some(match kind {
        Kind::Int8 => 0,
        Kind::Uint8 | Kind::Bool => 1,
        Kind::Int => 2,
        Kind::Int64 => 4,
        Kind::Half => 6,
        Kind::Float => 7,
        Kind::Double => 8,
        Kind::BFloat16 => 9,
        _ => return None,
    })
}

/// An NCCL communicator for one group on one CUDA device.
pub(crate) struct NcclComm {
    comm: Comm,
    device: i32,
    timeout: Duration,
    broken: bool,
}

// SAFETY: the communicator is only used behind the owning group's mutex.
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Creates the communicator: group rank 0 makes the unique id and shares
    /// its 128 bytes through the store under `key`.
    pub(crate) fn init(
        store: &StoreClient,
        key: &str,
        rank: usize,
        size: usize,
        device: i32,
        timeout: Duration,
    ) -> Result<Self, CommError> {
        let lib = lib()?;
        let id = if rank == 0 {
            let mut id = UniqueId { internal: [0; 128] };
            // SAFETY: `id` is a valid out-pointer.
            lib.check("ncclGetUniqueId", unsafe { (lib.get_unique_id)(&mut id) })?;
            let bytes: Vec<u8> = id.internal.iter().map(|c| *c as u8).collect();
            store.set(key, &bytes)?;
            id
        } else {
            let bytes = store.get(key, timeout)?.ok_or_else(|| CommError::Timeout {
                op: "NCCL setup".into(),
                peer_rank: "0 of the group".into(),
                peer_addr: store.addr().to_string(),
                after: timeout,
                hint: Some(format!("store key {key:?} never appeared")),
            })?;
            let mut id = UniqueId { internal: [0; 128] };
            if bytes.len() != 128 {
                return Err(CommError::Nccl(format!(
                    "NCCL id under {key:?} has {} bytes, not 128",
                    bytes.len()
                )));
            }
            for (d, s) in id.internal.iter_mut().zip(bytes) {
                *d = s as c_char;
            }
            id
        };
        lib.set_device(device)?;
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the id is the group's shared id.
        lib.check("ncclCommInitRank", unsafe {
            (lib.comm_init_rank)(&mut comm, size as c_int, id, rank as c_int)
        })?;
        Ok(Self {
            comm,
            device,
            timeout,
            broken: false,
        })
    }

    /// The CUDA device the communicator was created on.
    pub(crate) fn device(&self) -> i32 {
        self.device
    }

    /// Runs one collective call on the default stream and waits for it.
    fn run(
        &mut self,
        what: &str,
        call: impl FnOnce(&Lib, Comm) -> NcclResult,
    ) -> Result<(), CommError> {
        if self.broken {
            return Err(CommError::Broken(format!(
                "the NCCL communicator on cuda:{} was aborted",
                self.device
            )));
        }
        let lib = lib()?;
        lib.set_device(self.device)?;
        lib.check(what, call(lib, self.comm))?;
        let deadline = Instant::now() + self.timeout;
        let mut spins = 0u32;
        loop {
            // SAFETY: querying the legacy default stream of the current device.
            let q = unsafe { (lib.stream_query)(std::ptr::null_mut()) };
            if q == CUDA_SUCCESS {
                return Ok(());
            }
            let mut async_err = NCCL_SUCCESS;
            // SAFETY: valid communicator and out-pointer.
            unsafe { (lib.async_error)(self.comm, &mut async_err) };
            let failure = if q != CUDA_ERROR_NOT_READY {
                // SAFETY: returns a static C string.
                let msg = unsafe { CStr::from_ptr((lib.cuda_error_string)(q)) }.to_string_lossy();
                Some(CommError::Nccl(format!("{what}: CUDA error {msg}")))
            } else if async_err != NCCL_SUCCESS && async_err != NCCL_IN_PROGRESS {
                Some(lib.nccl_err(what, async_err))
            } else if Instant::now() >= deadline {
                Some(CommError::Timeout {
                    op: format!("NCCL {what}"),
                    peer_rank: "(unknown: NCCL does not say)".into(),
                    peer_addr: format!("cuda:{}", self.device),
                    after: self.timeout,
                    hint: Some("a rank stopped answering; check every rank's logs".into()),
                })
            } else {
                None
            };
            if let Some(e) = failure {
                self.broken = true;
                // SAFETY: aborting a valid communicator makes its kernels exit.
                unsafe { (lib.comm_abort)(self.comm) };
                return Err(e);
            }
            spins += 1;
            if spins < 1000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    pub(crate) fn all_reduce(
        &mut self,
        ptr: *mut c_void,
        count: usize,
        dtype: c_int,
    ) -> Result<(), CommError> {
        self.run("ncclAllReduce", |lib, comm| {
            // SAFETY: `ptr` points to `count` elements on this communicator's device.
            unsafe {
                (lib.all_reduce)(ptr, ptr, count, dtype, NCCL_SUM, comm, std::ptr::null_mut())
            }
        })
    }

    pub(crate) fn all_gather(
        &mut self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dtype: c_int,
    ) -> Result<(), CommError> {
        self.run("ncclAllGather", |lib, comm| {
            // SAFETY: `send` holds `count` and `recv` `count * size` elements on this device.
            unsafe { (lib.all_gather)(send, recv, count, dtype, comm, std::ptr::null_mut()) }
        })
    }

    pub(crate) fn broadcast(
        &mut self,
        ptr: *mut c_void,
        count: usize,
        dtype: c_int,
        root: usize,
    ) -> Result<(), CommError> {
        self.run("ncclBroadcast", |lib, comm| {
            // SAFETY: `ptr` points to `count` elements on this device.
            unsafe {
                (lib.broadcast)(
                    ptr,
                    ptr,
                    count,
                    dtype,
                    root as c_int,
                    comm,
                    std::ptr::null_mut(),
                )
            }
        })
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // A broken communicator was already aborted.
        if let (false, Ok(lib)) = (self.broken, lib()) {
            // SAFETY: the communicator is valid and no longer used.
            unsafe { (lib.comm_destroy)(self.comm) };
        }
    }
}
