//! [`Store`]: one handle over an S3 bucket prefix or a local directory, so the
//! trainer has a single code path for both.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::storage::{Location, S3Config, StorageError};

/// An object store rooted at a prefix: keys given to its methods are relative
/// `a/b/c` paths under that prefix.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    backend: Backend,
    root: Path,
}

#[derive(Clone)]
enum Backend {
    S3 {
        client: Arc<AmazonS3>,
        config: Box<S3Config>,
    },
    Local {
        dir: PathBuf,
    },
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's root.
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // S3Config's Debug redacts credentials.
        f.debug_struct("Store")
            .field("location", &self.describe(""))
            .finish()
    }
}

impl Store {
    /// A store over `config.bucket` under `config.prefix`.
    pub fn s3(config: S3Config) -> Result<Self, StorageError> {
        let client = Arc::new(config.build()?);
        let root = parse_key(&config.describe(""), &config.prefix)?;
        Ok(Store {
            inner: client.clone(),
            backend: Backend::S3 {
                client,
                config: Box::new(config),
            },
            root,
        })
    }

    /// A store over the local directory `dir` (created if missing).
    pub fn local(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io {
            op: "creating directory",
            path: dir.clone(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StorageError::Config(format!("local store {}: {e}", dir.display())))?
            .with_automatic_cleanup(true);
        Ok(Store {
            inner: Arc::new(fs),
            backend: Backend::Local { dir },
            root: Path::default(),
        })
    }

    /// A store for `location`; S3 settings (endpoint, region, credentials)
    /// come from the environment, see [`S3Config::from_env`].
    pub fn open(location: &Location) -> Result<Self, StorageError> {
        match location {
            Location::S3 { bucket, key } => Store::s3(S3Config::from_env(bucket, key)?),
            Location::Local(dir) => Store::local(dir.clone()),
        }
    }

    /// A store rooted at `key` below this one.
    pub fn sub(&self, key: &str) -> Result<Store, StorageError> {
        Ok(Store {
            inner: self.inner.clone(),
            backend: self.backend.clone(),
            root: self.path(key)?,
        })
    }

    /// `s3://bucket/root/key at <endpoint>` or `/dir/root/key`, for messages.
    pub fn describe(&self, key: &str) -> String {
        let mut rel = self.root.to_string();
        if !key.is_empty() {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(key);
        }
        match &self.backend {
            Backend::S3 { config, .. } => {
                let mut c = config.as_ref().clone();
                c.prefix = String::new();
                c.describe(&rel)
            }
            Backend::Local { dir } => dir.join(rel).display().to_string(),
        }
    }

    /// The location of `key` as a URI for status and artifacts: `s3://bucket/prefix/key`
    /// (without the endpoint [`Store::describe`] adds for messages), or a local path.
    pub fn uri(&self, key: &str) -> String {
        let d = self.describe(key);
        match self.s3_config() {
            Some(_) => d
                .split_once(" at ")
                .map_or(d.clone(), |(u, _)| u.to_string()),
            None => d,
        }
    }

    /// The S3 settings when this store is S3-backed.
    pub fn s3_config(&self) -> Option<&S3Config> {
        match &self.backend {
            Backend::S3 { config, .. } => Some(config),
            Backend::Local { .. } => None,
        }
    }

    pub(crate) fn s3_client(&self) -> Option<&Arc<AmazonS3>> {
        match &self.backend {
            Backend::S3 { client, .. } => Some(client),
            Backend::Local { .. } => None,
        }
    }

    /// The underlying object_store, for callers that need more than this API.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// The full object path of `key`.
    pub fn path(&self, key: &str) -> Result<Path, StorageError> {
        let rel = parse_key(&self.describe(key), key)?;
        Ok(self.root.parts().chain(rel.parts()).collect())
    }

    /// `path` relative to this store's root, when it lies under it.
    pub(crate) fn relative(&self, path: &Path) -> Option<String> {
        let parts: Vec<String> = path
            .prefix_match(&self.root)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }

    /// Wraps an object_store error with the operation, the object, and a hint.
    pub(crate) fn error(&self, op: &str, key: &str, source: object_store::Error) -> StorageError {
        let (bucket, endpoint) = match &self.backend {
            Backend::S3 { config, .. } => (Some(config.bucket.as_str()), config.endpoint_display()),
            Backend::Local { dir } => (None, dir.display().to_string()),
        };
        StorageError::remote(op, self.describe(key), bucket, &endpoint, source)
    }

    /// Writes a small object in one request (manifests, metadata).
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key)?;
        self.inner
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|e| self.error("writing", key, e))?;
        Ok(())
    }

    /// Reads a whole (small) object.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(key)?;
        let result = self
            .inner
            .get(&path)
            .await
            .map_err(|e| self.error("reading", key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.error("reading", key, e))
    }

    /// Size and modification time of one object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let path = self.path(key)?;
        let meta = match self.inner.head(&path).await {
            Ok(meta) => meta,
            Err(e @ object_store::Error::NotFound { .. }) => {
                // HEAD responses have no body, so a missing bucket looks like a
                // missing object; ask the bucket to say which it is.
                self.check_access().await?;
                return Err(self.error("reading metadata of", key, e));
            }
            Err(e) => return Err(self.error("reading metadata of", key, e)),
        };
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            last_modified: meta.last_modified,
        })
    }

    /// Every object under `prefix` (recursively), keys relative to the root.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let path = self.path(prefix)?;
        let metas: Vec<_> = self
            .inner
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| self.error("listing", prefix, e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .filter_map(|m| {
                Some(ObjectInfo {
                    key: self.relative(&m.location)?,
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes one object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("deleting", key, e)),
        }
    }

    /// Checks that the bucket (or directory) exists and the credentials can list
    /// it; the error names the bucket and endpoint and says what to fix.
    pub async fn check_access(&self) -> Result<(), StorageError> {
        let path = self.path("")?;
        let mut stream = self.inner.list(Some(&path));
        match stream.try_next().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error("listing", "", e)),
        }
    }
}

/// Parses a relative key (`a/b/c`); an empty key is the root.
fn parse_key(target: &str, key: &str) -> Result<Path, StorageError> {
    let key = key.trim_matches('/');
    if key.split('/').any(|p| p == "." || p == "..") {
        return Err(StorageError::Config(format!(
            "{target}: keys must not contain '.' or '..' segments"
        )));
    }
    Path::parse(key)
        .map_err(|e| StorageError::Config(format!("{target}: invalid key '{key}': {e}")))
}
