//! The lifecycle decision: from what was observed, the next status, replica count, pods to
//! delete, event and timer. Pure, so every transition is unit-tested without a cluster.

use std::time::Duration;

use crds::status::{condition_types, model_reasons, queue_reasons};
use k8s_openapi::jiff::Timestamp;

use super::{
    gang::GangObservation,
    grace,
    model::{Condition, OwnedStatus, Phase, QueueGate, RunPolicy, TrainerReport},
};

/// Everything a decision reads.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Current time.
    pub now: Timestamp,
    /// `metadata.generation`.
    pub generation: i64,
    /// Run policy.
    pub policy: &'a RunPolicy,
    /// Operator-owned status as observed.
    pub status: &'a OwnedStatus,
    /// Trainer-owned status as observed.
    pub trainer: &'a TrainerReport,
    /// The gang's pods.
    pub gang: &'a GangObservation,
    /// Pods the gang has when running.
    pub desired_pods: u32,
    /// World size.
    pub world_size: i64,
    /// The StatefulSet controller has seen the template of the current attempt.
    pub stateful_set_current: bool,
    /// Why the spec cannot run, if it cannot.
    pub invalid: Option<String>,
    /// Kueue's word on a job it queues; `None` when Kueue does not manage the job.
    pub queue: Option<&'a QueueGate>,
}

/// A phase transition (or restart) worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Event reason (CamelCase).
    pub reason: String,
    /// Event note.
    pub message: String,
    /// Warning rather than Normal.
    pub warning: bool,
}

/// A rank pod to delete, and the seconds its ranks get between SIGTERM and SIGKILL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDeletion {
    /// Pod name.
    pub name: String,
    /// Deletion grace period (0: its node is gone, no kubelet will confirm).
    pub grace_seconds: i64,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Status to write (only if it differs from the observed one).
    pub status: OwnedStatus,
    /// StatefulSet replicas.
    pub replicas: i32,
    /// Pods to delete now: a restarted gang's old pods, or a stopped gang's pods (with a
    /// grace that fits their checkpoint, see [`grace`]).
    pub delete_pods: Vec<PodDeletion>,
    /// Event to publish.
    pub transition: Option<Transition>,
    /// Reason of a restart decided now, for the metric.
    pub restarted: Option<String>,
    /// Delete the MegatronFineTune itself (TTL after finish).
    pub delete_job: bool,
    /// Check again after this long.
    pub requeue: Option<Duration>,
}

struct Step<'a> {
    inputs: &'a Inputs<'a>,
    status: OwnedStatus,
    reason: String,
    message: String,
    timers: Vec<Timestamp>,
    restarted: Option<String>,
}

impl Step<'_> {
    fn at(&mut self, when: Timestamp) {
        self.timers.push(when);
    }

    fn finish(&mut self, phase: Phase, reason: &str, message: String) {
        self.status.phase = Some(phase);
        self.status.completion_time = Some(self.inputs.now);
        self.reason = reason.to_owned();
        self.message = message;
    }

    /// Starts a new attempt, or fails the job when restarts without progress are exhausted.
    fn restart(&mut self, reason: &str, message: String) {
        let policy = self.inputs.policy;
        let checkpoint = self.inputs.trainer.checkpoint_step;
        // Progress = a checkpoint newer than the one at the previous restart (any, at the first).
        let progressed = match (checkpoint, self.status.restart_checkpoint_step) {
            (Some(now), Some(then)) => now > then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !progressed && self.status.counted_restarts >= policy.max_restarts {
            self.finish(
                Phase::Failed,
                "MaxRestartsExceeded",
                format!(
                    "{message}; giving up after {} restarts without a newer checkpoint (maxRestarts={})",
                    self.status.counted_restarts, policy.max_restarts
                ),
            );
            return;
        }
        if !progressed {
            self.status.counted_restarts += 1;
        }
        self.status.restarts += 1;
        self.status.last_restart_time = Some(self.inputs.now);
        self.status.restart_checkpoint_step = checkpoint;
        self.status.phase = Some(Phase::Restarting);
        self.reason = reason.to_owned();
        self.message = format!(
            "{message}; restarting the gang as attempt {} in {}s",
            self.status.restarts,
            policy.backoff(self.status.restarts).as_secs()
        );
        self.restarted = Some(reason.to_owned());
    }
}

/// Decides the next step for a job.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let now = inputs.now;
    let policy = inputs.policy;
    let before = inputs.status.phase;
    let mut step = Step {
        inputs,
        status: inputs.status.clone(),
        reason: String::new(),
        message: String::new(),
        timers: Vec::new(),
        restarted: None,
    };
    step.status.observed_generation = Some(inputs.generation);
    step.status.ranks = Some(inputs.world_size);

    // A finished job never runs again; only its TTL is handled.
    if let Some(phase) = before.filter(|p| p.is_finished()) {
        let mut delete_job = false;
        if let (Some(ttl), Some(done)) = (policy.ttl_after_finished, inputs.status.completion_time)
        {
            let expires = done + ttl;
            if now >= expires {
                delete_job = true;
            } else {
                step.at(expires);
            }
        }
        let terminal = inputs.status.condition(phase.as_str());
        step.reason = terminal.map_or_else(|| phase.as_str().to_owned(), |c| c.reason.clone());
        step.message = terminal.map(|c| c.message.clone()).unwrap_or_default();
        step.status.ready_pods = Some(0);
        return conclude(step, before, Vec::new(), delete_job);
    }

    let mut phase = before.unwrap_or(Phase::Pending);
    let queued = inputs.queue.filter(|gate| !gate.runs());
    let held = policy.suspend || queued.is_some();
    if matches!(phase, Phase::Suspended | Phase::Queued) && !held {
        // Resumed or admitted: the deadline clock starts again, like a Job's.
        step.status.start_time = None;
        phase = Phase::Pending;
    }
    step.status.phase = Some(phase);
    if step.status.start_time.is_none() && !held {
        step.status.start_time = Some(now);
    }
    step.status.ready_pods = Some(i64::from(inputs.gang.ready));

    let attempt = step.status.restarts;
    let result = inputs
        .trainer
        .result
        .as_ref()
        .filter(|r| r.attempt == attempt);
    let deadline = policy
        .active_deadline
        .zip(step.status.start_time)
        .map(|(d, s)| s + d);
    if let Some(invalid) = &inputs.invalid {
        step.finish(Phase::Failed, "InvalidSpec", invalid.clone());
    } else if let Some(result) = result {
        let message = if result.message.is_empty() {
            result.reason.clone()
        } else {
            result.message.clone()
        };
        if result.succeeded {
            step.finish(Phase::Succeeded, "Succeeded", message);
        } else {
            step.finish(Phase::Failed, &result.reason, message);
        }
    } else if policy.suspend {
        step.status.phase = Some(Phase::Suspended);
        step.status.start_time = None;
        step.reason = "Suspended".into();
        step.message = "spec.runPolicy.suspend is true: the gang is scaled to zero".into();
    } else if let Some(gate) = queued {
        queue(&mut step, gate, before);
    } else if deadline.is_some_and(|d| now >= d) {
        let limit = policy.active_deadline.unwrap_or_default().as_secs();
        step.finish(
            Phase::Failed,
            "DeadlineExceeded",
            format!("the job ran longer than activeDeadlineSeconds={limit}"),
        );
    } else {
        if let Some(deadline) = deadline {
            step.at(deadline);
        }
        run(&mut step);
    }

    let mut delete = Vec::new();
    let phase = step.status.phase.unwrap_or(Phase::Pending);
    let stopped = matches!(phase, Phase::Suspended | Phase::Queued);
    if stopped {
        // Deleted here rather than by the StatefulSet's scale-down, which would give them
        // the template's grace: the ranks checkpoint on SIGTERM and need the time.
        let grace = grace::for_stop(
            policy.termination_grace_seconds,
            inputs.trainer.stop_seconds,
        );
        delete = inputs
            .gang
            .current_pods
            .iter()
            .map(|name| PodDeletion {
                name: name.clone(),
                grace_seconds: grace,
            })
            .collect();
    }
    if !phase.is_finished() && !stopped && !inputs.gang.stale.is_empty() {
        let backoff_ends = step
            .status
            .last_restart_time
            .map_or(now, |t| t + policy.backoff(step.status.restarts));
        if now < backoff_ends {
            step.at(backoff_ends);
        } else if inputs.stateful_set_current {
            delete = inputs
                .gang
                .stale
                .iter()
                .map(|pod| PodDeletion {
                    name: pod.name.clone(),
                    grace_seconds: if pod.force {
                        0
                    } else {
                        grace::for_restart(policy.termination_grace_seconds)
                    },
                })
                .collect();
        } else {
            // The StatefulSet watch brings us back when its controller has seen the new
            // template; the timer is a safety net.
            step.at(now + Duration::from_secs(5));
        }
    }
    conclude(step, before, delete, false)
}

/// Held by Kueue: not admitted yet, or evicted (counted once, when a gang that was let run
/// is stopped). Waiting does not count toward activeDeadlineSeconds.
fn queue(step: &mut Step<'_>, gate: &QueueGate, before: Option<Phase>) {
    step.status.phase = Some(Phase::Queued);
    step.status.start_time = None;
    match &gate.evicted {
        Some((reason, message)) => {
            if before.is_some_and(|p| p != Phase::Queued) {
                step.status.evictions += 1;
            }
            step.reason = queue_reasons::EVICTED.into();
            step.message = format!(
                "Kueue evicted the gang ({reason}: {message}); it resumes from its latest \
                 checkpoint when admitted again"
            );
        }
        None => {
            step.reason = queue_reasons::WAITING_FOR_ADMISSION.into();
            step.message = gate
                .waiting
                .clone()
                .unwrap_or_else(|| "waiting for Kueue to admit the job's Workload".to_owned());
        }
    }
}

/// The running part: failures, hangs and the Pending/Running/Restarting phase.
fn run(step: &mut Step<'_>) {
    let inputs = step.inputs;
    let gang = inputs.gang;
    let now = inputs.now;

    if let Some(failure) = &gang.failure {
        if failure.retryable {
            step.restart(failure.reason, failure.message.clone());
        } else {
            step.finish(Phase::Failed, failure.reason, failure.message.clone());
        }
        return;
    }
    if let Some(end) = gang.node_grace_ends {
        step.at(end);
    }

    let mut phase = step.status.phase.unwrap_or(Phase::Pending);
    let all_ready = gang.stale.is_empty()
        && gang.current == inputs.desired_pods
        && gang.ready == inputs.desired_pods;
    if phase != Phase::Running && all_ready {
        phase = Phase::Running;
    }
    step.status.phase = Some(phase);

    if phase == Phase::Running
        && let Some(hang) = inputs.policy.hang_timeout
    {
        let running_since = step.status.running_since().unwrap_or(now);
        let last = inputs
            .trainer
            .last_step_time
            .map_or(running_since, |t| t.max(running_since));
        if now >= last + hang {
            step.restart(
                "Hung",
                format!(
                    "no training step for {}s (hangTimeoutSeconds)",
                    hang.as_secs()
                ),
            );
            return;
        }
        step.at(last + hang);
    }
    let (reason, message) = match phase {
        Phase::Running => (
            "Running".to_owned(),
            format!("all {} rank pods are ready", inputs.desired_pods),
        ),
        Phase::Restarting => step
            .status
            .condition(condition_types::RECONCILING)
            .filter(|c| c.status)
            .map(|c| (c.reason.clone(), c.message.clone()))
            .unwrap_or_else(|| {
                (
                    "Restarting".to_owned(),
                    format!("starting attempt {}", step.status.restarts),
                )
            }),
        _ => {
            let ready = format!(
                "{} of {} rank pods ready",
                gang.ready.min(inputs.desired_pods),
                inputs.desired_pods
            );
            match &gang.unschedulable {
                Some(why) => (
                    "Unschedulable".to_owned(),
                    format!("{ready}; not scheduled: {why}"),
                ),
                None => ("PodsNotReady".to_owned(), ready),
            }
        }
    };
    step.reason = reason;
    step.message = message;
}

fn conclude(
    mut step: Step<'_>,
    before: Option<Phase>,
    delete_pods: Vec<PodDeletion>,
    delete_job: bool,
) -> Decision {
    let inputs = step.inputs;
    let phase = step.status.phase.unwrap_or(Phase::Pending);
    if step.reason.is_empty() {
        step.reason = phase.as_str().to_owned();
    }
    step.status.conditions = conditions(
        &inputs.status.conditions,
        phase,
        &step.reason,
        &step.message,
        inputs,
    );
    let transition = (step.restarted.is_some() || before != Some(phase)).then(|| Transition {
        reason: step.reason.clone(),
        message: if step.message.is_empty() {
            phase.as_str().to_owned()
        } else {
            step.message.clone()
        },
        warning: matches!(phase, Phase::Failed | Phase::Restarting),
    });
    let requeue = step.timers.iter().min().map(|t| {
        let wait = Duration::try_from(t.duration_since(inputs.now)).unwrap_or_default();
        wait.max(Duration::from_millis(500))
    });
    let finished = phase.is_finished();
    let replicas = if (finished && !inputs.policy.keep_pods_when_finished)
        || matches!(phase, Phase::Suspended | Phase::Queued)
    {
        0
    } else {
        inputs.desired_pods as i32
    };
    Decision {
        status: step.status,
        replicas,
        delete_pods,
        transition,
        restarted: step.restarted,
        delete_job,
        requeue,
    }
}

/// The conditions of `phase`, keeping `lastTransitionTime` of conditions whose status did not change.
fn conditions(
    old: &[Condition],
    phase: Phase,
    reason: &str,
    message: &str,
    inputs: &Inputs<'_>,
) -> Vec<Condition> {
    let name = phase.as_str();
    let active = (reason, message);
    let quiet = (name, "");
    let is = |p: Phase| phase == p;
    // (type, status, (reason, message))
    let mut wanted = vec![
        (
            condition_types::READY,
            is(Phase::Running) || is(Phase::Succeeded),
            if is(Phase::Running) { quiet } else { active },
        ),
        (
            condition_types::RECONCILING,
            is(Phase::Pending) || is(Phase::Restarting),
            if is(Phase::Pending) || is(Phase::Restarting) {
                active
            } else {
                quiet
            },
        ),
        (
            condition_types::STALLED,
            is(Phase::Failed),
            if is(Phase::Failed) { active } else { quiet },
        ),
        (
            condition_types::RUNNING,
            is(Phase::Running),
            if is(Phase::Running) { active } else { quiet },
        ),
        (
            condition_types::SUSPENDED,
            is(Phase::Suspended),
            if is(Phase::Suspended) { active } else { quiet },
        ),
    ];
    if inputs.queue.is_some() {
        let admitted = (queue_reasons::ADMITTED, "");
        wanted.push((
            condition_types::QUEUED,
            is(Phase::Queued),
            if is(Phase::Queued) { active } else { admitted },
        ));
    }
    if is(Phase::Succeeded) {
        wanted.push((condition_types::SUCCEEDED, true, active));
    }
    if is(Phase::Failed) {
        wanted.push((condition_types::FAILED, true, active));
    }
    if let Some(model) = &inputs.trainer.model {
        let reason = if model.ready {
            model_reasons::RESOLVED
        } else {
            model_reasons::FETCHING
        };
        let message = model.message.as_str();
        wanted.push((condition_types::MODEL_READY, model.ready, (reason, message)));
    }
    wanted
        .into_iter()
        .map(|(type_, status, (reason, message))| {
            let previous = old.iter().find(|c| c.type_ == type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time,
                _ => inputs.now,
            };
            Condition {
                type_: type_.to_owned(),
                status,
                reason: reason.to_owned(),
                message: message.to_owned(),
                last_transition_time,
                observed_generation: inputs.generation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
