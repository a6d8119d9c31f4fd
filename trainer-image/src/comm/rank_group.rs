//! The networked `ProcessGroup`: CPU tensors go through the TCP ring, CUDA
//! tensors through NCCL (created on first use).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use super::group::{CommError, ProcessGroup};
use super::nccl::{NcclComm, nccl_dtype};
use super::reduce::{element_size, summable};
use super::ring::Ring;
use super::store::StoreClient;

/// A group of two or more ranks connected in a ring.
pub struct RankGroup {
    name: String,
    ring: Ring,
    members: Vec<usize>,
    store: Arc<StoreClient>,
    nccl: Mutex<Option<NcclComm>>,
    timeout: Duration,
}

impl std::fmt::Debug for RankGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankGroup")
            .field("name", &self.name)
            .field("rank", &self.ring.rank())
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

fn tensor_err(op: &str, message: String) -> CommError {
    CommError::Tensor {
        op: op.to_string(),
        message,
    }
}

/// The bytes of a contiguous CPU tensor.
///
/// # Safety
/// `t` must be a contiguous CPU tensor of `esize`-byte elements, not aliased
/// by another live slice.
// The `Tensor` handle is shared, but its storage is raw memory libtorch lets us write.
#[allow(clippy::mut_from_ref)]
unsafe fn bytes_mut(t: &Tensor, esize: usize) -> &mut [u8] {
    let len = t.numel() * esize;
    if len == 0 {
        return &mut [];
    }
    // SAFETY: guaranteed by the caller; libtorch keeps the storage alive while `t` lives.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<u8>(), len) }
}

/// Shape of `cat` along `dim` of `n` tensors shaped `shape`.
fn cat_shape(shape: &[i64], dim: usize, n: usize) -> Vec<i64> {
    let mut s = shape.to_vec();
    s[dim] *= n as i64;
    s
}

impl RankGroup {
    pub(crate) fn new(
        name: String,
        ring: Ring,
        members: Vec<usize>,
        store: Arc<StoreClient>,
        timeout: Duration,
    ) -> Self {
        Self {
            name,
            ring,
            members,
            store,
            nccl: Mutex::new(None),
            timeout,
        }
    }

    /// The group's name (`world`, `tp0`, `dp1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Global ranks of the members, in group-rank order.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    fn element_size(&self, op: &str, kind: Kind) -> Result<usize, CommError> {
        element_size(kind).ok_or_else(|| {
            tensor_err(
                op,
                format!(
                    "dtype {kind:?} is not supported (supported: f32, f64, f16, bf16, i64, i32, \
                     i16, i8, u8, and bool for gather/broadcast)"
                ),
            )
        })
    }

    /// Runs `f` with this group's NCCL communicator for `device`, creating it
    /// on first use (every member must be making the same call).
    fn with_nccl<T>(
        &self,
        device: i32,
        f: impl FnOnce(&mut NcclComm) -> Result<T, CommError>,
    ) -> Result<T, CommError> {
        let mut guard = self.nccl.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let key = format!("nccl/{}/id", self.name);
            *guard = Some(NcclComm::init(
                &self.store,
                &key,
                self.ring.rank(),
                self.ring.size(),
                device,
                self.timeout,
            )?);
        }
        let comm = guard.as_mut().expect("initialized above");
        if comm.device() != device {
            return Err(CommError::Tensor {
                op: format!("group {}", self.name),
                message: format!(
                    "tensor is on cuda:{device} but the group's NCCL communicator was created on \
                     cuda:{}: use one device per rank",
                    comm.device()
                ),
            });
        }
        f(comm)
    }

    fn cuda_index(&self, op: &str, t: &Tensor) -> Result<Option<i32>, CommError> {
        match t.device() {
            Device::Cpu => Ok(None),
            Device::Cuda(i) => Ok(Some(i as i32)),
            other => Err(tensor_err(
                op,
                format!("device {other:?} is not supported (CPU or CUDA)"),
            )),
        }
    }
}

impl ProcessGroup for RankGroup {
    fn rank(&self) -> usize {
        self.ring.rank()
    }

    fn size(&self) -> usize {
        self.ring.size()
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), CommError> {
        const OP: &str = "all_reduce_sum";
        let kind = t.kind();
        if !summable(kind) {
            return Err(tensor_err(OP, format!("dtype {kind:?} cannot be summed")));
        }
        let esize = self.element_size(OP, kind)?;
        let work = if t.is_contiguous() {
            t.shallow_clone()
        } else {
            t.contiguous()
        };
        match self.cuda_index(OP, t)? {
            None => {
                // SAFETY: `work` is a contiguous CPU tensor we hold exclusively here.
                self.ring
                    .all_reduce(unsafe { bytes_mut(&work, esize) }, kind, esize)?;
            }
            Some(dev) => {
                let dtype = nccl_dtype(kind)
                    .ok_or_else(|| tensor_err(OP, format!("NCCL has no {kind:?}")))?;
                self.with_nccl(dev, |c| c.all_reduce(work.data_ptr(), work.numel(), dtype))?;
            }
        }
        if !t.is_contiguous() {
            t.copy_(&work);
        }
        Ok(())
    }

    fn all_gather_cat(&self, t: &Tensor, dim: i64) -> Result<Tensor, CommError> {
        const OP: &str = "all_gather_cat";
        let shape = t.size();
        let ndim = shape.len() as i64;
        if ndim == 0 {
            return Err(tensor_err(
                OP,
                "cannot concatenate 0-dim tensors; reshape to [1] first".into(),
            ));
        }
        let d = if dim < 0 { dim + ndim } else { dim };
        if !(0..ndim).contains(&d) {
            return Err(tensor_err(
                OP,
                format!("dim {dim} is out of range for a {ndim}-dim tensor"),
            ));
        }
        let kind = t.kind();
        let esize = self.element_size(OP, kind)?;
        let n = self.size();
        let numel = t.numel();
        let input = t.contiguous();
        let out = Tensor::empty([(n * numel) as i64], (kind, t.device()));
        match self.cuda_index(OP, t)? {
            None => {
                let me = self.rank();
                out.narrow(0, (me * numel) as i64, numel as i64)
                    .copy_(&input.view([-1]));
                // SAFETY: `out` is a fresh contiguous CPU tensor.
                self.ring
                    .all_gather(unsafe { bytes_mut(&out, esize) }, kind, d as u64)?;
            }
            Some(dev) => {
                let dtype = nccl_dtype(kind)
                    .ok_or_else(|| tensor_err(OP, format!("NCCL has no {kind:?}")))?;
                self.with_nccl(dev, |c| {
                    c.all_gather(input.data_ptr(), out.data_ptr(), numel, dtype)
                })?;
            }
        }
        let mut stacked = vec![n as i64];
        stacked.extend_from_slice(&shape);
        let gathered = out.view(stacked.as_slice());
        Ok(if d == 0 {
            gathered.reshape(cat_shape(&shape, 0, n))
        } else {
            gathered
                .movedim([0i64], [d])
                .reshape(cat_shape(&shape, d as usize, n))
        })
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), CommError> {
        const OP: &str = "broadcast";
        if root >= self.size() {
            return Err(tensor_err(
                OP,
                format!(
                    "root {root} is out of range for a group of size {}",
                    self.size()
                ),
            ));
        }
        let kind = t.kind();
        let esize = self.element_size(OP, kind)?;
        let work = if t.is_contiguous() {
            t.shallow_clone()
        } else {
            t.contiguous()
        };
        match self.cuda_index(OP, t)? {
            None => {
                // SAFETY: `work` is a contiguous CPU tensor we hold exclusively here.
                self.ring
                    .broadcast(unsafe { bytes_mut(&work, esize) }, kind, root)?;
            }
            Some(dev) => {
                let dtype = nccl_dtype(kind)
                    .ok_or_else(|| tensor_err(OP, format!("NCCL has no {kind:?}")))?;
                self.with_nccl(dev, |c| {
                    c.broadcast(work.data_ptr(), work.numel(), dtype, root)
                })?;
            }
        }
        if !t.is_contiguous() {
            t.copy_(&work);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.ring.barrier()
    }
}
