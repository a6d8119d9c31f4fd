//! A real Kueue for the tests that queue through it: deployed once per test binary by
//! `e2e/cluster/kueue` (idempotent across binaries), and the queues of one test namespace.

use anyhow::{Context, Result};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Deploys Kueue once per test binary (idempotent across binaries).
pub async fn kueue_up() -> Result<()> {
    static UP: OnceCell<()> = OnceCell::const_new();
    UP.get_or_try_init(|| async {
        let script = e2e::workspace_root().join("e2e/cluster/kueue");
        let out = tokio::process::Command::new(&script)
            .env("E2E_KUEUE_PODS_READY_TIMEOUT", "20s")
            .output()
            .await
            .with_context(|| format!("running {}", script.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .await
    .map(|_| ())
}

pub fn kueue_api(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind));
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Server-side applies a Kueue object (cluster-scoped unless it names a namespace).
pub async fn apply(client: &kube::Client, object: Value) -> Result<()> {
    let kind = object["kind"].as_str().context("kind")?.to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_owned();
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
    let api = kueue_api(client, &kind, namespace.as_deref());
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {kind} {name}"))?;
    Ok(())
}

/// A flavor pinned to `node`, a ClusterQueue for namespace `ns` with `cpu` (a quantity) and
/// ample memory (preempting lower priorities), its LocalQueue `team`, and priorities `low-<ns>` and
/// `high-<ns>`.
pub async fn queues(client: &kube::Client, ns: &str, node: &str, cpu: &str) -> Result<()> {
    apply(
        client,
        json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
            "metadata": { "name": format!("flavor-{ns}") },
            "spec": { "nodeLabels": { "kubernetes.io/hostname": node } },
        }),
    )
    .await?;
    apply(
        client,
        json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
            "metadata": { "name": format!("cq-{ns}") },
            "spec": {
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns } },
                "preemption": { "withinClusterQueue": "LowerPriority" },
                // Memory is covered (rank pods request it) but never the limit.
                "resourceGroups": [{ "coveredResources": ["cpu", "memory"], "flavors": [{
                    "name": format!("flavor-{ns}"),
                    "resources": [
                        { "name": "cpu", "nominalQuota": cpu },
                        { "name": "memory", "nominalQuota": "1Ti" },
                    ],
                }]}],
            },
        }),
    )
    .await?;
    apply(
        client,
        json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": { "name": "team", "namespace": ns },
            "spec": { "clusterQueue": format!("cq-{ns}") },
        }),
    )
    .await?;
    for (name, value) in [("low", 100), ("high", 1000)] {
        apply(
            client,
            json!({
                "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                "metadata": { "name": format!("{name}-{ns}") }, "value": value,
            }),
        )
        .await?;
    }
    Ok(())
}

/// Deletes the cluster-scoped Kueue objects [`queues`] made for namespace `ns`.
pub async fn remove_queues(client: &kube::Client, ns: &str) {
    for (kind, name) in [
        ("ClusterQueue", format!("cq-{ns}")),
        ("ResourceFlavor", format!("flavor-{ns}")),
        ("WorkloadPriorityClass", format!("low-{ns}")),
        ("WorkloadPriorityClass", format!("high-{ns}")),
    ] {
        let _ = kueue_api(client, kind, None)
            .delete(&name, &Default::default())
            .await;
    }
}
