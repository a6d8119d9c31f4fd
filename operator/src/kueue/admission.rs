//! What a Workload's status means for the gang: may it run, and where.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PodSpec, Toleration};

use super::workload::{ResourceFlavorSpec, Workload};
use crate::lifecycle::model::QueueGate;

/// Kueue's condition types the operator reads.
pub mod conditions {
    /// Quota is reserved.
    pub const QUOTA_RESERVED: &str = "QuotaReserved";
    /// Quota reserved and admission checks passed: the job may start.
    pub const ADMITTED: &str = "Admitted";
    /// Kueue wants the job stopped (preemption, PodsReady timeout, ...).
    pub const EVICTED: &str = "Evicted";
    /// All pods ready (written by the job's controller: the operator).
    pub const PODS_READY: &str = "PodsReady";
    /// Put back in the queue after an eviction.
    pub const REQUEUED: &str = "Requeued";
    /// The job ended; the quota is free.
    pub const FINISHED: &str = "Finished";
}

/// Kueue's word on the job, from its Workload's conditions.
pub fn gate(workload: &Workload) -> QueueGate {
    let admitted = workload.is(conditions::ADMITTED)
        && workload
            .status
            .as_ref()
            .is_some_and(|s| s.admission.is_some());
    let evicted = workload
        .condition(conditions::EVICTED)
        .filter(|c| c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()));
    let waiting = workload
        .condition(conditions::QUOTA_RESERVED)
        .filter(|c| c.status == "False" && !c.message.is_empty())
        .map(|c| c.message.clone());
    QueueGate {
        admitted,
        evicted,
        waiting,
    }
}

/// The ResourceFlavors the admission assigned, by name.
pub fn flavors(workload: &Workload) -> BTreeSet<String> {
    workload
        .status
        .as_ref()
        .and_then(|s| s.admission.as_ref())
        .map(|a| {
            a.pod_set_assignments
                .iter()
                .flat_map(|p| p.flavors.values().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the admitted flavors ask of the rank pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// Node labels of the flavors.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the flavors.
    pub tolerations: Vec<Toleration>,
}

impl Placement {
    /// The placement of pods admitted on `flavors`.
    pub fn of<'a>(flavors: impl IntoIterator<Item = &'a ResourceFlavorSpec>) -> Self {
        let mut placement = Self::default();
        for flavor in flavors {
            placement.node_selector.extend(flavor.node_labels.clone());
            for toleration in &flavor.tolerations {
                if !placement.tolerations.contains(toleration) {
                    placement.tolerations.push(toleration.clone());
                }
            }
        }
        placement
    }

    /// Adds the placement to a pod spec (the flavor's labels win over the job's own selector,
    /// as Kueue's job framework does).
    pub fn apply(&self, pod: &mut PodSpec) {
        if !self.node_selector.is_empty() {
            pod.node_selector
                .get_or_insert_with(BTreeMap::new)
                .extend(self.node_selector.clone());
        }
        if !self.tolerations.is_empty() {
            let tolerations = pod.tolerations.get_or_insert_with(Vec::new);
            for toleration in &self.tolerations {
                if !tolerations.contains(toleration) {
                    tolerations.push(toleration.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(status: serde_json::Value) -> Workload {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": { "name": "w", "namespace": "ml" },
            "spec": { "queueName": "q", "podSets": [] },
            "status": status,
        }))
        .unwrap()
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({ "type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-06T00:00:00Z" })
    }

    #[test]
    fn pending_admitted_and_evicted_workloads() {
        let pending = workload(serde_json::json!({ "conditions": [
            condition("QuotaReserved", "False", "Pending", "couldn't assign flavors: insufficient quota")
        ]}));
        let g = gate(&pending);
        assert!(!g.runs());
        assert_eq!(
            g.waiting.as_deref(),
            Some("couldn't assign flavors: insufficient quota")
        );

        let admission = serde_json::json!({ "clusterQueue": "cq", "podSetAssignments": [
            { "name": "ranks", "flavors": { "cpu": "on-demand", "memory": "on-demand" } }
        ]});
        let admitted = workload(serde_json::json!({ "admission": admission, "conditions": [
            condition("QuotaReserved", "True", "QuotaReserved", ""),
            condition("Admitted", "True", "Admitted", ""),
        ]}));
        assert!(gate(&admitted).runs());
        assert_eq!(flavors(&admitted), BTreeSet::from(["on-demand".to_owned()]));

        let evicted = workload(serde_json::json!({ "admission": admission, "conditions": [
            condition("Admitted", "True", "Admitted", ""),
            condition("Evicted", "True", "Preempted", "Preempted to accommodate a workload"),
        ]}));
        let g = gate(&evicted);
        assert!(!g.runs());
        assert_eq!(g.evicted.unwrap().0, "Preempted");
    }

    #[test]
    fn flavors_add_node_labels_and_tolerations_to_the_pods() {
        let spot: ResourceFlavorSpec = serde_json::from_value(serde_json::json!({
            "nodeLabels": { "cloud/spot": "true" },
            "tolerations": [{ "key": "spot", "operator": "Exists", "effect": "NoSchedule" }]
        }))
        .unwrap();
        let placement = Placement::of([&spot, &spot]);
        assert_eq!(placement.tolerations.len(), 1);
        let mut pod = PodSpec {
            node_selector: Some(BTreeMap::from([("zone".into(), "a".into())])),
            ..PodSpec::default()
        };
        placement.apply(&mut pod);
        let selector = pod.node_selector.unwrap();
        assert_eq!(
            (selector["zone"].as_str(), selector["cloud/spot"].as_str()),
            ("a", "true")
        );
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("spot"));
    }
}
