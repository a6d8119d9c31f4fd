//! SQuAD v1.1: the JSON reader, windowed features (Hugging Face `run_qa`
//! preprocessing with NeMo's `max_query_length`) and n-best answer selection.

mod answer;
mod example;
mod feature;

pub use answer::{AnswerConfig, NBestAnswer, WindowLogits, best_answers, predictions_by_id};
pub use example::{SquadAnswer, SquadExample, parse_squad_json, read_squad_file};
pub use feature::{SquadConfig, SquadFeature, SquadFeaturizer};
