//! A node agent that runs pods as local processes, so rank pods really run on a control plane
//! without a container runtime (this machine has no Docker, images or registry).
//!
//! It registers a Node (through [`crate::kubelet::NodeAgent`]), watches the pods bound to it,
//! and runs each container's `command` + `args` as a process group of this host:
//! * the image is ignored; a bare command such as `megatron-trainer` is looked up in the
//!   configured bin dirs (e.g. `target/debug`), then on PATH;
//! * the environment is resolved like the kubelet's (values, `fieldRef` such as
//!   `metadata.labels['apps.kubernetes.io/pod-index']`, `secretKeyRef` / `configMapKeyRef` /
//!   `envFrom` read through the API, `$(VAR)`); nothing else of this host's environment is
//!   inherited except the variables named in [`ProcessKubeletConfig::host_env`];
//! * volumes (ConfigMap, Secret, emptyDir, downward API, projected) are written under
//!   `<root>/<ns>_<pod>_<uid>/volumes/`, and a value, argument or command naming a path under a
//!   mount (`/etc/megatron/spec.yaml`) is rewritten to the materialised path;
//! * the service account: the projected token is requested through the TokenRequest API (bound
//!   to the pod, renewed at 80 % of its lifetime) and the process gets `KUBECONFIG`, a kubeconfig
//!   for the local API server with that token, so its API calls go through real RBAC;
//! * cluster DNS names in env values (`<pod>.<svc>.<ns>.svc`) become 127.0.0.1, since every pod
//!   of this node runs on this host and shares its network (container ports must be free);
//! * status: Running with container statuses (ready once running; probes are ignored), an exit
//!   becomes a terminated state with exit code and termination message (the
//!   `terminationMessagePath`, rewritten to a per-container file, or the log tail under
//!   `FallbackToLogsOnError`), `restartPolicy` decides restarts (back-off doubling from
//!   [`ProcessKubeletConfig::restart_backoff`], restartCount and lastState as the kubelet);
//! * deletion: SIGTERM to the process group, the grace period, SIGKILL, then the deletion is
//!   confirmed; logs stay in `<pod dir>/logs/<container>/<restart>.log`.
//!
//! Not emulated (one log line each): resource limits, security contexts, probes, lifecycle
//! hooks, init containers, network isolation.

mod env;
mod pod;
mod process;
mod volumes;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Taint};
use kube::{Api, Client, ResourceExt, config::Kubeconfig, runtime::watcher::Event};
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};

pub use pod::LiveContainer;

use crate::kubelet::{NodeAgent, confirm_deletion, node_capacity, node_pod_events};

/// How the pods' processes reach the API server.
#[derive(Clone, Debug)]
pub struct ApiServerAccess {
    /// API server URL.
    pub server: String,
    /// Base64 PEM of the cluster CA, as in a kubeconfig.
    pub certificate_authority_data: Option<String>,
    /// Or a CA file.
    pub certificate_authority: Option<String>,
}

impl ApiServerAccess {
    /// The cluster of the current context of the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
        let context_name = kubeconfig
            .current_context
            .clone()
            .with_context(|| format!("{} has no current-context", path.display()))?;
        let context = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.clone())
            .with_context(|| format!("{}: context {context_name} not found", path.display()))?;
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.clone())
            .with_context(|| {
                format!("{}: cluster {} not found", path.display(), context.cluster)
            })?;
        Ok(Self {
            server: cluster
                .server
                .with_context(|| format!("{}: cluster has no server", path.display()))?,
            certificate_authority_data: cluster.certificate_authority_data,
            certificate_authority: cluster.certificate_authority,
        })
    }
}

/// Settings of a process kubelet.
#[derive(Clone, Debug)]
pub struct ProcessKubeletConfig {
    /// Node name.
    pub node: String,
    /// Directories searched first for a container's bare command (e.g. `target/debug`).
    pub bin_dirs: Vec<PathBuf>,
    /// Where pod directories go.
    pub root: PathBuf,
    /// The API server, for the pods' kubeconfigs.
    pub api: ApiServerAccess,
    /// Variables of this process's environment handed to every container (e.g. PATH and
    /// LD_LIBRARY_PATH, which the trainer needs to find libtorch).
    pub host_env: Vec<String>,
    /// First restart back-off (the kubelet's is 10 s), doubling per restart.
    pub restart_backoff: Duration,
    /// Back-off ceiling (the kubelet's is 300 s).
    pub max_restart_backoff: Duration,
    /// Reported CPU capacity.
    pub cpu: String,
    /// Reported memory capacity.
    pub memory: String,
    /// Taints of the node, so that only pods meant for it (tolerating them, or bound by
    /// `nodeName`) run here: this kubelet executes their commands on this host.
    pub taints: Vec<Taint>,
}

impl ProcessKubeletConfig {
    /// Defaults for node `node`: pods under `root`, commands from `bin_dirs`, API server from
    /// the kubeconfig at `kubeconfig`.
    pub fn new(
        node: &str,
        root: PathBuf,
        bin_dirs: Vec<PathBuf>,
        kubeconfig: &Path,
    ) -> Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            node: node.to_owned(),
            bin_dirs,
            root,
            api: ApiServerAccess::from_kubeconfig(kubeconfig)?,
            host_env: [
                "PATH",
                "LD_LIBRARY_PATH",
                "HOME",
                "RUST_LOG",
                "RUST_BACKTRACE",
                "LANG",
            ]
            .map(String::from)
            .to_vec(),
            restart_backoff: Duration::from_secs(10),
            max_restart_backoff: Duration::from_secs(300),
            cpu: cpus.to_string(),
            memory: "16Gi".into(),
            taints: vec![Taint {
                key: PROCESS_NODE_TAINT.into(),
                value: Some(node.to_owned()),
                effect: "NoSchedule".into(),
                time_added: None,
            }],
        })
    }
}

/// Key of the default taint of a process node (value: the node name). Pods tolerate it with
/// `{key: megatron.dev/process-node, operator: Exists, effect: NoSchedule}`.
pub const PROCESS_NODE_TAINT: &str = "megatron.dev/process-node";

type PodMap = Arc<std::sync::Mutex<BTreeMap<String, pod::PodHandle>>>;

/// A running process kubelet.
pub struct ProcessKubelet {
    /// Node name.
    pub node: String,
    agent: NodeAgent,
    pods: PodMap,
    task: JoinHandle<()>,
}

impl ProcessKubelet {
    /// Registers the node and starts running the pods bound to it.
    pub async fn start(client: Client, config: ProcessKubeletConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.root)
            .with_context(|| format!("creating {}", config.root.display()))?;
        let agent = NodeAgent::register(
            client.clone(),
            &config.node,
            node_capacity(&config.cpu, &config.memory, 0),
            BTreeMap::from([(PROCESS_NODE_TAINT.to_owned(), "true".to_owned())]),
            config.taints.clone(),
            json!([
                { "type": "InternalIP", "address": "127.0.0.1" },
                { "type": "Hostname", "address": config.node },
            ]),
        )
        .await?;
        eprintln!(
            "process-kubelet: node {} ready; pod directories under {}",
            config.node,
            config.root.display()
        );
        let pods: PodMap = Arc::default();
        let task = tokio::spawn(watch_pods(client, Arc::new(config.clone()), pods.clone()));
        Ok(Self {
            node: config.node,
            agent,
            pods,
            task,
        })
    }

    fn find<T>(&self, namespace: &str, name: &str, f: impl Fn(&pod::PodHandle) -> T) -> Option<T> {
        let pods = self.pods.lock().expect("pod map");
        // The newest live instance of that name (an older one may still be terminating).
        pods.values()
            .filter(|h| h.namespace == namespace && h.name == name)
            .filter(|h| !h.task.is_finished())
            .max_by_key(|h| h.since)
            .map(f)
    }

    /// The directory of pod `namespace/name` (logs, volumes), while this kubelet runs it.
    pub fn pod_dir(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        self.find(namespace, name, |h| h.dir.clone())
    }

    /// Pid and log of container `container` of pod `namespace/name`.
    pub fn container(&self, namespace: &str, name: &str, container: &str) -> Option<LiveContainer> {
        self.find(namespace, name, |h| {
            h.live.lock().expect("live map").get(container).cloned()
        })
        .flatten()
    }

    /// Stops every pod's processes (SIGTERM, up to `grace`, SIGKILL) and deletes the Node.
    pub async fn shutdown(self, grace: Duration) {
        self.task.abort();
        let handles: Vec<pod::PodHandle> = {
            let mut pods = self.pods.lock().expect("pod map");
            std::mem::take(&mut *pods).into_values().collect()
        };
        for h in &handles {
            h.stop.send_if_modified(|s| {
                if s.is_none() {
                    *s = Some(pod::Stop::Shutdown(grace));
                    true
                } else {
                    false
                }
            });
        }
        for h in handles {
            let _ = h.task.await;
        }
        self.agent.shutdown().await;
    }
}

impl Drop for ProcessKubelet {
    fn drop(&mut self) {
        self.task.abort();
        // Without a runtime to wait on, kill what is left at once.
        if let Ok(pods) = self.pods.lock() {
            for h in pods.values() {
                for live in h
                    .live
                    .lock()
                    .map(|l| l.values().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    if let Some(pid) = live.pid {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                h.task.abort();
            }
        }
    }
}

fn request_stop(handle: &pod::PodHandle, stop: pod::Stop) {
    handle.stop.send_if_modified(|s| {
        if s.is_none() {
            *s = Some(stop);
            true
        } else {
            false
        }
    });
}

async fn on_pod(client: &Client, config: &Arc<ProcessKubeletConfig>, pods: &PodMap, pod: Pod) {
    let Some(uid) = pod.uid() else { return };
    let namespace = pod.namespace().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        let supervised = {
            let map = pods.lock().expect("pod map");
            match map.get(&uid) {
                Some(h) if !h.task.is_finished() => {
                    request_stop(h, pod::deletion_stop(&pod));
                    true
                }
                _ => false,
            }
        };
        if !supervised {
            // Nothing runs for it (any more): confirm at once.
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if let Err(e) = confirm_deletion(&api, &pod).await {
                eprintln!("process-kubelet: {e:#}");
            }
        }
        return;
    }
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    let mut map = pods.lock().expect("pod map");
    if map.contains_key(&uid) || finished {
        return;
    }
    let dir = pod::pod_dir(&config.root, &pod);
    let (stop, stops) = watch::channel(None);
    let live = Arc::default();
    let task = tokio::spawn(pod::supervise(
        client.clone(),
        config.clone(),
        pod.clone(),
        dir.clone(),
        stops,
        Arc::clone(&live),
    ));
    eprintln!(
        "process-kubelet: pod {namespace}/{} bound to {}: starting in {}",
        pod.name_any(),
        config.node,
        dir.display()
    );
    map.insert(
        uid,
        pod::PodHandle {
            namespace,
            name: pod.name_any(),
            dir,
            stop,
            task,
            live,
            since: std::time::Instant::now(),
        },
    );
}

/// Follows the pods bound to the node.
async fn watch_pods(client: Client, config: Arc<ProcessKubeletConfig>, pods: PodMap) {
    let mut events = node_pod_events(client.clone(), &config.node).boxed();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                eprintln!("process-kubelet: watching pods: {e}");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(pod) => {
                listed.extend(pod.uid());
                on_pod(&client, &config, &pods, pod).await;
            }
            Event::InitDone => {
                // Pods deleted while the watch was down: stop their processes.
                let map = pods.lock().expect("pod map");
                for (uid, h) in map.iter() {
                    if !listed.contains(uid) {
                        request_stop(h, pod::Stop::Shutdown(Duration::from_secs(2)));
                    }
                }
            }
            Event::Apply(pod) => on_pod(&client, &config, &pods, pod).await,
            Event::Delete(pod) => {
                // Gone without graceful deletion (force delete): stop the processes quickly.
                if let Some(uid) = pod.uid()
                    && let Some(h) = pods.lock().expect("pod map").get(&uid)
                {
                    request_stop(h, pod::Stop::Shutdown(Duration::from_secs(2)));
                }
            }
        }
        // Forget pods whose supervisors are done and whose object is gone or finished.
        pods.lock()
            .expect("pod map")
            .retain(|_, h| !(h.task.is_finished() && h.stop.borrow().is_some()));
    }
}
