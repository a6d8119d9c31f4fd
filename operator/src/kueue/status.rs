//! The Workload status writes that Kueue expects from a job's controller, as patch bodies.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{admission::conditions, workload::Workload};

/// Field manager of the PodsReady condition (apart, so the Finished apply does not drop it).
pub const PODS_READY_MANAGER: &str = "megatron-operator-pods-ready";
/// Field manager of the Finished condition.
pub const FINISHED_MANAGER: &str = "megatron-operator-finished";

/// The `PodsReady` condition Kueue's waitForPodsReady reads, when it changes (reasons and
/// messages as Kueue's job framework writes them).
pub fn pods_ready(workload: &Workload, all_ready: bool, now: Timestamp) -> Option<Value> {
    let previous = workload.condition(conditions::PODS_READY);
    let (status, reason, message) = if all_ready {
        (
            "True",
            "Started",
            "All pods reached readiness and the workload is running",
        )
    } else if previous.is_some_and(|c| c.status == "True" || c.reason == "WaitForRecovery") {
        (
            "False",
            "WaitForRecovery",
            "At least one pod has failed, waiting for recovery",
        )
    } else {
        (
            "False",
            "WaitForStart",
            "Not all pods are ready or succeeded",
        )
    };
    if previous.is_some_and(|c| c.status == status && c.reason == reason) {
        return None;
    }
    Some(apply_condition(
        workload,
        conditions::PODS_READY,
        status,
        reason,
        message,
        now,
    ))
}

/// `Finished=True`, which frees the quota of a job that ended.
pub fn finished(
    workload: &Workload,
    succeeded: bool,
    message: &str,
    now: Timestamp,
) -> Option<Value> {
    if workload.is(conditions::FINISHED) {
        return None;
    }
    let reason = if succeeded { "Succeeded" } else { "Failed" };
    Some(apply_condition(
        workload,
        conditions::FINISHED,
        "True",
        reason,
        message,
        now,
    ))
}

/// After an eviction, once the gang is gone: the quota goes back (`admission` cleared,
/// `QuotaReserved=False`, `Admitted=False`) and `Requeued` says whether Kueue may queue it
/// at once (preemption, node failure) or after its backoff. A JSON merge patch of the status
/// carrying the resourceVersion, so a Workload changed meanwhile is re-read, not overwritten.
pub fn release(workload: &Workload, now: Timestamp) -> Option<Value> {
    let evicted = workload
        .condition(conditions::EVICTED)
        .filter(|c| c.status == "True")?;
    if !workload.is(conditions::QUOTA_RESERVED) {
        return None;
    }
    let requeue_now = matches!(evicted.reason.as_str(), "Preempted" | "NodeFailures");
    let mut list: Vec<Condition> = workload
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let message = evicted.message.clone();
    let reason = evicted.reason.clone();
    set(
        &mut list,
        conditions::QUOTA_RESERVED,
        "False",
        "Pending",
        &message,
        now,
    );
    set(
        &mut list,
        conditions::ADMITTED,
        "False",
        "NoReservation",
        "The workload has no reservation",
        now,
    );
    set(
        &mut list,
        conditions::REQUEUED,
        if requeue_now { "True" } else { "False" },
        &reason,
        &message,
        now,
    );
    Some(json!({
        "metadata": { "resourceVersion": workload.resource_version() },
        "status": { "admission": null, "conditions": list },
    }))
}

fn set(
    list: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let changed = |c: &Condition| c.status != status;
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if changed(c) {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => list.push(condition(type_, status, reason, message, now)),
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: None,
    }
}

fn apply_condition(
    workload: &Workload,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Value {
    json!({
        "apiVersion": Workload::api_version(&()),
        "kind": Workload::kind(&()),
        "metadata": { "name": workload.name_any(), "namespace": workload.namespace() },
        "status": { "conditions": [condition(type_, status, reason, message, now)] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(conditions: serde_json::Value) -> Workload {
        serde_json::from_value(json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": { "name": "w", "namespace": "ml", "resourceVersion": "42" },
            "spec": { "queueName": "q", "podSets": [] },
            "status": { "admission": { "clusterQueue": "cq" }, "conditions": conditions },
        }))
        .unwrap()
    }

    fn c(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({ "type": type_, "status": status, "reason": reason, "message": "m",
            "lastTransitionTime": "2026-12-06T00:00:00Z" })
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn pods_ready_is_written_when_it_changes_only() {
        let w = workload(json!([c("Admitted", "True", "Admitted")]));
        let body = pods_ready(&w, false, now()).unwrap();
        assert_eq!(body["status"]["conditions"][0]["reason"], "WaitForStart");
        let w = workload(json!([c("PodsReady", "False", "WaitForStart")]));
        assert!(pods_ready(&w, false, now()).is_none());
        let body = pods_ready(&w, true, now()).unwrap();
        assert_eq!(body["status"]["conditions"][0]["status"], "True");
        let w = workload(json!([c("PodsReady", "True", "Started")]));
        let body = pods_ready(&w, false, now()).unwrap();
        assert_eq!(body["status"]["conditions"][0]["reason"], "WaitForRecovery");
    }

    #[test]
    fn release_clears_the_admission_once_evicted_and_requeues_preemptions_at_once() {
        let w = workload(json!([
            c("QuotaReserved", "True", "QuotaReserved"),
            c("Admitted", "True", "Admitted"),
            c("Evicted", "True", "Preempted"),
        ]));
        let body = release(&w, now()).unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert!(body["status"]["admission"].is_null());
        let list = body["status"]["conditions"].as_array().unwrap();
        let get = |t: &str| list.iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(
            (
                get("QuotaReserved")["status"].as_str(),
                get("QuotaReserved")["reason"].as_str()
            ),
            (Some("False"), Some("Pending"))
        );
        assert_eq!(get("Admitted")["reason"], "NoReservation");
        assert_eq!(
            (
                get("Requeued")["status"].as_str(),
                get("Requeued")["reason"].as_str()
            ),
            (Some("True"), Some("Preempted"))
        );
        assert_eq!(
            get("Evicted")["status"],
            "True",
            "Kueue's own condition stays"
        );

        let timeout = workload(json!([
            c("QuotaReserved", "True", "QuotaReserved"),
            c("Evicted", "True", "PodsReadyTimeout")
        ]));
        let body = release(&timeout, now()).unwrap();
        let list = body["status"]["conditions"].as_array().unwrap();
        assert_eq!(
            list.iter().find(|c| c["type"] == "Requeued").unwrap()["status"],
            "False",
            "backoff first"
        );
        let released = workload(json!([
            c("QuotaReserved", "False", "Pending"),
            c("Evicted", "True", "Preempted")
        ]));
        assert!(release(&released, now()).is_none());
    }

    #[test]
    fn finished_once() {
        let w = workload(json!([]));
        let body = finished(&w, true, "done", now()).unwrap();
        assert_eq!(body["status"]["conditions"][0]["reason"], "Succeeded");
        let w = workload(json!([c("Finished", "True", "Succeeded")]));
        assert!(finished(&w, true, "done", now()).is_none());
    }
}
