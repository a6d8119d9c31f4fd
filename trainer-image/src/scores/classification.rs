//! Per-class precision / recall / F1 with micro, macro and weighted averages
//! and accuracy, printed like scikit-learn's `classification_report` (NeMo
//! uses it, with 4 digits, for text and word-level token classification).

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Scores of one class (or one average).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassScores {
    /// Precision (0 when nothing was predicted as this class).
    pub precision: f64,
    /// Recall (0 when the class has no true example).
    pub recall: f64,
    /// F1 (0 when precision + recall is 0).
    pub f1: f64,
    /// Number of true examples.
    pub support: usize,
}

/// A classification report over a fixed list of label ids.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassificationReport {
    /// The label ids reported, in report order.
    pub labels: Vec<usize>,
    /// Their display names.
    pub names: Vec<String>,
    /// Scores per label, same order as `labels`.
    pub per_class: Vec<ClassScores>,
    /// Micro average over `labels` (equals accuracy when `labels` covers every
    /// label seen in the data).
    pub micro: ClassScores,
    /// Unweighted mean over `labels`.
    pub macro_avg: ClassScores,
    /// Mean weighted by support.
    pub weighted: ClassScores,
    /// Fraction of examples predicted right (over all examples).
    pub accuracy: f64,
    /// Whether the micro average is the accuracy (scikit-learn then prints an
    /// `accuracy` row instead of `micro avg`).
    pub micro_is_accuracy: bool,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Why a classification report cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassificationReportError {
    /// Gold labels and predictions do not pair up (a task's evaluation bug
    /// or a truncated prediction set).
    #[error("classification report: {labels} true labels but {predictions} predictions")]
    LengthMismatch {
        /// Number of gold labels.
        labels: usize,
        /// Number of predictions.
        predictions: usize,
    },
}

impl ClassificationReport {
    /// Computes the report. `labels`: the label ids to report (`None`: every
    /// id seen in `y_true` or `y_pred`, sorted, like scikit-learn).
    /// `names(id)` gives each label's display name.
    ///
    /// Panics never; lengths that differ are an error.
    pub fn compute(
        y_true: &[usize],
        y_pred: &[usize],
        labels: Option<&[usize]>,
        names: impl Fn(usize) -> String,
    ) -> Result<Self, ClassificationReportError> {
        if y_true.len() != y_pred.len() {
            return Err(ClassificationReportError::LengthMismatch {
                labels: y_true.len(),
                predictions: y_pred.len(),
            });
        }
        let seen: BTreeSet<usize> = y_true.iter().chain(y_pred).copied().collect();
        let labels: Vec<usize> = match labels {
            Some(l) => l.to_vec(),
            None => seen.iter().copied().collect(),
        };
        let label_set: BTreeSet<usize> = labels.iter().copied().collect();
        let micro_is_accuracy = seen.is_subset(&label_set);
        let mut per_class = Vec::with_capacity(labels.len());
        let (mut tp_sum, mut pred_sum, mut true_sum) = (0usize, 0usize, 0usize);
        for &l in &labels {
            let tp = y_true
                .iter()
                .zip(y_pred)
                .filter(|(t, p)| **t == l && **p == l)
                .count();
            let predicted = y_pred.iter().filter(|p| **p == l).count();
            let support = y_true.iter().filter(|t| **t == l).count();
            tp_sum += tp;
            pred_sum += predicted;
            true_sum += support;
            let (p, r) = (ratio(tp, predicted), ratio(tp, support));
            per_class.push(ClassScores {
                precision: p,
                recall: r,
                f1: f1(p, r),
                support,
            });
        }
        let (mp, mr) = (ratio(tp_sum, pred_sum), ratio(tp_sum, true_sum));
        let micro = ClassScores {
            precision: mp,
            recall: mr,
            f1: f1(mp, mr),
            support: true_sum,
        };
        let n = per_class.len() as f64;
        let mean = |f: fn(&ClassScores) -> f64| {
            if per_class.is_empty() {
                0.0
            } else {
                per_class.iter().map(f).sum::<f64>() / n
            }
        };
        let macro_avg = ClassScores {
            precision: mean(|c| c.precision),
            recall: mean(|c| c.recall),
            f1: mean(|c| c.f1),
            support: true_sum,
        };
        let wmean = |f: fn(&ClassScores) -> f64| {
            if true_sum == 0 {
                0.0
            } else {
                per_class
                    .iter()
                    .map(|c| f(c) * c.support as f64)
                    .sum::<f64>()
                    / true_sum as f64
            }
        };
        let weighted = ClassScores {
            precision: wmean(|c| c.precision),
            recall: wmean(|c| c.recall),
            f1: wmean(|c| c.f1),
            support: true_sum,
        };
        let correct = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
        Ok(Self {
            names: labels.iter().map(|&l| names(l)).collect(),
            labels,
            per_class,
            micro,
            macro_avg,
            weighted,
            accuracy: ratio(correct, y_true.len()),
            micro_is_accuracy,
        })
    }

    /// The text scikit-learn's `classification_report(..., digits=digits)` prints.
    pub fn to_text(&self, digits: usize) -> String {
        let width = self
            .names
            .iter()
            .map(|n| n.chars().count())
            .chain([12, digits])
            .max()
            .unwrap_or(12);
        let mut s = String::new();
        let _ = write!(s, "{:>width$} ", "");
        for h in ["precision", "recall", "f1-score", "support"] {
            let _ = write!(s, " {h:>9}");
        }
        s.push_str("\n\n");
        let row = |s: &mut String, name: &str, c: &ClassScores| {
            let _ = writeln!(
                s,
                "{name:>width$}  {:>9.digits$} {:>9.digits$} {:>9.digits$} {:>9}",
                c.precision, c.recall, c.f1, c.support
            );
        };
        for (name, c) in self.names.iter().zip(&self.per_class) {
            row(&mut s, name, c);
        }
        s.push('\n');
        if self.micro_is_accuracy {
            let _ = writeln!(
                s,
                "{:>width$}  {:>9} {:>9} {:>9.digits$} {:>9}",
                "accuracy", "", "", self.micro.f1, self.micro.support
            );
        } else {
            row(&mut s, "micro avg", &self.micro);
        }
        row(&mut s, "macro avg", &self.macro_avg);
        row(&mut s, "weighted avg", &self.weighted);
        s
    }
}
