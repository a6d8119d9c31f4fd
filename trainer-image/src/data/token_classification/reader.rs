//! Reading `text.txt` and `labels.txt`.

use std::path::Path;

use super::super::DataError;
use super::super::error::{numbered_lines, read_text};

/// One sentence: its words and, for training/evaluation, one label per word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExample {
    /// Words (split on white space).
    pub words: Vec<String>,
    /// Labels, one per word.
    pub labels: Option<Vec<String>>,
}

/// Reads sentences and (when `labels_file` is given) their labels; a label
/// count that differs from the word count, or a line count that differs
/// between the files, is an error naming the line. An empty line is an
/// empty sentence (kept, so predictions stay aligned with the input lines).
pub fn read_token_classification(
    text_file: &Path,
    labels_file: Option<&Path>,
) -> Result<Vec<TokenExample>, DataError> {
    let text = read_text(text_file)?;
    let mut examples: Vec<TokenExample> = numbered_lines(&text)
        .map(|(_, l)| TokenExample {
            words: l.split_whitespace().map(str::to_string).collect(),
            labels: None,
        })
        .collect();
    let Some(labels_file) = labels_file else {
        return Ok(examples);
    };
    let labels = read_text(labels_file)?;
    let mut n = 0;
    for (line, l) in numbered_lines(&labels) {
        n = line;
        let Some(ex) = examples.get_mut(line - 1) else {
            return Err(DataError::line(
                labels_file,
                line,
                format!(
                    "{} has only {} lines; the files must have one line per sentence",
                    text_file.display(),
                    line - 1
                ),
            ));
        };
        let labs: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        if labs.len() != ex.words.len() {
            return Err(DataError::line(
                labels_file,
                line,
                format!(
                    "{} labels for the {} words of {}:{line}; give exactly one label per word",
                    labs.len(),
                    ex.words.len(),
                    text_file.display()
                ),
            ));
        }
        ex.labels = Some(labs);
    }
    if n != examples.len() {
        return Err(DataError::line(
            labels_file,
            n + 1,
            format!(
                "missing: {} has {} lines but this file has {n}",
                text_file.display(),
                examples.len()
            ),
        ));
    }
    Ok(examples)
}
