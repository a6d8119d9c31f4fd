//! `status.model`: where the pretrained weights came from and, while they download, how far
//! along they are. A field manager of its own (`megatron-trainer-model`), so the reporter's
//! applies of the other trainer fields never remove it, and a process that is not rank 0 (the
//! pod's launcher, which downloads before any rank starts) can write it.

use std::time::Duration;

use crds::ModelStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use super::JobRef;
use super::client::job_api;

/// Field manager of `status.model`.
pub const MODEL_FIELD_MANAGER: &str = "megatron-trainer-model";

/// Longest wait for one apply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Applies the latest [`ModelStatus`] in the background (changes coalesce).
pub struct ModelStatusWriter {
    tx: watch::Sender<Option<ModelStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelStatusWriter {
    /// Starts the writer for `job` (on the current runtime); None, with a warning, when there
    /// is no Kubernetes API to write to.
    pub async fn start(job: &JobRef) -> Option<Self> {
        let api = match job_api(None, job).await {
            Ok(api) => api,
            Err(e) => {
                tracing::warn!("status.model will not be written: {e}");
                return None;
            }
        };
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(write_loop(api, job.name.clone(), rx));
        Some(Self { tx, task })
    }

    /// Sets the status to write.
    pub fn update(&self, status: &ModelStatus) {
        self.tx.send_replace(Some(status.clone()));
    }

    /// Writes what is pending, waiting at most `timeout`.
    pub async fn finish(self, timeout: Duration) {
        drop(self.tx);
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!("status.model: the last write did not finish in time");
        }
    }
}

async fn write_loop(
    api: Api<DynamicObject>,
    name: String,
    mut rx: watch::Receiver<Option<ModelStatus>>,
) {
    let mut warned = false;
    while rx.changed().await.is_ok() {
        let Some(status) = rx.borrow_and_update().clone() else {
            continue;
        };
        if let Err(e) = apply(&api, &name, status).await
            && !warned
        {
            tracing::warn!("writing status.model of {name}: {e}");
            warned = true;
        }
    }
    // The sender is gone: write the last value if it was not written yet.
    let last = rx
        .has_changed()
        .unwrap_or(false)
        .then(|| rx.borrow_and_update().clone())
        .flatten();
    if let Some(status) = last {
        let _ = apply(&api, &name, status).await;
    }
}

/// Why one apply of `status.model` failed (logged, never fatal: the download
/// goes on without its progress shown).
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The API server refused the apply or could not be reached.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("no answer within {}s", .0.as_secs())]
    NoAnswer(Duration),
}

async fn apply(
    api: &Api<DynamicObject>,
    name: &str,
    mut status: ModelStatus,
) -> Result<(), ApplyError> {
    status.update_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    let body = json!({
        "apiVersion": crds::MegatronFineTune::api_version(&()),
        "kind": crds::MegatronFineTune::kind(&()),
        "metadata": { "name": name },
        "status": { "model": status },
    });
    let params = PatchParams::apply(MODEL_FIELD_MANAGER).force();
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        api.patch_status(name, &params, &Patch::Apply(body)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApplyError::NoAnswer(REQUEST_TIMEOUT)),
    }
}
