//! Tensor parallelism of two ranks on one GPU: NCCL refuses two ranks on the
//! same device ("Duplicate GPU detected"), and the project's `RankGroup`
//! sends CUDA tensors to NCCL. This wrapper stages each CUDA tensor through
//! host memory and runs the project's TCP ring on the copy, so the two ranks
//! exercise the real tensor-parallel layers and autograd regions on CUDA
//! with the ring's deterministic sums.

use std::sync::Arc;

use megatron_trainer::comm::{CommError, ProcessGroup};
use tch::{Device, Tensor};

/// A process group whose collectives go through the CPU ring of `inner` on
/// host copies. CPU tensors take the same path (their "copy" is the tensor
/// itself), so the CPU rehearsal runs this code too.
#[derive(Debug)]
pub struct HostStaged {
    inner: Arc<dyn ProcessGroup>,
}

impl HostStaged {
    pub fn new(inner: Arc<dyn ProcessGroup>) -> Self {
        Self { inner }
    }
}

fn staging_error(op: &str, e: tch::TchError) -> CommError {
    CommError::Tensor {
        op: op.into(),
        message: format!("staging through host memory: {e}"),
    }
}

impl ProcessGroup for HostStaged {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), CommError> {
        let err = |e| staging_error("all_reduce_sum", e);
        let mut host = t
            .f_to_device(Device::Cpu)
            .map_err(err)?
            .f_contiguous()
            .map_err(err)?;
        self.inner.all_reduce_sum(&mut host)?;
        t.f_copy_(&host).map_err(err)
    }

    fn all_gather_cat(&self, t: &Tensor, dim: i64) -> Result<Tensor, CommError> {
        let err = |e| staging_error("all_gather_cat", e);
        let host = t.f_to_device(Device::Cpu).map_err(err)?;
        self.inner
            .all_gather_cat(&host, dim)?
            .f_to_device(t.device())
            .map_err(err)
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), CommError> {
        let err = |e| staging_error("broadcast", e);
        let mut host = t
            .f_to_device(Device::Cpu)
            .map_err(err)?
            .f_contiguous()
            .map_err(err)?;
        self.inner.broadcast(&mut host, root)?;
        t.f_copy_(&host).map_err(err)
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.inner.barrier()
    }
}
