//! The `ProcessGroup` trait every collective backend implements, the error
//! type of all collectives, and the single-process group used at TP=1.

use std::time::Duration;

use tch::Tensor;

/// Errors from rendezvous and collectives. Every variant names what to check.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// A torchrun-style environment variable is missing or malformed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable, e.g. `MASTER_PORT`.
        var: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An explicit configuration value is invalid.
    #[error("invalid process-group configuration: {0}")]
    Config(String),
    /// Some ranks never registered with the rendezvous store.
    #[error(
        "rendezvous at store {store}: rank(s) {missing:?} of WORLD_SIZE={world} did not join within \
         {after:?}; check that every rank was started and can reach MASTER_ADDR:MASTER_PORT, and \
         that WORLD_SIZE is right"
    )]
    RendezvousIncomplete {
        /// `host:port` of the store.
        store: String,
        /// Ranks that never registered.
        missing: Vec<usize>,
        /// The expected world size.
        world: usize,
        /// How long we waited.
        after: Duration,
    },
    /// A peer did not answer within the deadline.
    #[error(
        "{op}: timed out after {after:?} waiting for rank {peer_rank} at {peer_addr}{hint}",
        hint = hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Timeout {
        /// The operation, e.g. `all_reduce_sum` or `rendezvous`.
        op: String,
        /// The unreachable rank (global rank), if known.
        peer_rank: String,
        /// The peer's address.
        peer_addr: String,
        /// How long we waited.
        after: Duration,
        /// What to check, e.g. the env var naming the address.
        hint: Option<String>,
    },
    /// A connection to a peer failed or was closed mid-operation.
    #[error("{op}: connection to rank {peer_rank} at {peer_addr} failed: {source}")]
    Peer {
        /// The operation in progress.
        op: String,
        /// The peer's rank.
        peer_rank: String,
        /// The peer's address.
        peer_addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A peer sent something that does not follow the protocol, or disagrees
    /// about the operation (different shapes, dtypes, or op sequence).
    #[error("{op}: protocol mismatch with rank {peer_rank}: {message}")]
    Protocol {
        /// The operation in progress.
        op: String,
        /// The peer's rank.
        peer_rank: String,
        /// What differed.
        message: String,
    },
    /// The tensor cannot be used with this collective (device, layout, dtype).
    #[error("{op}: unsupported tensor: {message}")]
    Tensor {
        /// The operation.
        op: String,
        /// What is wrong and what is supported.
        message: String,
    },
    /// The NCCL backend is unavailable: no CUDA, or NCCL or the CUDA runtime
    /// could not be loaded.
    #[error("NCCL: {0}")]
    NcclUnavailable(#[from] NcclLoadError),
    /// An NCCL call failed.
    #[error("NCCL: {0}")]
    Nccl(String),
    /// A local I/O error outside a peer connection (e.g. binding a port).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// This group is unusable because an earlier operation failed part-way.
    #[error("process group is broken by an earlier failure: {0}")]
    Broken(String),
}

/// Why NCCL cannot be used in this process. Loaded once per process and
/// handed to every caller, hence `Clone` (the loader's errors are kept as
/// text).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NcclLoadError {
    /// libtorch sees no CUDA device.
    #[error(
        "CUDA is not available to libtorch (no GPU or driver), so NCCL cannot run; CPU tensors \
         use the TCP ring"
    )]
    CudaUnavailable,
    /// No NCCL library could be opened.
    #[error(
        "cannot load NCCL ({tried}); install the nvidia-nccl-cu13 wheel or set \
         MEGATRON_NCCL_LIBRARY"
    )]
    Nccl {
        /// Each name tried and why it failed, `name: error; ...`.
        tried: String,
    },
    /// No CUDA runtime library could be opened.
    #[error("cannot load the CUDA runtime ({tried})")]
    CudaRuntime {
        /// Each name tried and why it failed, `name: error; ...`.
        tried: String,
    },
    /// A library lacks an entry point we call (too old a release).
    #[error("{library} lacks {symbol}: {message}")]
    Symbol {
        /// `nccl` or `cudart`.
        library: &'static str,
        /// The C symbol.
        symbol: &'static str,
        /// The loader's error.
        message: String,
    },
}

/// A group of ranks that run collectives together, like `torch.distributed`'s
/// process groups. Every rank of the group must call the same collectives in
/// the same order with tensors of the same shape and dtype.
pub trait ProcessGroup: Send + Sync + std::fmt::Debug {
    /// This process's rank within the group (0-based).
    fn rank(&self) -> usize;
    /// Number of ranks in the group.
    fn size(&self) -> usize;
    /// Sum-all-reduce in place (tensor on this group's device, contiguous).
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), CommError>;
    /// Gathers equal-shaped tensors from every rank, concatenated along `dim` in rank order.
    fn all_gather_cat(&self, t: &Tensor, dim: i64) -> Result<Tensor, CommError>;
    /// Replaces `t` with rank `root`'s tensor.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), CommError>;
    /// Returns once every rank of the group has called `barrier`.
    fn barrier(&self) -> Result<(), CommError>;
}

/// The group of one process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl ProcessGroup for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<(), CommError> {
        Ok(())
    }
    fn all_gather_cat(&self, t: &Tensor, _dim: i64) -> Result<Tensor, CommError> {
        Ok(t.shallow_clone())
    }
    fn broadcast(&self, _t: &mut Tensor, root: usize) -> Result<(), CommError> {
        if root != 0 {
            return Err(CommError::Config(format!(
                "broadcast root {root} is out of range for a group of size 1"
            )));
        }
        Ok(())
    }
    fn barrier(&self) -> Result<(), CommError> {
        Ok(())
    }
}
