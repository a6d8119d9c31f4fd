//! Inputs of a job as local files: absolute paths are used as they are,
//! `s3://bucket/key` objects are downloaded (through `spec.storage`'s
//! endpoint and the environment's credentials) into a cache directory. A
//! config without `spec.storage` (a local run) reads local paths only.
//!
//! A cached object is reused when a sidecar `<file>.source.json` records the
//! same size and modification time as the object now has; the sidecar also
//! keeps the sha256 computed while downloading. Local ranks sharing a cache
//! take a file lock per object, so one downloads and the others reuse.

use std::path::{Path, PathBuf};

use crds::uri::Location;
use crds::{CheckpointDir, MegatronCheckpoint, MegatronFineTuneSpec, StorageSpec, Uri};
use serde::{Deserialize, Serialize};

use super::error::{JobError, JobResult, STORAGE_FIX};
use super::s3::s3_store;
use crate::storage::{ObjectInfo, Store, TransferOptions};
use crate::task::SplitFiles;

/// Resolves [`Uri`]s to local paths.
pub struct Inputs {
    storage: Option<StorageSpec>,
    cache_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Source {
    uri: String,
    size: u64,
    last_modified: String,
    sha256: String,
}

impl Inputs {
    /// Downloads go under `cache_dir/<bucket>/<key>`; without `storage`
    /// (`spec.storage` unset) an `s3://` location is an error naming it.
    pub fn new(storage: Option<&StorageSpec>, cache_dir: impl Into<PathBuf>) -> JobResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| JobError::io("starting the download runtime", e))?;
        Ok(Self {
            storage: storage.cloned(),
            cache_dir: cache_dir.into(),
            runtime,
        })
    }

    /// Where downloads are kept.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The tokio runtime used for storage calls (for callers with more I/O).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The local path of the file at `uri` (downloading it when on S3);
    /// `field` names the spec field in errors.
    pub fn file(&self, field: &str, uri: &Uri) -> JobResult<PathBuf> {
        match parse(field, uri)? {
            Location::Path(p) => existing(field, Path::new(p), false),
            Location::S3 { bucket, key } => {
                let store = self.store(field, uri, bucket, "")?;
                let dest = cache_path(&self.cache_dir, field, bucket, key)?;
                self.fetch(&store, key, &format!("s3://{bucket}/{key}"), &dest)?;
                Ok(dest)
            }
        }
    }

    /// Whether the file or object `uri` exists.
    fn exists(&self, field: &str, uri: &Uri) -> JobResult<bool> {
        match parse(field, uri)? {
            Location::Path(p) => Ok(Path::new(p).exists()),
            Location::S3 { bucket, key } => {
                let store = self.store(field, uri, bucket, "")?;
                match self.runtime.block_on(store.head(key)) {
                    Ok(_) => Ok(true),
                    Err(e) if e.is_not_found() => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// The local directory holding every object under `uri` (a prefix on S3).
    pub fn dir(&self, field: &str, uri: &Uri) -> JobResult<PathBuf> {
        match parse(field, uri)? {
            Location::Path(p) => existing(field, Path::new(p), true),
            Location::S3 { bucket, key } => {
                let key = key.trim_end_matches('/');
                let store = self.store(field, uri, bucket, key)?;
                let dest = cache_path(&self.cache_dir, field, bucket, key)?;
                let objects = self.runtime.block_on(store.list(""))?;
                if objects.is_empty() {
                    return Err(JobError::invalid(format!(
                        "{field}: no objects under {uri} (check the bucket, the prefix and the endpoint)"
                    )));
                }
                for object in &objects {
                    let remote = format!("s3://{bucket}/{key}/{}", object.key);
                    self.fetch_known(&store, object, &remote, &dest.join(&object.key))?;
                }
                Ok(dest)
            }
        }
    }

    /// A Megatron-LM (or Hugging Face) checkpoint: the local path to load.
    /// On S3 only the iteration directory in use (and the tracker file) is
    /// downloaded, not every iteration of the root.
    pub fn checkpoint(&self, field: &str, ckpt: &MegatronCheckpoint) -> JobResult<PathBuf> {
        if let Location::Path(_) = parse(field, &ckpt.location)? {
            let dir = match ckpt.dir() {
                CheckpointDir::Iteration(dir) => dir,
                _ => ckpt.location.clone(),
            };
            return existing(field, Path::new(dir.as_str()), true);
        }
        match ckpt.dir() {
            CheckpointDir::Given(dir) | CheckpointDir::Iteration(dir) => self.dir(field, &dir),
            CheckpointDir::Latest { root, tracker } => {
                // No tracker: a Hugging Face or single-directory checkpoint.
                if !self.exists(field, &tracker)? {
                    return self.dir(field, &root);
                }
                // A root with a tracker: read it, fetch that iteration only.
                let tracker_path = self.file(field, &tracker)?;
                let text = std::fs::read_to_string(&tracker_path)
                    .map_err(|e| JobError::io(format!("reading {}", tracker_path.display()), e))?;
                let text = text.trim();
                let iteration = if text == "release" {
                    "release".to_owned()
                } else {
                    let it: i64 = text.parse().map_err(|_| {
                        JobError::invalid(format!(
                            "{field}: {tracker} holds {text:?}, not an iteration number or `release`"
                        ))
                    })?;
                    format!("iter_{it:07}")
                };
                self.dir(field, &root.join(&iteration))?;
                Ok(tracker_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default())
            }
        }
    }

    /// The store of `bucket`/`prefix` for the `s3://` location `uri` of `field`.
    fn store(&self, field: &str, uri: &Uri, bucket: &str, prefix: &str) -> JobResult<Store> {
        let storage = self
            .storage
            .as_ref()
            .ok_or_else(|| JobError::StorageRequired {
                needed_by: format!("{field} ({uri})"),
                fix: format!("{STORAGE_FIX}, or use a local path"),
            })?;
        Ok(s3_store(storage, bucket, prefix)?)
    }

    /// The local files of every data split of `spec`.
    pub fn split_files(&self, spec: &MegatronFineTuneSpec) -> JobResult<SplitFiles> {
        let d = &spec.data;
        let get = |field: &str, uri: &Option<Uri>| -> JobResult<Option<PathBuf>> {
            uri.as_ref().map(|u| self.file(field, u)).transpose()
        };
        Ok(SplitFiles {
            train: get("spec.data.train", &d.train)?,
            validation: get("spec.data.validation", &d.validation)?,
            test: get("spec.data.test", &d.test)?,
            train_labels: get("spec.data.trainLabels", &d.train_labels)?,
            validation_labels: get("spec.data.validationLabels", &d.validation_labels)?,
            test_labels: get("spec.data.testLabels", &d.test_labels)?,
        })
    }

    fn fetch(&self, store: &Store, key: &str, remote: &str, dest: &Path) -> JobResult<()> {
        let info = self.runtime.block_on(store.head(key)).map_err(|e| {
            if e.is_not_found() {
                JobError::invalid(format!("{remote} does not exist: {e}"))
            } else {
                e.into()
            }
        })?;
        self.fetch_known(store, &info, remote, dest)
    }

    fn fetch_known(
        &self,
        store: &Store,
        info: &ObjectInfo,
        remote: &str,
        dest: &Path,
    ) -> JobResult<()> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| JobError::io(format!("creating {}", parent.display()), e))?;
        }
        let lock_path = with_suffix(dest, ".lock");
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| JobError::io(format!("creating {}", lock_path.display()), e))?;
        lock.lock()
            .map_err(|e| JobError::io(format!("locking {}", lock_path.display()), e))?;
        let sidecar = with_suffix(dest, ".source.json");
        let wanted_time = info.last_modified.to_rfc3339();
        let cached = std::fs::read(&sidecar)
            .ok()
            .and_then(|b| serde_json::from_slice::<Source>(&b).ok())
            .filter(|s| s.uri == remote && s.size == info.size && s.last_modified == wanted_time)
            .filter(|_| std::fs::metadata(dest).is_ok_and(|m| m.len() == info.size));
        if let Some(s) = cached {
            tracing::info!(uri = remote, path = %dest.display(), sha256 = s.sha256, "input cached");
            return Ok(());
        }
        let key = info.key.as_str();
        let digest =
            self.runtime
                .block_on(store.download_file(key, dest, &TransferOptions::default()))?;
        if digest.size != info.size {
            return Err(JobError::InputChanged {
                uri: remote.to_owned(),
                downloaded: digest.size,
                expected: info.size,
            });
        }
        tracing::info!(uri = remote, path = %dest.display(), bytes = digest.size, sha256 = digest.sha256, "input downloaded");
        let source = Source {
            uri: remote.to_owned(),
            size: info.size,
            last_modified: wanted_time,
            sha256: digest.sha256,
        };
        let text = serde_json::to_vec_pretty(&source).unwrap_or_default();
        std::fs::write(&sidecar, text)
            .map_err(|e| JobError::io(format!("writing {}", sidecar.display()), e))?;
        Ok(())
    }
}

fn parse<'a>(field: &str, uri: &'a Uri) -> JobResult<Location<'a>> {
    uri.location()
        .map_err(|e| JobError::invalid(format!("{field}: {e}")))
}

/// Where the object `key` of `bucket` is cached: always under `cache_dir`
/// (a key's leading `/` is dropped, as the store drops it; `..` is refused).
fn cache_path(cache_dir: &Path, field: &str, bucket: &str, key: &str) -> JobResult<PathBuf> {
    let key = key.trim_start_matches('/');
    if bucket.is_empty()
        || bucket.contains('/')
        || bucket == ".."
        || key.split('/').any(|c| c == "..")
    {
        return Err(JobError::invalid(format!(
            "{field}: s3://{bucket}/{key} has a `..` path component; name the object directly"
        )));
    }
    Ok(cache_dir.join(bucket).join(key))
}

fn existing(field: &str, path: &Path, dir: bool) -> JobResult<PathBuf> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() == dir => Ok(path.to_path_buf()),
        Ok(_) => Err(JobError::invalid(format!(
            "{field}: {} is {}, expected a {}",
            path.display(),
            if dir { "a file" } else { "a directory" },
            if dir { "directory" } else { "file" }
        ))),
        Err(e) => Err(JobError::invalid(format!(
            "{field}: {}: {e}",
            path.display()
        ))),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_stay_under_the_cache() {
        let c = Path::new("/cache");
        assert_eq!(
            cache_path(c, "f", "b", "//etc/x").unwrap(),
            Path::new("/cache/b/etc/x")
        );
        let e = cache_path(c, "spec.data.train", "b", "a/../../etc/x").unwrap_err();
        assert!(
            e.is_invalid_input() && e.to_string().contains("spec.data.train"),
            "{e}"
        );
    }
}
