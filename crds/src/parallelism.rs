//! `spec.parallelism`: tensor and data parallel sizes and how ranks map onto pods.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where ranks compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Device {
    /// One NVIDIA GPU per rank, NCCL collectives; the operator requests nvidia.com/gpu =
    /// ranksPerPod unless spec.pod.resources already sets it.
    #[default]
    GPU,
    /// CPU ranks with Gloo collectives (tests, demos); no GPU is requested.
    CPU,
}

/// The process layout. World size = tensorParallelSize x dataParallelSize ranks, placed
/// ranksPerPod per pod; rank r has tensor-parallel rank r % tensorParallelSize (consecutive
/// ranks form a tensor-parallel group, as in Megatron-LM).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.tensorParallelSize * self.dataParallelSize) % self.ranksPerPod == 0").field_path(".ranksPerPod").message(Message::Expression("'spec.parallelism.ranksPerPod (%d) must divide the world size tensorParallelSize x dataParallelSize (%d)'.format([self.ranksPerPod, self.tensorParallelSize * self.dataParallelSize])".into())))]
pub struct ParallelismSpec {
    /// Ranks that split every layer (Megatron tensor model parallelism); must divide the
    /// model's attention heads. Keep a tensor-parallel group inside one pod for speed.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub tensor_parallel_size: i64,

    /// Model replicas that split each global batch.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 4096))]
    pub data_parallel_size: i64,

    /// Ranks (processes; GPUs with device GPU) per pod; must divide the world size.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub ranks_per_pod: i64,

    /// GPU (default) or CPU.
    #[serde(default)]
    pub device: Device,
}

fn one() -> i64 {
    1
}

impl Default for ParallelismSpec {
    fn default() -> Self {
        Self {
            tensor_parallel_size: 1,
            data_parallel_size: 1,
            ranks_per_pod: 1,
            device: Device::GPU,
        }
    }
}

/// Where one global rank sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankPlacement {
    /// Global rank.
    pub rank: i64,
    /// Pod index (0-based); pod 0 hosts rank 0 (the coordinator).
    pub pod: i64,
    /// Rank within the pod (LOCAL_RANK, also the GPU index).
    pub local_rank: i64,
    /// Rank within its tensor-parallel group.
    pub tensor_parallel_rank: i64,
    /// Index of its data-parallel replica.
    pub data_parallel_rank: i64,
}

impl ParallelismSpec {
    /// tensorParallelSize x dataParallelSize.
    pub fn world_size(&self) -> i64 {
        self.tensor_parallel_size * self.data_parallel_size
    }

    /// Pods in the gang: world size / ranksPerPod.
    pub fn num_pods(&self) -> i64 {
        self.world_size() / self.ranks_per_pod.max(1)
    }

    /// Placement of `rank` (0 <= rank < world size).
    pub fn placement(&self, rank: i64) -> RankPlacement {
        RankPlacement {
            rank,
            pod: rank / self.ranks_per_pod,
            local_rank: rank % self.ranks_per_pod,
            tensor_parallel_rank: rank % self.tensor_parallel_size,
            data_parallel_rank: rank / self.tensor_parallel_size,
        }
    }

    /// True when every tensor-parallel group lives inside one pod.
    pub fn tensor_parallel_within_pod(&self) -> bool {
        self.ranks_per_pod % self.tensor_parallel_size == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_and_placement() {
        let p = ParallelismSpec {
            tensor_parallel_size: 2,
            data_parallel_size: 4,
            ranks_per_pod: 4,
            device: Device::GPU,
        };
        assert_eq!((p.world_size(), p.num_pods()), (8, 2));
        assert_eq!(
            p.placement(5),
            RankPlacement {
                rank: 5,
                pod: 1,
                local_rank: 1,
                tensor_parallel_rank: 1,
                data_parallel_rank: 2
            }
        );
        assert!(p.tensor_parallel_within_pod());
        let spread = ParallelismSpec {
            tensor_parallel_size: 2,
            ranks_per_pod: 1,
            ..p
        };
        assert!(!spread.tensor_parallel_within_pod());
    }

    #[test]
    fn defaults() {
        let p: ParallelismSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(p, ParallelismSpec::default());
        assert_eq!(p.world_size(), 1);
    }
}
