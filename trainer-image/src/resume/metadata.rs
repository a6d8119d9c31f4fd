//! What a committed set's manifest says about it (`metadata`): written by the
//! checkpointer, read back by restore and retention.

use serde::{Deserialize, Serialize};

use super::best::BestEntry;
use super::naming;

/// The `metadata` of a set's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetMetadata {
    /// The checkpoint name (file prefix).
    pub name: String,
    /// Tensor-parallel size of the writer (one file per rank).
    pub tp_size: usize,
    /// Fractional epoch at the step.
    pub epoch: f64,
    /// `interval`, `validation` or `final`.
    pub reason: String,
    /// File name inside each `mp_rank_NN/` directory of the set.
    pub file: String,
    /// Monitored metric (spec.checkpointing.best.monitor), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    /// Its value at this step, when the save followed a validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    /// The top-k best saves as of this one, best first.
    #[serde(default)]
    pub best: Vec<BestEntry>,
}

impl SetMetadata {
    /// The manifest key of tensor-parallel rank `tp_rank`'s file.
    pub fn rank_file(&self, tp_rank: usize) -> String {
        format!("{}/{}", naming::rank_dir(tp_rank), self.file)
    }
}
