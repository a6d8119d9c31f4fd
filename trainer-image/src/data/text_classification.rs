//! Text classification in NeMo's format: a TSV file of `sentence<TAB>label_id`
//! lines. A first line whose label column is not an integer is a header and
//! is skipped (NeMo's files start with `sentence\tlabel`); label ids must lie
//! in `0..num_classes`. For prediction input a line without a TAB is a
//! sentence without a label.

use std::path::Path;

use super::error::{numbered_lines, read_text};
use super::{BatchItem, DataError, Target};
use crate::tokenizer::BertTokenizer;

/// One sentence and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    /// The sentence.
    pub text: String,
    /// Its class id (`None` in prediction input).
    pub label: Option<usize>,
    /// 1-based line in the file.
    pub line: usize,
}

/// Reads a NeMo text classification TSV. With `require_labels`, every line
/// must end in `<TAB>label_id`.
pub fn read_text_classification(
    path: &Path,
    num_classes: usize,
    require_labels: bool,
) -> Result<Vec<TextExample>, DataError> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (line, l) in numbered_lines(&text) {
        let Some((sentence, label)) = l.rsplit_once('\t') else {
            if require_labels {
                return Err(DataError::line(
                    path,
                    line,
                    "expected `sentence<TAB>label_id`, found no TAB",
                ));
            }
            out.push(TextExample {
                text: l.to_string(),
                label: None,
                line,
            });
            continue;
        };
        let label = match label.trim().parse::<i64>() {
            Ok(v) => v,
            Err(_) if line == 1 => continue, // header
            Err(_) => {
                return Err(DataError::line(
                    path,
                    line,
                    format!("label {label:?} is not an integer class id (0..{num_classes})"),
                ));
            }
        };
        if label < 0 || label as usize >= num_classes {
            return Err(DataError::line(
                path,
                line,
                format!(
                    "label {label} is outside 0..{num_classes}; set dataset.numClasses to cover every label id"
                ),
            ));
        }
        if sentence.trim().is_empty() {
            return Err(DataError::line(path, line, "the sentence is empty"));
        }
        out.push(TextExample {
            text: sentence.to_string(),
            label: Some(label as usize),
            line,
        });
    }
    if out.is_empty() {
        return Err(DataError::file(path, "holds no examples"));
    }
    Ok(out)
}

/// `[CLS] sentence [SEP]`, cut to `max_seq_length` tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFeature {
    /// Index of the example.
    pub example_index: usize,
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// All zeros.
    pub token_type_ids: Vec<u32>,
    /// Class id (`None` for prediction).
    pub label: Option<usize>,
}

impl BatchItem for TextFeature {
    fn input_ids(&self) -> &[u32] {
        &self.input_ids
    }
    fn token_type_ids(&self) -> &[u32] {
        &self.token_type_ids
    }
    fn target(&self) -> Target<'_> {
        self.label.map_or(Target::None, Target::Class)
    }
}

/// Features of all examples, each cut to `max_seq_length` tokens (the end of
/// a longer sentence is dropped, as NeMo does).
pub fn text_features(
    tokenizer: &BertTokenizer,
    examples: &[TextExample],
    max_seq_length: usize,
) -> Result<Vec<TextFeature>, DataError> {
    if max_seq_length < 2 {
        return Err(DataError::Config(format!(
            "max_seq_length {max_seq_length} is below 2"
        )));
    }
    examples
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let e = tokenizer.encode_truncated(&ex.text, max_seq_length)?;
            Ok(TextFeature {
                example_index: i,
                token_type_ids: vec![0; e.ids.len()],
                input_ids: e.ids,
                label: ex.label,
            })
        })
        .collect()
}
