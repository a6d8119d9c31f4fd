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

/// How [`read_labeled_tsv`] resolved a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// The class id.
    Id(usize),
    /// The text is not a label at all (on the first line: a header); the
    /// message says what a label must be.
    NotALabel(String),
    /// A label, but an unusable one; the message names the fix.
    Invalid(String),
}

/// Reads a NeMo text classification TSV. With `require_labels`, every line
/// must end in `<TAB>label_id`.
pub fn read_text_classification(
    path: &Path,
    num_classes: usize,
    require_labels: bool,
) -> Result<Vec<TextExample>, DataError> {
    read_labeled_tsv(path, false, require_labels, |label| {
        match label.trim().parse::<i64>() {
            Err(_) => Label::NotALabel(format!(
                "label {label:?} is not an integer class id (0..{num_classes})"
            )),
            Ok(v) if v < 0 || v as usize >= num_classes => Label::Invalid(format!(
                "label {v} is outside 0..{num_classes}; set dataset.numClasses to cover every \
                 label id"
            )),
            Ok(v) => Label::Id(v as usize),
        }
    })
}

/// Reads `sentence<TAB>label` lines (the sentence may itself hold TABs),
/// resolving each label with `resolve`. With `header` the first line is
/// skipped; without it a first line whose label is [`Label::NotALabel`] is
/// a header too. A line without a TAB is an unlabeled sentence (prediction
/// input) unless `require_labels`.
pub fn read_labeled_tsv(
    path: &Path,
    header: bool,
    require_labels: bool,
    resolve: impl Fn(&str) -> Label,
) -> Result<Vec<TextExample>, DataError> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (line, l) in numbered_lines(&text) {
        if header && line == 1 {
            continue;
        }
        let (sentence, label) = match l.rsplit_once('\t') {
            Some((sentence, label)) => match resolve(label) {
                Label::Id(id) => (sentence, Some(id)),
                Label::NotALabel(_) if line == 1 => continue, // header
                Label::NotALabel(problem) | Label::Invalid(problem) => {
                    return Err(DataError::line(path, line, problem));
                }
            },
            None if require_labels => {
                return Err(DataError::line(
                    path,
                    line,
                    "expected `sentence<TAB>label`, found no TAB",
                ));
            }
            None => (l, None),
        };
        if sentence.trim().is_empty() {
            return Err(DataError::line(path, line, "the sentence is empty"));
        }
        out.push(TextExample {
            text: sentence.to_string(),
            label,
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
