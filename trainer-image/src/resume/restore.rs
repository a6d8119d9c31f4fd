//! Finding and restoring the checkpoint a (re)started gang continues from.
//!
//! [`Checkpointer::find_latest`] walks the complete sets newest first; each
//! rank fetches its own shard (verifying size and sha256 against the
//! manifest), and the ranks agree: a set whose shard is missing or corrupt on
//! any rank is skipped with a warning and the previous complete set is tried.
//! [`Checkpointer::restore`] then loads the verified file into the model and
//! rebuilds the loop's [`TrainState`].

use std::path::{Path, PathBuf};

use super::best::TopK;
use super::checkpointer::Checkpointer;
use super::digest::file_digest;
use super::metadata::SetMetadata;
use super::{contents, errors};
use crate::model::BertTaskModel;
use crate::storage::{CheckpointSets, CommittedSet, Location, MANIFEST_NAME, StorageError, Store};
use crate::train::{TrainError, TrainResult, TrainState};

/// Where a resume point comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeSource {
    /// This job's own checkpoints.
    Own,
    /// `spec.checkpointing.resume.from` (policy From, before the job saved any).
    From,
}

/// A verified checkpoint to continue from.
#[derive(Clone, Debug)]
pub struct ResumePoint {
    /// Optimizer steps done at the checkpoint.
    pub step: u64,
    /// The set (`step-000000000600`).
    pub set: String,
    /// The set's URI (for status and logs).
    pub uri: crds::Uri,
    /// The set's manifest metadata.
    pub metadata: SetMetadata,
    /// This rank's shard on the local disk, size and sha256 verified.
    pub file: PathBuf,
    /// Own checkpoints or `resume.from`.
    pub source: ResumeSource,
}

/// What fetching this rank's shard of a candidate set did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Ok = 0,
    /// Missing, of the wrong size or checksum: fall back to an older set.
    Corrupt = 1,
    /// The store could not be read: retry the whole run later.
    Failed = 2,
}

impl Checkpointer {
    /// The checkpoint to continue from under `spec.checkpointing.resume`
    /// (every rank calls it, once, before training):
    /// - `Never`: `None`.
    /// - `Auto`: the newest complete set of this job, `None` when there is none.
    /// - `From`: like Auto; when the job has no checkpoint yet, the set at
    ///   `resume.from` (a `step-NNNNNNNNNNNN` directory, or a checkpoints root
    ///   whose newest complete set is used). Nothing usable there is invalid input.
    ///
    /// Global rank 0 first aborts multipart uploads a killed gang left behind.
    pub fn find_latest(&mut self) -> TrainResult<Option<ResumePoint>> {
        use crds::ResumePolicy;
        let policy = self.cfg.spec.resume.policy;
        if policy == ResumePolicy::Never {
            return Ok(None);
        }
        self.cleanup_stale_uploads();
        let own = self.store.clone();
        let (found, unusable) = self.find_in(&own, None, ResumeSource::Own)?;
        self.withdraw(&unusable)?;
        if let Some(point) = found {
            let best = point.metadata.best.clone();
            if let Some(b) = &self.cfg.spec.best {
                self.top_k = Some(TopK::new(b.top_k as usize, b.mode(), best));
            }
            self.last_step = Some(point.step);
            return Ok(Some(point));
        }
        if policy != ResumePolicy::From {
            return Ok(None);
        }
        let Some(from) = self.cfg.spec.resume.from.clone() else {
            return Err(TrainError::InvalidInput(
                "spec.checkpointing.resume.policy is From but resume.from is not set; set it to \
                 a checkpoint directory (…/checkpoints/step-NNNNNNNNNNNN)"
                    .into(),
            ));
        };
        let (store, pinned) = open_from(from.as_str())?;
        match self
            .find_in(&store, pinned.as_deref(), ResumeSource::From)?
            .0
        {
            Some(p) => Ok(Some(p)),
            None => Err(TrainError::InvalidInput(format!(
                "spec.checkpointing.resume.from: no complete checkpoint at {} (expected a \
                 step-NNNNNNNNNNNN directory with manifest.json and every mp_rank_NN file, \
                 written by this trainer with tensor-parallel size {})",
                from.as_str(),
                self.cfg.tp_size
            ))),
        }
    }

    /// Loads `point` into `model` (this rank's shard) and returns the loop
    /// state to continue from (optimizer tensors on the CPU: the optimizer
    /// copies them to its device).
    /// [`TrainState::rng`] holds this rank's own generator states (its
    /// data-parallel replica's entry of the file); the loop applies them.
    pub fn restore(
        &mut self,
        point: &ResumePoint,
        model: &mut BertTaskModel,
    ) -> TrainResult<TrainState> {
        let file = contents::read(&point.file).map_err(|e| {
            errors::file(&format!("restoring checkpoint {}", point.uri.as_str()), e)
        })?;
        if file.tp_size != self.cfg.tp_size || file.tp_rank != self.cfg.tp_rank {
            return Err(TrainError::InvalidInput(format!(
                "{}: holds tensor-parallel rank {} of {}, but this rank is {} of {}",
                point.file.display(),
                file.tp_rank,
                file.tp_size,
                self.cfg.tp_rank,
                self.cfg.tp_size
            )));
        }
        model.load_state_dict(&file.state_dict).map_err(|e| {
            TrainError::InvalidInput(format!(
                "{} ({}): the weights do not fit this model: {e} (was it saved for a different \
                 model or task head?)",
                point.file.display(),
                point.uri.as_str()
            ))
        })?;
        let mut state = file.state;
        let mut replica_rng = file.replica_rng;
        if replica_rng.len() > self.cfg.dp_rank {
            state.rng = replica_rng.swap_remove(self.cfg.dp_rank);
        } else if self.cfg.dp_rank > 0 {
            tracing::warn!(
                dp_rank = self.cfg.dp_rank,
                saved_replicas = replica_rng.len(),
                "the checkpoint has no generator states for this data-parallel rank (was the \
                 data-parallel size changed?); using replica 0's"
            );
        }
        // The optimizer state stays on the CPU: the optimizer copies it into its own moments a
        // tensor at a time, so no second copy of them is ever on the device.
        // A downloaded copy is no longer needed (everything is in memory now).
        let downloaded = self.cfg.local_dir.join("resume").join(&point.set);
        if point.file.starts_with(&downloaded) {
            let _ = std::fs::remove_dir_all(&downloaded);
        }
        tracing::info!(step = state.step, uri = %point.uri.as_str(), "restored checkpoint");
        Ok(state)
    }

    /// The newest usable set in `store` (or only `pinned`), agreed by all
    /// ranks, and the newer sets found unusable on the way (a shard missing
    /// or corrupt on some rank, or a manifest without every rank's file).
    /// A newer set whose metadata this trainer cannot read (written by a
    /// newer trainer or another tool) is an error, not skipped: resuming
    /// behind it would let retention delete this run's new checkpoints.
    fn find_in(
        &self,
        store: &Store,
        pinned: Option<&str>,
        source: ResumeSource,
    ) -> TrainResult<(Option<ResumePoint>, Vec<String>)> {
        let sets = CheckpointSets::new(store.clone());
        let mut candidates = self
            .runtime
            .block_on(sets.list_complete())
            .map_err(|e| errors::storage("listing checkpoints", e))?;
        candidates.retain(|s| pinned.is_none_or(|p| s.name == p));
        candidates.reverse();
        let mut unusable = Vec::new();
        let mut i = 0;
        loop {
            let proposal = candidates.get(i).map_or(-1, |s| s.manifest.step as i64);
            let all = self.consensus.gather_i64(proposal)?;
            if all.iter().any(|&s| s != proposal) {
                return Err(TrainError::RanksDisagree(format!(
                    "ranks see different checkpoints in {} (steps {all:?} by global rank); \
                     retry when the store is consistent",
                    store.describe("")
                )));
            }
            let Some(set) = candidates.get(i) else {
                return Ok((None, unusable));
            };
            i += 1;
            let metadata = match self.usable_metadata(store, set)? {
                Some(m) => m,
                None => {
                    // Same manifest on every rank: all skip it.
                    unusable.push(set.name.clone());
                    continue;
                }
            };
            let (fetch, path) = self.fetch_shard(store, set, &metadata);
            let codes = self.consensus.gather_i64(fetch as i64)?;
            if codes.contains(&(Fetch::Failed as i64)) {
                return Err(TrainError::Checkpoint(format!(
                    "could not read checkpoint {} (see the ranks' logs); retry when the store is \
                     reachable",
                    store.describe(&set.name)
                )));
            }
            if codes.contains(&(Fetch::Corrupt as i64)) {
                tracing::warn!(set = %store.describe(&set.name),
                    "checkpoint has a missing or corrupt shard; falling back to the previous one");
                unusable.push(set.name.clone());
                continue;
            }
            let uri = if source == ResumeSource::Own {
                self.set_uri(&set.name)
            } else {
                crds::Uri::new(store.uri(&set.name))
            };
            let point = ResumePoint {
                step: set.manifest.step,
                set: set.name.clone(),
                uri,
                metadata,
                file: path.expect("a fetched shard has a path"),
                source,
            };
            return Ok((Some(point), unusable));
        }
    }

    /// The set's metadata when the set fits this run; `None` (with a warning)
    /// when its manifest lacks a rank's file; an error when the metadata is
    /// not one this trainer reads or was written for another tensor-parallel
    /// size.
    fn usable_metadata(
        &self,
        store: &Store,
        set: &CommittedSet,
    ) -> TrainResult<Option<SetMetadata>> {
        let target = store.describe(&set.name);
        let metadata: SetMetadata = match serde_json::from_value(set.manifest.metadata.clone()) {
            Ok(m) => m,
            Err(e) => {
                return Err(TrainError::InvalidInput(format!(
                    "checkpoint {target} has metadata this trainer cannot read ({e}); it was \
                     written by another trainer version or tool. Resume with the trainer image \
                     that wrote it, move the set away, or start fresh with \
                     spec.checkpointing.resume.policy Never"
                )));
            }
        };
        if metadata.tp_size != self.cfg.tp_size {
            return Err(TrainError::InvalidInput(format!(
                "checkpoint {target} was saved with tensor-parallel size {}, this run uses {}; \
                 resume with the same spec.parallelism.tensorParallelSize (or start fresh with \
                 spec.checkpointing.resume.policy Never)",
                metadata.tp_size, self.cfg.tp_size
            )));
        }
        let missing: Vec<String> = (0..self.cfg.tp_size)
            .map(|r| metadata.rank_file(r))
            .filter(|f| !set.manifest.files.iter().any(|m| &m.name == f))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(set = %target, ?missing, "checkpoint manifest lacks rank files; skipped");
            return Ok(None);
        }
        Ok(Some(metadata))
    }

    /// Fetches (or, for a local store, checks in place) this rank's shard.
    fn fetch_shard(
        &self,
        store: &Store,
        set: &CommittedSet,
        metadata: &SetMetadata,
    ) -> (Fetch, Option<PathBuf>) {
        let name = metadata.rank_file(self.cfg.tp_rank);
        let entry = set
            .manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .expect("usable_metadata checked every rank file");
        let key = format!("{}/{name}", set.name);
        if store.s3_config().is_none() {
            let path = PathBuf::from(store.describe(&key));
            return match verify_local(&path, entry.size, &entry.sha256) {
                Ok(()) => (Fetch::Ok, Some(path)),
                Err((fetch, why)) => {
                    tracing::warn!(file = %path.display(), %why, "checkpoint shard unusable");
                    (fetch, None)
                }
            };
        }
        let dest = self
            .cfg
            .local_dir
            .join("resume")
            .join(&set.name)
            .join(&name);
        let result = self.runtime.block_on(store.download_file_verified(
            &key,
            &dest,
            &entry.digest(),
            &self.cfg.transfer,
        ));
        match result {
            Ok(_) => (Fetch::Ok, Some(dest)),
            Err(e @ StorageError::Integrity { .. }) => {
                tracing::warn!(error = %e, "checkpoint shard corrupt");
                (Fetch::Corrupt, None)
            }
            Err(e) if e.is_not_found() => {
                tracing::warn!(error = %e, "checkpoint shard missing");
                (Fetch::Corrupt, None)
            }
            Err(e) => {
                tracing::error!(error = %e, "downloading the checkpoint shard failed");
                (Fetch::Failed, None)
            }
        }
    }

    /// Withdraws the manifests of `sets`, this job's sets found unusable
    /// (all newer than the resume point): the run will save those steps
    /// again, and retention must not count them. Global rank 0 copies each
    /// manifest to `manifest.json.rejected` (for inspection) and deletes it;
    /// retention removes the files later. Every rank waits for it.
    fn withdraw(&self, sets: &[String]) -> TrainResult<()> {
        let mut result = Ok(());
        if self.consensus.rank() == 0 {
            result = self.runtime.block_on(async {
                for set in sets {
                    tracing::warn!(set = %self.store.describe(set),
                        "withdrawing an unusable checkpoint newer than the resume point");
                    let key = format!("{set}/{MANIFEST_NAME}");
                    let bytes = self.store.get_bytes(&key).await?;
                    self.store
                        .put_bytes(&format!("{key}.rejected"), bytes)
                        .await?;
                    self.store.delete(&key).await?;
                }
                Ok::<(), StorageError>(())
            });
        }
        let ok = self.consensus.all_ok(result.is_ok())?;
        result.map_err(|e| errors::storage("withdrawing unusable checkpoints", e))?;
        if !ok {
            return Err(TrainError::Checkpoint(
                "global rank 0 could not withdraw unusable checkpoints (see its log)".into(),
            ));
        }
        Ok(())
    }

    /// Aborts multipart uploads a killed gang left in the set store (global
    /// rank 0, S3 only; nobody of this gang uploads yet). Failures are logged.
    fn cleanup_stale_uploads(&self) {
        if self.consensus.rank() != 0 || self.store.s3_config().is_none() {
            return;
        }
        match self.runtime.block_on(
            self.store
                .cleanup_stale_multipart("", std::time::Duration::ZERO),
        ) {
            Ok(aborted) if !aborted.is_empty() => {
                tracing::info!(
                    count = aborted.len(),
                    "aborted unfinished checkpoint uploads"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not clean up unfinished uploads"),
        }
    }
}

/// The store and (when the URI names one set) the set name of `resume.from`.
fn open_from(uri: &str) -> TrainResult<(Store, Option<String>)> {
    const FIELD: &str = "spec.checkpointing.resume.from";
    let loc = Location::parse(FIELD, uri).map_err(|e| errors::storage(FIELD, e))?;
    let (parent, set) = match &loc {
        Location::S3 { bucket, key } => match key
            .rsplit_once('/')
            .map_or(("", key.as_str()), |(p, s)| (p, s))
        {
            (p, s) if CheckpointSets::step_of(s).is_some() => (
                Location::S3 {
                    bucket: bucket.clone(),
                    key: p.to_string(),
                },
                Some(s.to_string()),
            ),
            _ => (loc.clone(), None),
        },
        Location::Local(path) => match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(p), Some(s)) if CheckpointSets::step_of(s).is_some() => {
                (Location::Local(p.to_path_buf()), Some(s.to_string()))
            }
            _ => (loc.clone(), None),
        },
    };
    let store = Store::open(&parent).map_err(|e| errors::storage(FIELD, e))?;
    Ok((store, set))
}

/// Checks a local file's size and sha256. A missing file or a mismatch is
/// [`Fetch::Corrupt`] (fall back to an older set); any other I/O error is
/// [`Fetch::Failed`] (retry later: the newer sets may be fine).
fn verify_local(path: &Path, size: u64, sha256: &str) -> Result<(), (Fetch, String)> {
    let io = |what: &str, e: std::io::Error| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            Fetch::Corrupt
        } else {
            Fetch::Failed
        };
        (kind, format!("{what}: {e}"))
    };
    let len = std::fs::metadata(path)
        .map_err(|e| io("cannot open", e))?
        .len();
    if len != size {
        return Err((Fetch::Corrupt, format!("size {len}, manifest says {size}")));
    }
    let (_, got) = file_digest(path).map_err(|e| io("read error", e))?;
    if got != sha256 {
        return Err((
            Fetch::Corrupt,
            format!("sha256 {got}, manifest says {sha256}"),
        ));
    }
    Ok(())
}
