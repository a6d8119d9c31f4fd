//! Token classification in NeMo's format: `text.txt` (one sentence per line,
//! words separated by spaces) and `labels.txt` (one label per word).

mod feature;
mod labels;
mod reader;

pub use feature::{TokenClassificationFeaturizer, TokenFeature, word_predictions};
pub use labels::LabelIds;
pub use reader::{TokenExample, read_token_classification};
