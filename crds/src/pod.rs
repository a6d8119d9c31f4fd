//! `spec.pod`: settings copied into every worker pod the operator renders.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext,
    ResourceRequirements, SecurityContext, Toleration, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Environment variables the operator sets on the trainer container (spec.pod.env may not).
pub const RESERVED_ENV: &[&str] = &[
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// Pull policy of the trainer image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Pod settings (a curated part of a PodTemplateSpec; the operator owns the container command,
/// ports, rank environment and the per-job ServiceAccount). Changes apply to pods created
/// after the change (the next gang start or restart); running pods are not replaced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Trainer image. Default: the image the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy: Always, IfNotPresent or Never. Default: Kubernetes' (IfNotPresent
    /// unless the tag is latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_enum::<PullPolicy>")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Secrets for pulling the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Trainer container resources (per pod). With device GPU the operator adds
    /// nvidia.com/gpu = ranksPerPod to limits when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Size of the in-memory /dev/shm volume (data loaders, NCCL). Default: 1Gi; 0 disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Quantity>,

    /// Extra environment variables for the trainer container. Names the operator sets
    /// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) are rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.all(e, !(e.name in ['MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']))").message("spec.pod.env must not set MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY: the operator sets them (credentials come from spec.storage.credentialsSecretRef)"))]
    pub env: Vec<EnvVar>,

    /// Extra environment from ConfigMaps or Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env_from: Vec<EnvFromSource>,

    /// Extra volumes (datasets or checkpoints on a PersistentVolumeClaim, a CA bundle, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub volumes: Vec<Volume>,

    /// Mounts of spec.pod.volumes into the trainer container (absolute paths in spec.data,
    /// spec.model and spec.tokenizer must lie under one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub volume_mounts: Vec<VolumeMount>,

    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations (e.g. for tainted GPU nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,

    /// Node and pod (anti-)affinity. The operator adds nothing here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How pods spread over topology domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Scheduler for the pods (e.g. a gang scheduler). Default: the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub scheduler_name: Option<String>,

    /// Labels added to every pod (the operator's own megatron.dev/* labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to every pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Annotations added to the per-job ServiceAccount the pods run as (e.g.
    /// eks.amazonaws.com/role-arn or iam.gke.io/gcp-service-account for workload identity).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_account_annotations: BTreeMap<String, String>,

    /// Pod-level security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,

    /// Trainer container security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,

    /// Seconds a pod gets after SIGTERM before SIGKILL (its ranks stop; work since the latest
    /// checkpoint is redone when the job runs again).
    /// Default: 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub termination_grace_period_seconds: Option<i64>,
}

impl PodSpec {
    /// Default /dev/shm size.
    pub const DEFAULT_SHM_SIZE: &'static str = "1Gi";
    /// Default termination grace period.
    pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 60;

    /// shmSize or the default.
    pub fn shm_size(&self) -> Quantity {
        self.shm_size
            .clone()
            .unwrap_or_else(|| Quantity(Self::DEFAULT_SHM_SIZE.to_owned()))
    }
}
