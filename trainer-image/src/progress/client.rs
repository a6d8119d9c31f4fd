//! The Kubernetes client of the status writer: the job's API handle from a
//! kubeconfig file, the in-cluster ServiceAccount, or `KUBECONFIG`.

use std::path::{Path, PathBuf};

use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

use super::JobRef;

/// Why there is no API handle to write the job's status with.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The explicit kubeconfig file could not be read or parsed.
    #[error("cannot read the kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// The explicit kubeconfig has no usable context, cluster or user.
    #[error("invalid kubeconfig {path}: {source}")]
    InvalidKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// Neither an in-cluster ServiceAccount nor `KUBECONFIG` is available.
    #[error(
        "no Kubernetes configuration to report the status of MegatronFineTune {namespace}/{name} \
         ({source}); in a pod the ServiceAccount token is mounted, elsewhere set KUBECONFIG or \
         unset MEGATRON_JOB_NAME"
    )]
    NoConfig {
        namespace: String,
        name: String,
        #[source]
        source: InferConfigError,
    },
    /// The configuration was found but the client could not be built (TLS, proxy).
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// An API handle for MegatronFineTune objects in the job's namespace. Objects
/// are read and written untyped, so a spec this trainer does not know (a newer
/// operator) cannot break status writes.
pub async fn job_api(
    kubeconfig: Option<&Path>,
    job: &JobRef,
) -> Result<Api<DynamicObject>, KubeClientError> {
    // kube talks TLS through rustls; with several providers compiled in
    // (object_store brings aws-lc-rs) rustls needs one chosen. An error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).map_err(|source| KubeClientError::ReadKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeClientError::InvalidKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => Config::infer()
            .await
            .map_err(|source| KubeClientError::NoConfig {
                namespace: job.namespace.clone(),
                name: job.name.clone(),
                source,
            })?,
    };
    let client = Client::try_from(config).map_err(KubeClientError::Client)?;
    let resource = ApiResource::erase::<crds::MegatronFineTune>(&());
    Ok(Api::namespaced_with(client, &job.namespace, &resource))
}
