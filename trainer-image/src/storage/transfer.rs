//! Large-file transfers: concurrent multipart uploads streamed from disk and
//! concurrent ranged downloads written at offsets, both hashing (sha256) as
//! the bytes go by and holding at most `concurrency + 1` parts in memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::storage::multipart::PartUpload;
use crate::storage::{StorageError, Store, retry};

/// S3 allows at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Part size and parallelism of one transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferOptions {
    /// Bytes per multipart part / ranged read (grown automatically so a file
    /// needs at most 10 000 parts).
    pub part_size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
    /// Attempts per ranged read (each attempt already has object_store's retries).
    pub read_attempts: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            part_size: 16 * 1024 * 1024,
            concurrency: 8,
            read_attempts: 3,
        }
    }
}

impl TransferOptions {
    fn part_size_for(&self, size: u64) -> u64 {
        (self.part_size.max(1) as u64).max(size.div_ceil(MAX_PARTS))
    }
}

/// Size and sha256 (lowercase hex) of transferred bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: String,
}

fn io_err(op: &'static str, path: &FsPath) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageError::Task(format!("storage task failed: {e}"))
}

impl Store {
    /// Uploads the local file `src` to `key`: one PUT when it fits in a part,
    /// otherwise a multipart upload with `opts.concurrency` parts in flight.
    /// On failure the multipart upload is aborted and the error returned.
    pub async fn upload_file(
        &self,
        src: &FsPath,
        key: &str,
        opts: &TransferOptions,
    ) -> Result<FileDigest, StorageError> {
        let file = File::open(src).map_err(io_err("opening", src))?;
        let size = file
            .metadata()
            .map_err(io_err("reading metadata of", src))?
            .len();
        let file = Arc::new(file);
        let part = self.part_size_for_upload(size, opts);
        let path = self.path(key)?;
        let op = format!("uploading {} to", src.display());

        if size <= part {
            let (data, hasher) =
                read_chunk(file, src.to_path_buf(), 0, size, Sha256::new()).await?;
            self.object_store()
                .put(&path, PutPayload::from(data))
                .await
                .map_err(|e| self.error(&op, key, e))?;
            return Ok(FileDigest {
                size,
                sha256: hex::encode(hasher.finalize()),
            });
        }

        let mut upload = PartUpload::start(self, key, op).await?;
        let sent: Result<Sha256, StorageError> = async {
            let mut hasher = Sha256::new();
            let mut offset = 0;
            while offset < size {
                let len = part.min(size - offset);
                let (data, h) =
                    read_chunk(file.clone(), src.to_path_buf(), offset, len, hasher).await?;
                hasher = h;
                upload
                    .put_part(PutPayload::from(data), opts.concurrency)
                    .await?;
                offset += len;
            }
            upload.complete().await?;
            Ok(hasher)
        }
        .await;
        let hasher = match sent {
            Ok(hasher) => hasher,
            Err(err) => {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(object = %self.describe(key), error = %e,
                        "could not abort the failed multipart upload; \
                         cleanup_stale_multipart removes it later");
                }
                return Err(err);
            }
        };
        Ok(FileDigest {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    fn part_size_for_upload(&self, size: u64, opts: &TransferOptions) -> u64 {
        // S3 parts other than the last must be at least 5 MiB.
        let part = opts.part_size_for(size);
        if self.s3_config().is_some() {
            part.max(5 * 1024 * 1024)
        } else {
            part
        }
    }

    /// Downloads `key` into `dest` with concurrent ranged reads, via a
    /// temporary file next to `dest` that is renamed into place at the end.
    pub async fn download_file(
        &self,
        key: &str,
        dest: &FsPath,
        opts: &TransferOptions,
    ) -> Result<FileDigest, StorageError> {
        self.download_inner(key, dest, opts, None).await
    }

    /// Like [`Store::download_file`], failing (and leaving `dest` untouched)
    /// when the size or sha256 differs from `expected`.
    pub async fn download_file_verified(
        &self,
        key: &str,
        dest: &FsPath,
        expected: &FileDigest,
        opts: &TransferOptions,
    ) -> Result<FileDigest, StorageError> {
        self.download_inner(key, dest, opts, Some(expected)).await
    }

    async fn download_inner(
        &self,
        key: &str,
        dest: &FsPath,
        opts: &TransferOptions,
        expected: Option<&FileDigest>,
    ) -> Result<FileDigest, StorageError> {
        let size = self.head(key).await?.size;
        if let Some(exp) = expected
            && exp.size != size
        {
            return Err(StorageError::Integrity {
                target: self.describe(key),
                what: "size",
                expected: exp.size.to_string(),
                actual: size.to_string(),
            });
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating directory", parent))?;
        }
        let tmp = temp_path(dest);
        let result = self.download_to(key, &tmp, size, opts).await;
        let digest = match result {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Some(exp) = expected
            && exp.sha256 != digest.sha256
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::Integrity {
                target: self.describe(key),
                what: "sha256",
                expected: exp.sha256.clone(),
                actual: digest.sha256,
            });
        }
        std::fs::rename(&tmp, dest).map_err(io_err("renaming the download into", dest))?;
        Ok(digest)
    }

    async fn download_to(
        &self,
        key: &str,
        tmp: &FsPath,
        size: u64,
        opts: &TransferOptions,
    ) -> Result<FileDigest, StorageError> {
        let file = File::create(tmp).map_err(io_err("creating", tmp))?;
        file.set_len(size).map_err(io_err("sizing", tmp))?;
        let file = Arc::new(file);
        let part = opts.part_size_for(size);
        let path = self.path(key)?;
        let store = self.object_store();
        let attempts = opts.read_attempts.max(1);
        let ranges = (0..size.div_ceil(part)).map(|i| i * part..((i + 1) * part).min(size));
        let mut reads = futures::stream::iter(ranges)
            .map(|range| {
                let (store, path) = (store.clone(), path.clone());
                let fetch = async move {
                    let data = retry::with_backoff(attempts, Duration::from_millis(200), || {
                        store.get_range(&path, range.clone())
                    })
                    .await?;
                    Ok::<_, object_store::Error>((range, data))
                };
                tokio::spawn(fetch)
            })
            .buffered(opts.concurrency.max(1));
        let mut hasher = Sha256::new();
        while let Some(joined) = reads.next().await {
            let (range, data) = joined
                .map_err(join_err)?
                .map_err(|e| self.error("downloading", key, e))?;
            if data.len() as u64 != range.end - range.start {
                return Err(StorageError::Integrity {
                    target: self.describe(key),
                    what: "ranged read length",
                    expected: (range.end - range.start).to_string(),
                    actual: data.len().to_string(),
                });
            }
            let (file, tmp_path) = (file.clone(), tmp.to_path_buf());
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&data);
                file.write_all_at(&data, range.start)
                    .map_err(io_err("writing", &tmp_path))?;
                Ok::<_, StorageError>(hasher)
            })
            .await
            .map_err(join_err)??;
        }
        // No fsync: a download is re-fetchable, and callers use it right away.
        Ok(FileDigest {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

/// Reads `len` bytes at `offset` on a blocking thread, feeding them to `hasher`.
async fn read_chunk(
    file: Arc<File>,
    path: PathBuf,
    offset: u64,
    len: u64,
    mut hasher: Sha256,
) -> Result<(Bytes, Sha256), StorageError> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(io_err("reading", &path))?;
        hasher.update(&buf);
        Ok((Bytes::from(buf), hasher))
    })
    .await
    .map_err(join_err)?
}

fn temp_path(dest: &FsPath) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}
