//! The commit protocol for checkpoint sets (several files, e.g. one per
//! tensor-parallel rank): files first, `manifest.json` last. Readers trust
//! only sets whose manifest exists and whose files match it.
//!
//! Layout under the store's root: `step-000000000100/<file>` and
//! `step-000000000100/manifest.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path as FsPath, PathBuf};

use bytes::Bytes;
use chrono::Utc;

use crate::storage::manifest::{MANIFEST_FORMAT_VERSION, MANIFEST_NAME};
use crate::storage::{Manifest, ManifestFile, ObjectInfo, StorageError, Store, TransferOptions};

/// Checkpoint sets stored under one prefix.
#[derive(Clone, Debug)]
pub struct CheckpointSets {
    store: Store,
}

/// A complete set: its manifest exists and every file has the promised size.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedSet {
    /// Prefix of the set relative to the sets' root, e.g. `step-000000000100`.
    pub name: String,
    pub manifest: Manifest,
}

/// A local file to put into a set under `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetFile {
    pub name: String,
    pub path: PathBuf,
}

/// What [`CheckpointSets::retain`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Complete sets removed (manifest first, then files).
    pub removed_sets: Vec<String>,
    /// Leftovers of failed commits (no valid manifest) older than the newest complete set.
    pub removed_incomplete: Vec<String>,
}

impl CheckpointSets {
    /// Sets stored under `store`'s root.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store the sets live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Prefix of the set for `step`.
    pub fn set_name(step: u64) -> String {
        format!("step-{step:012}")
    }

    /// The step of set name `name` (`step-` and 12 digits, see [`CheckpointSets::set_name`]).
    pub fn step_of(name: &str) -> Option<u64> {
        let digits = name.strip_prefix("step-")?;
        (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    /// Uploads one file of the set for `step` (each tensor-parallel rank can
    /// upload its own); returns the manifest entry to pass to
    /// [`CheckpointSets::write_manifest`].
    pub async fn upload_file(
        &self,
        step: u64,
        name: &str,
        local: &FsPath,
        opts: &TransferOptions,
    ) -> Result<ManifestFile, StorageError> {
        check_file_name(&self.store, name)?;
        self.refuse_if_committed(step).await?;
        let key = format!("{}/{name}", Self::set_name(step));
        let digest = self.store.upload_file(local, &key, opts).await?;
        Ok(ManifestFile::new(name, &digest))
    }

    /// Committed sets are immutable: no file may be (re)written into one.
    async fn refuse_if_committed(&self, step: u64) -> Result<(), StorageError> {
        let manifest_key = format!("{}/{MANIFEST_NAME}", Self::set_name(step));
        match self.store.head(&manifest_key).await {
            Ok(_) => Err(StorageError::Manifest {
                target: self.store.describe(&manifest_key),
                reason: format!("step {step} is already committed; sets are immutable"),
            }),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Commits the set for `step`: checks every file is stored with its size,
    /// then writes the manifest. Fails when the step is already committed.
    pub async fn write_manifest(
        &self,
        step: u64,
        files: Vec<ManifestFile>,
        metadata: serde_json::Value,
    ) -> Result<CommittedSet, StorageError> {
        let name = Self::set_name(step);
        let manifest_key = format!("{name}/{MANIFEST_NAME}");
        let stored: BTreeMap<String, u64> = self
            .store
            .list(&name)
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        if stored.contains_key(&manifest_key) {
            return Err(StorageError::Manifest {
                target: self.store.describe(&manifest_key),
                reason: format!("step {step} is already committed; sets are immutable"),
            });
        }
        for f in &files {
            let key = format!("{name}/{}", f.name);
            match stored.get(&key) {
                Some(&size) if size == f.size => {}
                found => {
                    return Err(StorageError::Manifest {
                        target: self.store.describe(&manifest_key),
                        reason: format!(
                            "file '{}' should be {} bytes but is {}; upload it before committing",
                            f.name,
                            f.size,
                            found.map_or("missing".to_string(), |s| format!("{s} bytes"))
                        ),
                    });
                }
            }
        }
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            step,
            created: Utc::now(),
            files,
            metadata,
        };
        // Validate what we are about to publish with the reader's rules.
        let json = manifest.to_json();
        Manifest::from_json(&self.store.describe(&manifest_key), &json)?;
        self.store
            .put_bytes(&manifest_key, Bytes::from(json))
            .await?;
        Ok(CommittedSet { name, manifest })
    }

    /// Uploads `files` and then commits them as the set for `step`.
    pub async fn commit(
        &self,
        step: u64,
        files: &[SetFile],
        metadata: serde_json::Value,
        opts: &TransferOptions,
    ) -> Result<CommittedSet, StorageError> {
        let mut entries = Vec::with_capacity(files.len());
        for f in files {
            entries.push(self.upload_file(step, &f.name, &f.path, opts).await?);
        }
        self.write_manifest(step, entries, metadata).await
    }

    /// All complete sets, oldest step first. Fails with
    /// [`StorageError::NewerManifest`] when a newer trainer wrote one.
    pub async fn list_complete(&self) -> Result<Vec<CommittedSet>, StorageError> {
        let groups = self.group_sets().await?;
        let mut out = Vec::new();
        for (name, objects) in &groups {
            if let Some(set) = self.complete_set(name, objects).await? {
                out.push(set);
            }
        }
        out.sort_by_key(|s| s.manifest.step);
        Ok(out)
    }

    /// The complete set with the highest step, if any.
    pub async fn latest_complete(&self) -> Result<Option<CommittedSet>, StorageError> {
        let groups = self.group_sets().await?;
        for (name, objects) in groups.iter().rev() {
            if let Some(set) = self.complete_set(name, objects).await? {
                return Ok(Some(set));
            }
        }
        Ok(None)
    }

    /// Downloads every file of `set` into `dest_dir/<name>`, checking size and sha256.
    pub async fn download(
        &self,
        set: &CommittedSet,
        dest_dir: &FsPath,
        opts: &TransferOptions,
    ) -> Result<(), StorageError> {
        for f in &set.manifest.files {
            check_file_name(&self.store, &f.name)?;
            let key = format!("{}/{}", set.name, f.name);
            self.store
                .download_file_verified(&key, &dest_dir.join(&f.name), &f.digest(), opts)
                .await?;
        }
        Ok(())
    }

    /// Keeps the newest `keep_last` complete sets and those named in `protect`, and deletes
    /// the other complete sets: for each, the manifest first (so readers stop trusting it),
    /// then its files. Incomplete sets older than the newest complete one (failed commits) are
    /// deleted too; newer ones may be commits in progress and stay. Objects already gone
    /// (a concurrent pass) count as deleted.
    pub async fn retain(
        &self,
        keep_last: usize,
        protect: &BTreeSet<String>,
    ) -> Result<RetentionReport, StorageError> {
        let groups = self.group_sets().await?;
        let mut complete = Vec::new();
        let mut incomplete = Vec::new();
        for (name, objects) in &groups {
            match self.complete_set(name, objects).await? {
                Some(set) => complete.push(set),
                None => incomplete.push(name.clone()),
            }
        }
        complete.sort_by_key(|s| s.manifest.step);
        let mut report = RetentionReport::default();
        let Some(newest) = complete.last().map(|s| s.name.clone()) else {
            return Ok(report);
        };
        let older = complete.len().saturating_sub(keep_last);
        for set in complete[..older]
            .iter()
            .filter(|s| !protect.contains(&s.name))
        {
            self.delete_quiet(&format!("{}/{MANIFEST_NAME}", set.name))
                .await?;
            for obj in &groups[&set.name] {
                self.delete_quiet(&obj.key).await?;
            }
            report.removed_sets.push(set.name.clone());
        }
        for name in incomplete.into_iter().filter(|n| *n < newest) {
            for obj in &groups[&name] {
                self.delete_quiet(&obj.key).await?;
            }
            report.removed_incomplete.push(name);
        }
        Ok(report)
    }

    /// Deletes `key`, treating "already gone" as done.
    async fn delete_quiet(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(key).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Objects grouped by set prefix (`step-…`), in step order.
    async fn group_sets(&self) -> Result<BTreeMap<String, Vec<ObjectInfo>>, StorageError> {
        let mut groups: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
        for obj in self.store.list("").await? {
            if let Some((set, _)) = obj.key.split_once('/')
                && Self::step_of(set).is_some()
            {
                groups.entry(set.to_string()).or_default().push(obj);
            }
        }
        Ok(groups)
    }

    /// The set `name` when its manifest exists, parses, names this step, and
    /// every file is stored with the promised size. A manifest of a newer
    /// format is an error ([`StorageError::NewerManifest`]), not skipped.
    async fn complete_set(
        &self,
        name: &str,
        objects: &[ObjectInfo],
    ) -> Result<Option<CommittedSet>, StorageError> {
        let manifest_key = format!("{name}/{MANIFEST_NAME}");
        if !objects.iter().any(|o| o.key == manifest_key) {
            return Ok(None);
        }
        let bytes = match self.store.get_bytes(&manifest_key).await {
            Ok(b) => b,
            // Deleted by a concurrent retention pass.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let target = self.store.describe(&manifest_key);
        let manifest = match Manifest::from_json(&target, &bytes) {
            Ok(m) => m,
            // Not ours to judge: resuming behind it, or deleting it as
            // incomplete, could lose a newer trainer's progress.
            Err(e @ StorageError::NewerManifest { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a checkpoint set with an unusable manifest");
                return Ok(None);
            }
        };
        if Self::step_of(name) != Some(manifest.step) {
            tracing::warn!(%target, step = manifest.step, "manifest step does not match its set; ignored");
            return Ok(None);
        }
        let sizes: BTreeMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
        for f in &manifest.files {
            let key = format!("{name}/{}", f.name);
            if sizes.get(key.as_str()) != Some(&f.size) {
                tracing::warn!(%target, file = %f.name, "checkpoint set file missing or of the wrong size; set ignored");
                return Ok(None);
            }
        }
        Ok(Some(CommittedSet {
            name: name.to_string(),
            manifest,
        }))
    }
}

fn check_file_name(store: &Store, name: &str) -> Result<(), StorageError> {
    let ok = !name.is_empty()
        && name != MANIFEST_NAME
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(StorageError::Manifest {
            target: store.describe(""),
            reason: format!(
                "file name '{name}' must be a relative a/b path without '.', '..' or empty \
                 segments and not '{MANIFEST_NAME}'"
            ),
        })
    }
}
