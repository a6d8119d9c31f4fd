//! Informer caches of everything the reconciler reads, shared with the controller's triggers.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Node, Pod, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
    scheduling::v1beta1::PodGroup,
};
use kube::runtime::reflector::Store;

use crate::kueue::workload::{ResourceFlavor, Workload};

/// Readers of the reflector stores.
#[derive(Clone)]
pub struct Stores {
    /// StatefulSets the operator manages.
    pub stateful_sets: Store<StatefulSet>,
    /// Headless Services.
    pub services: Store<Service>,
    /// Trainer ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// Trainer ServiceAccounts.
    pub service_accounts: Store<ServiceAccount>,
    /// Trainer Roles.
    pub roles: Store<Role>,
    /// Trainer RoleBindings.
    pub role_bindings: Store<RoleBinding>,
    /// Rank pods (label `megatron.dev/job-name`).
    pub pods: Store<Pod>,
    /// Nodes (for the NotReady check).
    pub nodes: Store<Node>,
    /// Kueue Workloads of queued jobs (with `--kueue`).
    pub workloads: Option<Store<Workload>>,
    /// Kueue's ResourceFlavors (with `--kueue`).
    pub resource_flavors: Option<Store<ResourceFlavor>>,
    /// Gang PodGroups (with `--gang-scheduling pod-group`).
    pub pod_groups: Option<Store<PodGroup>>,
}

impl Stores {
    /// Waits until every store has completed its initial list.
    pub async fn ready(&self) {
        let _ = futures::join!(
            self.stateful_sets.wait_until_ready(),
            self.services.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.service_accounts.wait_until_ready(),
            self.roles.wait_until_ready(),
            self.role_bindings.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.nodes.wait_until_ready(),
            async {
                if let Some(workloads) = &self.workloads {
                    let _ = workloads.wait_until_ready().await;
                }
            },
            async {
                if let Some(flavors) = &self.resource_flavors {
                    let _ = flavors.wait_until_ready().await;
                }
            },
            async {
                if let Some(pod_groups) = &self.pod_groups {
                    let _ = pod_groups.wait_until_ready().await;
                }
            },
        );
    }
}
