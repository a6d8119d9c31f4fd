//! The process kubelet against the real local control plane: pods bound to its node run as
//! local processes with the kubelet's environment, volumes, service-account credentials,
//! status, restarts and graceful deletion.
//!
//! Run: `e2e/cluster/up && source e2e/.cluster/env && cargo test -p e2e --test process_kubelet`.

use std::{future::Future, path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use e2e::{
    Cluster, TestNamespace,
    process_kubelet::{ProcessKubelet, ProcessKubeletConfig},
};
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod, Secret, ServiceAccount};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

async fn wait<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Setup {
    cluster: Cluster,
    ns: TestNamespace,
    kubelet: ProcessKubelet,
}

impl Setup {
    async fn new(prefix: &str) -> Result<Self> {
        let cluster = Cluster::connect().await?;
        let ns = cluster.namespace(prefix).await?;
        let root = e2e::workspace_root().join("e2e/.cluster/process-kubelet-tests");
        // kubectl (first on the cluster's PATH) plays a program of the image.
        let kubectl_dir = std::env::split_paths(cluster.env.get("PATH")?)
            .next()
            .unwrap_or_default();
        let mut config = ProcessKubeletConfig::new(
            &format!("pk-{}", ns.name),
            root,
            vec![kubectl_dir],
            &cluster.env.kubeconfig()?,
        )?;
        config.restart_backoff = Duration::from_secs(1);
        let kubelet = ProcessKubelet::start(cluster.client.clone(), config).await?;
        // The service-account controller creates "default"; pods need it.
        let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &ns.name);
        wait("the default ServiceAccount", T, || async {
            Ok(accounts.get_opt("default").await?.is_some())
        })
        .await?;
        Ok(Self {
            cluster,
            ns,
            kubelet,
        })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.cluster.client.clone(), &self.ns.name)
    }

    /// Creates a pod bound to the kubelet's node running `sh -c script`.
    async fn pod(&self, name: &str, script: &str, extra: Value) -> Result<Pod> {
        let mut pod = json!({
            "metadata": { "name": name },
            "spec": {
                "nodeName": self.kubelet.node,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "main",
                    "image": "busybox:ignored",
                    "command": ["sh", "-c", script],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }],
            },
        });
        merge(&mut pod, extra);
        let pod: Pod = serde_json::from_value(pod)?;
        Ok(self
            .api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await?)
    }

    async fn status(&self, name: &str) -> Result<Option<ContainerStatus>> {
        Ok(self
            .api::<Pod>()
            .get(name)
            .await?
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|mut s| s.pop()))
    }

    async fn phase(&self, name: &str) -> Result<String> {
        Ok(self
            .api::<Pod>()
            .get(name)
            .await?
            .status
            .and_then(|s| s.phase)
            .unwrap_or_default())
    }

    fn log(&self, pod: &str, restart: u32) -> Result<String> {
        let dir: PathBuf = self
            .kubelet
            .pod_dir(&self.ns.name, pod)
            .ok_or_else(|| anyhow::anyhow!("no pod directory for {pod}"))?;
        Ok(std::fs::read_to_string(
            dir.join(format!("logs/main/{restart}.log")),
        )?)
    }

    async fn finish(self) -> Result<()> {
        self.kubelet.shutdown(Duration::from_secs(2)).await;
        self.ns.delete().await
    }
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(slot) if v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, p) => *b = p,
    }
}

#[tokio::test]
async fn a_pod_runs_with_the_kubelets_env_volumes_and_credentials() -> Result<()> {
    let s = Setup::new("pk-env").await?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "settings" },
        "data": { "spec.yaml": "answer: 42\n", "MODE": "fast" },
    }))?;
    s.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" },
        "stringData": { "KEY": "s3cr3t-value" },
    }))?;
    s.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await?;
    let ns = s.ns.name.clone();
    let script = r#"
echo "index=$POD_INDEX name=$MY_NAME ns=$MY_NS"
echo "secret=$KEY_FROM_SECRET mode=$MODE prefixed=$CM_MODE"
echo "master=$MASTER_ADDR expanded=$EXPANDED"
echo "config=$(cat "$MEGATRON_CONFIG")"
echo "arg=$1"
echo "whoami=$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')"
case "$MEGATRON_CONFIG" in /etc/*) echo "not rewritten"; exit 9;; esac
echo "bad input: data.train is missing" > "$TERMINATION_LOG"
exit 3
"#;
    s.pod(
        "env-0",
        script,
        json!({
            "metadata": { "labels": { "apps.kubernetes.io/pod-index": "3" } },
            "spec": {
                "volumes": [{ "name": "config", "configMap": { "name": "settings", "items": [{ "key": "spec.yaml", "path": "spec.yaml" }] } }],
                "containers": [{
                    "name": "main",
                    "image": "busybox:ignored",
                    "command": ["sh", "-c", script, "sh", "/etc/megatron/spec.yaml"],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [{ "name": "config", "mountPath": "/etc/megatron", "readOnly": true }],
                    "envFrom": [{ "configMapRef": { "name": "settings" }, "prefix": "CM_" }],
                    "env": [
                        { "name": "POD_INDEX", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']" } } },
                        { "name": "MY_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                        { "name": "MY_NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                        { "name": "KEY_FROM_SECRET", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "KEY" } } },
                        { "name": "MODE", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "MODE" } } },
                        { "name": "MASTER_ADDR", "value": format!("job-0.job.{ns}.svc") },
                        { "name": "EXPANDED", "value": "$(MY_NAME)-$(MODE)" },
                        { "name": "MEGATRON_CONFIG", "value": "/etc/megatron/spec.yaml" },
                        { "name": "TERMINATION_LOG", "value": "/dev/termination-log" },
                    ],
                }],
            },
        }),
    )
    .await?;
    wait("env-0 to fail", T, || async {
        Ok(s.phase("env-0").await? == "Failed")
    })
    .await?;
    let status = s.status("env-0").await?.unwrap();
    let terminated = status.state.unwrap().terminated.unwrap();
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    assert_eq!(
        terminated.message.as_deref(),
        Some("bad input: data.train is missing\n"),
        "the termination-log file, rewritten per container"
    );
    assert_eq!(status.restart_count, 0);
    let log = s.log("env-0", 0)?;
    assert!(
        log.contains(&format!("index=3 name=env-0 ns={ns}\n")),
        "{log}"
    );
    assert!(
        log.contains("secret=s3cr3t-value mode=fast prefixed=fast\n"),
        "{log}"
    );
    assert!(
        log.contains("master=127.0.0.1 expanded=env-0-fast\n"),
        "{log}"
    );
    assert!(log.contains("config=answer: 42\n"), "{log}");
    let dir = s.kubelet.pod_dir(&ns, "env-0").unwrap();
    assert!(
        log.contains(&format!(
            "arg={}\n",
            dir.join("volumes/config/spec.yaml").display()
        )),
        "arguments naming a mounted path are rewritten: {log}"
    );
    assert!(
        log.contains(&format!("whoami=system:serviceaccount:{ns}:default")),
        "the process talks to the API server as the pod's ServiceAccount: {log}"
    );
    s.finish().await
}

#[tokio::test]
async fn restarts_follow_the_policy_and_deletion_is_graceful() -> Result<()> {
    let s = Setup::new("pk-life").await?;
    // restartPolicy Always: exits are restarted with restartCount and lastState.
    s.pod(
        "crash",
        "echo run; sleep 0.3; exit 4",
        json!({ "spec": { "restartPolicy": "Always" } }),
    )
    .await?;
    wait("two restarts", T, || async {
        let Some(st) = s.status("crash").await? else {
            return Ok(false);
        };
        Ok(st.restart_count >= 2
            && st
                .last_state
                .and_then(|l| l.terminated)
                .is_some_and(|t| t.exit_code == 4))
    })
    .await?;
    assert_eq!(
        s.phase("crash").await?,
        "Running",
        "Always keeps the pod Running"
    );
    assert_eq!(s.log("crash", 1)?, "run\n");

    // A process that handles SIGTERM exits within the grace period; the deletion is confirmed.
    s.pod(
        "graceful",
        "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done",
        json!({}),
    )
    .await?;
    // Ready means spawned: wait until the shell has set its trap and said so.
    wait("graceful trapping TERM", T, || async {
        Ok(s.status("graceful").await?.is_some_and(|st| st.ready)
            && s.log("graceful", 0).is_ok_and(|l| l.contains("up")))
    })
    .await?;
    let dir = s.kubelet.pod_dir(&s.ns.name, "graceful").unwrap();
    let pid = s
        .kubelet
        .container(&s.ns.name, "graceful", "main")
        .unwrap()
        .pid
        .unwrap();
    let pods = s.api::<Pod>();
    let started = std::time::Instant::now();
    pods.delete("graceful", &DeleteParams::default()).await?;
    wait("graceful gone", T, || async {
        Ok(pods.get_opt("graceful").await?.is_none())
    })
    .await?;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "no need to wait for the (default, 30 s) grace period: {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(dir.join("logs/main/0.log"))?;
    assert!(log.contains("got TERM"), "{log}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains(") Z ")
        }
    );
    assert!(
        !dir.join("volumes").exists(),
        "volumes (Secrets) are removed"
    );

    // One that ignores SIGTERM is killed after its grace period.
    s.pod(
        "stubborn",
        "trap '' TERM; echo up; while true; do sleep 0.1; done",
        json!({ "spec": { "terminationGracePeriodSeconds": 2 } }),
    )
    .await?;
    wait("stubborn ignoring TERM", T, || async {
        Ok(s.status("stubborn").await?.is_some_and(|st| st.ready)
            && s.log("stubborn", 0).is_ok_and(|l| l.contains("up")))
    })
    .await?;
    let started = std::time::Instant::now();
    pods.delete("stubborn", &DeleteParams::default()).await?;
    wait("stubborn gone", T, || async {
        Ok(pods.get_opt("stubborn").await?.is_none())
    })
    .await?;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "waited the grace period: {took:?}"
    );
    s.finish().await
}

#[tokio::test]
async fn a_missing_secret_holds_the_container_until_it_exists() -> Result<()> {
    let s = Setup::new("pk-missing").await?;
    s.pod(
        "waits",
        "echo key=$KEY",
        json!({ "spec": { "containers": [{
            "name": "main", "image": "busybox:ignored", "command": ["sh", "-c", "echo key=$KEY"],
            "env": [{ "name": "KEY", "valueFrom": { "secretKeyRef": { "name": "late", "key": "KEY" } } }],
        }] } }),
    )
    .await?;
    wait("CreateContainerConfigError", T, || async {
        let Some(st) = s.status("waits").await? else {
            return Ok(false);
        };
        Ok(st.state.and_then(|s| s.waiting).is_some_and(|w| {
            w.reason.as_deref() == Some("CreateContainerConfigError")
                && w.message
                    .unwrap_or_default()
                    .contains("Secret \"late\" does not exist")
        }))
    })
    .await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "late" }, "stringData": { "KEY": "v1" },
    }))?;
    s.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await?;
    wait("waits to succeed", T, || async {
        Ok(s.phase("waits").await? == "Succeeded")
    })
    .await?;
    assert_eq!(s.log("waits", 0)?, "key=v1\n");
    s.finish().await
}
