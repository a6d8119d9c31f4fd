//! Extractive question answering (SQuAD v1.1): windowed features, answers
//! chosen from the n-best start/end logits of all windows of a question,
//! exact match and F1 as the official script computes them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crds::{QuestionAnsweringTask, Split};

use crate::comm::ProcessGroup;
use crate::data::predictions::write_squad_predictions;
use crate::data::squad::{
    AnswerConfig, SquadConfig, SquadExample, SquadFeature, SquadFeaturizer, predictions_by_id,
    read_squad_file,
};
use crate::model::{BertTaskModel, HeadOutput};
use crate::scores::squad_evaluate;
use crate::tokenizer::BertTokenizer;
use crate::train::{TrainError, TrainResult};

use super::errors::{data_error, in_file, spec_field};
use super::evaluation::{Evaluation, Predictions, forward_all, row_f32};
use super::files::{SplitFiles, Splits, metric_prefix, split_name};

/// One split: questions, their windows, and the ground-truth answer texts.
#[derive(Debug)]
pub(crate) struct QaSplit {
    file: PathBuf,
    examples: Vec<SquadExample>,
    /// Windows, in example order.
    pub features: Vec<SquadFeature>,
    truths: Vec<Vec<String>>,
    labeled: bool,
}

/// The question answering task data.
#[derive(Debug)]
pub(crate) struct QuestionAnswering {
    answer: AnswerConfig,
    pub splits: Splits<QaSplit>,
}

impl QuestionAnswering {
    /// Reads and featurizes every split present.
    pub fn load(
        options: &QuestionAnsweringTask,
        max_seq_length: usize,
        files: &SplitFiles,
        tokenizer: &BertTokenizer,
    ) -> TrainResult<Self> {
        let positive = |field: &str, v: i64| -> TrainResult<usize> {
            usize::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| spec_field(field, format!("must be at least 1, got {v}")))
        };
        let config = SquadConfig {
            max_seq_length,
            doc_stride: positive("spec.task.questionAnswering.docStride", options.doc_stride)?,
            max_query_length: positive(
                "spec.task.questionAnswering.maxQueryLength",
                options.max_query_length,
            )?,
        };
        let answer = AnswerConfig {
            n_best: positive("spec.task.questionAnswering.nBestSize", options.n_best_size)?,
            max_answer_length: positive(
                "spec.task.questionAnswering.maxAnswerLength",
                options.max_answer_length,
            )?,
        };
        let featurizer = SquadFeaturizer::new(tokenizer, config)
            .map_err(|e| spec_field("spec.task", e.to_string()))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let splits = Splits::load(files, |split, path| {
            let examples = read_squad_file(path).map_err(data_error)?;
            if examples.is_empty() {
                return Err(in_file(path, "holds no question"));
            }
            let unanswered = examples.iter().find(|e| e.answers.is_empty());
            let labeled = match (split, unanswered) {
                (_, None) => true,
                (Split::Test, Some(_)) if examples.iter().all(|e| e.answers.is_empty()) => false,
                (_, Some(e)) => {
                    return Err(in_file(
                        path,
                        format!(
                            "question id {:?} has no answer; every question of the {} split needs \
                             at least one (a test file may instead leave out all answers to only predict)",
                            e.id,
                            split_name(split)
                        ),
                    ));
                }
            };
            let features = featurizer
                .featurize_all(&examples, threads)
                .map_err(data_error)?;
            let truths = examples
                .iter()
                .map(|e| e.answers.iter().map(|a| a.text.clone()).collect())
                .collect();
            Ok(QaSplit {
                file: path.to_path_buf(),
                examples,
                features,
                truths,
                labeled,
            })
        })?;
        Ok(Self { answer, splits })
    }

    /// Runs the model over a split and scores its answers.
    pub fn evaluate(
        &self,
        model: &BertTaskModel,
        split: Split,
        batch_size: usize,
        pad_id: u32,
        dp: &dyn ProcessGroup,
    ) -> TrainResult<Evaluation> {
        let s = self.splits.require(split)?;
        let mut logits: Vec<(Vec<f32>, Vec<f32>)> = Vec::with_capacity(s.features.len());
        let forwarded = forward_all(
            model,
            &s.features,
            batch_size,
            pad_id,
            s.labeled,
            dp,
            |range, out| {
                let HeadOutput::Span {
                    start_logits,
                    end_logits,
                } = out
                else {
                    return Err(TrainError::InvalidInput(
                        "the model's head is not a question answering (span) head".into(),
                    ));
                };
                for (k, i) in range.enumerate() {
                    let n = s.features[i].input_ids.len();
                    let mut st = row_f32(&start_logits, k)?;
                    let mut en = row_f32(&end_logits, k)?;
                    st.truncate(n);
                    en.truncate(n);
                    logits.push((st, en));
                }
                Ok(())
            },
        )?;
        let answers = predictions_by_id(&s.examples, &s.features, &logits, self.answer);
        Ok(self
            .score(split, Predictions::Answers(answers.into_iter().collect()))?
            .with_forward(forwarded))
    }

    /// Scores answers against the split's ground truths (exact match and F1 x100).
    pub fn score(&self, split: Split, predictions: Predictions) -> TrainResult<Evaluation> {
        let s = self.splits.require(split)?;
        let Predictions::Answers(answers) = &predictions else {
            return Err(TrainError::InvalidInput(
                "question answering predictions must be answers by question id".into(),
            ));
        };
        let mut metrics = BTreeMap::new();
        if s.labeled {
            let by_id: HashMap<String, String> = answers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let scores = squad_evaluate(
                s.examples
                    .iter()
                    .zip(&s.truths)
                    .map(|(e, t)| (e.id.as_str(), t.as_slice())),
                &by_id,
            );
            let p = metric_prefix(split);
            metrics.insert(format!("{p}_exact_match"), scores.exact_match);
            metrics.insert(format!("{p}_f1"), scores.f1);
        }
        Ok(Evaluation {
            split,
            metrics,
            report: None,
            predictions,
            batches_run: 0,
        })
    }

    /// Writes `{"question id": "answer"}` JSON.
    pub fn write_predictions(predictions: &Predictions, path: &Path) -> TrainResult<()> {
        let Predictions::Answers(answers) = predictions else {
            return Err(TrainError::InvalidInput(
                "question answering predictions must be answers by question id".into(),
            ));
        };
        let map: HashMap<String, String> = answers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        write_squad_predictions(path, &map).map_err(data_error)
    }

    /// Reads a predictions file written by [`Self::write_predictions`] (or the
    /// official format); every question of the split must be answered.
    pub fn read_predictions(&self, split: Split, path: &Path) -> TrainResult<Predictions> {
        let s = self.splits.require(split)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| in_file(path, format!("cannot read: {e}")))?;
        let answers: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            in_file(
                path,
                format!(
                    "line {}: expected a JSON object of question id -> answer text: {e}",
                    e.line()
                ),
            )
        })?;
        if let Some(e) = s.examples.iter().find(|e| !answers.contains_key(&e.id)) {
            return Err(in_file(
                path,
                format!(
                    "has no answer for question id {:?} of {}",
                    e.id,
                    s.file.display()
                ),
            ));
        }
        Ok(Predictions::Answers(answers))
    }
}
