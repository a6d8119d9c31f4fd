//! Removing multipart uploads that were started and never completed nor
//! aborted (a killed trainer): on S3 they keep their parts (and cost) until
//! aborted; on a local store they are `name#N` staging files.
//!
//! object_store cannot list multipart uploads, so for S3 this sends a
//! ListMultipartUploads request presigned by object_store's own SigV4 signer
//! and aborts through its `MultipartStore`.

use std::path::Path as FsPath;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use object_store::aws::AmazonS3;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use serde::Deserialize;

use crate::storage::{StorageError, Store};

/// Validity of the presigned requests we send right away.
const SIGNED_URL_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
struct ListMultipartUploadsResult {
    #[serde(rename = "Upload", default)]
    uploads: Vec<Upload>,
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextKeyMarker", default)]
    next_key_marker: Option<String>,
    #[serde(rename = "NextUploadIdMarker", default)]
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Upload {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "UploadId")]
    upload_id: String,
    #[serde(rename = "Initiated")]
    initiated: DateTime<Utc>,
}

/// An unfinished multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    /// Key relative to the store's root (S3) or path relative to its directory (local).
    pub key: String,
    pub upload_id: String,
    pub initiated: DateTime<Utc>,
}

impl Store {
    /// Unfinished multipart uploads under `prefix`.
    pub async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<PendingUpload>, StorageError> {
        let Some(client) = self.s3_client() else {
            return self.local_staging_files(prefix);
        };
        let full_prefix = self.path(prefix)?.to_string();
        let query_prefix = (!full_prefix.is_empty()).then(|| format!("{full_prefix}/"));
        self.list_s3_uploads(client, query_prefix, prefix).await
    }

    /// Whether S3 still lists the multipart upload `upload_id` of `key`.
    pub(crate) async fn upload_is_listed(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<bool, StorageError> {
        let Some(client) = self.s3_client() else {
            return Ok(false);
        };
        let full_key = self.path(key)?.to_string();
        let uploads = self.list_s3_uploads(client, Some(full_key), key).await?;
        Ok(uploads
            .iter()
            .any(|u| u.key == key && u.upload_id == upload_id))
    }

    /// ListMultipartUploads for the raw (bucket-relative) `query_prefix`;
    /// `prefix` names the listing in errors.
    async fn list_s3_uploads(
        &self,
        client: &AmazonS3,
        query_prefix: Option<String>,
        prefix: &str,
    ) -> Result<Vec<PendingUpload>, StorageError> {
        let target = self.describe(prefix);
        let op = "listing multipart uploads under";
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| request_error(op, &target, e.to_string()))?;
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![("uploads".to_string(), String::new())];
            if let Some(p) = &query_prefix {
                query.push(("prefix".into(), p.clone()));
            }
            if let Some((key, id)) = &markers {
                query.push(("key-marker".into(), key.clone()));
                query.push(("upload-id-marker".into(), id.clone()));
            }
            let url = client
                .signed_url_opts(
                    Method::GET,
                    &Path::default(),
                    SIGNED_URL_TTL,
                    &SignedUrlOptions::new().with_query(query),
                )
                .await
                .map_err(|e| self.error(op, prefix, e))?;
            let response = http
                .get(url)
                .send()
                .await
                .map_err(|e| request_error(op, &target, without_url(e)))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| request_error(op, &target, without_url(e)))?;
            if !status.is_success() {
                return Err(request_error(op, &target, format!("HTTP {status}: {body}")));
            }
            let page: ListMultipartUploadsResult = quick_xml::de::from_str(&body)
                .map_err(|e| request_error(op, &target, format!("unexpected response ({e})")))?;
            for u in page.uploads {
                let path = Path::parse(&u.key).unwrap_or_else(|_| Path::from(u.key.as_str()));
                if let Some(key) = self.relative(&path) {
                    out.push(PendingUpload {
                        key,
                        upload_id: u.upload_id,
                        initiated: u.initiated,
                    });
                }
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(id)) => markers = Some((k, id)),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Aborts unfinished multipart uploads under `prefix` started more than
    /// `older_than` ago; returns the ones aborted. Run it before a new upload
    /// (with an age well above the longest upload) to clean up after crashes.
    pub async fn cleanup_stale_multipart(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Result<Vec<PendingUpload>, StorageError> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let stale: Vec<PendingUpload> = self
            .list_multipart_uploads(prefix)
            .await?
            .into_iter()
            .filter(|u| u.initiated < cutoff)
            .collect();
        for u in &stale {
            match self.s3_client() {
                Some(client) => {
                    let path = self.path(&u.key)?;
                    match client.abort_multipart(&path, &u.upload_id).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => {
                            return Err(self.error("aborting the multipart upload of", &u.key, e));
                        }
                    }
                }
                None => {
                    let file = FsPath::new(&self.describe(&u.key)).to_path_buf();
                    std::fs::remove_file(&file).map_err(|source| StorageError::Io {
                        op: "removing the stale upload",
                        path: file,
                        source,
                    })?;
                }
            }
        }
        Ok(stale)
    }

    /// Staging files (`name#123`) of unfinished local multipart uploads.
    fn local_staging_files(&self, prefix: &str) -> Result<Vec<PendingUpload>, StorageError> {
        let base = std::path::PathBuf::from(self.describe(""));
        let start = std::path::PathBuf::from(self.describe(prefix));
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StorageError::Io {
                        op: "listing",
                        path: dir,
                        source,
                    });
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((_, suffix)) = name.rsplit_once('#') else {
                    continue;
                };
                if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&base) else {
                    continue;
                };
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(PendingUpload {
                    key: rel.to_string_lossy().into_owned(),
                    upload_id: suffix.to_string(),
                    initiated: modified.into(),
                });
            }
        }
        Ok(out)
    }

    /// Creates the bucket of an S3 store (no-op when it exists and is ours).
    /// For test setups and first-run provisioning; needs `s3:CreateBucket`.
    pub async fn create_bucket(&self) -> Result<(), StorageError> {
        let Some(client) = self.s3_client() else {
            return Ok(());
        };
        let config = self.s3_config().expect("S3 store has a config");
        let target = format!(
            "bucket '{}' at {}",
            config.bucket,
            config.endpoint_display()
        );
        let op = "creating";
        let (mut status, mut body);
        let mut attempt = 0;
        loop {
            let url = client
                .signed_url(Method::PUT, &Path::default(), SIGNED_URL_TTL)
                .await
                .map_err(|e| self.error(op, "", e))?;
            let response = reqwest::Client::new()
                .put(url)
                .send()
                .await
                .map_err(|e| request_error(op, &target, without_url(e)))?;
            status = response.status();
            body = response.text().await.unwrap_or_default();
            // SeaweedFS answers NoSuchBucket while another client's creation of the same
            // bucket is under way: ask again shortly.
            attempt += 1;
            if !body.contains("NoSuchBucket") || attempt == 5 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
        }
        if status.is_success() || body.contains("BucketAlreadyOwnedByYou") {
            Ok(())
        } else if body.contains("BucketAlreadyExists") {
            // Some servers (SeaweedFS) say this to the owner too: usable is what counts.
            self.check_access().await.map_err(|_| {
                request_error(
                    op,
                    &target,
                    "the bucket exists and belongs to someone else".into(),
                )
            })
        } else {
            Err(request_error(op, &target, format!("HTTP {status}: {body}")))
        }
    }
}

fn request_error(op: &str, target: &str, detail: String) -> StorageError {
    StorageError::Request {
        op: op.to_string(),
        target: target.to_string(),
        detail: super::error::redact(&detail),
    }
}

/// reqwest errors print the (presigned) URL; keep only the cause.
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}
