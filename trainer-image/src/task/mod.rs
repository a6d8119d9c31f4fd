//! The four downstream tasks as units the training loop, `evaluate` and
//! `predict` use: [`TaskData`] reads and featurizes every split of a spec,
//! implements [`TrainTask`] (batches, loss, validation) and evaluates,
//! scores and writes predictions in each task's standard format.
//!
//! | task | predictions file | metrics (x100; `val_` or `test_` prefix) |
//! | --- | --- | --- |
//! | QuestionAnswering | `{"question id": "answer"}` JSON | `loss`, `exact_match`, `f1` (official SQuAD v1.1) |
//! | TokenClassification | one line per sentence, one label per word | `loss`, `accuracy`, macro `precision`/`recall`/`f1` over words |
//! | TextClassification | one label per line | `loss`, `accuracy`, macro `precision`/`recall`/`f1` |
//! | RelationExtraction | one class name per line | `loss`, `accuracy`, micro `precision`/`recall`/`f1` without `negativeClass` |
//!
//! Evaluation runs on every rank, sharded over data-parallel replicas once
//! [`TaskData::shard_evaluation`] names their group (see [`evaluation`]);
//! only rank 0 should write the files.

mod errors;
mod eval_shards;
pub mod evaluation;
mod files;
mod question_answering;
mod text_classification;
mod token_classification;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crds::{MegatronFineTuneSpec, Split, Task as SpecTask, TaskType};
use tch::{Device, Tensor};

use crate::comm::{ProcessGroup, SingleProcess};
use crate::data::{Batch, BatchItem};
use crate::model::{BertTaskModel, HeadActivation, HeadConfig, HeadOutput, Task};
use crate::tokenizer::BertTokenizer;
use crate::train::{TrainError, TrainResult, TrainTask};

pub use evaluation::{Evaluation, Predictions, write_metrics_json};
pub use files::{SplitFiles, metric_prefix};

use errors::spec_field;
use evaluation::{collate, task_loss};
use question_answering::QuestionAnswering;
use text_classification::{SentenceClassification, relation_classes, text_classes};
use token_classification::TokenClassification;

/// The data of one task.
#[derive(Debug)]
enum Kind {
    QuestionAnswering(QuestionAnswering),
    TokenClassification(TokenClassification),
    /// Text classification and relation extraction.
    Sentence(SentenceClassification),
}

/// Every split of a task's data, featurized, with what training and
/// evaluation need.
#[derive(Debug)]
pub struct TaskData {
    task_type: TaskType,
    kind: Kind,
    head: HeadConfig,
    eval_batch_size: usize,
    tokenizer: BertTokenizer,
    /// The data-parallel group evaluation is sharded over.
    eval_group: Arc<dyn ProcessGroup>,
}

impl TaskData {
    /// Reads and featurizes every split present in `files` with the options of
    /// `spec.task` (maxSeqLength, docStride, maxQueryLength, labels, padLabel,
    /// ignoreExtraTokens, ignoreStartEnd, numClasses, classNames, classes,
    /// negativeClass, entityMarkers) and `spec.data.tsvHeader`. Training and
    /// validation data must carry labels; a test split may leave them out
    /// (then it is only predicted). Bad data is [`TrainError::InvalidInput`]
    /// naming the file, the line and the problem.
    pub fn load(
        spec: &MegatronFineTuneSpec,
        files: &SplitFiles,
        tokenizer: BertTokenizer,
    ) -> TrainResult<Self> {
        let task = &spec.task;
        let resolved = task
            .resolved()
            .map_err(|e| TrainError::InvalidInput(e.to_string()))?;
        let max_seq_length = usize::try_from(task.max_seq_length())
            .ok()
            .filter(|n| *n >= 8)
            .ok_or_else(|| {
                spec_field(
                    "spec.task.maxSeqLength",
                    format!("must be at least 8, got {}", task.max_seq_length()),
                )
            })?;
        let eval_batch_size = usize::try_from(spec.training.eval_micro_batch_size())
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                spec_field(
                    "spec.training.evalMicroBatchSize",
                    "must be at least 1".to_string(),
                )
            })?;
        let header = spec.data.tsv_header;
        let (kind, model_task) = match resolved {
            SpecTask::QuestionAnswering(o) => (
                Kind::QuestionAnswering(QuestionAnswering::load(
                    o,
                    max_seq_length,
                    files,
                    &tokenizer,
                )?),
                Task::QuestionAnswering,
            ),
            SpecTask::TokenClassification(o) => (
                Kind::TokenClassification(TokenClassification::load(
                    o,
                    max_seq_length,
                    files,
                    &tokenizer,
                )?),
                Task::TokenClassification,
            ),
            SpecTask::TextClassification(o) => (
                Kind::Sentence(SentenceClassification::load(
                    text_classes(o)?,
                    header,
                    &[],
                    max_seq_length,
                    files,
                    &tokenizer,
                )?),
                Task::SequenceClassification,
            ),
            SpecTask::RelationExtraction(o) => (
                Kind::Sentence(SentenceClassification::load(
                    relation_classes(o)?,
                    header,
                    &o.entity_markers,
                    max_seq_length,
                    files,
                    &tokenizer,
                )?),
                Task::SequenceClassification,
            ),
        };
        let h = task.head();
        let head = HeadConfig {
            task: model_task,
            num_classes: task
                .num_outputs()
                .map_err(|e| TrainError::InvalidInput(e.to_string()))?,
            num_layers: i64::from(h.num_layers),
            activation: HeadActivation::Relu,
            dropout: h.dropout,
        };
        let data = Self {
            task_type: task.type_,
            kind,
            head,
            eval_batch_size,
            tokenizer,
            eval_group: Arc::new(SingleProcess),
        };
        for split in [Split::Train, Split::Validation, Split::Test] {
            if data.has_split(split) {
                tracing::info!(
                    task = ?data.task_type,
                    split = files::split_name(split),
                    features = data.num_features(split),
                    "featurized"
                );
            }
        }
        Ok(data)
    }

    /// The task.
    pub fn task_type(&self) -> TaskType {
        self.task_type
    }

    /// The head the model needs: `spec.task.head` with the task's number of outputs.
    pub fn head_config(&self) -> HeadConfig {
        self.head.clone()
    }

    /// The tokenizer the data was featurized with.
    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tokenizer
    }

    /// Evaluation batch size (`spec.training.evalMicroBatchSize`).
    pub fn eval_batch_size(&self) -> usize {
        self.eval_batch_size
    }

    /// Whether a split was loaded.
    pub fn has_split(&self, split: Split) -> bool {
        match &self.kind {
            Kind::QuestionAnswering(t) => t.splits.get(split).is_some(),
            Kind::TokenClassification(t) => t.splits.get(split).is_some(),
            Kind::Sentence(t) => t.splits.get(split).is_some(),
        }
    }

    /// Number of features (windows or sentences) of a split; 0 when absent.
    pub fn num_features(&self, split: Split) -> usize {
        match &self.kind {
            Kind::QuestionAnswering(t) => t.splits.get(split).map_or(0, |s| s.features.len()),
            Kind::TokenClassification(t) => t.splits.get(split).map_or(0, |s| s.features.len()),
            Kind::Sentence(t) => t.splits.get(split).map_or(0, |s| s.features.len()),
        }
    }

    /// Label names in id order, for the `.nemo` label map: token
    /// classification labels, relation classes, text classification
    /// `classNames` (None for unnamed classes and for question answering).
    pub fn label_names(&self) -> Option<Vec<String>> {
        match &self.kind {
            Kind::QuestionAnswering(_) => None,
            Kind::TokenClassification(t) => Some(t.label_names().to_vec()),
            Kind::Sentence(t) => t.classes.named.then(|| t.classes.names.clone()),
        }
    }

    /// The features of `split` at `indices`, collated (padded to the longest)
    /// with their targets, on `device`.
    pub fn batch(&self, split: Split, indices: &[usize], device: Device) -> TrainResult<Batch> {
        fn pick<'a, F: BatchItem>(features: &'a [F], indices: &[usize]) -> TrainResult<Vec<&'a F>> {
            indices
                .iter()
                .map(|&i| {
                    features.get(i).ok_or_else(|| {
                        TrainError::Internal(format!(
                            "feature index {i} is out of range ({} features)",
                            features.len()
                        ))
                    })
                })
                .collect()
        }
        let pad = self.tokenizer.pad_id();
        match &self.kind {
            Kind::QuestionAnswering(t) => collate(
                &pick(&t.splits.require(split)?.features, indices)?,
                pad,
                device,
            ),
            Kind::TokenClassification(t) => collate(
                &pick(&t.splits.require(split)?.features, indices)?,
                pad,
                device,
            ),
            Kind::Sentence(t) => collate(
                &pick(&t.splits.require(split)?.features, indices)?,
                pad,
                device,
            ),
        }
    }

    /// Runs `model` (eval mode, no gradients, batches of
    /// `spec.training.evalMicroBatchSize`) over `split`: predictions, and
    /// when the split has labels the metrics (`val_*` or `test_*`, including
    /// the loss) and, for classification tasks, the text report. Every rank
    /// may call it and gets the same result; with
    /// [`Self::shard_evaluation`] every replica of the data-parallel group
    /// must call it, and each runs only its share of the batches.
    pub fn evaluate(&self, model: &BertTaskModel, split: Split) -> TrainResult<Evaluation> {
        let (bs, pad) = (self.eval_batch_size, self.tokenizer.pad_id());
        let dp = &*self.eval_group;
        match &self.kind {
            Kind::QuestionAnswering(t) => t.evaluate(model, split, bs, pad, dp),
            Kind::TokenClassification(t) => t.evaluate(model, split, bs, pad, dp),
            Kind::Sentence(t) => t.evaluate(model, split, bs, pad, dp),
        }
    }

    /// Splits the forward passes of [`Self::evaluate`] (and validation)
    /// between the replicas of data-parallel group `dp`, which then exchange
    /// the outputs: the same result on every rank, in 1/n of the time.
    pub fn shard_evaluation(&mut self, dp: Arc<dyn ProcessGroup>) {
        self.eval_group = dp;
    }

    /// Scores given predictions of `split` (e.g. read back with
    /// [`Self::read_predictions`]) exactly as [`Self::evaluate`] does, without the loss.
    pub fn score(&self, split: Split, predictions: Predictions) -> TrainResult<Evaluation> {
        match &self.kind {
            Kind::QuestionAnswering(t) => t.score(split, predictions),
            Kind::TokenClassification(t) => t.score(split, predictions),
            Kind::Sentence(t) => t.score(split, predictions),
        }
    }

    /// Writes the predictions in the task's standard format (see the module docs).
    pub fn write_predictions(&self, evaluation: &Evaluation, path: &Path) -> TrainResult<()> {
        let p = &evaluation.predictions;
        match &self.kind {
            Kind::QuestionAnswering(_) => QuestionAnswering::write_predictions(p, path),
            Kind::TokenClassification(t) => t.write_predictions(p, path),
            Kind::Sentence(t) => t.write_predictions(p, path),
        }
    }

    /// Reads a predictions file of `split` in the task's standard format,
    /// checking it covers the split (errors name the file and line).
    pub fn read_predictions(&self, split: Split, path: &Path) -> TrainResult<Predictions> {
        match &self.kind {
            Kind::QuestionAnswering(t) => t.read_predictions(split, path),
            Kind::TokenClassification(t) => t.read_predictions(split, path),
            Kind::Sentence(t) => t.read_predictions(split, path),
        }
    }
}

impl TrainTask for TaskData {
    fn num_train_samples(&self) -> usize {
        self.num_features(Split::Train)
    }

    fn train_batch(&self, indices: &[usize], device: Device) -> TrainResult<Batch> {
        self.batch(Split::Train, indices, device)
    }

    fn loss(&self, output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor> {
        task_loss(output, batch)
    }

    fn has_validation(&self) -> bool {
        self.has_split(Split::Validation)
    }

    fn validate(&self, model: &BertTaskModel) -> TrainResult<BTreeMap<String, f64>> {
        Ok(self.evaluate(model, Split::Validation)?.metrics)
    }
}
