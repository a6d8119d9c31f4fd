//! [`CheckpointerConfig`]: where checkpoints go and which shard this rank owns.

use std::path::PathBuf;
use std::sync::Arc;

use tch::Device;

use crate::comm::{ProcessGroup, SingleProcess, Topology};
use crate::storage::{Store, TransferOptions};

/// Settings of a [`super::Checkpointer`].
#[derive(Clone, Debug)]
pub struct CheckpointerConfig {
    /// File name prefix, e.g. `megatron_bert` (files `megatron_bert-last.ckpt`, ...).
    pub name: String,
    /// This rank's working directory: the NeMo layout (`mp_rank_NN/<name>-last.ckpt`,
    /// top-k files) and downloaded checkpoints for resume. When `remote` is
    /// `None` it also holds the committed sets (`step-NNNNNNNNNNNN/`).
    pub local_dir: PathBuf,
    /// Durable store of committed sets: the job's `checkpoints/` prefix (S3 or
    /// a mounted volume). `None`: sets live in `local_dir`.
    pub remote: Option<Store>,
    /// `spec.checkpointing`.
    pub spec: crds::CheckpointingSpec,
    /// Tensor-parallel rank (which `mp_rank_NN` this rank writes and reads).
    pub tp_rank: usize,
    /// Tensor-parallel size.
    pub tp_size: usize,
    /// Data-parallel rank: only replica 0 of each tensor-parallel group writes.
    pub dp_rank: usize,
    /// All ranks of the job (commit and resume decisions are collective).
    pub world: Arc<dyn ProcessGroup>,
    /// Device of `world`'s collectives (CUDA for NCCL, CPU for the TCP ring).
    pub comm_device: Device,
    /// Stored as each file's `hyper_parameters` (e.g. the model and task sections of the spec).
    pub hyper_parameters: serde_json::Value,
    /// Part size and concurrency of uploads and downloads.
    pub transfer: TransferOptions,
}

impl CheckpointerConfig {
    /// A configuration for this rank of `topo`, with sets in `local_dir` (set
    /// [`CheckpointerConfig::remote`] for S3).
    pub fn from_topology(
        name: impl Into<String>,
        local_dir: impl Into<PathBuf>,
        spec: crds::CheckpointingSpec,
        topo: &Topology,
    ) -> Self {
        Self {
            name: name.into(),
            local_dir: local_dir.into(),
            remote: None,
            spec,
            tp_rank: topo.tp_rank,
            tp_size: topo.tp_size,
            dp_rank: topo.dp_rank,
            world: topo.world.clone(),
            comm_device: topo.device(),
            hyper_parameters: serde_json::Value::Null,
            transfer: TransferOptions::default(),
        }
    }

    /// A configuration for a single process (TP=1, DP=1).
    pub fn single_process(
        name: impl Into<String>,
        local_dir: impl Into<PathBuf>,
        spec: crds::CheckpointingSpec,
    ) -> Self {
        Self {
            name: name.into(),
            local_dir: local_dir.into(),
            remote: None,
            spec,
            tp_rank: 0,
            tp_size: 1,
            dp_rank: 0,
            world: Arc::new(SingleProcess),
            comm_device: Device::Cpu,
            hyper_parameters: serde_json::Value::Null,
            transfer: TransferOptions::default(),
        }
    }

    /// The same configuration with sets in `store`.
    pub fn with_remote(mut self, store: Store) -> Self {
        self.remote = Some(store);
        self
    }
}
