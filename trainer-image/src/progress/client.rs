//! The Kubernetes client of the status writer: the job's API handle from a
//! kubeconfig file, the in-cluster ServiceAccount, or `KUBECONFIG`.

use std::path::Path;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::JobRef;

/// An API handle for MegatronFineTune objects in the job's namespace. Objects
/// are read and written untyped, so a spec this trainer does not know (a newer
/// operator) cannot break status writes.
pub async fn job_api(
    kubeconfig: Option<&Path>,
    job: &JobRef,
) -> Result<Api<DynamicObject>, String> {
    // kube talks TLS through rustls; with several providers compiled in
    // (object_store brings aws-lc-rs) rustls needs one chosen. An error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read the kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes configuration to report the status of MegatronFineTune {}/{} \
                 ({e}); in a pod the ServiceAccount token is mounted, elsewhere set KUBECONFIG \
                 or unset MEGATRON_JOB_NAME",
                job.namespace, job.name
            )
        })?,
    };
    let client =
        Client::try_from(config).map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
    let resource = ApiResource::erase::<crds::MegatronFineTune>(&());
    Ok(Api::namespaced_with(client, &job.namespace, &resource))
}
