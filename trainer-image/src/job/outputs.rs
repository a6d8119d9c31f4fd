//! Where a job writes: `--output-dir` locally, or under the operator
//! `s3://<spec.storage bucket>/<prefix>/<namespace>/<name>/` with
//! `checkpoints/`, `artifacts/`, `tensorboard/` and `logs/`. Files are first
//! written to a local directory (the output dir itself, or a scratch dir) and
//! then published; every published artifact carries its size and sha256.

use std::io::Read;
use std::path::{Path, PathBuf};

use crds::{Artifact, StorageSpec, Uri};
use sha2::{Digest, Sha256};

use super::error::{JobError, JobResult};
use super::s3::s3_store;
use crate::storage::{Store, TransferOptions};

/// The job's output locations.
#[derive(Debug)]
pub struct Outputs {
    local_root: PathBuf,
    remote: Option<Remote>,
}

#[derive(Debug)]
struct Remote {
    root: Uri,
    store: Store,
}

impl Outputs {
    /// Everything under the local directory `dir`.
    pub fn local(dir: impl Into<PathBuf>) -> JobResult<Self> {
        let dir = dir.into();
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(|e| JobError::io("reading the current directory", e))?
                .join(dir)
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            JobError::io(
                format!("creating the output directory {}", dir.display()),
                e,
            )
        })?;
        Ok(Self {
            local_root: dir,
            remote: None,
        })
    }

    /// The job root `s3://<bucket>/<prefix>/<namespace>/<name>`, staging
    /// files in `scratch`.
    pub fn s3(
        storage: &StorageSpec,
        namespace: &str,
        name: &str,
        scratch: impl Into<PathBuf>,
    ) -> JobResult<Self> {
        let root = storage.job_root(namespace, name);
        let key = root
            .as_str()
            .strip_prefix(&format!("s3://{}/", storage.bucket))
            .unwrap_or_default()
            .to_owned();
        let store = s3_store(storage, &storage.bucket, &key)?;
        let out = Self::local(scratch)?;
        Ok(Self {
            local_root: out.local_root,
            remote: Some(Remote { root, store }),
        })
    }

    /// True when outputs are published to S3.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Where the outputs end up, for messages (`s3://...` or the directory).
    pub fn describe(&self) -> String {
        match &self.remote {
            Some(r) => r.root.to_string(),
            None => self.local_root.display().to_string(),
        }
    }

    /// The local directory of `sub` (`checkpoints`, `artifacts`, `tensorboard`, `logs`), created.
    pub fn local_dir(&self, sub: &str) -> JobResult<PathBuf> {
        let dir = self.local_root.join(sub);
        std::fs::create_dir_all(&dir)
            .map_err(|e| JobError::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    /// The remote store of `sub` (`checkpoints`, ...), when outputs go to S3.
    pub fn remote_store(&self, sub: &str) -> JobResult<Option<Store>> {
        self.remote
            .as_ref()
            .map(|r| r.store.sub(sub).map_err(JobError::from))
            .transpose()
    }

    /// Publishes the local file `file` as `artifacts/<name>`: uploaded to S3
    /// (sha256 computed while uploading), or left in place locally (sha256
    /// computed from the file). Returns the artifact for status.
    pub fn publish_artifact(
        &self,
        runtime: &tokio::runtime::Runtime,
        file: &Path,
        name: &str,
    ) -> JobResult<Artifact> {
        match &self.remote {
            Some(r) => {
                let key = format!("artifacts/{name}");
                let digest = runtime.block_on(r.store.upload_file(
                    file,
                    &key,
                    &TransferOptions::default(),
                ))?;
                let uri = r.root.join(&key);
                tracing::info!(uri = %uri, bytes = digest.size, sha256 = digest.sha256, "artifact uploaded");
                Ok(Artifact {
                    uri,
                    size_bytes: Some(digest.size as i64),
                    sha256: Some(digest.sha256),
                })
            }
            None => {
                let (size, sha256) = file_sha256(file)?;
                Ok(Artifact {
                    uri: Uri(file.display().to_string()),
                    size_bytes: Some(size as i64),
                    sha256: Some(sha256),
                })
            }
        }
    }

    /// Uploads the local file `file` as `<root>/<key>` (S3 outputs only;
    /// locally the file already is where it belongs).
    pub fn publish_file(
        &self,
        runtime: &tokio::runtime::Runtime,
        file: &Path,
        key: &str,
    ) -> JobResult<()> {
        if let Some(r) = &self.remote {
            runtime.block_on(r.store.upload_file(file, key, &TransferOptions::default()))?;
        }
        Ok(())
    }

    /// Uploads every file under the local `sub` directory to `<root>/<sub>/`
    /// (nothing to do locally).
    pub fn publish_dir(&self, runtime: &tokio::runtime::Runtime, sub: &str) -> JobResult<usize> {
        let Some(r) = &self.remote else { return Ok(0) };
        let dir = self.local_root.join(sub);
        let mut files = Vec::new();
        collect_files(&dir, &mut files)?;
        for file in &files {
            let rel = file
                .strip_prefix(&dir)
                .unwrap_or(file)
                .to_string_lossy()
                .replace('\\', "/");
            runtime.block_on(r.store.upload_file(
                file,
                &format!("{sub}/{rel}"),
                &TransferOptions::default(),
            ))?;
        }
        Ok(files.len())
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> JobResult<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| JobError::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Size and lower-case hex sha256 of a local file.
pub fn file_sha256(path: &Path) -> JobResult<(u64, String)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| JobError::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| JobError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}
