//! Prediction output files: SQuAD `{"question id": "answer text"}` JSON,
//! one label per line for (text / relation) classification, and one line of
//! space-separated labels per sentence, one per input word, for token
//! classification.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::DataError;

fn write(path: &Path, text: String) -> Result<(), DataError> {
    std::fs::write(path, text).map_err(|source| DataError::Read {
        file: path.to_path_buf(),
        source,
    })
}

/// Writes the SQuAD predictions file (keys sorted for stable output).
pub fn write_squad_predictions(
    path: &Path,
    predictions: &HashMap<String, String>,
) -> Result<(), DataError> {
    let sorted: BTreeMap<&String, &String> = predictions.iter().collect();
    let text =
        serde_json::to_string_pretty(&sorted).map_err(|e| DataError::file(path, e.to_string()))?;
    write(path, text + "\n")
}

/// Writes one label name per line.
pub fn write_class_predictions(path: &Path, labels: &[&str]) -> Result<(), DataError> {
    let mut s = labels.join("\n");
    s.push('\n');
    write(path, s)
}

/// Writes one line per sentence with one label per word, separated by spaces
/// (the format of NeMo's `labels.txt`, aligned with `text.txt`).
pub fn write_token_predictions(path: &Path, sentences: &[Vec<&str>]) -> Result<(), DataError> {
    let mut s = String::new();
    for labels in sentences {
        s.push_str(&labels.join(" "));
        s.push('\n');
    }
    write(path, s)
}
