//! Sentence classification: text classification and relation extraction
//! (NeMo's BioMegatron recipe: classification of entity-marked sentences).
//!
//! Both read TSV lines `sentence<TAB>label`, where the label is a class id
//! (`0..n`) or, when the spec names the classes, a class name. A class id
//! indexes `numClasses` / `classNames` / relation `classes`: for NeMo's
//! preprocessed ChemProt files (ids from `label_mapping.tsv`) list the
//! classes in that file's id order. With
//! `spec.data.tsvHeader` the first line is skipped; without it a first line
//! whose label is neither is taken as a header too (NeMo's files start with
//! `sentence\tlabel`). A test file may leave out every label (prediction only).
//!
//! Scores (x100): text classification reports accuracy and the macro average
//! of precision / recall / F1 over the classes seen in the gold labels or
//! the predictions (scikit-learn's default); relation extraction reports
//! accuracy and the micro average over every class except
//! `negativeClass` (ChemProt's evaluation), or over all classes without one.

use std::path::{Path, PathBuf};

use crds::Split;

use crate::comm::ProcessGroup;
use crate::data::predictions::write_class_predictions;
use crate::data::text_classification::{
    Label, TextExample, TextFeature, read_labeled_tsv, text_features,
};
use crate::model::{BertTaskModel, HeadOutput};
use crate::scores::ClassificationReport;
use crate::tokenizer::BertTokenizer;
use crate::train::{TrainError, TrainResult};

use super::errors::{at_line, data_error, in_file, spec_field};
use super::evaluation::{Evaluation, Predictions, argmax_last, forward_all, ids};
use super::files::{SplitFiles, Splits};

/// How the classes are scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scoring {
    /// Macro average over the classes seen (text classification).
    Macro,
    /// Micro average over every class but the negative one (relation extraction).
    MicroWithoutNegative(Option<usize>),
}

/// The classes of a sentence classification task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classes {
    /// Display name of each id (the id itself when unnamed).
    pub names: Vec<String>,
    /// Whether the spec named the classes (labels may then be names).
    pub named: bool,
    /// How to score.
    pub scoring: Scoring,
}

impl Classes {
    /// The id of a label: a class id or a class name. Relation extraction
    /// (whose data holds names) tries names first, text classification
    /// (whose data holds ids) ids first.
    fn id_of(&self, label: &str) -> Option<usize> {
        let label = label.trim();
        let by_id = || {
            label
                .parse::<usize>()
                .ok()
                .filter(|id| *id < self.names.len())
        };
        let by_name = || {
            self.named
                .then(|| self.names.iter().position(|n| n == label))
                .flatten()
        };
        if self.scoring == Scoring::Macro {
            by_id().or_else(by_name)
        } else {
            by_name().or_else(by_id)
        }
    }

    fn expected(&self) -> String {
        let ids = format!("a class id 0..{}", self.names.len());
        if self.named {
            format!("{ids} or a class name ({})", self.names.join(", "))
        } else {
            ids
        }
    }
}

/// One split: sentences, their features, and whether they carry labels.
#[derive(Debug)]
pub(crate) struct SentenceSplit {
    file: PathBuf,
    examples: Vec<TextExample>,
    /// One feature per sentence.
    pub features: Vec<TextFeature>,
    labeled: bool,
}

/// Text classification or relation extraction data.
#[derive(Debug)]
pub(crate) struct SentenceClassification {
    pub classes: Classes,
    pub splits: Splits<SentenceSplit>,
}

impl SentenceClassification {
    /// Reads and featurizes every split present. `markers` (relation
    /// extraction) are counted: sentences without them are reported in the
    /// log, and a split where no sentence has them all is invalid input.
    pub fn load(
        classes: Classes,
        tsv_header: bool,
        markers: &[String],
        max_seq_length: usize,
        files: &SplitFiles,
        tokenizer: &BertTokenizer,
    ) -> TrainResult<Self> {
        for m in markers {
            if tokenizer.token_to_id(m).is_none() {
                tracing::info!(
                    marker = %m,
                    "entity marker is not a vocabulary token; it is tokenized into word pieces"
                );
            }
        }
        let splits = Splits::load(files, |split, path| {
            let examples = read_tsv(path, &classes, tsv_header)?;
            let labeled = examples[0].label.is_some();
            if let Some(e) = examples.iter().find(|e| e.label.is_some() != labeled) {
                let problem = if labeled {
                    format!(
                        "no label; expected `sentence<TAB>label` with {}",
                        classes.expected()
                    )
                } else {
                    "has a label but the first sentence has none; label every line or none".into()
                };
                return Err(at_line(path, e.line, problem));
            }
            if !labeled && split != Split::Test {
                return Err(at_line(
                    path,
                    examples[0].line,
                    format!(
                        "no label; every line must be `sentence<TAB>label` with {}",
                        classes.expected()
                    ),
                ));
            }
            if !markers.is_empty() {
                let without = examples
                    .iter()
                    .filter(|e| !markers.iter().all(|m| e.text.contains(m.as_str())))
                    .count();
                if without == examples.len() {
                    return Err(in_file(
                        path,
                        format!(
                            "no sentence carries every entity marker {markers:?}; replace the \
                             entity mentions with the markers (ChemProt style) or fix \
                             spec.task.relationExtraction.entityMarkers"
                        ),
                    ));
                }
                if without > 0 {
                    tracing::warn!(
                        file = %path.display(),
                        without,
                        total = examples.len(),
                        "sentences lack one of the entity markers {markers:?}"
                    );
                }
            }
            let features =
                text_features(tokenizer, &examples, max_seq_length).map_err(data_error)?;
            Ok(SentenceSplit {
                file: path.to_path_buf(),
                examples,
                features,
                labeled,
            })
        })?;
        Ok(Self { classes, splits })
    }

    /// Runs the model over a split and scores its classes.
    pub fn evaluate(
        &self,
        model: &BertTaskModel,
        split: Split,
        batch_size: usize,
        pad_id: u32,
        dp: &dyn ProcessGroup,
    ) -> TrainResult<Evaluation> {
        let s = self.splits.require(split)?;
        let mut classes = Vec::with_capacity(s.features.len());
        let forwarded = forward_all(
            model,
            &s.features,
            batch_size,
            pad_id,
            s.labeled,
            dp,
            |_, out| {
                let HeadOutput::SequenceLogits(logits) = out else {
                    return Err(TrainError::InvalidInput(
                        "the model's head is not a sequence classification head".into(),
                    ));
                };
                classes.extend(ids(&argmax_last(&logits)?)?);
                Ok(())
            },
        )?;
        Ok(self
            .score(split, Predictions::Classes(classes))?
            .with_forward(forwarded))
    }

    /// Scores class predictions against the split's labels.
    pub fn score(&self, split: Split, predictions: Predictions) -> TrainResult<Evaluation> {
        let s = self.splits.require(split)?;
        let Predictions::Classes(pred) = &predictions else {
            return Err(TrainError::InvalidInput(
                "classification predictions must be one class per sentence".into(),
            ));
        };
        if pred.len() != s.examples.len() {
            return Err(TrainError::InvalidInput(format!(
                "{} classes predicted but {} has {} sentences",
                pred.len(),
                s.file.display(),
                s.examples.len()
            )));
        }
        if !s.labeled {
            return Ok(Evaluation::classification(split, predictions, None));
        }
        let gold: Vec<usize> = s.examples.iter().filter_map(|e| e.label).collect();
        let name = |id: usize| {
            self.classes
                .names
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.to_string())
        };
        let scored = match self.classes.scoring {
            Scoring::Macro => {
                let r = ClassificationReport::compute(&gold, pred, None, name)?;
                let avg = r.macro_avg;
                (r, avg)
            }
            Scoring::MicroWithoutNegative(negative) => {
                let kept: Vec<usize> = (0..self.classes.names.len())
                    .filter(|&c| Some(c) != negative)
                    .collect();
                let r = ClassificationReport::compute(&gold, pred, Some(&kept), name)?;
                let avg = r.micro;
                (r, avg)
            }
        };
        Ok(Evaluation::classification(split, predictions, Some(scored)))
    }

    /// Writes one label per line: the class name, or the class id when the
    /// classes are unnamed.
    pub fn write_predictions(&self, predictions: &Predictions, path: &Path) -> TrainResult<()> {
        let Predictions::Classes(pred) = predictions else {
            return Err(TrainError::InvalidInput(
                "classification predictions must be one class per sentence".into(),
            ));
        };
        let names: Vec<&str> = pred
            .iter()
            .map(|&c| self.classes.names.get(c).map_or("?", String::as_str))
            .collect();
        write_class_predictions(path, &names).map_err(data_error)
    }

    /// Reads a predictions file (one class name or id per line).
    pub fn read_predictions(&self, split: Split, path: &Path) -> TrainResult<Predictions> {
        let s = self.splits.require(split)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| in_file(path, format!("cannot read: {e}")))?;
        let pred = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                self.classes.id_of(l).ok_or_else(|| {
                    at_line(
                        path,
                        i + 1,
                        format!("{l:?} is not {}", self.classes.expected()),
                    )
                })
            })
            .collect::<TrainResult<Vec<usize>>>()?;
        if pred.len() != s.examples.len() {
            return Err(in_file(
                path,
                format!(
                    "has {} lines but {} has {} sentences",
                    pred.len(),
                    s.file.display(),
                    s.examples.len()
                ),
            ));
        }
        Ok(Predictions::Classes(pred))
    }
}

/// Reads `sentence<TAB>label` lines (a line without a TAB is an unlabeled sentence).
fn read_tsv(path: &Path, classes: &Classes, header: bool) -> TrainResult<Vec<TextExample>> {
    read_labeled_tsv(path, header, false, |label| match classes.id_of(label) {
        Some(id) => Label::Id(id),
        None => Label::NotALabel(format!(
            "label {label:?} is not {}; fix the label or the classes in spec.task",
            classes.expected()
        )),
    })
    .map_err(data_error)
}

/// The classes of a text classification spec.
pub(crate) fn text_classes(t: &crds::TextClassificationTask) -> TrainResult<Classes> {
    let n = usize::try_from(t.num_classes)
        .ok()
        .filter(|n| *n >= 2)
        .ok_or_else(|| {
            spec_field(
                "spec.task.textClassification.numClasses",
                format!("must be at least 2, got {}", t.num_classes),
            )
        })?;
    let (names, named) = match &t.class_names {
        Some(names) if names.len() != n => {
            return Err(spec_field(
                "spec.task.textClassification.classNames",
                format!("has {} names but numClasses is {n}", names.len()),
            ));
        }
        Some(names) => (names.clone(), true),
        None => ((0..n).map(|i| i.to_string()).collect(), false),
    };
    unique(&names, "spec.task.textClassification.classNames")?;
    Ok(Classes {
        names,
        named,
        scoring: Scoring::Macro,
    })
}

/// The classes of a relation extraction spec.
pub(crate) fn relation_classes(t: &crds::RelationExtractionTask) -> TrainResult<Classes> {
    const FIELD: &str = "spec.task.relationExtraction.classes";
    if t.classes.len() < 2 {
        return Err(spec_field(FIELD, "list at least 2 classes"));
    }
    unique(&t.classes, FIELD)?;
    let negative = match &t.negative_class {
        None => None,
        Some(n) => Some(t.classes.iter().position(|c| c == n).ok_or_else(|| {
            spec_field(
                "spec.task.relationExtraction.negativeClass",
                format!("{n:?} is not one of the classes {:?}", t.classes),
            )
        })?),
    };
    Ok(Classes {
        names: t.classes.clone(),
        named: true,
        scoring: Scoring::MicroWithoutNegative(negative),
    })
}

fn unique(names: &[String], field: &str) -> TrainResult<()> {
    for (i, n) in names.iter().enumerate() {
        if n.trim().is_empty() || n.contains(['\t', '\n']) {
            return Err(spec_field(
                field,
                format!("name {n:?} is empty or holds a TAB"),
            ));
        }
        if names[..i].contains(n) {
            return Err(spec_field(field, format!("{n:?} is listed twice")));
        }
    }
    Ok(())
}
