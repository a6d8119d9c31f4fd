//! One multipart upload whose abort survives failure and cancellation.
//!
//! On S3 it drives `MultipartStore` directly, so the upload id is known from
//! the moment the server hands it out: even when the uploading future is
//! dropped while the create request is in flight. An abandoned upload is
//! aborted only after its part requests have stopped, and aborted again while
//! ListMultipartUploads still shows it: a part PUT the server was still
//! writing can outlive the first abort (AWS's documentation says the same and
//! tells clients to check). A local store uses object_store's staging file.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, MultipartUpload, ObjectStoreExt, PutPayload};
use tokio::task::{JoinHandle, JoinSet};

use crate::storage::{StorageError, Store};

/// Aborts of an abandoned S3 upload while it is still listed.
const ABORT_ATTEMPTS: u32 = 6;

/// Where the parts go.
enum Target {
    S3 {
        client: Arc<AmazonS3>,
        path: Path,
        id: MultipartId,
    },
    Local(Box<dyn MultipartUpload>),
}

type PartResult = Result<(usize, PartId), object_store::Error>;

/// A multipart upload in progress, its parts sent as concurrent tasks.
/// Dropped before [`PartUpload::complete`] succeeded, it aborts itself.
pub(crate) struct PartUpload {
    store: Store,
    key: String,
    /// What failures are reported as ("uploading /x to").
    op: String,
    /// `None` once completed or aborted.
    target: Option<Target>,
    tasks: JoinSet<PartResult>,
    parts: Vec<Option<PartId>>,
}

impl PartUpload {
    /// Starts a multipart upload of `key`.
    pub(crate) async fn start(store: &Store, key: &str, op: String) -> Result<Self, StorageError> {
        let path = store.path(key)?;
        let target = match store.s3_client() {
            Some(client) => Target::S3 {
                id: create_s3(store, client.clone(), path.clone(), key, &op).await?,
                client: client.clone(),
                path,
            },
            None => Target::Local(
                store
                    .object_store()
                    .put_multipart(&path)
                    .await
                    .map_err(|e| store.error(&op, key, e))?,
            ),
        };
        Ok(PartUpload {
            store: store.clone(),
            key: key.to_string(),
            op,
            target: Some(target),
            tasks: JoinSet::new(),
            parts: Vec::new(),
        })
    }

    /// Sends the next part, first waiting until fewer than `max_in_flight`
    /// parts are in flight.
    pub(crate) async fn put_part(
        &mut self,
        data: PutPayload,
        max_in_flight: usize,
    ) -> Result<(), StorageError> {
        while self.tasks.len() >= max_in_flight.max(1) {
            self.finish_one().await?;
        }
        let idx = self.parts.len();
        self.parts.push(None);
        let send: BoxFuture<'static, PartResult> = match self.target.as_mut() {
            Some(Target::S3 { client, path, id }) => {
                let (client, path, id) = (client.clone(), path.clone(), id.clone());
                async move { Ok((idx, client.put_part(&path, &id, idx, data).await?)) }.boxed()
            }
            Some(Target::Local(upload)) => {
                let sent = upload.put_part(data);
                async move {
                    sent.await?;
                    Ok((
                        idx,
                        PartId {
                            content_id: String::new(),
                        },
                    ))
                }
                .boxed()
            }
            None => {
                return Err(StorageError::Task(
                    "part sent after the upload ended".into(),
                ));
            }
        };
        self.tasks.spawn(send);
        Ok(())
    }

    /// Waits for every part, then assembles the object; on failure the
    /// upload is left to [`PartUpload::abort`] (or to being dropped).
    pub(crate) async fn complete(&mut self) -> Result<(), StorageError> {
        while !self.tasks.is_empty() {
            self.finish_one().await?;
        }
        let done = match self.target.as_mut() {
            Some(Target::S3 { client, path, id }) => {
                let parts = self.parts.iter().flatten().cloned().collect();
                client.complete_multipart(path, id, parts).await.map(|_| ())
            }
            Some(Target::Local(upload)) => upload.complete().await.map(|_| ()),
            None => return Err(StorageError::Task("upload completed twice".into())),
        };
        done.map_err(|e| self.store.error(&self.op, &self.key, e))?;
        self.target = None;
        Ok(())
    }

    /// Stops the part requests and aborts the upload, reporting whether that worked.
    pub(crate) async fn abort(mut self) -> Result<(), StorageError> {
        self.tasks.shutdown().await;
        match self.target.take() {
            Some(target) => abort_target(&self.store, &self.key, target).await,
            None => Ok(()),
        }
    }

    async fn finish_one(&mut self) -> Result<(), StorageError> {
        let joined = match self.tasks.join_next().await {
            Some(joined) => joined,
            None => return Ok(()),
        };
        let (idx, part) = joined
            .map_err(|source| object_store::Error::JoinError { source })
            .and_then(|r| r)
            .map_err(|e| self.store.error(&self.op, &self.key, e))?;
        self.parts[idx] = Some(part);
        Ok(())
    }
}

impl Drop for PartUpload {
    fn drop(&mut self) {
        let Some(target) = self.target.take() else {
            return;
        };
        let mut tasks = std::mem::take(&mut self.tasks);
        let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tasks.shutdown().await;
                    warn_unless_aborted(&store, &key, abort_target(&store, &key, target).await);
                });
            }
            Err(_) => tracing::warn!(object = %store.describe(&key),
                "an abandoned multipart upload outlived its runtime; \
                 cleanup_stale_multipart removes it later"),
        }
    }
}

/// Sends CreateMultipartUpload from its own task: when the caller is dropped
/// while it is in flight, the task still learns the id and aborts the upload.
async fn create_s3(
    store: &Store,
    client: Arc<AmazonS3>,
    path: Path,
    key: &str,
    op: &str,
) -> Result<MultipartId, StorageError> {
    let request = {
        let (client, path) = (client.clone(), path.clone());
        tokio::spawn(async move { client.create_multipart(&path).await })
    };
    let mut pending = PendingCreate {
        request: Some(request),
        store: store.clone(),
        key: key.to_string(),
        client,
        path,
    };
    let created = match pending.request.as_mut() {
        Some(request) => request.await,
        None => return Err(StorageError::Task("multipart create awaited twice".into())),
    };
    // Answered: the caller owns the upload now (and aborts it if it fails).
    pending.request = None;
    created
        .map_err(|source| object_store::Error::JoinError { source })
        .and_then(|r| r)
        .map_err(|e| store.error(op, key, e))
}

/// A CreateMultipartUpload whose caller may be dropped before the answer.
struct PendingCreate {
    request: Option<JoinHandle<Result<MultipartId, object_store::Error>>>,
    store: Store,
    key: String,
    client: Arc<AmazonS3>,
    path: Path,
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
        let (client, path) = (self.client.clone(), self.path.clone());
        runtime.spawn(async move {
            if let Ok(Ok(id)) = request.await {
                let target = Target::S3 { client, path, id };
                warn_unless_aborted(&store, &key, abort_target(&store, &key, target).await);
            }
        });
    }
}

/// Aborts `target`; on S3, again while the upload is still listed.
async fn abort_target(store: &Store, key: &str, target: Target) -> Result<(), StorageError> {
    let op = "aborting the multipart upload of";
    let (client, path, id) = match target {
        Target::Local(mut upload) => {
            return upload.abort().await.map_err(|e| store.error(op, key, e));
        }
        Target::S3 { client, path, id } => (client, path, id),
    };
    for attempt in 0..ABORT_ATTEMPTS {
        match client.abort_multipart(&path, &id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store.error(op, key, e)),
        }
        // Checking needs ListMultipartUploads, which a narrow bucket policy may not grant:
        // then the abort that was sent is all there is to do.
        match store.upload_is_listed(key, &id).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                tracing::debug!(object = %store.describe(key), error = %e,
                    "aborted; could not list multipart uploads to check");
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    Err(StorageError::Request {
        op: op.to_string(),
        target: store.describe(key),
        detail: format!(
            "still listed after {ABORT_ATTEMPTS} aborts; cleanup_stale_multipart removes it later"
        ),
    })
}

/// Storage errors carry redacted details already.
fn warn_unless_aborted(store: &Store, key: &str, result: Result<(), StorageError>) {
    if let Err(e) = result {
        tracing::warn!(object = %store.describe(key), error = %e,
            "aborting an abandoned multipart upload failed");
    }
}
