//! [`Checkpointer`]: saves training checkpoints per tensor-parallel rank and
//! commits them as one set per step.
//!
//! A save at step `s`, on every rank of the job:
//! 1. Data-parallel replica 0 of each tensor-parallel group writes its file
//!    to `local_dir/mp_rank_NN/<name>-last.ckpt` (atomically; the previous
//!    `-last` stays until the new file is whole) and uploads it to
//!    `step-<s>/mp_rank_NN/<file>` of the set store (a hard link when the
//!    store is a local directory on the same file system). Other replicas write
//!    nothing: after the data-parallel gradient mean every replica holds the
//!    same weights, optimizer moments, schedule and data position (the
//!    sampler moves all replicas in step), so one copy per tensor-parallel
//!    rank is the whole state. Only the generator states differ (replicas
//!    are seeded `seed + dp_rank`): they are all-gathered first and stored
//!    in the file as `rng_states_per_dp_rank`, so each replica gets its own
//!    back on resume.
//! 2. All ranks exchange what their upload did ([`super::consensus`]). If any
//!    failed, every rank returns an error and no manifest is written: the
//!    previous set stays the newest complete one.
//! 3. Global rank 0 writes `step-<s>/manifest.json` (sizes and sha256 of every
//!    rank's file): the commit. Then it deletes sets that `keepLast` and the
//!    top-k no longer keep ([`CheckpointSets::retain`]).
//! 4. The writers update the NeMo view in `local_dir`: a top-k file
//!    `mp_rank_NN/<name>--val_loss=0.35-epoch=0.ckpt` (a hard link to the new
//!    `-last.ckpt`) when the save enters the top k, and the files it pushed out
//!    are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::best::{BestEntry, TopK};
use super::config::CheckpointerConfig;
use super::consensus::{Consensus, RankFile};
use super::contents::{self, FileMeta};
use super::digest::file_digest;
use super::metadata::SetMetadata;
use super::{errors, naming};
use crate::storage::{CheckpointSets, MANIFEST_NAME, ManifestFile, RetentionReport, Store};
use crate::train::{CheckpointRequest, SaveReason, TrainError, TrainResult};

/// Why the files the ranks gathered do not make a whole set (the set is then
/// not committed).
#[derive(Debug, thiserror::Error)]
enum IncompleteSet {
    /// Some tensor-parallel ranks failed to write or upload their file.
    #[error("writing the file of tensor-parallel rank(s) {ranks:?} failed; see those ranks' logs")]
    Failed { ranks: BTreeSet<usize> },
    /// Some tensor-parallel ranks sent no file at all.
    #[error(
        "no file from tensor-parallel rank(s) {ranks:?} (is dp_rank 0 present in every \
         tensor-parallel group?)"
    )]
    Missing { ranks: Vec<usize> },
}

/// What a successful save reports (for status: `latestCheckpoint`, `bestCheckpoint`).
#[derive(Clone, Debug, PartialEq)]
pub struct SavedCheckpoint {
    /// The set just committed (or, when retention deleted it at once under
    /// keepLast 0, the newest best set).
    pub latest: crds::CheckpointStatus,
    /// The best set by the monitored metric (when `spec.checkpointing.best` is set
    /// and a validation happened).
    pub best: Option<crds::CheckpointStatus>,
    /// Sets deleted by retention (filled on global rank 0 only).
    pub removed: RetentionReport,
    /// Bytes of the set's files (every rank's).
    pub bytes: u64,
}

/// This save's place among the best sets.
struct Ranking {
    /// The top-k with this save in it (if it ranks).
    top_k: Option<TopK>,
    /// Its file name among the best.
    top_file: Option<String>,
    /// Entries this save pushed out of the top-k.
    pushed_out: Vec<BestEntry>,
}

/// Saves, commits, retains and restores training checkpoints of one rank.
pub struct Checkpointer {
    pub(super) cfg: CheckpointerConfig,
    /// The store committed sets live in (`remote`, or `local_dir`).
    pub(super) store: Store,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) consensus: Consensus,
    pub(super) top_k: Option<TopK>,
    /// Step of the newest set this run committed or resumed from.
    pub(super) last_step: Option<u64>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("name", &self.cfg.name)
            .field("store", &self.store)
            .field("tp_rank", &self.cfg.tp_rank)
            .field("dp_rank", &self.cfg.dp_rank)
            .finish()
    }
}

impl Checkpointer {
    /// Checks `cfg` and prepares the local directory.
    pub fn new(cfg: CheckpointerConfig) -> TrainResult<Self> {
        naming::check_name(&cfg.name)?;
        if cfg.tp_size == 0 || cfg.tp_rank >= cfg.tp_size {
            return Err(TrainError::InvalidInput(format!(
                "checkpointer: tensor-parallel rank {} is not below the size {}",
                cfg.tp_rank, cfg.tp_size
            )));
        }
        let spec = &cfg.spec;
        if spec.keep_last < 0 {
            return Err(TrainError::InvalidInput(format!(
                "spec.checkpointing.keepLast is {}; use 0 or more",
                spec.keep_last
            )));
        }
        if spec.keep_last == 0 && spec.best.is_none() {
            return Err(TrainError::InvalidInput(
                "spec.checkpointing keeps nothing: set keepLast to 1 or more, or set \
                 spec.checkpointing.best"
                    .into(),
            ));
        }
        if let Some(b) = &spec.best
            && b.top_k < 1
        {
            return Err(TrainError::InvalidInput(format!(
                "spec.checkpointing.best.topK is {}; use 1 or more",
                b.top_k
            )));
        }
        std::fs::create_dir_all(&cfg.local_dir).map_err(|e| {
            errors::io(
                format!("creating checkpoint directory {}", cfg.local_dir.display()),
                e,
            )
        })?;
        let store = match &cfg.remote {
            Some(s) => s.clone(),
            None => Store::local(&cfg.local_dir)
                .map_err(|e| errors::storage("opening the local checkpoint directory", e))?,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("checkpoint-io")
            .enable_all()
            .build()
            .map_err(|e| errors::io("starting the checkpoint I/O runtime".into(), e))?;
        let consensus = Consensus::new(cfg.world.clone(), cfg.comm_device);
        let top_k = cfg
            .spec
            .best
            .as_ref()
            .map(|b| TopK::new(b.top_k as usize, b.mode(), Vec::new()));
        Ok(Self {
            cfg,
            store,
            runtime,
            consensus,
            top_k,
            last_step: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CheckpointerConfig {
        &self.cfg
    }

    /// The store holding the committed sets.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The kept best saves, best first (empty without `spec.checkpointing.best`).
    pub fn best(&self) -> &[BestEntry] {
        self.top_k.as_ref().map_or(&[], |t| t.entries())
    }

    /// `local_dir/mp_rank_NN` of this rank.
    pub fn rank_dir(&self) -> PathBuf {
        self.cfg.local_dir.join(naming::rank_dir(self.cfg.tp_rank))
    }

    /// The URI of set `set` (`s3://bucket/prefix/step-…` or a local path).
    pub fn set_uri(&self, set: &str) -> crds::Uri {
        crds::Uri::new(self.store.uri(set))
    }

    /// Saves the checkpoint `request` asks for; every rank calls it at the
    /// same step. Returns `None` when a set for this step already exists (a
    /// validation save followed by an interval or final save at the same
    /// step, or the final save of a run resumed at its last step), and when
    /// keepLast 0 deleted the new set at once before any best set exists.
    ///
    /// Errors: when any rank fails to write or upload its file, or rank 0
    /// fails to commit, every rank returns an error (retryable unless the
    /// request itself is invalid) and the previous set stays the latest.
    pub fn save(&mut self, request: CheckpointRequest<'_>) -> TrainResult<Option<SavedCheckpoint>> {
        let state = request.state;
        let step = u64::try_from(state.step).map_err(|_| {
            TrainError::InvalidInput(format!("checkpoint at negative step {}", state.step))
        })?;
        if self.last_step == Some(step) {
            return Ok(None);
        }
        let epoch = state.epoch.floor() as i64;
        let monitored = self.monitored(&request.reason);
        let file = match monitored {
            Some((metric, value)) => naming::metric_file(&self.cfg.name, metric, value, epoch),
            None => naming::step_file(&self.cfg.name, step, epoch),
        };
        let set = CheckpointSets::set_name(step);
        let (mine, own_error) = self.write_own_file(step, &file, &request)?;
        let files = self.agree_on_files(step, &file, &mine, own_error)?;
        let bytes = files.iter().map(|f| f.size).sum();
        let ranking = self.rank_among_best(step, &file, &set, monitored);
        let metadata = self.metadata(&request, &file, monitored, &ranking.top_k);
        let (created, removed) = self.commit_and_retain(step, files, &metadata)?;
        if self.cfg.dp_rank == 0 {
            self.update_local_view(ranking.top_file.as_deref(), &ranking.pushed_out);
        }
        self.top_k = ranking.top_k;
        self.last_step = Some(step);
        tracing::info!(step, set = %set, file = %file, "checkpoint committed");
        Ok(self
            .report(step, &set, created, &metadata, removed)
            .map(|saved| SavedCheckpoint { bytes, ..saved }))
    }

    /// Step 1: writes and uploads this rank's file (with every replica's
    /// generators); replicas other than 0 write nothing. A failure is kept
    /// for the agreement, not returned.
    fn write_own_file(
        &mut self,
        step: u64,
        file: &str,
        request: &CheckpointRequest<'_>,
    ) -> TrainResult<(RankFile, Option<TrainError>)> {
        let replica_rng =
            self.consensus
                .replica_rng(self.cfg.tp_rank, self.cfg.dp_rank, &request.state.rng)?;
        if self.cfg.dp_rank != 0 {
            return Ok((RankFile::None, None));
        }
        Ok(
            match self.write_and_upload(step, file, request, &replica_rng) {
                Ok(entry) => (RankFile::uploaded(self.cfg.tp_rank, &entry), None),
                Err(e) => {
                    tracing::error!(step, error = %e, "writing this rank's checkpoint file failed");
                    let failed = RankFile::Failed {
                        tp_rank: self.cfg.tp_rank,
                    };
                    (failed, Some(e))
                }
            },
        )
    }

    /// Step 2: agrees with every rank on the set's files; any failure leaves the
    /// previous checkpoint the latest.
    fn agree_on_files(
        &mut self,
        step: u64,
        file: &str,
        mine: &RankFile,
        own_error: Option<TrainError>,
    ) -> TrainResult<Vec<ManifestFile>> {
        let records = self.consensus.gather(mine)?;
        self.collect_files(&records, file).map_err(|msg| {
            let msg = format!(
                "checkpoint at step {step} was not committed ({msg}); the previous \
                 checkpoint stays the latest"
            );
            match own_error {
                Some(e) => TrainError::Checkpoint(format!("{msg}: {e}")),
                None => TrainError::Checkpoint(msg),
            }
        })
    }

    /// Where this save ranks among the best by the monitored metric.
    fn rank_among_best(
        &self,
        step: u64,
        file: &str,
        set: &str,
        monitored: Option<(&'static str, f64)>,
    ) -> Ranking {
        let mut ranking = Ranking {
            top_k: self.top_k.clone(),
            top_file: None,
            pushed_out: Vec::new(),
        };
        if let (Some(tk), Some((_, value))) = (ranking.top_k.as_mut(), monitored)
            && tk.admits(value)
        {
            let mut name = file.to_owned();
            let mut v = 0;
            while tk.has_file(&name) {
                v += 1;
                name = naming::versioned(file, v);
            }
            ranking.pushed_out = tk.insert(BestEntry {
                step,
                value,
                file: name.clone(),
                set: set.to_owned(),
            });
            ranking.top_file = Some(name);
        }
        ranking
    }

    /// The manifest's `metadata` for this save.
    fn metadata(
        &self,
        request: &CheckpointRequest<'_>,
        file: &str,
        monitored: Option<(&'static str, f64)>,
        top_k: &Option<TopK>,
    ) -> SetMetadata {
        SetMetadata {
            name: self.cfg.name.clone(),
            tp_size: self.cfg.tp_size,
            epoch: request.state.epoch,
            reason: reason_name(&request.reason).into(),
            file: file.to_owned(),
            monitor: self
                .cfg
                .spec
                .best
                .as_ref()
                .map(|b| b.monitor.as_str().to_string()),
            metric: monitored.map(|(_, v)| v),
            best: top_k
                .as_ref()
                .map(|t| t.entries().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Step 3: global rank 0 commits the set (manifest last) and applies retention;
    /// every rank learns whether it worked.
    fn commit_and_retain(
        &mut self,
        step: u64,
        files: Vec<ManifestFile>,
        metadata: &SetMetadata,
    ) -> TrainResult<(chrono::DateTime<chrono::Utc>, RetentionReport)> {
        let mut commit_error = None;
        let mut removed = RetentionReport::default();
        let mut created = chrono::Utc::now();
        if self.consensus.rank() == 0 {
            match self.commit(step, files, metadata) {
                Ok(t) => {
                    created = t;
                    removed = self.retain(metadata);
                }
                Err(e) => {
                    tracing::error!(step, error = %e, "committing the checkpoint failed");
                    commit_error = Some(e);
                }
            }
        }
        if !self.consensus.all_ok(commit_error.is_none())? {
            return Err(commit_error.unwrap_or_else(|| {
                TrainError::Checkpoint(format!(
                    "checkpoint at step {step} was not committed: global rank 0 could not \
                     write its manifest (see its log); the previous checkpoint stays the latest"
                ))
            }));
        }
        Ok((created, removed))
    }

    /// Step 4: what the status says: the latest and the best set. With keepLast 0
    /// a set outside the top-k is deleted at once: the latest checkpoint is
    /// then the newest best one (what a resume uses).
    fn report(
        &self,
        step: u64,
        set: &str,
        created: chrono::DateTime<chrono::Utc>,
        metadata: &SetMetadata,
        removed: RetentionReport,
    ) -> Option<SavedCheckpoint> {
        let monitor = || metadata.monitor.clone();
        let best = self
            .top_k
            .as_ref()
            .and_then(|t| t.best())
            .map(|b| self.status(b.step, &b.set, None, monitor(), Some(b.value)));
        let deleted = removed.removed_sets.iter().any(|s| s == set);
        let kept_best = deleted
            .then_some(self.top_k.as_ref())
            .flatten()
            .and_then(|t| t.entries().iter().max_by_key(|e| e.step));
        let latest = match kept_best {
            Some(e) => self.status(e.step, &e.set, None, monitor(), Some(e.value)),
            None if deleted => {
                // Nothing kept to report yet (a save before the first validation).
                tracing::warn!(
                    step,
                    "keepLast 0 deleted this checkpoint at once: no best one exists yet"
                );
                return None;
            }
            None => self.status(step, set, Some(created), monitor(), metadata.metric),
        };
        Some(SavedCheckpoint {
            latest,
            best,
            removed,
            bytes: 0,
        })
    }

    /// The monitored metric and its value when `reason` carries it.
    fn monitored(&self, reason: &SaveReason) -> Option<(&'static str, f64)> {
        let best = self.cfg.spec.best.as_ref()?;
        match reason {
            SaveReason::Validation(metrics) => metrics
                .get(best.monitor.as_str())
                .map(|v| (best.monitor.as_str(), *v)),
            _ => None,
        }
    }

    fn write_and_upload(
        &self,
        step: u64,
        file: &str,
        request: &CheckpointRequest<'_>,
        replica_rng: &[crate::train::RngStates],
    ) -> TrainResult<ManifestFile> {
        let dir = self.rank_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| errors::io(format!("creating {}", dir.display()), e))?;
        let local = dir.join(naming::last_file(&self.cfg.name));
        let meta = FileMeta {
            tp_rank: self.cfg.tp_rank,
            tp_size: self.cfg.tp_size,
            hyper_parameters: self.cfg.hyper_parameters.clone(),
        };
        let value = contents::encode(
            &request.model.state_dict(),
            request.state,
            &meta,
            replica_rng,
        );
        contents::write(&local, &value)
            .map_err(|e| errors::file("writing the checkpoint file", e))?;
        drop(value);
        let key = format!("{}/{file}", naming::rank_dir(self.cfg.tp_rank));
        if let Some(entry) = self.link_into_set(step, &key, &local)? {
            return Ok(entry);
        }
        let sets = CheckpointSets::new(self.store.clone());
        self.runtime
            .block_on(sets.upload_file(step, &key, &local, &self.cfg.transfer))
            .map_err(|e| errors::storage("uploading the checkpoint file", e))
    }

    /// For a set store on the local file system: hard-links the written file
    /// into the set (no copy, no extra disk) and digests it. `None` when the
    /// store is remote or on another file system (then it is uploaded).
    fn link_into_set(
        &self,
        step: u64,
        key: &str,
        local: &Path,
    ) -> TrainResult<Option<ManifestFile>> {
        if self.store.s3_config().is_some() {
            return Ok(None);
        }
        let set = CheckpointSets::set_name(step);
        let manifest = PathBuf::from(self.store.describe(&format!("{set}/{MANIFEST_NAME}")));
        if manifest.exists() {
            return Err(TrainError::Internal(format!(
                "{}: step {step} is already committed; sets are immutable",
                manifest.display()
            )));
        }
        let dest = PathBuf::from(self.store.describe(&format!("{set}/{key}")));
        let parent = dest.parent().expect("a set file has a directory");
        std::fs::create_dir_all(parent)
            .map_err(|e| errors::io(format!("creating {}", parent.display()), e))?;
        let _ = std::fs::remove_file(&dest);
        if std::fs::hard_link(local, &dest).is_err() {
            return Ok(None);
        }
        let (size, sha256) =
            file_digest(&dest).map_err(|e| errors::io(format!("reading {}", dest.display()), e))?;
        Ok(Some(ManifestFile {
            name: key.to_string(),
            size,
            sha256,
        }))
    }

    /// The manifest entries: exactly one file per tensor-parallel rank, or why not.
    fn collect_files(
        &self,
        records: &[RankFile],
        file: &str,
    ) -> Result<Vec<ManifestFile>, IncompleteSet> {
        let failed: BTreeSet<usize> = records
            .iter()
            .filter_map(|r| match r {
                RankFile::Failed { tp_rank } => Some(*tp_rank),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            return Err(IncompleteSet::Failed { ranks: failed });
        }
        let mut by_rank = BTreeMap::new();
        for r in records {
            if let RankFile::Ok {
                tp_rank,
                size,
                sha256,
            } = r
            {
                by_rank.insert(
                    *tp_rank,
                    ManifestFile {
                        name: format!("{}/{file}", naming::rank_dir(*tp_rank)),
                        size: *size,
                        sha256: hex::encode(sha256),
                    },
                );
            }
        }
        let missing: Vec<usize> = (0..self.cfg.tp_size)
            .filter(|r| !by_rank.contains_key(r))
            .collect();
        if !missing.is_empty() || by_rank.len() != self.cfg.tp_size {
            return Err(IncompleteSet::Missing { ranks: missing });
        }
        Ok(by_rank.into_values().collect())
    }

    fn commit(
        &self,
        step: u64,
        files: Vec<ManifestFile>,
        metadata: &SetMetadata,
    ) -> TrainResult<chrono::DateTime<chrono::Utc>> {
        let sets = CheckpointSets::new(self.store.clone());
        let json = serde_json::to_value(metadata).expect("metadata serializes");
        let set = self
            .runtime
            .block_on(sets.write_manifest(step, files, json))
            .map_err(|e| errors::storage("committing the checkpoint", e))?;
        Ok(set.manifest.created)
    }

    /// Deletes sets no longer kept; failures are logged (the commit stands).
    fn retain(&self, metadata: &SetMetadata) -> RetentionReport {
        let best: BTreeSet<String> = metadata.best.iter().map(|b| b.set.clone()).collect();
        let keep_last = self.cfg.spec.keep_last.max(0) as usize;
        match self
            .runtime
            .block_on(CheckpointSets::new(self.store.clone()).retain(keep_last, &best))
        {
            Ok(removed) => {
                if !removed.removed_sets.is_empty() || !removed.removed_incomplete.is_empty() {
                    tracing::info!(sets = ?removed.removed_sets, incomplete = ?removed.removed_incomplete,
                        "deleted old checkpoints");
                }
                removed
            }
            Err(e) => {
                tracing::warn!(error = %e, "deleting old checkpoints failed; retrying at the next save");
                RetentionReport::default()
            }
        }
    }

    /// Links the new `-last` file under its top-k name and removes top-k
    /// files pushed out. Failures only cost the local view: logged.
    fn update_local_view(&self, top_file: Option<&str>, pushed_out: &[BestEntry]) {
        let dir = self.rank_dir();
        if let Some(name) = top_file {
            let last = dir.join(naming::last_file(&self.cfg.name));
            let target = dir.join(name);
            if let Err(e) = link_or_copy(&last, &target) {
                tracing::warn!(file = %target.display(), error = %e, "writing the top-k file failed");
            }
        }
        for e in pushed_out {
            if Some(e.file.as_str()) == top_file {
                continue;
            }
            let path = dir.join(&e.file);
            match std::fs::remove_file(&path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %path.display(), error = %err, "removing a pushed-out top-k file failed");
                }
                _ => {}
            }
        }
    }

    pub(super) fn status(
        &self,
        step: u64,
        set: &str,
        time: Option<chrono::DateTime<chrono::Utc>>,
        metric_name: Option<String>,
        metric: Option<f64>,
    ) -> crds::CheckpointStatus {
        let mut v = serde_json::json!({
            "step": step as i64,
            "uri": self.set_uri(set).as_str(),
        });
        if let Some(t) = time {
            v["time"] =
                serde_json::Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        if let (Some(n), Some(m)) = (metric_name, metric) {
            v["metricName"] = n.into();
            v["metric"] = m.into();
        }
        serde_json::from_value(v).expect("a CheckpointStatus from its own fields")
    }
}

/// `interval`, `validation`, `final` or `stop`.
pub fn reason_name(reason: &SaveReason) -> &'static str {
    match reason {
        SaveReason::Interval => "interval",
        SaveReason::Validation(_) => "validation",
        SaveReason::Final => "final",
        SaveReason::Stop => "stop",
    }
}

/// Makes `target` the same file as `source` (a hard link, or a copy where
/// links are not possible), replacing `target` atomically.
fn link_or_copy(source: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = target.with_extension("ckpt.link-tmp");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(source, &tmp).is_err() {
        std::fs::copy(source, &tmp)?;
    }
    std::fs::rename(&tmp, target)
}
