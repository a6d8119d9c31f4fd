//! Transitions of the lifecycle decision.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::lifecycle::{
    gang::{GangObservation, RankFailure, StalePod},
    model::{ModelReport, OwnedStatus, Phase, QueueGate, RunPolicy, TrainerReport, TrainerResult},
};

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

struct Case {
    now: Timestamp,
    policy: RunPolicy,
    status: OwnedStatus,
    trainer: TrainerReport,
    gang: GangObservation,
    current: bool,
    queue: Option<QueueGate>,
}

impl Case {
    fn new() -> Self {
        Self {
            now: t0(),
            policy: RunPolicy {
                backoff_initial: Duration::from_secs(10),
                ..RunPolicy::default()
            },
            status: OwnedStatus::default(),
            trainer: TrainerReport::default(),
            gang: GangObservation::default(),
            current: true,
            queue: None,
        }
    }

    fn ready(mut self, n: u32) -> Self {
        self.gang.current = n;
        self.gang.ready = n;
        self
    }

    fn decide(&self) -> Decision {
        decide(&Inputs {
            now: self.now,
            generation: 1,
            policy: &self.policy,
            status: &self.status,
            trainer: &self.trainer,
            gang: &self.gang,
            desired_pods: 2,
            world_size: 4,
            stateful_set_current: self.current,
            invalid: None,
            queue: self.queue.as_ref(),
        })
    }

    /// Applies a decision as the reconciler would and advances the clock.
    fn step(&mut self, secs: u64) -> Decision {
        let d = self.decide();
        self.status = d.status.clone();
        self.now += Duration::from_secs(secs);
        d
    }
}

fn failure(code: i32) -> RankFailure {
    RankFailure {
        pod: "j-1".into(),
        reason: if code == 2 {
            "InvalidInput"
        } else {
            "RankFailed"
        },
        exit_code: Some(code),
        message: "boom".into(),
        retryable: code != 2,
    }
}

#[test]
fn a_gang_the_scheduler_cannot_place_says_why() {
    let mut case = Case::new();
    case.gang.current = 2;
    case.gang.unschedulable = Some("j-0: minCount (2) cannot be satisfied".into());
    let d = case.step(5);
    assert_eq!(d.status.phase, Some(Phase::Pending));
    let reconciling = d.status.condition("Reconciling").unwrap();
    assert_eq!(reconciling.reason, "Unschedulable");
    assert_eq!(
        reconciling.message,
        "0 of 2 rank pods ready; not scheduled: j-0: minCount (2) cannot be satisfied"
    );
}

#[test]
fn new_job_is_pending_then_running() {
    let mut case = Case::new();
    let d = case.step(5);
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.replicas, 2);
    assert_eq!(d.status.start_time, Some(t0()));
    assert_eq!(d.transition.as_ref().unwrap().reason, "PodsNotReady");
    let mut case = case.ready(2);
    let d = case.step(0);
    assert_eq!(d.status.phase, Some(Phase::Running));
    let ready = d.status.condition("Ready").unwrap();
    assert!(ready.status);
    assert_eq!(
        d.status.condition("Running").unwrap().last_transition_time,
        t0() + Duration::from_secs(5)
    );
    // Same observation again: nothing changes, no event.
    let again = case.decide();
    assert_eq!(again.status, case.status);
    assert_eq!(again.transition, None);
}

#[test]
fn rank_failure_restarts_after_backoff_and_counts() {
    let mut case = Case::new().ready(2);
    case.step(0);
    case.gang.failure = Some(failure(137));
    let d = case.step(3);
    assert_eq!(d.status.phase, Some(Phase::Restarting));
    assert_eq!((d.status.restarts, d.status.counted_restarts), (1, 1));
    assert_eq!(d.restarted.as_deref(), Some("RankFailed"));
    assert!(d.transition.as_ref().unwrap().warning);
    // Old pods are now stale; within the 10 s backoff nothing is deleted.
    case.gang = GangObservation {
        stale: vec![
            StalePod {
                name: "j-0".into(),
                force: false,
            },
            StalePod {
                name: "j-1".into(),
                force: false,
            },
        ],
        ..Default::default()
    };
    let d = case.step(0);
    assert!(d.delete_pods.is_empty());
    assert_eq!(d.requeue, Some(Duration::from_secs(7)));
    assert_eq!(d.transition, None);
    case.now += Duration::from_secs(7);
    case.current = false;
    assert!(
        case.decide().delete_pods.is_empty(),
        "waits for the StatefulSet controller"
    );
    case.current = true;
    let d = case.step(1);
    assert_eq!(
        d.delete_pods,
        [("j-0", 10), ("j-1", 10)].map(|(name, grace_seconds)| PodDeletion {
            name: name.into(),
            grace_seconds
        }),
        "a failed gang cannot checkpoint: a short grace, not the configured 60 s"
    );
    case.gang = GangObservation::default();
    case = case.ready(2);
    let d = case.step(0);
    assert_eq!(d.status.phase, Some(Phase::Running));
    assert_eq!(d.status.restarts, 1);
}

#[test]
fn exit_code_2_fails_at_once() {
    let mut case = Case::new().ready(2);
    case.step(0);
    case.gang.failure = Some(failure(2));
    let d = case.step(0);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.restarts, 0);
    assert_eq!(d.replicas, 0);
    let failed = d.status.condition("Failed").unwrap();
    assert_eq!(
        (failed.reason.as_str(), failed.message.as_str()),
        ("InvalidInput", "boom")
    );
    assert!(d.status.condition("Stalled").unwrap().status);
}

#[test]
fn restarts_with_checkpoint_progress_are_free() {
    let mut case = Case::new().ready(2);
    case.policy.max_restarts = 1;
    case.step(0);
    case.trainer.checkpoint_step = Some(100);
    case.gang.failure = Some(failure(1));
    let d = case.step(30);
    assert_eq!(
        (d.status.restarts, d.status.counted_restarts),
        (1, 0),
        "a checkpoint since start: free"
    );
    let d = case.step(30);
    assert_eq!(
        (d.status.restarts, d.status.counted_restarts),
        (2, 1),
        "no newer checkpoint: counts"
    );
    case.trainer.checkpoint_step = Some(200);
    let d = case.step(30);
    assert_eq!(
        (d.status.restarts, d.status.counted_restarts),
        (3, 1),
        "newer checkpoint: free"
    );
    let d = case.step(30);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(
        d.status.condition("Failed").unwrap().reason,
        "MaxRestartsExceeded"
    );
}

#[test]
fn backoff_doubles() {
    let policy = RunPolicy {
        backoff_initial: Duration::from_secs(10),
        backoff_max: Duration::from_secs(30),
        ..RunPolicy::default()
    };
    let delays: Vec<u64> = (1..=4).map(|n| policy.backoff(n).as_secs()).collect();
    assert_eq!(delays, [10, 20, 30, 30]);
}

#[test]
fn success_of_current_attempt_only() {
    let mut case = Case::new().ready(2);
    case.step(0);
    case.status.restarts = 1;
    case.trainer.result = Some(TrainerResult {
        attempt: 0,
        succeeded: true,
        reason: "Completed".into(),
        message: String::new(),
    });
    assert_eq!(
        case.decide().status.phase,
        Some(Phase::Running),
        "a result of an older attempt is ignored"
    );
    case.trainer.result.as_mut().unwrap().attempt = 1;
    let d = case.step(10);
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(d.replicas, 0);
    assert_eq!(d.status.completion_time, Some(t0()));
    assert!(d.status.condition("Succeeded").unwrap().status);
    // Finished stays finished whatever the pods do.
    case.gang.failure = Some(failure(1));
    let d = case.decide();
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(
        (d.replicas, d.transition.is_none(), d.restarted.is_none()),
        (0, true, true)
    );
}

#[test]
fn permanent_trainer_failure() {
    let mut case = Case::new().ready(2);
    case.step(0);
    case.trainer.result = Some(TrainerResult {
        attempt: 0,
        succeeded: false,
        reason: "InvalidData".into(),
        message: "row 3".into(),
    });
    let d = case.decide();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.condition("Failed").unwrap().reason, "InvalidData");
}

#[test]
fn suspend_and_resume_reset_the_deadline_clock() {
    let mut case = Case::new().ready(2);
    case.policy.active_deadline = Some(Duration::from_secs(100));
    case.step(50);
    case.policy.suspend = true;
    let d = case.step(500);
    assert_eq!(
        (d.status.phase, d.replicas, d.status.start_time),
        (Some(Phase::Suspended), 0, None)
    );
    case.policy.suspend = false;
    case.gang = GangObservation::default();
    let d = case.step(0);
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.status.start_time, Some(t0() + Duration::from_secs(550)));
    assert_eq!(d.requeue, Some(Duration::from_secs(100)));
}

#[test]
fn a_stopped_gang_gets_the_grace_its_checkpoint_needs() {
    let mut case = Case::new().ready(2);
    case.gang.current_pods = vec!["j-0".into(), "j-1".into()];
    case.step(10);
    case.policy.suspend = true;
    let grace_of = |d: &Decision| {
        d.delete_pods
            .iter()
            .map(|p| p.grace_seconds)
            .collect::<Vec<_>>()
    };
    // No checkpoint measured yet: the configured grace.
    assert_eq!(grace_of(&case.decide()), [60, 60]);
    // One step and one save took 50 s: 2 x 50 + 30.
    case.trainer.stop_seconds = Some(50.0);
    let d = case.decide();
    assert_eq!(grace_of(&d), [130, 130]);
    assert_eq!(d.replicas, 0);
    // Pods already terminating are not deleted again.
    case.gang.current_pods.clear();
    assert!(case.decide().delete_pods.is_empty());
}

#[test]
fn deadline_fails_the_job() {
    let mut case = Case::new().ready(2);
    case.policy.active_deadline = Some(Duration::from_secs(60));
    case.step(61);
    let d = case.decide();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(
        d.status.condition("Failed").unwrap().reason,
        "DeadlineExceeded"
    );
}

#[test]
fn hang_restarts_the_gang() {
    let mut case = Case::new().ready(2);
    case.policy.hang_timeout = Some(Duration::from_secs(60));
    let d = case.step(30);
    assert_eq!(d.requeue, Some(Duration::from_secs(60)));
    case.trainer.last_step_time = Some(case.now);
    let d = case.step(59);
    assert_eq!(d.requeue, Some(Duration::from_secs(60)));
    assert_eq!(case.decide().status.phase, Some(Phase::Running));
    case.now += Duration::from_secs(1);
    let d = case.decide();
    assert_eq!(d.status.phase, Some(Phase::Restarting));
    assert_eq!(d.restarted.as_deref(), Some("Hung"));
}

#[test]
fn ttl_deletes_finished_jobs() {
    let mut case = Case::new().ready(2);
    case.policy.ttl_after_finished = Some(Duration::from_secs(30));
    case.step(0);
    case.trainer.result = Some(TrainerResult {
        attempt: 0,
        succeeded: true,
        reason: "Completed".into(),
        message: String::new(),
    });
    case.step(10);
    let d = case.decide();
    assert!(!d.delete_job);
    assert_eq!(d.requeue, Some(Duration::from_secs(20)));
    case.now += Duration::from_secs(20);
    assert!(case.decide().delete_job);
}

#[test]
fn clean_pod_policy_none_keeps_pods() {
    let mut case = Case::new().ready(2);
    case.policy.keep_pods_when_finished = true;
    case.step(0);
    case.trainer.result = Some(TrainerResult {
        attempt: 0,
        succeeded: true,
        reason: "Completed".into(),
        message: String::new(),
    });
    assert_eq!(case.decide().replicas, 2);
}

#[test]
fn model_ready_follows_the_trainers_model_status() {
    let mut case = Case::new().ready(2);
    assert!(
        case.decide().status.condition("ModelReady").is_none(),
        "no condition for a job without published weights"
    );
    case.trainer.model = Some(ModelReport {
        ready: false,
        message: "megatron-bert-345m-uncased model_optim_rng.pt: 1.0 of 2.0 MB".into(),
    });
    let fetching = case
        .step(5)
        .status
        .condition("ModelReady")
        .cloned()
        .unwrap();
    assert!(!fetching.status);
    assert_eq!(fetching.reason, "Fetching");
    assert!(fetching.message.contains("1.0 of 2.0 MB"), "{fetching:?}");
    case.trainer.model = Some(ModelReport {
        ready: true,
        message: "megatron-bert-345m-uncased from s3://b/_cache/models/x".into(),
    });
    let ready = case
        .decide()
        .status
        .condition("ModelReady")
        .cloned()
        .unwrap();
    assert!(ready.status);
    assert_eq!(ready.reason, "Resolved");
    assert_eq!(ready.last_transition_time, case.now);
}

fn admitted() -> QueueGate {
    QueueGate {
        admitted: true,
        ..QueueGate::default()
    }
}

fn evicted(reason: &str) -> QueueGate {
    QueueGate {
        admitted: true,
        evicted: Some((reason.into(), "by a higher priority workload".into())),
        waiting: None,
    }
}

#[test]
fn a_queued_job_waits_for_admission_without_pods_or_deadline_clock() {
    let mut case = Case::new();
    case.policy.active_deadline = Some(Duration::from_secs(60));
    case.queue = Some(QueueGate {
        waiting: Some("couldn't assign flavors to pod set ranks: insufficient quota".into()),
        ..QueueGate::default()
    });
    let d = case.step(600);
    assert_eq!(d.status.phase, Some(Phase::Queued));
    assert_eq!(d.replicas, 0);
    assert_eq!(
        d.status.start_time, None,
        "waiting does not count toward the deadline"
    );
    let queued = d.status.condition("Queued").unwrap();
    assert!(queued.status);
    assert_eq!(queued.reason, "WaitingForAdmission");
    assert!(queued.message.contains("insufficient quota"));
    assert!(!d.status.condition("Reconciling").unwrap().status);
    // Admitted ten minutes later: starts, and the deadline clock starts now.
    case.queue = Some(admitted());
    let d = case.step(0);
    assert_eq!(d.status.phase, Some(Phase::Pending));
    assert_eq!(d.replicas, 2);
    assert_eq!(d.status.start_time, Some(t0() + Duration::from_secs(600)));
    let queued = d.status.condition("Queued").unwrap();
    assert!(!queued.status);
    assert_eq!(queued.reason, "Admitted");
    assert_eq!(d.status.evictions, 0);
}

#[test]
fn an_evicted_gang_stops_requeues_and_counts_once_without_a_restart() {
    let mut case = Case::new().ready(2);
    case.queue = Some(admitted());
    assert_eq!(case.step(30).status.phase, Some(Phase::Running));
    case.queue = Some(evicted("Preempted"));
    let d = case.step(1);
    assert_eq!(d.status.phase, Some(Phase::Queued));
    assert_eq!(d.replicas, 0, "the gang stops");
    assert_eq!(d.status.evictions, 1);
    assert_eq!((d.status.restarts, d.status.counted_restarts), (0, 0));
    assert_eq!(d.transition.as_ref().unwrap().reason, "Evicted");
    assert!(d.transition.as_ref().unwrap().message.contains("Preempted"));
    // Still evicted while the pods go, then waiting again: counted once.
    assert_eq!(case.step(1).status.evictions, 1);
    case.queue = Some(QueueGate::default());
    case.gang = GangObservation::default();
    let d = case.step(60);
    assert_eq!(
        (d.status.phase, d.status.evictions),
        (Some(Phase::Queued), 1)
    );
    // Re-admitted: runs again as the same attempt (the trainer resumes from its checkpoint).
    case.queue = Some(admitted());
    let d = case.step(0);
    assert_eq!((d.status.phase, d.replicas), (Some(Phase::Pending), 2));
    assert_eq!(d.status.restarts, 0);
}

#[test]
fn suspend_wins_over_the_queue_and_finished_jobs_ignore_it() {
    let mut case = Case::new();
    case.policy.suspend = true;
    case.queue = Some(admitted());
    assert_eq!(case.step(0).status.phase, Some(Phase::Suspended));
    case.policy.suspend = false;
    case.trainer.result = Some(TrainerResult {
        attempt: 0,
        succeeded: true,
        reason: "Completed".into(),
        message: String::new(),
    });
    assert_eq!(case.step(0).status.phase, Some(Phase::Succeeded));
    case.queue = Some(evicted("Preempted"));
    let d = case.step(0);
    assert_eq!(
        (d.status.phase, d.status.evictions),
        (Some(Phase::Succeeded), 0)
    );
}
