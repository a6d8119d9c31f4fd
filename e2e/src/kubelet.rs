//! A test-side stand-in for the kubelet, which the local control plane does not run.
//!
//! It does, through the API, what a kubelet does for the objects our tests care about:
//! registers a Node with capacity (cpu, memory, pods, `nvidia.com/gpu`), keeps its `Ready`
//! condition and its Lease in `kube-node-lease` fresh so the node lifecycle controller leaves it
//! alone, reports pods bound to it as Running and Ready, confirms the deletion of terminating
//! pods, and, on request, makes a container exit (with a code and termination message) and
//! restart, evicts a pod, or stops heartbeating so the node goes NotReady.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};

/// How the fake kubelet treats new pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodMode {
    /// Report every new pod Running and Ready at once.
    Run,
    /// Leave new pods Pending (not started) until `start_pod` is called.
    Hold,
}

/// One fake node and the tasks that keep it alive.
pub struct FakeKubelet {
    client: Client,
    /// Node name.
    pub node: String,
    heartbeat: watch::Sender<bool>,
    mode: watch::Sender<PodMode>,
    tasks: Vec<JoinHandle<()>>,
}

const LEASE_NAMESPACE: &str = "kube-node-lease";

fn now_time() -> Time {
    Time(Timestamp::now())
}

fn ready_condition(ready: bool) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: Some(
            if ready {
                "KubeletReady"
            } else {
                "KubeletNotReady"
            }
            .into(),
        ),
        message: Some(
            if ready {
                "fake kubelet is posting ready status"
            } else {
                "fake kubelet stopped"
            }
            .into(),
        ),
        last_heartbeat_time: Some(now_time()),
        last_transition_time: Some(now_time()),
    }
}

impl FakeKubelet {
    /// Registers node `name` with `gpus` GPUs and starts heartbeats and the pod driver.
    pub async fn start(client: Client, name: &str, gpus: u32) -> Result<Self> {
        let nodes: Api<Node> = Api::all(client.clone());
        let capacity = BTreeMap::from([
            ("cpu".to_owned(), Quantity("64".into())),
            ("memory".to_owned(), Quantity("512Gi".into())),
            ("pods".to_owned(), Quantity("110".into())),
            ("ephemeral-storage".to_owned(), Quantity("1Ti".into())),
            ("nvidia.com/gpu".to_owned(), Quantity(gpus.to_string())),
        ]);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                    ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                    ("megatron.dev/fake-node".to_owned(), "true".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec::default()),
            status: None,
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(e).context(format!("registering node {name}")),
        }
        let status = NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            conditions: Some(vec![ready_condition(true)]),
            ..NodeStatus::default()
        };
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .with_context(|| format!("posting status of node {name}"))?;

        let (heartbeat, beats) = watch::channel(true);
        let (mode, modes) = watch::channel(PodMode::Run);
        let tasks = vec![
            tokio::spawn(heartbeat_loop(client.clone(), name.to_owned(), beats)),
            tokio::spawn(pod_loop(client.clone(), name.to_owned(), modes)),
        ];
        Ok(Self {
            client,
            node: name.to_owned(),
            heartbeat,
            mode,
            tasks,
        })
    }

    /// Sets how new pods are treated.
    pub fn set_pod_mode(&self, mode: PodMode) {
        let _ = self.mode.send(mode);
    }

    /// Stops heartbeats and reports the node NotReady (as the node controller would after the grace period).
    pub async fn go_not_ready(&self) -> Result<()> {
        let _ = self.heartbeat.send(false);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({ "status": { "conditions": [ready_condition(false)] } });
        nodes
            .patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
        Ok(())
    }

    /// Reports pod `name` Running and Ready (for pods held by `PodMode::Hold`).
    pub async fn start_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods.get(name).await?;
        run_pod(&pods, &pod, &self.node).await
    }

    /// The trainer container of pod `name` exits with `exit_code` and `message` as its
    /// termination message; like a kubelet under restartPolicy Always, it is restarted
    /// (restartCount + 1, the exit recorded in lastState).
    pub async fn crash_container(
        &self,
        namespace: &str,
        name: &str,
        exit_code: i32,
        message: &str,
    ) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods.get(name).await?;
        let mut statuses = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        anyhow::ensure!(
            !statuses.is_empty(),
            "pod {namespace}/{name} has no container statuses yet"
        );
        let now = now_time();
        for cs in &mut statuses {
            cs.restart_count += 1;
            cs.last_state = Some(serde_json::from_value(json!({
                "terminated": {
                    "exitCode": exit_code,
                    "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "message": message,
                    "startedAt": now,
                    "finishedAt": now,
                    "containerID": format!("fake://{name}/{}", cs.restart_count),
                }
            }))?);
            cs.state = Some(serde_json::from_value(
                json!({ "waiting": { "reason": "CrashLoopBackOff", "message": "back-off restarting failed container" } }),
            )?);
            cs.ready = false;
            cs.started = Some(false);
        }
        let patch = json!({
            "status": {
                "containerStatuses": statuses,
                "conditions": pod_conditions(false),
            }
        });
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Evicts pod `name`: phase Failed, reason Evicted.
    pub async fn evict(&self, namespace: &str, name: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({ "status": { "phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory." } });
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Stops the tasks and deletes the Node (its pods are then orphans for the pod GC).
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let _ = nodes.delete(&self.node, &DeleteParams::default()).await;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let _ = leases.delete(&self.node, &DeleteParams::default()).await;
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Renews the node Lease every 5 s and the Ready condition every 10 s while `beats` is true.
async fn heartbeat_loop(client: Client, node: String, mut beats: watch::Receiver<bool>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let mut tick = 0u64;
    loop {
        if *beats.borrow_and_update() {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.clone()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(MicroTime(Timestamp::now())),
                    ..LeaseSpec::default()
                }),
            };
            let _ = leases
                .patch(
                    &node,
                    &PatchParams::apply("fake-kubelet").force(),
                    &Patch::Apply(&lease),
                )
                .await;
            if tick.is_multiple_of(2) {
                let mut condition = ready_condition(true);
                // Keep the transition time of an unchanged condition, as a kubelet does.
                if let Ok(current) = nodes.get_status(&node).await
                    && let Some(old) = current
                        .status
                        .and_then(|s| s.conditions)
                        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
                    && old.status == "True"
                {
                    condition.last_transition_time = old.last_transition_time;
                }
                let patch = json!({ "status": { "conditions": [condition] } });
                let _ = nodes
                    .patch_status(&node, &PatchParams::default(), &Patch::Strategic(patch))
                    .await;
            }
            tick += 1;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = beats.changed() => {}
        }
    }
}

fn pod_conditions(ready: bool) -> serde_json::Value {
    let now = now_time();
    let flag = if ready { "True" } else { "False" };
    json!([
        { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
        { "type": "Initialized", "status": "True", "lastTransitionTime": now },
        { "type": "ContainersReady", "status": flag, "lastTransitionTime": now },
        { "type": "Ready", "status": flag, "lastTransitionTime": now },
    ])
}

async fn run_pod(pods: &Api<Pod>, pod: &Pod, node: &str) -> Result<()> {
    let now = now_time();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let statuses: Vec<_> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": format!("fake://{}", c.image.clone().unwrap_or_default()),
                "containerID": format!("fake://{}/{}", pod.name_any(), c.name),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    let patch = json!({
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": pod_conditions(true),
            "containerStatuses": statuses,
        }
    });
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .with_context(|| format!("reporting pod {} Running on {node}", pod.name_any()))?;
    Ok(())
}

/// Watches the pods bound to `node`: starts new ones (in `PodMode::Run`) and confirms deletions.
async fn pod_loop(client: Client, node: String, modes: watch::Receiver<PodMode>) {
    let all: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let client = Arc::new(client);
    let mut stream = watcher(all, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(next) = stream.try_next().await.transpose() {
        let Ok(pod) = next else { continue };
        let Some(namespace) = pod.namespace() else {
            continue;
        };
        let pods: Api<Pod> = Api::namespaced((*client).clone(), &namespace);
        if pod.metadata.deletion_timestamp.is_some() {
            // The containers are "stopped": confirm the deletion as the kubelet does.
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: pod.uid().map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let _ = pods.delete(&pod.name_any(), &params).await;
            continue;
        }
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p != "Pending");
        if !started && *modes.borrow() == PodMode::Run {
            let _ = run_pod(&pods, &pod, &node).await;
        }
    }
}
