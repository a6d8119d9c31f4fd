//! Token classification (NER and the like): words and per-word labels,
//! windows that split long sentences at word boundaries (no word is lost),
//! NeMo's loss masking options, and word-level scores.
//!
//! Loss masking follows NeMo: every sub-token of a word carries the word's
//! label; with `ignoreExtraTokens` only a word's first sub-token counts in
//! the loss; `[CLS]`/`[SEP]` carry the pad label and count unless
//! `ignoreStartEnd`. Predictions and metrics are per word (the prediction at
//! a word's first sub-token), over every label seen in the gold labels or the
//! predictions, like scikit-learn's `classification_report`.

use std::path::{Path, PathBuf};

use crds::{Split, TokenClassificationTask};

use crate::comm::ProcessGroup;
use crate::data::predictions::write_token_predictions;
use crate::data::token_classification::{
    LabelIds, TokenClassificationFeaturizer, TokenExample, TokenFeature, read_token_classification,
    word_predictions,
};
use crate::model::{BertTaskModel, HeadOutput};
use crate::scores::ClassificationReport;
use crate::tokenizer::BertTokenizer;
use crate::train::{TrainError, TrainResult};

use super::errors::{at_line, data_error, in_file, spec_field};
use super::evaluation::{Evaluation, Predictions, argmax_last, forward_all, ids};
use super::files::{SplitFiles, Splits, split_name};

/// One split: sentences, their gold label ids and their windows.
#[derive(Debug)]
pub(crate) struct TokenSplit {
    text_file: PathBuf,
    examples: Vec<TokenExample>,
    /// Gold label id of every word (None: the split has no labels file).
    gold: Option<Vec<Vec<usize>>>,
    /// Windows of the non-empty sentences, in sentence order.
    pub features: Vec<TokenFeature>,
}

/// The token classification task data.
#[derive(Debug)]
pub(crate) struct TokenClassification {
    labels: LabelIds,
    pub splits: Splits<TokenSplit>,
}

impl TokenClassification {
    /// Reads and featurizes every split present.
    pub fn load(
        options: &TokenClassificationTask,
        max_seq_length: usize,
        files: &SplitFiles,
        tokenizer: &BertTokenizer,
    ) -> TrainResult<Self> {
        const LABELS: &str = "spec.task.tokenClassification.labels";
        if options.labels.first() != Some(&options.pad_label) {
            return Err(spec_field(
                LABELS,
                format!(
                    "must start with the pad label {:?} (its id is 0)",
                    options.pad_label
                ),
            ));
        }
        let labels = LabelIds::from_names(options.labels.clone())
            .map_err(|e| spec_field(LABELS, e.to_string()))?;
        let featurizer = TokenClassificationFeaturizer::new(tokenizer, max_seq_length)
            .map_err(|e| spec_field("spec.task.maxSeqLength", e.to_string()))?;
        let splits = Splits::load(files, |split, text_file| {
            let labels_file = files.labels(split);
            if labels_file.is_none() && split != Split::Test {
                return Err(spec_field(
                    &format!("spec.data.{}Labels", split_name(split)),
                    format!(
                        "is required: TokenClassification reads the {} split's labels from a file next to {}",
                        split_name(split),
                        text_file.display()
                    ),
                ));
            }
            let examples = read_token_classification(text_file, labels_file).map_err(data_error)?;
            if examples.iter().all(|e| e.words.is_empty()) {
                return Err(in_file(text_file, "holds no word"));
            }
            let gold = match labels_file {
                Some(lf) => Some(gold_ids(&examples, &labels, lf)?),
                None => None,
            };
            let mut features = featurizer
                .featurize_all(&examples, &labels)
                .map_err(data_error)?;
            features.retain(|f| !f.word_starts.is_empty());
            for f in &mut features {
                apply_loss_policy(
                    f,
                    gold.is_some(),
                    options.ignore_extra_tokens,
                    options.ignore_start_end,
                );
            }
            Ok(TokenSplit {
                text_file: text_file.to_path_buf(),
                examples,
                gold,
                features,
            })
        })?;
        Ok(Self { labels, splits })
    }

    /// Label names in id order.
    pub fn label_names(&self) -> &[String] {
        self.labels.names()
    }

    /// Runs the model over a split and scores its word predictions.
    pub fn evaluate(
        &self,
        model: &BertTaskModel,
        split: Split,
        batch_size: usize,
        pad_id: u32,
        dp: &dyn ProcessGroup,
    ) -> TrainResult<Evaluation> {
        let s = self.splits.require(split)?;
        let mut token_preds: Vec<Vec<usize>> = Vec::with_capacity(s.features.len());
        let forwarded = forward_all(
            model,
            &s.features,
            batch_size,
            pad_id,
            s.gold.is_some(),
            dp,
            |range, out| {
                let HeadOutput::TokenLogits(logits) = out else {
                    return Err(TrainError::InvalidInput(
                        "the model's head is not a token classification head".into(),
                    ));
                };
                let best = argmax_last(&logits)?;
                for (k, i) in range.enumerate() {
                    let mut row = ids(&best.get(k as i64))?;
                    row.truncate(s.features[i].input_ids.len());
                    token_preds.push(row);
                }
                Ok(())
            },
        )?;
        let words =
            word_predictions(&s.features, &token_preds, s.examples.len()).map_err(data_error)?;
        Ok(self
            .score(split, Predictions::WordLabels(words))?
            .with_forward(forwarded))
    }

    /// Scores word predictions against the split's gold labels: accuracy and
    /// macro precision / recall / F1, x100, and the classification report.
    pub fn score(&self, split: Split, predictions: Predictions) -> TrainResult<Evaluation> {
        let s = self.splits.require(split)?;
        let Predictions::WordLabels(words) = &predictions else {
            return Err(TrainError::InvalidInput(
                "token classification predictions must be one label per word".into(),
            ));
        };
        if words.len() != s.examples.len() {
            return Err(TrainError::InvalidInput(format!(
                "{} sentences predicted but {} has {}",
                words.len(),
                s.text_file.display(),
                s.examples.len()
            )));
        }
        let Some(gold) = &s.gold else {
            return Ok(Evaluation::classification(split, predictions, None));
        };
        let (mut y_true, mut y_pred) = (Vec::new(), Vec::new());
        for (i, (g, p)) in gold.iter().zip(words).enumerate() {
            if g.len() != p.len() {
                return Err(TrainError::InvalidInput(format!(
                    "{}:{}: {} words but {} predicted labels",
                    s.text_file.display(),
                    i + 1,
                    g.len(),
                    p.len()
                )));
            }
            y_true.extend_from_slice(g);
            y_pred.extend_from_slice(p);
        }
        let r = ClassificationReport::compute(&y_true, &y_pred, None, |id| {
            self.labels
                .name(id)
                .map_or_else(|| id.to_string(), str::to_string)
        })?;
        let avg = r.macro_avg;
        Ok(Evaluation::classification(
            split,
            predictions,
            Some((r, avg)),
        ))
    }

    /// Writes one line per sentence with one label per word (NeMo's labels file format).
    pub fn write_predictions(&self, predictions: &Predictions, path: &Path) -> TrainResult<()> {
        let Predictions::WordLabels(words) = predictions else {
            return Err(TrainError::InvalidInput(
                "token classification predictions must be one label per word".into(),
            ));
        };
        let names: Vec<Vec<&str>> = words
            .iter()
            .map(|s| {
                s.iter()
                    .map(|&id| self.labels.name(id).unwrap_or("?"))
                    .collect()
            })
            .collect();
        write_token_predictions(path, &names).map_err(data_error)
    }

    /// Reads a predictions file (one line per sentence, one label per word).
    pub fn read_predictions(&self, split: Split, path: &Path) -> TrainResult<Predictions> {
        let s = self.splits.require(split)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| in_file(path, format!("cannot read: {e}")))?;
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .unwrap_or(&text)
            .split('\n')
            .collect();
        let lines = if text.is_empty() { Vec::new() } else { lines };
        if lines.len() != s.examples.len() {
            return Err(in_file(
                path,
                format!(
                    "has {} lines but {} has {} sentences",
                    lines.len(),
                    s.text_file.display(),
                    s.examples.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(lines.len());
        for (i, (line, ex)) in lines.iter().zip(&s.examples).enumerate() {
            let row = line
                .split_whitespace()
                .map(|name| {
                    self.labels
                        .id(name)
                        .ok_or_else(|| at_line(path, i + 1, format!("unknown label {name:?}")))
                })
                .collect::<TrainResult<Vec<usize>>>()?;
            if row.len() != ex.words.len() {
                return Err(at_line(
                    path,
                    i + 1,
                    format!("{} labels for {} words", row.len(), ex.words.len()),
                ));
            }
            out.push(row);
        }
        Ok(Predictions::WordLabels(out))
    }
}

/// Gold label ids; an unknown label is an error naming the labels file and line.
fn gold_ids(
    examples: &[TokenExample],
    labels: &LabelIds,
    labels_file: &Path,
) -> TrainResult<Vec<Vec<usize>>> {
    examples
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let names = ex.labels.as_deref().unwrap_or_default();
            names
                .iter()
                .enumerate()
                .map(|(w, name)| {
                    labels.id(name).ok_or_else(|| {
                        at_line(
                            labels_file,
                            i + 1,
                            format!(
                                "label {name:?} of word {} ({:?}) is not in spec.task.tokenClassification.labels \
                                 [{}]; add it there or fix the labels file",
                                w + 1,
                                ex.words[w],
                                labels.names().join(", ")
                            ),
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// Sets NeMo's labels and loss mask on a featurized window: every sub-token
/// of a word gets the word's label, counted unless `ignore_extra_tokens`;
/// `[CLS]`/`[SEP]` keep the pad label (id 0), counted unless `ignore_start_end`.
fn apply_loss_policy(
    f: &mut TokenFeature,
    labeled: bool,
    ignore_extra_tokens: bool,
    ignore_start_end: bool,
) {
    if !labeled {
        return;
    }
    let sep = f.input_ids.len() - 1;
    for (k, &start) in f.word_starts.iter().enumerate() {
        let end = f.word_starts.get(k + 1).copied().unwrap_or(sep);
        let label = f.labels[start];
        for t in start + 1..end {
            f.labels[t] = label;
            f.loss_mask[t] = !ignore_extra_tokens;
        }
    }
    f.loss_mask[0] = !ignore_start_end;
    f.loss_mask[sep] = !ignore_start_end;
}
