//! Operator settings: command-line flags, each also readable from an environment variable
//! so the Helm chart can set them.

use std::{net::SocketAddr, time::Duration};

use clap::Args;

use crate::telemetry::LogFormat;

/// How a gang's pods are placed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GangScheduling {
    /// Pod by pod (the scheduler's default).
    None,
    /// All or nothing, through a Kubernetes PodGroup.
    PodGroup,
}

/// Settings of `megatron-operator run`.
#[derive(Args, Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MEGATRON_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Trainer image used when a MegatronFineTune does not name one.
    #[arg(long, env = "MEGATRON_TRAINER_IMAGE", default_value = concat!("ghcr.io/megatron-operator/megatron-trainer:", env!("CARGO_PKG_VERSION")))]
    pub trainer_image: String,

    /// Image pull policy of trainer containers (Always, IfNotPresent, Never).
    #[arg(
        long,
        env = "MEGATRON_TRAINER_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub trainer_image_pull_policy: String,

    /// TCP port of the rank-0 rendezvous (MASTER_PORT).
    #[arg(long, env = "MEGATRON_MASTER_PORT", default_value_t = 29500)]
    pub master_port: u16,

    /// Size limit of the memory-backed /dev/shm each rank pod gets (NCCL and data loaders need more than the 64Mi default).
    #[arg(long, env = "MEGATRON_SHM_SIZE", default_value = "1Gi")]
    pub shm_size: String,

    /// Where rank pods find published weights (megatron-bert-345m, BioMegatron) when the job
    /// bucket's shared cache does not have them yet: an `s3://bucket/prefix` (read with each
    /// job's S3 settings) or an `http(s)://` base URL, holding NGC's file layout
    /// (`nvidia/megatron_bert_345m/versions/v0.0/files/...`). Passed to the pods as
    /// MEGATRON_MODEL_MIRROR; for clusters without internet access.
    #[arg(long, env = "MEGATRON_MODEL_MIRROR", default_value = "")]
    pub model_mirror: String,

    /// NGC's model files API, tried after the mirror; empty: never contact NGC (an air-gapped
    /// cluster then needs the mirror). Passed to the pods as MEGATRON_MODEL_NGC_URL.
    #[arg(long, env = "MEGATRON_MODEL_NGC_URL", default_value = crds::published::NGC_BASE_URL)]
    pub model_ngc_url: String,

    /// Queue jobs labelled `kueue.x-k8s.io/queue-name` through Kueue (its CRDs must be
    /// installed): the operator owns each such job's Workload and runs the gang only while
    /// Kueue admits it.
    #[arg(long, env = "MEGATRON_KUEUE", default_value_t = false)]
    pub kueue: bool,

    /// All-or-nothing placement of each gang: `none` lets the scheduler place rank pods one by
    /// one; `pod-group` gives every gang attempt a `scheduling.k8s.io/v1beta1` PodGroup with a
    /// gang policy (`minCount` = the gang's pods), which kube-scheduler binds only as a whole
    /// (Kubernetes 1.37+, feature gate `GenericWorkload` and API `scheduling.k8s.io/v1beta1`
    /// enabled).
    #[arg(long, env = "MEGATRON_GANG_SCHEDULING", value_enum, default_value_t = GangScheduling::None)]
    pub gang_scheduling: GangScheduling,

    /// UID/GID trainer containers run as (they must not run as root).
    #[arg(long, env = "MEGATRON_TRAINER_UID", default_value_t = 65532)]
    pub trainer_uid: i64,

    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "MEGATRON_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Log line format.
    #[arg(long, env = "MEGATRON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Take part in leader election (disable only when exactly one replica runs).
    #[arg(long, env = "MEGATRON_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "MEGATRON_LEASE_NAME", default_value = "megatron-operator")]
    pub lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Identity in the election (default: POD_NAME, else a random one).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Seconds a leader keeps the Lease without renewing it.
    #[arg(long, env = "MEGATRON_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// Seconds before expiry at which the leader renews.
    #[arg(long, env = "MEGATRON_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,

    /// Reconciliations running at once (0 = unbounded).
    #[arg(long, env = "MEGATRON_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Seconds between re-checks of a job that has no pending timer.
    #[arg(long, env = "MEGATRON_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
}

impl OperatorConfig {
    /// Defaults for embedding the controller (tests, benchmarks): no env or flags read.
    pub fn for_tests() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: OperatorConfig,
        }
        let mut config = Wrapper::parse_from(["megatron-operator"]).config;
        config.metrics_addr = "127.0.0.1:0".parse().expect("literal address");
        config
    }

    /// Resync interval as a Duration.
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(1))
    }
}
