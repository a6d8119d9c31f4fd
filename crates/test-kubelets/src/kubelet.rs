//! Kubelet pieces for the local control plane, which runs no kubelet of its own.
//!
//! Shared by the two node agents of the e2e crate:
//! * [`NodeAgent`]: registers a Node with capacity, keeps its `Ready` condition and its Lease in
//!   `kube-node-lease` fresh so the node lifecycle controller leaves it alone, and can stop
//!   heartbeating so the node goes NotReady;
//! * pod helpers: the watch of the pods bound to a node, pod conditions, container states, and
//!   the kubelet's final confirmation of a pod deletion.
//!
//! [`FakeKubelet`] is the test-side stand-in built on them: it reports pods bound to its node as
//! Running and Ready without running anything, confirms deletions, and, on request, makes a
//! container exit (with a code and termination message) and restart, evicts a pod, or goes
//! NotReady. `crate::process_kubelet` runs the containers as local processes instead.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod, Taint},
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
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The current time as an API timestamp.
pub fn now_time() -> Time {
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
                "kubelet is posting ready status"
            } else {
                "kubelet stopped posting node status"
            }
            .into(),
        ),
        last_heartbeat_time: Some(now_time()),
        last_transition_time: Some(now_time()),
    }
}

/// Node capacity (also reported as allocatable).
pub fn node_capacity(cpu: &str, memory: &str, gpus: u32) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpu.into())),
        ("memory".to_owned(), Quantity(memory.into())),
        ("pods".to_owned(), Quantity("110".into())),
        ("ephemeral-storage".to_owned(), Quantity("1Ti".into())),
        ("nvidia.com/gpu".to_owned(), Quantity(gpus.to_string())),
    ])
}

/// A registered Node and the task that heartbeats for it.
pub struct NodeAgent {
    client: Client,
    /// Node name.
    pub name: String,
    heartbeat: watch::Sender<bool>,
    /// Held for each beat, so that no beat in flight lands after [`NodeAgent::go_not_ready`].
    beating: Arc<tokio::sync::Mutex<()>>,
    task: JoinHandle<()>,
}

impl NodeAgent {
    /// Registers Node `name` (or takes over an existing one) with `capacity`, `labels` (plus
    /// `kubernetes.io/hostname` and `kubernetes.io/os`) and `taints`, reports it Ready and starts
    /// the heartbeats: the Lease every 5 s, the Ready condition every 10 s.
    pub async fn register(
        client: Client,
        name: &str,
        capacity: BTreeMap<String, Quantity>,
        labels: BTreeMap<String, String>,
        taints: Vec<Taint>,
        addresses: Value,
    ) -> Result<Self> {
        let nodes: Api<Node> = Api::all(client.clone());
        let mut all_labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_owned(), name.to_owned()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ]);
        all_labels.extend(labels);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(all_labels),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then(|| taints.clone()),
                ..NodeSpec::default()
            }),
            status: None,
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                // Taken over: our taints replace the old ones.
                nodes
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "spec": { "taints": taints } })),
                    )
                    .await
                    .with_context(|| format!("updating the taints of node {name}"))?;
            }
            Err(e) => return Err(e).context(format!("registering node {name}")),
        }
        let status = NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            conditions: Some(vec![ready_condition(true)]),
            ..NodeStatus::default()
        };
        let mut status = serde_json::to_value(status)?;
        status["addresses"] = addresses;
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .with_context(|| format!("posting status of node {name}"))?;
        let (heartbeat, beats) = watch::channel(true);
        let beating = Arc::new(tokio::sync::Mutex::new(()));
        let task = tokio::spawn(heartbeat_loop(
            client.clone(),
            name.to_owned(),
            beats,
            beating.clone(),
        ));
        Ok(Self {
            client,
            name: name.to_owned(),
            heartbeat,
            beating,
            task,
        })
    }

    /// Stops heartbeats and reports the node NotReady (as the node controller would after the
    /// grace period).
    pub async fn go_not_ready(&self) -> Result<()> {
        let _ = self.heartbeat.send(false);
        // A beat under way finishes first; every later one sees `false`.
        let _no_beats = self.beating.lock().await;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({ "status": { "conditions": [ready_condition(false)] } });
        nodes
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
        Ok(())
    }

    /// Stops heartbeating and deletes the Node and its Lease (its pods are then orphans for the
    /// pod GC).
    pub async fn shutdown(&self) {
        self.task.abort();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let _ = nodes.delete(&self.name, &DeleteParams::default()).await;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let _ = leases.delete(&self.name, &DeleteParams::default()).await;
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews the node Lease every 5 s and the Ready condition every 10 s while `beats` is true.
async fn heartbeat_loop(
    client: Client,
    node: String,
    mut beats: watch::Receiver<bool>,
    beating: Arc<tokio::sync::Mutex<()>>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let mut tick = 0u64;
    loop {
        let beat = beating.lock().await;
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
                    &PatchParams::apply("e2e-kubelet").force(),
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
        drop(beat);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = beats.changed() => {}
        }
    }
}

/// The pod conditions a kubelet reports for a started pod whose containers are (not) all ready.
pub fn pod_conditions(ready: bool) -> Value {
    let now = now_time();
    let flag = if ready { "True" } else { "False" };
    json!([
        { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
        { "type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now },
        { "type": "Initialized", "status": "True", "lastTransitionTime": now },
        { "type": "ContainersReady", "status": flag, "lastTransitionTime": now },
        { "type": "Ready", "status": flag, "lastTransitionTime": now },
    ])
}

/// A container `state.running` value.
pub fn running_state(started_at: &Time) -> Value {
    json!({ "running": { "startedAt": started_at } })
}

/// A container `state.terminated` value; reason `Completed` for exit code 0, else `Error`.
pub fn terminated_state(
    exit_code: i32,
    signal: Option<i32>,
    message: &str,
    started_at: &Time,
    finished_at: &Time,
    container_id: &str,
) -> Value {
    let mut terminated = json!({
        "exitCode": exit_code,
        "reason": if exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": started_at,
        "finishedAt": finished_at,
        "containerID": container_id,
    });
    if !message.is_empty() {
        terminated["message"] = json!(message);
    }
    if let Some(signal) = signal {
        terminated["signal"] = json!(signal);
    }
    json!({ "terminated": terminated })
}

/// A container `state.waiting` value.
pub fn waiting_state(reason: &str, message: &str) -> Value {
    json!({ "waiting": { "reason": reason, "message": message } })
}

/// Confirms the deletion of a terminating pod whose containers are stopped, as the kubelet does
/// (grace 0, with the pod's UID as precondition so a recreated pod of the same name survives).
pub async fn confirm_deletion(pods: &Api<Pod>, pod: &Pod) -> Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod.uid().map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("confirming the deletion of pod {}", pod.name_any()))
        }
    }
}

/// The watch events of the pods bound to `node` (all namespaces), retried with backoff.
pub fn node_pod_events(
    client: Client,
    node: &str,
) -> impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + use<> {
    let all: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    watcher(all, config).default_backoff()
}

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
    agent: NodeAgent,
    mode: watch::Sender<PodMode>,
    pods: JoinHandle<()>,
}

impl FakeKubelet {
    /// Registers node `name` with `gpus` GPUs and starts heartbeats and the pod driver.
    pub async fn start(client: Client, name: &str, gpus: u32) -> Result<Self> {
        let agent = NodeAgent::register(
            client.clone(),
            name,
            node_capacity("64", "512Gi", gpus),
            BTreeMap::from([("megatron.dev/fake-node".to_owned(), "true".to_owned())]),
            Vec::new(),
            json!([]),
        )
        .await?;
        let (mode, modes) = watch::channel(PodMode::Run);
        let pods = tokio::spawn(pod_loop(client.clone(), name.to_owned(), modes));
        Ok(Self {
            client,
            node: name.to_owned(),
            agent,
            mode,
            pods,
        })
    }

    /// Sets how new pods are treated.
    pub fn set_pod_mode(&self, mode: PodMode) {
        let _ = self.mode.send(mode);
    }

    /// Stops heartbeats and reports the node NotReady (as the node controller would after the grace period).
    pub async fn go_not_ready(&self) -> Result<()> {
        self.agent.go_not_ready().await
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
            let container_id = format!("fake://{name}/{}", cs.restart_count);
            cs.last_state = Some(serde_json::from_value(terminated_state(
                exit_code,
                None,
                message,
                &now,
                &now,
                &container_id,
            ))?);
            cs.state = Some(serde_json::from_value(waiting_state(
                "CrashLoopBackOff",
                "back-off restarting failed container",
            ))?);
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
        self.pods.abort();
        self.agent.shutdown().await;
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.pods.abort();
    }
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
                "state": running_state(&now),
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
    let client = Arc::new(client);
    let mut stream = node_pod_events((*client).clone(), &node)
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
            let _ = confirm_deletion(&pods, &pod).await;
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
