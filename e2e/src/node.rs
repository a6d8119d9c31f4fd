//! The real node of the local cluster (`e2e/cluster/up`): its images, Helm releases of the
//! operator, restricted namespaces, and its containers as the container runtime (CRI) sees them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{Cluster, TestNamespace, namespace::unique_suffix};

/// The images `scripts/images` pushed to the cluster's registry (`e2e/.cluster/images.env`).
#[derive(Clone, Debug)]
pub struct Images {
    /// `HOST:PORT/megatron/operator`.
    pub operator_repository: String,
    /// `TAG@sha256:...`.
    pub operator_tag: String,
    /// The trainer, by tag and digest.
    pub trainer: String,
}

impl Images {
    /// Reads `e2e/.cluster/images.env`; fails naming the command that writes it.
    pub fn load() -> Result<Self> {
        let path = crate::workspace_root().join("e2e/.cluster/images.env");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is missing: build and push the images first (`make images`)",
                path.display()
            )
        })?;
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.to_string())
                .with_context(|| format!("{k} missing in {}", path.display()))
        };
        Ok(Self {
            operator_repository: get("MEGATRON_OPERATOR_REPOSITORY")?,
            operator_tag: get("MEGATRON_OPERATOR_TAG")?,
            trainer: get("MEGATRON_TRAINER_IMAGE")?,
        })
    }
}

impl Cluster {
    /// A test namespace whose pods must meet Pod Security `restricted` (enforced).
    pub async fn restricted_namespace(&self, prefix: &str) -> Result<TestNamespace> {
        self.namespace_with(
            prefix,
            &[
                ("pod-security.kubernetes.io/enforce", "restricted"),
                ("pod-security.kubernetes.io/enforce-version", "latest"),
            ],
        )
        .await
    }

    /// A program from the cluster's PATH (helm, crictl) with the cluster's environment.
    pub fn tool(&self, name: &str) -> Command {
        let path = self.env.vars.get("PATH").cloned().unwrap_or_default();
        let program = std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .map(PathBuf::into_os_string)
            .unwrap_or_else(|| name.into());
        let mut cmd = Command::new(program);
        cmd.envs(&self.env.vars);
        cmd
    }

    /// Runs a tool; its stdout, or an error with its output.
    pub fn tool_output(&self, name: &str, args: &[&str]) -> Result<String> {
        let out = self
            .tool(name)
            .args(args)
            .output()
            .with_context(|| format!("running {name} (source e2e/.cluster/env)"))?;
        ensure!(
            out.status.success(),
            "{name} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The operator installed by `helm` from `charts/megatron-operator` into one namespace,
/// watching only it; uninstalled on drop.
pub struct HelmRelease {
    /// Release name.
    pub name: String,
    /// Its namespace (also the one it watches).
    pub namespace: String,
    cluster: Cluster,
    uninstalled: bool,
}

impl HelmRelease {
    /// `helm install --wait` with the local images and `sets` (`key=value`) on top.
    pub fn install(cluster: &Cluster, namespace: &str, sets: &[String]) -> Result<Self> {
        // Release names are unique: the chart's ClusterRole is named after the release.
        let release = Self {
            name: format!("mo-{}", unique_suffix()),
            namespace: namespace.into(),
            cluster: cluster.clone(),
            uninstalled: false,
        };
        release.helm("install", sets)?;
        Ok(release)
    }

    /// `helm upgrade --reuse-values --wait` with `sets` on top.
    pub fn upgrade(&self, sets: &[String]) -> Result<()> {
        self.helm("upgrade", sets)
    }

    fn helm(&self, verb: &str, sets: &[String]) -> Result<()> {
        let images = Images::load()?;
        let chart = crate::workspace_root().join("charts/megatron-operator");
        let chart = chart.to_string_lossy();
        let mut args: Vec<String> = [
            verb,
            &self.name,
            &chart,
            "--namespace",
            &self.namespace,
            "--wait",
            "--timeout",
            "5m",
        ]
        .map(str::to_owned)
        .into();
        if verb == "upgrade" {
            args.push("--reuse-values".into());
        }
        let defaults = [
            format!("image.repository={}", images.operator_repository),
            format!("image.tag={}", images.operator_tag),
            format!("trainer.image={}", images.trainer),
            format!("watchNamespace={}", self.namespace),
        ];
        for set in defaults.iter().chain(sets) {
            args.push("--set".into());
            args.push(set.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cluster.tool_output("helm", &args).map(drop)
    }

    /// `helm uninstall --wait`.
    pub fn uninstall(mut self) -> Result<()> {
        self.uninstalled = true;
        self.cluster
            .tool_output(
                "helm",
                &[
                    "uninstall",
                    &self.name,
                    "--namespace",
                    &self.namespace,
                    "--wait",
                ],
            )
            .map(drop)
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = self
                .cluster
                .tool("helm")
                .args(["uninstall", &self.name, "--namespace", &self.namespace])
                .output();
        }
    }
}

/// One container of the node, as `crictl inspect` described it while it ran.
#[derive(Clone, Debug)]
pub struct NodeContainer {
    /// CRI container id.
    pub id: String,
    /// Pod name (label `io.kubernetes.pod.name`).
    pub pod: String,
    /// Container name.
    pub name: String,
    /// Host pid of its first process.
    pub pid: Option<u32>,
    /// The uid its process runs as (OCI runtime spec).
    pub uid: Option<u64>,
    /// Its network namespace path (a pod's own, not the host's).
    pub netns: Option<String>,
}

/// Polls the container runtime for one namespace's containers while a test runs, keeping
/// what each container looked like when first seen running (they are removed with their pods).
pub struct ContainerWatch {
    seen: Arc<Mutex<BTreeMap<String, NodeContainer>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ContainerWatch {
    /// Starts polling `crictl` every 300 ms for containers of pods in `namespace`.
    pub fn start(cluster: &Cluster, namespace: &str) -> Self {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cluster, namespace) = (cluster.clone(), namespace.to_owned());
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(found) = running_containers(&cluster, &namespace) {
                        let mut seen = seen.lock().unwrap();
                        for c in found {
                            seen.entry(c.id.clone()).or_insert(c);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every container seen so far.
    pub fn seen(&self) -> Vec<NodeContainer> {
        self.seen.lock().unwrap().values().cloned().collect()
    }

    /// Containers of pod `pod` named `name`, in the order first seen.
    pub fn of(&self, pod: &str, name: &str) -> Vec<NodeContainer> {
        self.seen()
            .into_iter()
            .filter(|c| c.pod == pod && c.name == name)
            .collect()
    }
}

impl Drop for ContainerWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Running containers of pods in `namespace`, inspected through CRI.
pub fn running_containers(cluster: &Cluster, namespace: &str) -> Result<Vec<NodeContainer>> {
    let label = format!("io.kubernetes.pod.namespace={namespace}");
    let ids = cluster.tool_output(
        "crictl",
        &["ps", "-q", "--state", "Running", "--label", &label],
    )?;
    let mut out = Vec::new();
    for id in ids.split_whitespace() {
        let Ok(text) = cluster.tool_output("crictl", &["inspect", id]) else {
            continue; // gone meanwhile
        };
        out.push(parse_inspect(id, &serde_json::from_str(&text)?)?);
    }
    Ok(out)
}

fn parse_inspect(id: &str, v: &Value) -> Result<NodeContainer> {
    let labels = &v["status"]["labels"];
    let label = |k: &str| labels[k].as_str().map(str::to_owned);
    let Some(pod) = label("io.kubernetes.pod.name") else {
        bail!("container {id} has no pod label: {v}");
    };
    let spec = &v["info"]["runtimeSpec"];
    let netns = spec["linux"]["namespaces"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["type"] == "network"))
        .and_then(|n| n["path"].as_str())
        .map(str::to_owned);
    Ok(NodeContainer {
        id: id.to_owned(),
        pod,
        name: label("io.kubernetes.container.name").unwrap_or_default(),
        pid: v["info"]["pid"].as_u64().map(|p| p as u32),
        uid: spec["process"]["user"]["uid"].as_u64(),
        netns,
    })
}
