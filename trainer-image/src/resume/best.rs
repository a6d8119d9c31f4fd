//! Top-k bookkeeping of the best checkpoints by a monitored metric (NeMo's
//! `save_top_k`): which saves are kept and which one a new save pushes out.

use crds::{Metric, MetricMode};
use serde::{Deserialize, Serialize};

/// One kept best checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestEntry {
    /// Optimizer step of the save.
    pub step: u64,
    /// The monitored metric's value.
    pub value: f64,
    /// Its top-k file name inside each `mp_rank_NN/` directory.
    pub file: String,
    /// Its checkpoint set (`step-000000000600`).
    pub set: String,
}

/// The best `k` saves so far, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    k: usize,
    mode: MetricMode,
    entries: Vec<BestEntry>,
}

impl TopK {
    /// Keeps `k` (at least 1) saves ranked by `mode`, starting from `entries`.
    pub fn new(k: usize, mode: MetricMode, entries: Vec<BestEntry>) -> Self {
        let mut t = Self {
            k: k.max(1),
            mode,
            entries: Vec::new(),
        };
        for e in entries {
            t.insert(e);
        }
        t
    }

    /// Whether a save with `value` enters the top k (ties keep the older ones,
    /// NaN never enters).
    pub fn admits(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        self.entries.len() < self.k
            || self
                .entries
                .last()
                .is_some_and(|worst| Metric::improves(self.mode, value, worst.value))
    }

    /// Adds `entry` when it is admitted; returns the entries pushed out (the
    /// new entry itself when it was not admitted).
    pub fn insert(&mut self, entry: BestEntry) -> Vec<BestEntry> {
        if !self.admits(entry.value) {
            return vec![entry];
        }
        let pos = self
            .entries
            .iter()
            .position(|e| Metric::improves(self.mode, entry.value, e.value))
            .unwrap_or(self.entries.len());
        self.entries.insert(pos, entry);
        self.entries.split_off(self.k.min(self.entries.len()))
    }

    /// Kept entries, best first.
    pub fn entries(&self) -> &[BestEntry] {
        &self.entries
    }

    /// The best entry.
    pub fn best(&self) -> Option<&BestEntry> {
        self.entries.first()
    }

    /// Whether a file name is taken by a kept entry.
    pub fn has_file(&self, file: &str) -> bool {
        self.entries.iter().any(|e| e.file == file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(step: u64, value: f64) -> BestEntry {
        BestEntry {
            step,
            value,
            file: format!("f{step}"),
            set: format!("s{step}"),
        }
    }

    #[test]
    fn keeps_the_k_best_and_reports_pushed_out() {
        let mut t = TopK::new(2, MetricMode::Min, vec![]);
        assert!(t.insert(e(1, 0.5)).is_empty());
        assert!(t.insert(e(2, 0.7)).is_empty());
        assert_eq!(t.insert(e(3, 0.6)), vec![e(2, 0.7)]);
        assert_eq!(t.insert(e(4, 0.9)), vec![e(4, 0.9)]);
        // A tie with the worst does not enter.
        assert_eq!(t.insert(e(5, 0.6)), vec![e(5, 0.6)]);
        assert_eq!(t.insert(e(6, f64::NAN)).len(), 1);
        assert_eq!(t.entries(), &[e(1, 0.5), e(3, 0.6)]);
        let mut m = TopK::new(1, MetricMode::Max, vec![e(1, 80.0)]);
        assert_eq!(m.insert(e(2, 85.0)), vec![e(1, 80.0)]);
        assert_eq!(m.best(), Some(&e(2, 85.0)));
    }
}
