//! `spec.runPolicy`: restarts, deadlines, cleanup and suspension.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which pods to delete when the job finishes (Kubeflow's cleanPodPolicy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CleanPodPolicy {
    /// Delete every pod (logs are then gone from the API).
    All,
    /// Delete pods still running (default); keep finished ones for their logs.
    #[default]
    Running,
    /// Keep all pods.
    None,
}

/// Lifecycle policy. All fields may change while the job runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backoff.initialSeconds <= self.backoff.maxSeconds").field_path(".backoff.initialSeconds").message("spec.runPolicy.backoff.initialSeconds must not exceed spec.runPolicy.backoff.maxSeconds"))]
pub struct RunPolicy {
    /// Gang restarts allowed after a failure (any rank failing, a hang, a lost node) before
    /// the job is Failed.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_restarts: i32,

    /// Delay before each restart: initialSeconds doubling up to maxSeconds.
    #[serde(default)]
    pub backoff: Backoff,

    /// Fail the job when it has been running this long (seconds since the first start,
    /// suspended time excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub active_deadline_seconds: Option<i64>,

    /// Delete the MegatronFineTune this long after it finished. Default: keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Stop the gang (the newest checkpoint is kept) and resume when set back to false.
    #[serde(default)]
    pub suspend: bool,

    /// Restart the gang when no training step completes for this long (a hung collective).
    #[serde(default = "default_hang_timeout")]
    #[schemars(range(min = 60, max = 86400))]
    pub hang_timeout_seconds: i64,

    /// Restart the gang when a node running one of its pods is NotReady this long.
    #[serde(default = "default_node_grace")]
    #[schemars(range(min = 0, max = 3600))]
    pub node_not_ready_grace_seconds: i64,

    /// Pods to delete when the job finishes: All, Running (default) or None.
    #[serde(default)]
    pub clean_pod_policy: CleanPodPolicy,
}

fn default_max_restarts() -> i32 {
    3
}
fn default_hang_timeout() -> i64 {
    1800
}
fn default_node_grace() -> i64 {
    60
}

impl Default for RunPolicy {
    fn default() -> Self {
        Self {
            max_restarts: default_max_restarts(),
            backoff: Backoff::default(),
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
            suspend: false,
            hang_timeout_seconds: default_hang_timeout(),
            node_not_ready_grace_seconds: default_node_grace(),
            clean_pod_policy: CleanPodPolicy::default(),
        }
    }
}

/// Exponential restart backoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the first restart.
    #[serde(default = "default_initial")]
    #[schemars(range(min = 0, max = 86400))]
    pub initial_seconds: i64,

    /// Longest delay.
    #[serde(default = "default_max")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_seconds: i64,
}

fn default_initial() -> i64 {
    10
}
fn default_max() -> i64 {
    300
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_seconds: default_initial(),
            max_seconds: default_max(),
        }
    }
}

impl Backoff {
    /// Delay before restart number `restart` (1-based).
    pub fn delay_seconds(&self, restart: i32) -> i64 {
        let doublings = restart.saturating_sub(1).clamp(0, 62) as u32;
        self.initial_seconds
            .saturating_mul(1_i64 << doublings)
            .min(self.max_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let b = Backoff::default();
        let delays: Vec<_> = (1..=7).map(|r| b.delay_seconds(r)).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay_seconds(1000), 300);
    }
}
