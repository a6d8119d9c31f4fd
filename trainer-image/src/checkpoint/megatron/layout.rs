//! Where a Megatron-LM checkpoint's rank files are: `<dir>/
//! latest_checkpointed_iteration.txt`, `<dir>/{iter_%07d|release}/
//! mp_rank_%02d/model_optim_rng.pt`; a path may also name the iteration
//! directory, one rank directory or one `.pt` file.

use std::path::{Path, PathBuf};

use crate::checkpoint::error::{CheckpointError, Result};

/// The rank files of one checkpoint iteration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Resolved {
    /// The iteration directory (or the file's directory).
    pub dir: PathBuf,
    /// The iteration number, when the layout names one.
    pub iteration: Option<i64>,
    /// True for a `release` checkpoint.
    pub release: bool,
    /// One file per tensor-parallel rank, in rank order.
    pub rank_files: Vec<PathBuf>,
}

const TRACKER: &str = "latest_checkpointed_iteration.txt";
const FILE_NAMES: [&str; 3] = ["model_optim_rng.pt", "model_rng.pt", "model_weights.ckpt"];

/// Finds the rank files behind `path`.
pub fn resolve(path: &Path) -> Result<Resolved> {
    let meta = std::fs::metadata(path).map_err(|e| CheckpointError::io(path, e))?;
    if meta.is_file() {
        return resolve_file(path);
    }
    let tracker = path.join(TRACKER);
    if tracker.is_file() {
        let text =
            std::fs::read_to_string(&tracker).map_err(|e| CheckpointError::io(&tracker, e))?;
        let text = text.trim();
        let dir = if text == "release" {
            path.join("release")
        } else {
            let it: i64 = text.parse().map_err(|_| {
                CheckpointError::format(
                    &tracker,
                    format!("holds {text:?}, expected an iteration number or `release`"),
                )
            })?;
            path.join(format!("iter_{it:07}"))
        };
        return resolve_iteration_dir(&dir);
    }
    if let Some(name) = path.file_name().and_then(|n| n.to_str())
        && name.starts_with("mp_rank_")
        && let Some(parent) = path.parent()
    {
        return resolve_iteration_dir(parent);
    }
    resolve_iteration_dir(path)
}

fn resolve_file(path: &Path) -> Result<Resolved> {
    let rank_dir = path.parent().unwrap_or(Path::new("."));
    let in_rank_dir = rank_dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("mp_rank_"));
    if in_rank_dir && let Some(iter_dir) = rank_dir.parent() {
        let mut r = resolve_iteration_dir(iter_dir)?;
        if r.rank_files.len() == 1 {
            r.rank_files = vec![path.to_path_buf()];
        }
        return Ok(r);
    }
    let (iteration, release) = iteration_of(rank_dir);
    Ok(Resolved {
        dir: rank_dir.to_path_buf(),
        iteration,
        release,
        rank_files: vec![path.to_path_buf()],
    })
}

fn iteration_of(dir: &Path) -> (Option<i64>, bool) {
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => (None, true),
        Some(n) => (n.strip_prefix("iter_").and_then(|s| s.parse().ok()), false),
        None => (None, false),
    }
}

fn resolve_iteration_dir(dir: &Path) -> Result<Resolved> {
    let entries = std::fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))?;
    let mut ranks: Vec<(usize, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CheckpointError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(suffix) = name.strip_prefix("mp_rank_") else {
            continue;
        };
        if suffix.contains('_') {
            return Err(CheckpointError::invalid(
                dir,
                format!(
                    "{name}: pipeline-parallel checkpoints are not supported; merge the pipeline stages first"
                ),
            ));
        }
        let rank: usize = suffix.parse().map_err(|_| {
            CheckpointError::format(dir, format!("unexpected rank directory {name}"))
        })?;
        let file = FILE_NAMES
            .iter()
            .map(|f| entry.path().join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                CheckpointError::invalid(
                    entry.path(),
                    format!("no {} in this rank directory", FILE_NAMES.join(" or ")),
                )
            })?;
        ranks.push((rank, file));
    }
    if ranks.is_empty() {
        return Err(CheckpointError::invalid(
            dir,
            format!(
                "not a Megatron-LM checkpoint: expected {TRACKER}, iter_*/ or release/ with mp_rank_NN/ \
                 directories, or a .pt file"
            ),
        ));
    }
    ranks.sort();
    for (i, (rank, _)) in ranks.iter().enumerate() {
        if *rank != i {
            return Err(CheckpointError::invalid(
                dir,
                format!("mp_rank_{i:02} is missing"),
            ));
        }
    }
    let (iteration, release) = iteration_of(dir);
    Ok(Resolved {
        dir: dir.to_path_buf(),
        iteration,
        release,
        rank_files: ranks.into_iter().map(|(_, p)| p).collect(),
    })
}
