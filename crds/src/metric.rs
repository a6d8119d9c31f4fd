//! Names of the validation metrics the trainer reports and that may be monitored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A validation metric (computed on `spec.data.validation`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Metric {
    /// Mean loss over the validation set (every task).
    #[serde(rename = "val_loss")]
    ValLoss,
    /// SQuAD exact match x100 (QuestionAnswering only).
    #[serde(rename = "val_exact_match")]
    ValExactMatch,
    /// SQuAD token F1 x100 (QA); macro F1 over labels (token/text classification); micro F1
    /// without the negative class (relation extraction).
    #[serde(rename = "val_f1")]
    ValF1,
    /// Fraction of correct predictions x100 (classification tasks).
    #[serde(rename = "val_accuracy")]
    ValAccuracy,
    /// Precision x100, averaged like val_f1 (classification tasks).
    #[serde(rename = "val_precision")]
    ValPrecision,
    /// Recall x100, averaged like val_f1 (classification tasks).
    #[serde(rename = "val_recall")]
    ValRecall,
}

/// Whether a smaller or a larger metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MetricMode {
    /// Smaller is better (losses).
    #[serde(rename = "min")]
    Min,
    /// Larger is better (scores).
    #[serde(rename = "max")]
    Max,
}

impl Metric {
    /// The name used in YAML, status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValLoss => "val_loss",
            Self::ValExactMatch => "val_exact_match",
            Self::ValF1 => "val_f1",
            Self::ValAccuracy => "val_accuracy",
            Self::ValPrecision => "val_precision",
            Self::ValRecall => "val_recall",
        }
    }

    /// min for the loss, max for scores.
    pub fn default_mode(self) -> MetricMode {
        match self {
            Self::ValLoss => MetricMode::Min,
            _ => MetricMode::Max,
        }
    }

    /// True when `candidate` beats `best` under `mode`.
    pub fn improves(mode: MetricMode, candidate: f64, best: f64) -> bool {
        match mode {
            MetricMode::Min => candidate < best,
            MetricMode::Max => candidate > best,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_modes() {
        assert_eq!(
            serde_json::to_value(Metric::ValExactMatch).unwrap(),
            "val_exact_match"
        );
        assert_eq!(Metric::ValLoss.default_mode(), MetricMode::Min);
        assert_eq!(Metric::ValF1.default_mode(), MetricMode::Max);
        assert!(Metric::improves(MetricMode::Min, 0.3, 0.4));
        assert!(!Metric::improves(MetricMode::Max, 0.3, 0.4));
    }
}
