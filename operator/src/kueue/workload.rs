//! Kueue's `Workload` (v1beta2), as much of it as the operator writes and reads, and the
//! Workload a queued job asks for.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{PodTemplateSpec, Toleration},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::{children, job::JobView};

/// The one pod set of a job's Workload: its rank pods.
pub const POD_SET: &str = "ranks";

/// `spec` of a Kueue Workload.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kueue.x-k8s.io",
    version = "v1beta2",
    kind = "Workload",
    namespaced,
    status = "WorkloadStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// The LocalQueue.
    pub queue_name: String,
    /// The pods to admit together.
    pub pod_sets: Vec<PodSet>,
    /// The WorkloadPriorityClass the priority comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_ref: Option<PriorityClassRef>,
    /// The priority value (Kueue does not resolve it for a Workload it did not build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// Pods admitted as one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodSet {
    /// Name (a DNS label).
    pub name: String,
    /// How many pods.
    pub count: i32,
    /// Their template (resource requests, node selector, tolerations).
    pub template: PodTemplateSpec,
}

/// A reference to a WorkloadPriorityClass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PriorityClassRef {
    /// `kueue.x-k8s.io`.
    pub group: String,
    /// `WorkloadPriorityClass`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// `status` of a Kueue Workload (the parts the operator reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Set while the Workload holds quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
    /// QuotaReserved, Admitted, Evicted, PodsReady, Requeued, Finished, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Where Kueue admitted a Workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// The ClusterQueue whose quota it uses.
    pub cluster_queue: String,
    /// One per pod set, in `spec.podSets` order.
    #[serde(default)]
    pub pod_set_assignments: Vec<PodSetAssignment>,
}

/// The flavors a pod set was admitted on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodSetAssignment {
    /// The pod set.
    pub name: String,
    /// ResourceFlavor name by resource (`cpu`, `nvidia.com/gpu`, ...).
    #[serde(default)]
    pub flavors: BTreeMap<String, String>,
}

/// `spec` of a Kueue ResourceFlavor: what pods admitted on it must carry.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kueue.x-k8s.io",
    version = "v1beta2",
    kind = "ResourceFlavor",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceFlavorSpec {
    /// Labels of the flavor's nodes (added to the pods' node selector).
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    /// Tolerations the pods get.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
}

impl Workload {
    /// A condition by type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// Whether the condition `type_` is True.
    pub fn is(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

/// Name of a job's Workload.
pub fn name(job: &str) -> String {
    format!("megatronfinetune-{job}")
}

/// The Workload a queued job asks for: its rank pods, owned by the job (so it goes with it).
pub fn desired(
    view: &JobView,
    queue: &str,
    pods: i32,
    template: PodTemplateSpec,
    priority: Option<(&str, i32)>,
) -> Workload {
    let mut workload = Workload::new(
        &name(&view.name),
        WorkloadSpec {
            queue_name: queue.to_owned(),
            pod_sets: vec![PodSet {
                name: POD_SET.to_owned(),
                count: pods,
                template,
            }],
            priority_class_ref: priority.map(|(name, _)| PriorityClassRef {
                group: "kueue.x-k8s.io".into(),
                kind: "WorkloadPriorityClass".into(),
                name: name.to_owned(),
            }),
            priority: priority.map(|(_, value)| value),
        },
    );
    workload.metadata = children::metadata(view, name(&view.name));
    workload
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("kueue.x-k8s.io/job-uid".into(), view.uid.clone());
    workload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    #[test]
    fn one_pod_set_of_the_rank_pods_owned_by_the_job_with_its_priority() {
        let job = fixtures::job();
        let w = desired(
            &job,
            "team-a",
            2,
            PodTemplateSpec::default(),
            Some(("high", 1000)),
        );
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["apiVersion"], "kueue.x-k8s.io/v1beta2");
        assert_eq!(v["metadata"]["name"], "megatronfinetune-squad");
        assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(v["metadata"]["labels"]["kueue.x-k8s.io/job-uid"], "uid-1");
        assert_eq!(v["spec"]["queueName"], "team-a");
        assert_eq!(v["spec"]["podSets"][0]["name"], "ranks");
        assert_eq!(v["spec"]["podSets"][0]["count"], 2);
        assert_eq!(
            v["spec"]["priorityClassRef"]["kind"],
            "WorkloadPriorityClass"
        );
        assert_eq!(v["spec"]["priority"], 1000);
        let plain = serde_json::to_value(desired(&job, "q", 2, Default::default(), None)).unwrap();
        assert!(plain["spec"].get("priority").is_none());
    }
}
