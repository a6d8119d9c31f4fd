//! The mapping between the MegatronFineTune API types and the operator's lifecycle model:
//! what is read from spec and status, and the server-side-apply body of the operator's status fields.

use std::time::Duration;

use crds::{MegatronFineTune, MegatronFineTuneSpec, ModelPhase, ModelStatus, Outcome};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition as ApiCondition, Time},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::{
    error::Result,
    job::{InvalidSpec, JobView},
    lifecycle::{
        grace,
        model::{Condition, ModelReport, OwnedStatus, RunPolicy, TrainerReport, TrainerResult},
    },
};

/// Everything a reconcile reads from one object.
pub struct Read {
    /// The children's shape, or why the spec cannot run.
    pub view: Result<JobView, InvalidSpec>,
    /// Run policy with defaults.
    pub policy: RunPolicy,
    /// Operator-owned status.
    pub status: OwnedStatus,
    /// Trainer-owned status.
    pub trainer: TrainerReport,
}

fn seconds(value: i64) -> Duration {
    Duration::from_secs(u64::try_from(value).unwrap_or(0))
}

/// The run policy of the lifecycle model.
pub fn run_policy(spec: &MegatronFineTuneSpec) -> RunPolicy {
    let policy = &spec.run_policy;
    RunPolicy {
        max_restarts: u32::try_from(policy.max_restarts).unwrap_or(0),
        backoff_initial: seconds(policy.backoff.initial_seconds),
        backoff_max: seconds(
            policy
                .backoff
                .max_seconds
                .max(policy.backoff.initial_seconds),
        ),
        hang_timeout: (policy.hang_timeout_seconds > 0)
            .then(|| seconds(policy.hang_timeout_seconds)),
        node_not_ready_grace: seconds(policy.node_not_ready_grace_seconds),
        active_deadline: policy.active_deadline_seconds.map(seconds),
        ttl_after_finished: policy.ttl_seconds_after_finished.map(seconds),
        suspend: policy.suspend,
        keep_pods_when_finished: policy.clean_pod_policy == crds::CleanPodPolicy::None,
        termination_grace_seconds: spec
            .pod
            .termination_grace_period_seconds
            .unwrap_or(crds::PodSpec::DEFAULT_TERMINATION_GRACE_SECONDS),
    }
}

fn time(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

fn model_report(m: &ModelStatus) -> ModelReport {
    let ready = m.phase == ModelPhase::Ready;
    let message = match (&m.download, ready) {
        (Some(d), false) => format!("{} {}", m.name, d.summary()),
        _ => format!(
            "{} from {}",
            m.name,
            m.source.as_deref().unwrap_or("an unknown source")
        ),
    };
    ModelReport { ready, message }
}

/// Reads spec and status.
pub fn read(job: &MegatronFineTune) -> Result<Read> {
    let status = job.status.clone().unwrap_or_default();
    let conditions = status
        .conditions
        .iter()
        .map(|c| Condition {
            type_: c.type_.clone(),
            status: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: c.last_transition_time.0,
            observed_generation: c.observed_generation.unwrap_or_default(),
        })
        .collect();
    let owned = OwnedStatus {
        phase: status.phase,
        conditions,
        restarts: u32::try_from(status.restarts).unwrap_or(0),
        counted_restarts: status
            .counted_restarts
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0),
        last_restart_time: time(&status.last_restart_time),
        restart_checkpoint_step: status
            .restart_checkpoint_step
            .and_then(|s| u64::try_from(s).ok()),
        evictions: status
            .evictions
            .and_then(|e| u32::try_from(e).ok())
            .unwrap_or(0),
        observed_generation: status.observed_generation,
        start_time: time(&status.start_time),
        completion_time: time(&status.completion_time),
        ranks: status.ranks,
        ready_pods: status.ready_pods,
    };
    // A download that moves counts as liveness for hang detection, as a step does.
    let fetching_time = status
        .model
        .as_ref()
        .filter(|m| m.phase == ModelPhase::Fetching)
        .and_then(|m| time(&m.update_time));
    let step_time = status
        .progress
        .as_ref()
        .and_then(|p| time(&p.last_step_time));
    let trainer = TrainerReport {
        last_step_time: step_time.max(fetching_time),
        model: status.model.as_ref().map(model_report),
        checkpoint_step: status
            .latest_checkpoint
            .as_ref()
            .and_then(|c| u64::try_from(c.step).ok()),
        checkpoint_time: status
            .latest_checkpoint
            .as_ref()
            .and_then(|c| time(&c.time)),
        result: status.result.as_ref().map(|r| TrainerResult {
            attempt: u32::try_from(r.attempt).unwrap_or(u32::MAX),
            succeeded: r.outcome == Outcome::Succeeded,
            reason: if r.reason.is_empty() {
                "TrainerFailed".into()
            } else {
                r.reason.clone()
            },
            message: r.message.clone(),
        }),
        stop_seconds: grace::stop_seconds(
            status
                .latest_checkpoint
                .as_ref()
                .and_then(|c| c.duration_seconds),
            job.spec.training.global_batch_size,
            status.progress.as_ref().and_then(|p| p.samples_per_second),
        ),
    };
    Ok(Read {
        view: JobView::from_job(job),
        policy: run_policy(&job.spec),
        status: owned,
        trainer,
    })
}

/// The server-side-apply body for the operator-owned status fields. It carries the object's
/// resourceVersion, so a decision made from a stale cache fails with 409 instead of landing.
pub fn status_apply(job: &MegatronFineTune, status: &OwnedStatus) -> Value {
    let conditions: Vec<ApiCondition> = status
        .conditions
        .iter()
        .map(|c| ApiCondition {
            type_: c.type_.clone(),
            status: if c.status { "True" } else { "False" }.into(),
            reason: c.reason.clone(),
            message: truncate(&c.message, 4000),
            last_transition_time: Time(c.last_transition_time),
            observed_generation: Some(c.observed_generation),
        })
        .collect();
    let mut body = json!({
        "restarts": status.restarts,
        "conditions": conditions,
    });
    let fields = body.as_object_mut().expect("literal object");
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            fields.insert(key.to_owned(), value);
        }
    };
    put("phase", status.phase.map(|p| json!(p.as_str())));
    put(
        "countedRestarts",
        (status.counted_restarts > 0).then(|| json!(status.counted_restarts)),
    );
    put(
        "lastRestartTime",
        status.last_restart_time.map(|t| json!(Time(t))),
    );
    put(
        "restartCheckpointStep",
        status.restart_checkpoint_step.map(|s| json!(s)),
    );
    put(
        "evictions",
        (status.evictions > 0).then(|| json!(status.evictions)),
    );
    put(
        "observedGeneration",
        status.observed_generation.map(|g| json!(g)),
    );
    put("startTime", status.start_time.map(|t| json!(Time(t))));
    put(
        "completionTime",
        status.completion_time.map(|t| json!(Time(t))),
    );
    put("ranks", status.ranks.map(|r| json!(r)));
    put("readyPods", status.ready_pods.map(|r| json!(r)));
    json!({
        "apiVersion": MegatronFineTune::api_version(&()),
        "kind": MegatronFineTune::kind(&()),
        "metadata": { "name": job.name_any(), "resourceVersion": job.resource_version() },
        "status": body,
    })
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

/// The phase name of a job for the jobs-by-phase gauge (`None` before the first reconcile).
pub fn phase_name(job: &MegatronFineTune) -> &'static str {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("None", crds::Phase::as_str)
}

/// Restarts without a newer checkpoint the job has left before it fails
/// (`maxRestarts - countedRestarts`, at least 0); `None` once it finished.
pub fn restart_budget(job: &MegatronFineTune) -> Option<i64> {
    let status = job.status.as_ref();
    if status
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished())
    {
        return None;
    }
    let counted = status.and_then(|s| s.counted_restarts).unwrap_or(0);
    Some(i64::from(
        job.spec
            .run_policy
            .max_restarts
            .saturating_sub(counted)
            .max(0),
    ))
}

/// The CRD as YAML (what `megatron-operator crd` prints), identical to `crdgen`'s output.
pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(crds::crd::crd_yaml())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{DownloadProgress, MegatronFineTuneStatus, Progress};

    fn job_with(status: MegatronFineTuneStatus) -> MegatronFineTune {
        let text = include_str!("../../examples/tiny-cpu-squad.yaml");
        let mut job: MegatronFineTune = serde_yaml::from_str(text).unwrap();
        job.status = Some(status);
        job
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + second).unwrap())
    }

    /// A download whose updateTime moves keeps the gang alive like a step; a finished one
    /// does not.
    #[test]
    fn a_moving_download_counts_as_liveness() {
        let mut status = MegatronFineTuneStatus {
            progress: Some(Progress {
                last_step_time: Some(at(10)),
                ..Progress::default()
            }),
            model: Some(ModelStatus {
                name: "megatron-bert-345m-uncased".into(),
                phase: ModelPhase::Fetching,
                download: Some(DownloadProgress {
                    file: "model_optim_rng.pt".into(),
                    bytes: 1_000_000,
                    total_bytes: Some(2_000_000),
                    ..DownloadProgress::default()
                }),
                update_time: Some(at(50)),
                ..ModelStatus::default()
            }),
            ..MegatronFineTuneStatus::default()
        };
        let fetching = read(&job_with(status.clone())).unwrap();
        assert_eq!(fetching.trainer.last_step_time, Some(at(50).0));
        let model = fetching.trainer.model.unwrap();
        assert!(!model.ready);
        assert!(model.message.contains("1.0 of 2.0 MB"), "{model:?}");

        let m = status.model.as_mut().unwrap();
        m.phase = ModelPhase::Ready;
        m.source = Some("s3://runs/_cache/models/x".into());
        let ready = read(&job_with(status)).unwrap();
        assert_eq!(ready.trainer.last_step_time, Some(at(10).0));
        let message = ready.trainer.model.unwrap().message;
        assert!(
            message.ends_with("from s3://runs/_cache/models/x"),
            "{message}"
        );
    }

    #[test]
    fn the_restart_budget_is_what_max_restarts_leaves_until_the_job_finishes() {
        let mut job = job_with(MegatronFineTuneStatus {
            counted_restarts: Some(1),
            ..Default::default()
        });
        job.spec.run_policy.max_restarts = 3;
        assert_eq!(restart_budget(&job), Some(2));
        job.status.as_mut().unwrap().counted_restarts = Some(5);
        assert_eq!(restart_budget(&job), Some(0));
        job.status.as_mut().unwrap().phase = Some(crds::Phase::Failed);
        assert_eq!(restart_budget(&job), None);
    }
}
