//! The tasks' official scores: SQuAD v1.1 exact match / F1 (evaluate-v1.1.py)
//! and sklearn-style classification reports (text and token classification).
//! (Prometheus metrics are `progress::metrics`.)

mod classification;
mod squad;

pub use classification::{ClassScores, ClassificationReport, ClassificationReportError};
pub use squad::{SquadScores, exact_match, f1_score, normalize_answer, squad_evaluate};
