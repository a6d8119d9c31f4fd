//! The order in which a published name's weights are looked for, and what is kept:
//!
//! 1. this pod's local copy (`<cache dir>/models/<name>/<version>/`, with its manifest), made
//!    by whichever process of the pod resolved first (the others wait on a file lock);
//! 2. the job bucket's shared cache (`<prefix>/_cache/models/<name>/<version>/`): verified
//!    against its manifest. Pods other than the first wait for it instead of downloading, so a
//!    job fetches from outside once;
//! 3. the cluster's mirror, then 4. NGC: verified against the table's digest or the source's
//!    `.sha256` sidecar, then written to the shared cache (files first, manifest last) for
//!    every later job.
//!
//! The shared cache comes before the mirror: it holds exactly what the mirror or NGC served,
//! checked by the digest recorded then, and reading it first is what makes a second job send
//! no request outside the cluster. Two jobs that start together both download and both write
//! the same bytes under the same keys; the manifest goes last, so a reader sees either no entry
//! or a complete one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crds::published::{FileRole, Published};
use crds::{DownloadProgress, ModelPhase, ModelStatus};

use super::download::fetch_file;
use super::error::{PretrainedError, Result};
use super::manifest::{MANIFEST, ManifestEntry, ModelManifest};
use super::progress::Meter;
use super::remote::Remote;
use crate::storage::{Store, TransferOptions};

/// Where to look, in order.
#[derive(Default)]
pub struct Sources {
    /// The job bucket's prefix (the cache lives under `_cache/models/`).
    pub shared_cache: Option<Store>,
    /// The cluster's mirror.
    pub mirror: Option<Remote>,
    /// NGC (or what stands for it).
    pub ngc: Option<Remote>,
}

/// What to resolve, and for whom.
pub struct Request<'a> {
    /// The published model.
    pub published: &'a Published,
    /// The pod's local model directory (`<cache dir>/models`).
    pub local_root: PathBuf,
    /// The first pod of the job: the one that downloads from outside.
    pub leader: bool,
    /// How long other pods wait for the leader to fill the shared cache.
    pub wait: Duration,
}

/// The verified local files of a published model.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The local directory (NGC paths below it).
    pub dir: PathBuf,
    /// What was verified.
    pub manifest: ModelManifest,
    /// Where this pod's bytes came from.
    pub source: String,
    /// The shared cache entry, when the job has one.
    pub cache: Option<String>,
}

impl Resolved {
    /// The local path of the file with `role`.
    pub fn file(&self, published: &Published, role: FileRole) -> Option<PathBuf> {
        published
            .files
            .iter()
            .find(|f| f.role == role)
            .map(|f| self.dir.join(f.path))
    }

    /// The status of these files (Ready, no architecture yet).
    pub fn status(&self, published: &Published) -> ModelStatus {
        let weights = self.manifest.file(published.weights().path);
        ModelStatus {
            name: published.name.as_str().to_owned(),
            version: Some(published.version.to_owned()),
            phase: ModelPhase::Ready,
            source: Some(self.source.clone()),
            cache: self.cache.clone(),
            sha256: weights.map(|w| w.sha256.clone()),
            size_bytes: weights.map(|w| w.size as i64),
            ..ModelStatus::default()
        }
    }
}

/// Finds the files of `request.published` in `sources` (see the module docs for the order),
/// reporting downloads to `observer`.
pub async fn resolve(
    sources: &Sources,
    request: &Request<'_>,
    observer: &mut dyn FnMut(&ModelStatus),
) -> Result<Resolved> {
    let published = request.published;
    let dir = request
        .local_root
        .join(published.name.as_str())
        .join(published.version);
    std::fs::create_dir_all(&dir)
        .map_err(|e| PretrainedError::io(format!("creating {}", dir.display()), e))?;
    let _lock = lock(&dir)?;
    let cache = sources
        .shared_cache
        .as_ref()
        .map(|store| store.uri(&published.cache_dir()));

    if let Some(resolved) = local_copy(&dir, published, cache.clone())? {
        return Ok(resolved);
    }
    let mut tried = Vec::new();
    if let Some(store) = &sources.shared_cache {
        let entry = Remote::Store {
            store: store.sub(&published.cache_dir())?,
        };
        let manifest = if request.leader {
            read_manifest(&entry).await?
        } else {
            Some(wait_for_manifest(&entry, published, request.wait).await?)
        };
        match manifest {
            Some(m) => {
                let resolved = from_cache(&entry, &dir, published, m, cache, observer).await?;
                write_local_manifest(&dir, &resolved.manifest, &resolved.source)?;
                return Ok(resolved);
            }
            None => tried.push(format!("{}: no entry yet", entry.uri(MANIFEST))),
        }
    }
    for remote in [&sources.mirror, &sources.ngc].into_iter().flatten() {
        match from_remote(remote, &dir, published, observer).await {
            Ok(Some(manifest)) => {
                let source = remote.uri(published.weights().path);
                write_local_manifest(&dir, &manifest, &source)?;
                if let Some(store) = &sources.shared_cache {
                    publish_to_cache(store, &dir, published, &manifest).await;
                }
                return Ok(Resolved {
                    dir,
                    manifest,
                    source,
                    cache,
                });
            }
            Ok(None) => tried.push(format!(
                "{}: not found",
                remote.uri(published.weights().path)
            )),
            Err(e @ PretrainedError::Corrupt { .. }) => return Err(e),
            Err(e) => tried.push(e.to_string()),
        }
    }
    if sources.mirror.is_none() {
        tried.push("the cluster's model mirror: none configured (MEGATRON_MODEL_MIRROR)".into());
    }
    if sources.ngc.is_none() {
        tried.push("NGC: disabled (MEGATRON_MODEL_NGC_URL is empty)".into());
    }
    Err(PretrainedError::NotFound {
        name: published.name.as_str().to_owned(),
        tried,
    })
}

/// The pod's earlier verified copy, if complete.
fn local_copy(
    dir: &Path,
    published: &Published,
    cache: Option<String>,
) -> Result<Option<Resolved>> {
    let path = dir.join(MANIFEST);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let LocalRecord { manifest, source } =
        serde_json::from_slice(&bytes).map_err(|source| PretrainedError::Manifest {
            uri: path.display().to_string(),
            source,
        })?;
    let complete = published.files.iter().all(|f| {
        manifest
            .file(f.path)
            .is_some_and(|e| std::fs::metadata(dir.join(f.path)).is_ok_and(|m| m.len() == e.size))
    });
    Ok(complete.then(|| Resolved {
        dir: dir.to_path_buf(),
        source,
        manifest,
        cache,
    }))
}

async fn read_manifest(entry: &Remote) -> Result<Option<ModelManifest>> {
    let Some(text) = entry.text(MANIFEST).await? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| PretrainedError::Manifest {
            uri: entry.uri(MANIFEST),
            source,
        })
}

async fn wait_for_manifest(
    entry: &Remote,
    published: &Published,
    wait: Duration,
) -> Result<ModelManifest> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        if let Some(m) = read_manifest(entry).await? {
            return Ok(m);
        }
        if started.elapsed() >= wait {
            return Err(PretrainedError::WaitedTooLong {
                name: published.name.as_str().to_owned(),
                uri: entry.uri(MANIFEST),
                seconds: wait.as_secs(),
            });
        }
        if !logged {
            tracing::info!(
                entry = entry.uri(MANIFEST),
                "waiting for the job's first pod to put the weights in the shared cache"
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn from_cache(
    entry: &Remote,
    dir: &Path,
    published: &Published,
    manifest: ModelManifest,
    cache: Option<String>,
    observer: &mut dyn FnMut(&ModelStatus),
) -> Result<Resolved> {
    for file in published.files {
        let want = manifest
            .file(file.path)
            .ok_or_else(|| PretrainedError::Manifest {
                uri: entry.uri(MANIFEST),
                source: serde::de::Error::custom(format!("no entry for {}", file.path)),
            })?;
        let mut report = status_reporter(published, entry.uri(file.path), observer);
        let mut meter = Meter::new(file_name(file.path), 0, &mut report);
        fetch_file(
            entry,
            file.path,
            &dir.join(file.path),
            Some(&want.sha256),
            &mut meter,
        )
        .await?
        .ok_or_else(|| PretrainedError::NotFound {
            name: published.name.as_str().to_owned(),
            tried: vec![format!(
                "{}: listed in the manifest but missing",
                entry.uri(file.path)
            )],
        })?;
    }
    tracing::info!(
        entry = entry.uri(""),
        origin = manifest.origin,
        "weights read from the shared cache"
    );
    Ok(Resolved {
        dir: dir.to_path_buf(),
        source: entry.uri(published.weights().path),
        manifest,
        cache,
    })
}

/// Downloads every file from `remote`; None when it lacks the weights.
async fn from_remote(
    remote: &Remote,
    dir: &Path,
    published: &Published,
    observer: &mut dyn FnMut(&ModelStatus),
) -> Result<Option<ModelManifest>> {
    let mut files = Vec::new();
    for file in published.files {
        let expected = match file.sha256 {
            Some(s) => Some(s.to_owned()),
            None => remote.sidecar_sha256(file.path).await?,
        };
        let mut report = status_reporter(published, remote.uri(file.path), observer);
        let mut meter = Meter::new(file_name(file.path), 0, &mut report);
        let dest = dir.join(file.path);
        let Some(digest) =
            fetch_file(remote, file.path, &dest, expected.as_deref(), &mut meter).await?
        else {
            return Ok(None);
        };
        if expected.is_none() {
            tracing::warn!(
                uri = remote.uri(file.path),
                sha256 = digest.sha256,
                "the source publishes no digest: recording this one (later reads are checked against it)"
            );
        }
        files.push(ManifestEntry {
            path: file.path.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
        });
    }
    Ok(Some(ModelManifest {
        name: published.name.as_str().to_owned(),
        version: published.version.to_owned(),
        origin: remote.uri(published.weights().path),
        files,
    }))
}

/// Uploads the files, then the manifest. A failure only costs later jobs a download.
async fn publish_to_cache(
    store: &Store,
    dir: &Path,
    published: &Published,
    manifest: &ModelManifest,
) {
    let prefix = published.cache_dir();
    let result: Result<()> = async {
        for file in &manifest.files {
            store
                .upload_file(
                    &dir.join(&file.path),
                    &format!("{prefix}/{}", file.path),
                    &TransferOptions::default(),
                )
                .await?;
        }
        let body = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        store
            .put_bytes(&format!("{prefix}/{MANIFEST}"), body.into())
            .await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => tracing::info!(
            entry = store.uri(&prefix),
            "weights written to the shared cache"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not write the shared model cache; later jobs will download again")
        }
    }
}

/// A pod's copy: the manifest and where this pod's bytes came from.
#[derive(serde::Serialize, serde::Deserialize)]
struct LocalRecord {
    #[serde(flatten)]
    manifest: ModelManifest,
    source: String,
}

fn write_local_manifest(dir: &Path, manifest: &ModelManifest, source: &str) -> Result<()> {
    let path = dir.join(MANIFEST);
    let record = LocalRecord {
        manifest: manifest.clone(),
        source: source.to_owned(),
    };
    let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
    std::fs::write(&path, body)
        .map_err(|e| PretrainedError::io(format!("writing {}", path.display()), e))
}

/// Holds `<dir>.lock` so the processes of one pod resolve one at a time.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.with_extension("lock");
    let file = std::fs::File::create(&path)
        .map_err(|e| PretrainedError::io(format!("creating {}", path.display()), e))?;
    file.lock()
        .map_err(|e| PretrainedError::io(format!("locking {}", path.display()), e))?;
    Ok(file)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Turns download progress into Fetching statuses.
fn status_reporter<'a>(
    published: &'a Published,
    source: String,
    observer: &'a mut dyn FnMut(&ModelStatus),
) -> impl FnMut(&DownloadProgress) + 'a {
    move |p: &DownloadProgress| {
        tracing::info!(source, "downloading {}", p.summary());
        observer(&ModelStatus {
            name: published.name.as_str().to_owned(),
            version: Some(published.version.to_owned()),
            phase: ModelPhase::Fetching,
            source: Some(source.clone()),
            download: Some(p.clone()),
            ..ModelStatus::default()
        });
    }
}
