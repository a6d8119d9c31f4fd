//! The operator's view of a job's lifecycle: phase, conditions and the operator-owned status
//! fields, independent of the API types' layout (mapped in `crate::api`).

use std::time::Duration;

use crds::status::condition_types;
use k8s_openapi::jiff::Timestamp;

pub use crds::Phase;

/// A status condition (kstatus-compatible `Ready`, `Reconciling`, `Stalled`, plus `Running`,
/// `Suspended` and the terminal `Succeeded`/`Failed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Condition type.
    pub type_: String,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
    /// Generation the condition was computed from.
    pub observed_generation: i64,
}

/// Status fields the operator owns (field manager `megatron-operator`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnedStatus {
    /// Phase; `None` before the first reconcile.
    pub phase: Option<Phase>,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Gang restarts performed; also the current gang attempt (0 for the first start), which
    /// rank pods carry as `MEGATRON_ATTEMPT` and the trainer echoes in `result.attempt`.
    pub restarts: u32,
    /// Restarts that counted against `maxRestarts` (no newer checkpoint since the previous restart).
    pub counted_restarts: u32,
    /// When the last gang restart was decided (start of its backoff).
    pub last_restart_time: Option<Timestamp>,
    /// `latestCheckpoint.step` when the last restart was decided.
    pub restart_checkpoint_step: Option<u64>,
    /// Times Kueue evicted the running gang.
    pub evictions: u32,
    /// Generation last reconciled.
    pub observed_generation: Option<i64>,
    /// When the job (last) started running, reset on resume.
    pub start_time: Option<Timestamp>,
    /// When the job reached Succeeded or Failed.
    pub completion_time: Option<Timestamp>,
    /// World size.
    pub ranks: Option<i64>,
    /// Ready pods of the current attempt.
    pub ready_pods: Option<i64>,
}

impl OwnedStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Since when the gang has been Running (condition Running=True).
    pub fn running_since(&self) -> Option<Timestamp> {
        self.condition(condition_types::RUNNING)
            .filter(|c| c.status)
            .map(|c| c.last_transition_time)
    }
}

/// What the trainer reported (fields it owns).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainerReport {
    /// Time of the last training step.
    pub last_step_time: Option<Timestamp>,
    /// Step of the newest checkpoint.
    pub checkpoint_step: Option<u64>,
    /// When it became complete.
    pub checkpoint_time: Option<Timestamp>,
    /// Final result, if one was reported.
    pub result: Option<TrainerResult>,
    /// Where the published weights are (status.model), when the job uses them.
    pub model: Option<ModelReport>,
    /// Seconds the ranks need to stop with a checkpoint (one step and the newest
    /// checkpoint's measured save), once a checkpoint was measured.
    pub stop_seconds: Option<f64>,
}

/// The trainer's `status.model`, as the ModelReady condition shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelReport {
    /// The files are local and verified.
    pub ready: bool,
    /// Fetching: what is downloading and how far; Ready: the source.
    pub message: String,
}

/// The trainer's final word for one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerResult {
    /// Attempt it belongs to (status.restarts when that gang started).
    pub attempt: u32,
    /// Succeeded; otherwise a permanent failure (restarting would not help).
    pub succeeded: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// What Kueue says of a job it queues (the job's Workload), for jobs with the
/// `kueue.x-k8s.io/queue-name` label when the operator runs with Kueue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueGate {
    /// The Workload has quota and is admitted (`Admitted=True`).
    pub admitted: bool,
    /// `Evicted=True`: Kueue's reason (Preempted, PodsReadyTimeout, ...) and message.
    pub evicted: Option<(String, String)>,
    /// Why it waits (the `QuotaReserved=False` message), when Kueue said.
    pub waiting: Option<String>,
}

impl QueueGate {
    /// The gang may run: admitted and not evicted.
    pub fn runs(&self) -> bool {
        self.admitted && self.evicted.is_none()
    }
}

/// Run policy, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPolicy {
    /// Restarts allowed without checkpoint progress before the job fails.
    pub max_restarts: u32,
    /// First restart delay.
    pub backoff_initial: Duration,
    /// Cap of the exponential restart delay.
    pub backoff_max: Duration,
    /// Restart when no step was made for this long while Running.
    pub hang_timeout: Option<Duration>,
    /// Time a pod's node may be NotReady before the gang restarts.
    pub node_not_ready_grace: Duration,
    /// Fail after running this long.
    pub active_deadline: Option<Duration>,
    /// Delete the object this long after it finished.
    pub ttl_after_finished: Option<Duration>,
    /// Scale to zero and wait.
    pub suspend: bool,
    /// Keep the pods of a finished job (cleanPodPolicy None) instead of scaling to zero.
    pub keep_pods_when_finished: bool,
    /// The pods' configured termination grace period (`spec.pod`), in seconds.
    pub termination_grace_seconds: i64,
}

impl Default for RunPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            hang_timeout: None,
            node_not_ready_grace: Duration::from_secs(60),
            active_deadline: None,
            ttl_after_finished: None,
            suspend: false,
            keep_pods_when_finished: false,
            termination_grace_seconds: crds::PodSpec::DEFAULT_TERMINATION_GRACE_SECONDS,
        }
    }
}

impl RunPolicy {
    /// Delay before the `n`-th restart (1-based): initial x 2^(n-1), capped.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(30));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}
