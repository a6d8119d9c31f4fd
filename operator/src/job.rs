//! What the operator reads from a MegatronFineTune to shape its children.

use crds::{Device, MegatronFineTune, PodSpec, StorageSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

/// The parts of a MegatronFineTune that shape its children.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    /// Object name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID (exported to the trainer).
    pub uid: String,
    /// Controller owner reference pointing at the object.
    pub owner: OwnerReference,
    /// Total number of ranks.
    pub world_size: u32,
    /// Ranks (processes, GPUs) per pod.
    pub ranks_per_pod: u32,
    /// Tensor-parallel group size.
    pub tensor_parallel_size: u32,
    /// Data-parallel group count.
    pub data_parallel_size: u32,
    /// Whether ranks use GPUs (`nvidia.com/gpu` limits).
    pub gpu: bool,
    /// S3 settings (credentials only by Secret reference).
    pub storage: StorageSpec,
    /// Pod customisation.
    pub pod: PodSpec,
    /// The trainer configuration rendered as YAML (`/etc/megatron/spec.yaml`).
    pub config_yaml: String,
}

/// Why a job's spec cannot run (the job fails with reason InvalidSpec and this message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    /// A field every stored object has is missing.
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
    /// A parallel size below 1.
    #[error("spec.parallelism.{field} must be at least 1, got {value}")]
    NotPositive {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// Pods would hold unequal numbers of ranks.
    #[error(
        "spec.parallelism.ranksPerPod ({ranks_per_pod}) must divide the world size ({world_size})"
    )]
    RanksPerPod {
        /// spec.parallelism.ranksPerPod.
        ranks_per_pod: u32,
        /// tensorParallelSize x dataParallelSize.
        world_size: u32,
    },
    /// Pod names would exceed the label limit.
    #[error("metadata.name {0:?} is longer than 52 characters; pods could not be named after it")]
    NameTooLong(String),
    /// No S3 store for the job's outputs.
    #[error(
        "spec.storage is required: the job's checkpoints and artifacts are written to its S3 store"
    )]
    NoStorage,
    /// The trainer configuration could not be rendered.
    #[error("could not render spec as YAML: {0}")]
    Render(String),
}

impl JobView {
    /// Reads a job; `Err` explains why its spec cannot run (the job then fails with InvalidSpec).
    pub fn from_job(job: &MegatronFineTune) -> Result<Self, InvalidSpec> {
        let name = job.name_any();
        let namespace = job
            .namespace()
            .ok_or(InvalidSpec::MissingMetadata("namespace"))?;
        let uid = job.uid().ok_or(InvalidSpec::MissingMetadata("uid"))?;
        let owner = job
            .controller_owner_ref(&())
            .ok_or(InvalidSpec::MissingMetadata("uid"))?;
        let p = &job.spec.parallelism;
        let positive = |value: i64, field: &'static str| {
            u32::try_from(value)
                .ok()
                .filter(|v| *v > 0)
                .ok_or(InvalidSpec::NotPositive { field, value })
        };
        let tensor_parallel_size = positive(p.tensor_parallel_size, "tensorParallelSize")?;
        let data_parallel_size = positive(p.data_parallel_size, "dataParallelSize")?;
        let ranks_per_pod = positive(p.ranks_per_pod, "ranksPerPod")?;
        let world_size = positive(p.world_size(), "tensorParallelSize x dataParallelSize")?;
        if world_size % ranks_per_pod != 0 {
            return Err(InvalidSpec::RanksPerPod {
                ranks_per_pod,
                world_size,
            });
        }
        // StatefulSet pods carry the label controller-revision-hash = <name>-<10 chars>, at most 63.
        if name.len() > 52 {
            return Err(InvalidSpec::NameTooLong(name));
        }
        // The CRD requires spec.storage (the type allows leaving it out for
        // the trainer's local runs); the job's outputs go to that store.
        let storage = job.spec.storage.clone().ok_or(InvalidSpec::NoStorage)?;
        let config_yaml =
            serde_yaml::to_string(&job.spec).map_err(|e| InvalidSpec::Render(e.to_string()))?;
        Ok(Self {
            name,
            namespace,
            uid,
            owner,
            world_size,
            ranks_per_pod,
            tensor_parallel_size,
            data_parallel_size,
            gpu: p.device == Device::GPU,
            storage,
            pod: job.spec.pod.clone(),
            config_yaml,
        })
    }

    /// Pods in the gang.
    pub fn pods(&self) -> u32 {
        self.world_size / self.ranks_per_pod.max(1)
    }
}
