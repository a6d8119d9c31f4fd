//! Reads the rank pods (and their nodes) of a gang into a summary the decision logic uses.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{ContainerStateTerminated, Node, Pod},
    jiff::Timestamp,
};

use crate::children::{ATTEMPT_LABEL, stateful_set::CONTAINER};

/// Exit code by which the trainer says its input or configuration is invalid: never retried.
pub const EXIT_INVALID_INPUT: i32 = 2;

/// Why a rank of the current attempt is unhealthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankFailure {
    /// Pod name.
    pub pod: String,
    /// Condition/event reason: `RankFailed`, `OOMKilled`, `InvalidInput`, `PodFailed`,
    /// `NodeNotReady`.
    pub reason: &'static str,
    /// Container exit code, when one exited.
    pub exit_code: Option<i32>,
    /// Human-readable detail (termination message, eviction reason, node name).
    pub message: String,
    /// False only for exit code 2.
    pub retryable: bool,
}

/// What the operator saw of a gang's pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GangObservation {
    /// Pods of the current attempt that are not being deleted.
    pub current: u32,
    /// Their names.
    pub current_pods: Vec<String>,
    /// Of those, pods Running with the Ready condition True.
    pub ready: u32,
    /// Pods of an older attempt (or none) that are not being deleted yet: to be deleted at restart.
    pub stale: Vec<StalePod>,
    /// Pods already being deleted.
    pub terminating: u32,
    /// The first failure found among current pods (non-retryable ones first).
    pub failure: Option<RankFailure>,
    /// Earliest time a NotReady node's grace period ends, for pods still within it.
    pub node_grace_ends: Option<Timestamp>,
    /// The scheduler's word on a current pod it could not place (first pod by name), e.g.
    /// that the gang's `minCount` cannot be satisfied.
    pub unschedulable: Option<String>,
}

/// A pod to delete when the gang restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePod {
    /// Pod name.
    pub name: String,
    /// Delete with grace period 0 (its node is gone or NotReady: no kubelet will confirm).
    pub force: bool,
}

/// Node readiness as the NotReady check needs it.
fn node_not_ready_since(node: Option<&Node>) -> Option<Option<Timestamp>> {
    let Some(node) = node else {
        // The node object is gone: its pods can never finish by themselves.
        return Some(None);
    };
    let ready = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (ready.status != "True").then(|| ready.last_transition_time.as_ref().map(|t| t.0))
}

fn terminated_failure(
    pod: &str,
    terminated: &ContainerStateTerminated,
    memory_limit: Option<&str>,
) -> RankFailure {
    let code = terminated.exit_code;
    if terminated.reason.as_deref() == Some("OOMKilled") {
        return oom_failure(pod, code, memory_limit);
    }
    let detail = terminated
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .or(terminated.reason.as_deref())
        .unwrap_or("no termination message");
    if code == EXIT_INVALID_INPUT {
        RankFailure {
            pod: pod.to_owned(),
            reason: "InvalidInput",
            exit_code: Some(code),
            message: detail.to_owned(),
            retryable: false,
        }
    } else {
        RankFailure {
            pod: pod.to_owned(),
            reason: "RankFailed",
            exit_code: Some(code),
            message: format!("rank pod {pod} exited with code {code}: {detail}"),
            retryable: true,
        }
    }
}

/// The kernel killed the trainer for exceeding its memory limit: say which container, the
/// limit, and what to change (retried like any rank failure, within `maxRestarts`).
fn oom_failure(pod: &str, code: i32, memory_limit: Option<&str>) -> RankFailure {
    let limit = memory_limit.map_or_else(
        || "its memory limit".to_owned(),
        |l| format!("its memory limit of {l}"),
    );
    RankFailure {
        pod: pod.to_owned(),
        reason: "OOMKilled",
        exit_code: Some(code),
        message: format!(
            "rank pod {pod}: container {CONTAINER} was OOM-killed (exit code {code}) for using more \
             than {limit}; raise spec.pod.resources.limits.memory (and requests.memory), or lower \
             training.microBatchSize or task.maxSeqLength"
        ),
        retryable: true,
    }
}

/// The trainer container's memory limit as written in the pod (e.g. `2Gi`).
fn memory_limit(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.as_str())
}

/// A failure of one pod of the current attempt, if it has one.
fn pod_failure(pod: &Pod, name: &str) -> Option<RankFailure> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let why = status.reason.clone().unwrap_or_else(|| "Failed".into());
        let message = status.message.clone().unwrap_or_default();
        return Some(RankFailure {
            pod: name.to_owned(),
            reason: "PodFailed",
            exit_code: None,
            message: format!("rank pod {name} failed ({why}) {message}")
                .trim_end()
                .to_owned(),
            retryable: true,
        });
    }
    let container = status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?;
    let now = container.state.as_ref().and_then(|s| s.terminated.as_ref());
    let last = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    // A non-zero exit, now or before a kubelet restart; or any restart at all (a rank that
    // exited 0 without reporting a result left the gang).
    [now, last]
        .into_iter()
        .flatten()
        .find(|t| t.exit_code != 0)
        .map(|t| terminated_failure(name, t, memory_limit(pod)))
        .or_else(|| {
            (container.restart_count > 0 || now.is_some()).then(|| RankFailure {
                pod: name.to_owned(),
                reason: "RankFailed",
                exit_code: Some(0),
                message: format!("rank pod {name} exited before the job finished"),
                retryable: true,
            })
        })
}

fn is_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The scheduler's message on a pod it tried and could not place.
fn unschedulable(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| c.message.clone().unwrap_or_default())
}

/// Summarises `pods` (the gang's pods) for `attempt`; `node` looks nodes up by name.
pub fn observe<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    attempt: u32,
    node: impl Fn(&str) -> Option<std::sync::Arc<Node>>,
    node_grace: Duration,
    now: Timestamp,
) -> GangObservation {
    let mut out = GangObservation::default();
    let mut failures = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            out.terminating += 1;
            continue;
        }
        let pod_attempt = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ATTEMPT_LABEL))
            .and_then(|a| a.parse().ok());
        // Pods on a node that stopped reporting cannot be trusted whatever their attempt.
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let lost_node = node_name.as_deref().and_then(|n| {
            let since = node_not_ready_since(node(n).as_deref())?;
            Some((n.to_owned(), since))
        });
        let force = lost_node.is_some();
        if pod_attempt != Some(attempt) {
            out.stale.push(StalePod { name, force });
            continue;
        }
        out.current += 1;
        out.current_pods.push(name.clone());
        if let Some((node_name, since)) = lost_node {
            let grace_ends = since.map(|s| s + node_grace);
            match grace_ends {
                Some(end) if end > now => {
                    out.node_grace_ends =
                        Some(out.node_grace_ends.map_or(end, |e: Timestamp| e.min(end)));
                }
                _ => failures.push(RankFailure {
                    pod: name.clone(),
                    reason: "NodeNotReady",
                    exit_code: None,
                    message: format!(
                        "node {node_name} of rank pod {name} is NotReady for more than {}s",
                        node_grace.as_secs()
                    ),
                    retryable: true,
                }),
            }
            continue;
        }
        if let Some(failure) = pod_failure(pod, &name) {
            failures.push(failure);
        } else if is_ready(pod) {
            out.ready += 1;
        } else if let Some(why) = unschedulable(pod) {
            // The first pod by name, whatever order the cache lists them in.
            let candidate = format!("{name}: {why}");
            if out.unschedulable.as_ref().is_none_or(|u| candidate < *u) {
                out.unschedulable = Some(candidate);
            }
        }
    }
    failures.sort_by_key(|f| (f.retryable, f.pod.clone()));
    out.failure = failures.into_iter().next();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStatus, NodeCondition, NodeStatus, PodCondition, PodSpec,
        PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::{collections::BTreeMap, sync::Arc};

    fn pod(name: &str, attempt: u32, node: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    ATTEMPT_LABEL.to_owned(),
                    attempt.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    ..Default::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn an_oom_killed_rank_names_the_container_its_limit_and_the_fix() {
        let mut p = pod("job-0", 0, "n1");
        p.spec.as_mut().unwrap().containers = vec![k8s_openapi::api::core::v1::Container {
            name: CONTAINER.into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("96Mi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let status = &mut p
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0];
        status.restart_count = 1;
        status.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("OOMKilled".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let failure = pod_failure(&p, "job-0").expect("an OOM kill is a failure");
        assert_eq!(failure.reason, "OOMKilled");
        assert!(failure.retryable);
        for part in [
            "container trainer",
            "OOM-killed",
            "96Mi",
            "spec.pod.resources.limits.memory",
        ] {
            assert!(
                failure.message.contains(part),
                "{part:?} in {}",
                failure.message
            );
        }
    }

    fn node(ready: bool, since: Timestamp) -> Arc<Node> {
        Arc::new(Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "Unknown" }.into(),
                    last_transition_time: Some(Time(since)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn exit(pod: &mut Pod, code: i32, last: bool) {
        let cs = &mut pod
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0];
        let state = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                message: Some("bad config: model.tokenizer".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        if last {
            cs.last_state = Some(state);
            cs.restart_count = 1;
        } else {
            cs.state = Some(state);
        }
    }

    const GRACE: Duration = Duration::from_secs(30);

    #[test]
    fn the_schedulers_reason_for_an_unplaced_pod_is_kept() {
        let now = Timestamp::now();
        let mut waiting = pod("a-1", 1, "n");
        waiting.spec.as_mut().unwrap().node_name = None;
        waiting.status = Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some(
                    "pod group is unschedulable, minCount (2) cannot be satisfied".into(),
                ),
                ..Default::default()
            }]),
            ..PodStatus::default()
        });
        let pods = [pod("a-0", 1, "n"), waiting];
        let o = observe(&pods, 1, |_| Some(node(true, now)), GRACE, now);
        assert_eq!((o.current, o.ready), (2, 1));
        assert_eq!(
            o.unschedulable.as_deref(),
            Some("a-1: pod group is unschedulable, minCount (2) cannot be satisfied")
        );
        let healthy = observe(&pods[..1], 1, |_| Some(node(true, now)), GRACE, now);
        assert_eq!(healthy.unschedulable, None);
    }

    #[test]
    fn healthy_gang() {
        let now = Timestamp::now();
        let pods = [pod("a-0", 1, "n"), pod("a-1", 1, "n")];
        let obs = observe(&pods, 1, |_| Some(node(true, now)), GRACE, now);
        assert_eq!((obs.current, obs.ready, obs.failure), (2, 2, None));
    }

    #[test]
    fn restarted_rank_is_retryable_and_exit_2_is_not() {
        let now = Timestamp::now();
        let mut p1 = pod("a-1", 1, "n");
        exit(&mut p1, 137, true);
        let obs = observe(
            &[pod("a-0", 1, "n"), p1.clone()],
            1,
            |_| Some(node(true, now)),
            GRACE,
            now,
        );
        let failure = obs.failure.unwrap();
        assert!(failure.retryable);
        assert_eq!(failure.exit_code, Some(137));
        let mut p0 = pod("a-0", 1, "n");
        exit(&mut p0, 2, false);
        let obs = observe(&[p0, p1], 1, |_| Some(node(true, now)), GRACE, now);
        let failure = obs.failure.unwrap();
        assert!(!failure.retryable, "exit 2 wins over a retryable failure");
        assert_eq!(failure.message, "bad config: model.tokenizer");
    }

    #[test]
    fn old_attempts_are_stale_not_failures() {
        let now = Timestamp::now();
        let mut old = pod("a-0", 1, "n");
        exit(&mut old, 1, true);
        let obs = observe(
            &[old, pod("a-1", 2, "n")],
            2,
            |_| Some(node(true, now)),
            GRACE,
            now,
        );
        assert_eq!(obs.failure, None);
        assert_eq!(
            obs.stale,
            vec![StalePod {
                name: "a-0".into(),
                force: false
            }]
        );
        assert_eq!(obs.current, 1);
    }

    #[test]
    fn not_ready_node_waits_for_grace_then_fails() {
        let now = Timestamp::now();
        let pods = [pod("a-0", 1, "n")];
        let recent = observe(
            &pods,
            1,
            |_| Some(node(false, now - Duration::from_secs(10))),
            GRACE,
            now,
        );
        assert_eq!(recent.failure, None);
        assert_eq!(recent.node_grace_ends, Some(now + Duration::from_secs(20)));
        let old = observe(
            &pods,
            1,
            |_| Some(node(false, now - Duration::from_secs(31))),
            GRACE,
            now,
        );
        assert_eq!(old.failure.unwrap().reason, "NodeNotReady");
        let gone = observe(&pods, 1, |_| None, GRACE, now);
        assert_eq!(gone.failure.unwrap().reason, "NodeNotReady");
    }

    #[test]
    fn evicted_pod_restarts() {
        let now = Timestamp::now();
        let mut p = pod("a-0", 1, "n");
        p.status.as_mut().unwrap().phase = Some("Failed".into());
        p.status.as_mut().unwrap().reason = Some("Evicted".into());
        let obs = observe(&[p], 1, |_| Some(node(true, now)), GRACE, now);
        assert_eq!(obs.failure.unwrap().reason, "PodFailed");
    }
}
