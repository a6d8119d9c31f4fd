//! A unique namespace per test, deleted afterwards (also when the test panics).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

use crate::cluster::Cluster;

/// A namespace created for one test.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    cluster: Cluster,
    deleted: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A DNS-label-safe unique suffix (time, process id and a counter).
pub fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}{:x}{n}",
        (nanos % 0xffff_ffff) as u32,
        std::process::id() % 0xffff
    )
}

impl Cluster {
    /// Creates `e2e-<prefix>-<unique>`, labelled `megatron.dev/e2e=true`.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<TestNamespace> {
        self.namespace_with(prefix, &[]).await
    }

    /// Like [`Cluster::namespace`], with `labels` added.
    pub async fn namespace_with(
        &self,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<TestNamespace> {
        let mut name = format!("e2e-{prefix}-{}", unique_suffix());
        name.truncate(63);
        let labels = [("megatron.dev/e2e", "true")]
            .iter()
            .chain(labels)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestNamespace::adopt(name, self.clone()))
    }
}

impl TestNamespace {
    /// Takes charge of an existing namespace: deleted on drop.
    pub fn adopt(name: String, cluster: Cluster) -> Self {
        Self {
            name,
            cluster,
            deleted: false,
        }
    }

    /// Deletes the namespace (without waiting for its finalizers).
    pub async fn delete(mut self) -> anyhow::Result<()> {
        self.deleted = true;
        Api::<Namespace>::all(self.cluster.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.deleted {
            // Async code cannot run here (the test may have panicked): use kubectl.
            let _ = self
                .cluster
                .kubectl()
                .args([
                    "delete",
                    "namespace",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .output();
        }
    }
}
