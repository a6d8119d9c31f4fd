//! The MegatronFineTune custom resource and its top-level spec.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checkpointing::CheckpointingSpec;
use crate::data::DataSpec;
use crate::model::{ArchitectureError, ModelSpec};
use crate::parallelism::ParallelismSpec;
use crate::pod::PodSpec;
use crate::run_policy::RunPolicy;
use crate::status::MegatronFineTuneStatus;
use crate::storage::StorageSpec;
use crate::task::TaskSpec;
use crate::tokenizer::{TokenizerName, TokenizerSpec};
use crate::training::TrainingSpec;

/// What the job does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Fine-tune on spec.data.train, validate on spec.data.validation, then test on
    /// spec.data.test when set, and write a .nemo.
    #[default]
    Train,
    /// Restore spec.model.nemo and evaluate it on spec.data.test only.
    Evaluate,
}

/// Fine-tunes a Megatron-LM BERT (optionally tensor-parallel) on a downstream NLP task, as
/// NeMo's Megatron-LM downstream-task recipes do. The trainer reads this spec as its
/// configuration.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "megatron.dev",
    version = "v1alpha1",
    kind = "MegatronFineTune",
    namespaced,
    doc = "A fine-tuning (or evaluation) run of a Megatron-LM BERT on a downstream NLP task.",
    status = "MegatronFineTuneStatus",
    shortname = "mft",
    category = "megatron",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Pending, Running, Restarting, Succeeded, Failed, Suspended or Queued"),
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.task.type", description = "Downstream task"),
    printcolumn(name = "TP", type_ = "integer", json_path = ".spec.parallelism.tensorParallelSize", description = "Tensor-parallel size"),
    printcolumn(name = "Ranks", type_ = "integer", json_path = ".status.ranks", description = "World size (tensor x data parallel)"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress.summary", description = "Steps done / total"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 48 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label of at most 48 characters starting with a letter (pods, Services and the ServiceAccount are named after it)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'Train' || has(self.data.train)").field_path(".data.train").message("spec.data.train is required in Train mode (or set spec.mode: Evaluate)"))]
#[x_kube(validation = Rule::new("self.mode != 'Train' || has(self.training.maxSteps) || has(self.training.maxEpochs)").field_path(".training").message("spec.training.maxSteps or spec.training.maxEpochs is required in Train mode"))]
#[x_kube(validation = Rule::new("self.mode != 'Evaluate' || has(self.model.nemo)").field_path(".model").message("spec.mode Evaluate restores a trained model: set spec.model.nemo to a .nemo file"))]
#[x_kube(validation = Rule::new("self.mode != 'Evaluate' || has(self.data.test)").field_path(".data").message("spec.mode Evaluate runs the test split: set spec.data.test"))]
#[x_kube(validation = Rule::new("!has(self.model.config) || !has(self.model.config.numAttentionHeads) || self.model.config.numAttentionHeads % self.parallelism.tensorParallelSize == 0").field_path(".parallelism.tensorParallelSize").message(Message::Expression("'spec.parallelism.tensorParallelSize (%d) must divide spec.model.config.numAttentionHeads (%d): use one of %s'.format([self.parallelism.tensorParallelSize, self.model.config.numAttentionHeads, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 24, 28, 32, 36, 40, 48, 56, 64].filter(d, self.model.config.numAttentionHeads % d == 0)])".into())))]
#[x_kube(validation = Rule::new("!has(self.model.pretrained) || self.model.pretrained in ['megatron-bert-uncased', 'megatron-bert-cased'] || 16 % self.parallelism.tensorParallelSize == 0").field_path(".parallelism.tensorParallelSize").message(Message::Expression("'spec.parallelism.tensorParallelSize (%d) must divide the 16 attention heads of %s: use 1, 2, 4, 8 or 16'.format([self.parallelism.tensorParallelSize, self.model.pretrained])".into())))]
#[x_kube(validation = Rule::new("!has(self.model.config) || !has(self.model.config.ffnHiddenSize) || self.model.config.ffnHiddenSize % self.parallelism.tensorParallelSize == 0").field_path(".model.config.ffnHiddenSize").message(Message::Expression("'spec.model.config.ffnHiddenSize (%d) must be a multiple of spec.parallelism.tensorParallelSize (%d)'.format([self.model.config.ffnHiddenSize, self.parallelism.tensorParallelSize])".into())))]
#[x_kube(validation = Rule::new("self.training.globalBatchSize % (self.training.microBatchSize * self.parallelism.dataParallelSize) == 0").field_path(".training.globalBatchSize").message(Message::Expression("'spec.training.globalBatchSize (%d) must be a multiple of spec.training.microBatchSize x spec.parallelism.dataParallelSize (%d x %d = %d)'.format([self.training.globalBatchSize, self.training.microBatchSize, self.parallelism.dataParallelSize, self.training.microBatchSize * self.parallelism.dataParallelSize])".into())))]
#[x_kube(validation = Rule::new("!has(self.model.pretrained) || self.model.pretrained in ['megatron-bert-uncased', 'megatron-bert-cased'] || (has(self.task.maxSeqLength) ? self.task.maxSeqLength : (self.task.type == 'QuestionAnswering' ? 384 : (self.task.type == 'TokenClassification' ? 128 : 256))) <= 512").field_path(".task").message(Message::Expression("'spec.task.maxSeqLength (%d) exceeds the 512 positions of %s: use 512 or less'.format([self.task.maxSeqLength, self.model.pretrained])".into())))]
#[x_kube(validation = Rule::new("!has(self.model.config) || !has(self.model.config.maxPositionEmbeddings) || (has(self.task.maxSeqLength) ? self.task.maxSeqLength : (self.task.type == 'QuestionAnswering' ? 384 : (self.task.type == 'TokenClassification' ? 128 : 256))) <= self.model.config.maxPositionEmbeddings").field_path(".task").message(Message::Expression("'spec.task.maxSeqLength (%d%s) exceeds spec.model.config.maxPositionEmbeddings (%d): set spec.task.maxSeqLength to at most %d'.format([has(self.task.maxSeqLength) ? self.task.maxSeqLength : (self.task.type == 'QuestionAnswering' ? 384 : (self.task.type == 'TokenClassification' ? 128 : 256)), has(self.task.maxSeqLength) ? '' : ', the task default', self.model.config.maxPositionEmbeddings, self.model.config.maxPositionEmbeddings])".into())))]
#[x_kube(validation = Rule::new("!has(self.task.questionAnswering) || self.task.questionAnswering.maxQueryLength + 3 < (has(self.task.maxSeqLength) ? self.task.maxSeqLength : 384)").field_path(".task.questionAnswering.maxQueryLength").message("spec.task.questionAnswering.maxQueryLength must leave room for context: maxQueryLength + 3 must be below spec.task.maxSeqLength"))]
#[x_kube(validation = Rule::new("self.task.type != 'TokenClassification' || ((!has(self.data.train) || has(self.data.trainLabels)) && (!has(self.data.validation) || has(self.data.validationLabels)) && (!has(self.data.test) || has(self.data.testLabels)))").field_path(".data").message("spec.data: TokenClassification reads words and labels from separate files: set trainLabels, validationLabels and testLabels next to each of train, validation and test"))]
#[x_kube(validation = Rule::new("self.task.type == 'TokenClassification' || !(has(self.data.trainLabels) || has(self.data.validationLabels) || has(self.data.testLabels))").field_path(".data").message("spec.data.trainLabels, validationLabels and testLabels are only used by TokenClassification: remove them"))]
#[x_kube(validation = Rule::new("!has(self.model.nemo) || !has(self.tokenizer)").field_path(".tokenizer").message("spec.tokenizer must be unset with spec.model.nemo: the .nemo carries its tokenizer"))]
#[x_kube(validation = Rule::new("has(self.model.pretrained) || has(self.model.nemo) || has(self.tokenizer)").field_path(".model.checkpoint").message("spec.tokenizer is required with a bare spec.model.checkpoint: set spec.tokenizer.name (megatron-bert-uncased or megatron-bert-cased) or spec.tokenizer.vocabFile"))]
#[x_kube(validation = Rule::new("!has(self.checkpointing.best) || has(self.data.validation)").field_path(".checkpointing.best").message("spec.checkpointing.best ranks checkpoints by a validation metric: set spec.data.validation"))]
#[x_kube(validation = Rule::new("!has(self.training.earlyStopping) || has(self.data.validation)").field_path(".training.earlyStopping").message("spec.training.earlyStopping watches a validation metric: set spec.data.validation"))]
#[x_kube(validation = Rule::new("!has(self.checkpointing.best) || (self.task.type == 'QuestionAnswering' ? self.checkpointing.best.monitor in ['val_loss', 'val_exact_match', 'val_f1'] : self.checkpointing.best.monitor != 'val_exact_match')").field_path(".checkpointing.best.monitor").message(Message::Expression("'spec.checkpointing.best.monitor %s is not reported for %s: use %s'.format([self.checkpointing.best.monitor, self.task.type, self.task.type == 'QuestionAnswering' ? 'val_loss, val_exact_match or val_f1' : 'val_loss, val_accuracy, val_precision, val_recall or val_f1'])".into())))]
#[x_kube(validation = Rule::new("!has(self.training.earlyStopping) || (self.task.type == 'QuestionAnswering' ? self.training.earlyStopping.monitor in ['val_loss', 'val_exact_match', 'val_f1'] : self.training.earlyStopping.monitor != 'val_exact_match')").field_path(".training.earlyStopping.monitor").message(Message::Expression("'spec.training.earlyStopping.monitor %s is not reported for %s: use %s'.format([self.training.earlyStopping.monitor, self.task.type, self.task.type == 'QuestionAnswering' ? 'val_loss, val_exact_match or val_f1' : 'val_loss, val_accuracy, val_precision, val_recall or val_f1'])".into())))]
#[x_kube(validation = Rule::new("has(self.tokenizer) == has(oldSelf.tokenizer)").message("spec.tokenizer is immutable: it cannot be added or removed after creation; create a new MegatronFineTune"))]
pub struct MegatronFineTuneSpec {
    /// Train (default) fine-tunes; Evaluate restores spec.model.nemo and runs spec.data.test.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.mode is immutable: create a new MegatronFineTune"))]
    pub mode: Mode,

    /// The downstream task and its options.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.task is immutable: create a new MegatronFineTune"))]
    pub task: TaskSpec,

    /// The pretrained model: a name, a Megatron-LM checkpoint or a .nemo, and its architecture.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.model is immutable: create a new MegatronFineTune"))]
    pub model: ModelSpec,

    /// The tokenizer. Default: the one of spec.model.pretrained (or the .nemo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.tokenizer is immutable: create a new MegatronFineTune"))]
    pub tokenizer: Option<TokenizerSpec>,

    /// Dataset splits.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.data is immutable: create a new MegatronFineTune"))]
    pub data: DataSpec,

    /// Schedule, batch sizes, optimizer and precision.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.training is immutable: create a new MegatronFineTune"))]
    pub training: TrainingSpec,

    /// Tensor/data parallel sizes and ranks per pod.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.parallelism is immutable: create a new MegatronFineTune"))]
    pub parallelism: ParallelismSpec,

    /// Checkpoint saving, retention and resume.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.checkpointing is immutable: create a new MegatronFineTune"))]
    pub checkpointing: CheckpointingSpec,

    /// The S3-compatible store for outputs and s3:// inputs.
    // Required by the CRD (the operator's jobs write to the store), so the
    // schema keeps it required; `None` only in a trainer config for a local
    // run that reads local files and writes to --output-dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.storage is immutable: create a new MegatronFineTune"))]
    pub storage: Option<StorageSpec>,

    /// Restarts, deadlines, suspension and cleanup (mutable).
    #[serde(default)]
    pub run_policy: RunPolicy,

    /// Settings of the worker pods (mutable; applies to pods created afterwards).
    #[serde(default)]
    pub pod: PodSpec,
}

impl MegatronFineTuneSpec {
    /// Number of ranks: tensorParallelSize x dataParallelSize.
    pub fn world_size(&self) -> i64 {
        self.parallelism.world_size()
    }

    /// Pods in the gang.
    pub fn num_pods(&self) -> i64 {
        self.parallelism.num_pods()
    }

    /// The built-in tokenizer in use, if any (tokenizer.name, else the pretrained name's).
    pub fn tokenizer_name(&self) -> Option<TokenizerName> {
        match &self.tokenizer {
            Some(t) => t.name,
            None => self.model.pretrained.map(|p| p.tokenizer()),
        }
    }

    /// Whether text is lower-cased before tokenizing (None: decided by the .nemo).
    pub fn do_lower_case(&self) -> Option<bool> {
        if let Some(flag) = self.tokenizer.as_ref().and_then(|t| t.do_lower_case) {
            return Some(flag);
        }
        if let Some(name) = self.tokenizer_name() {
            return Some(name.lower_case());
        }
        if self.model.nemo.is_some() {
            return None;
        }
        Some(self.model.pretrained.is_some_and(|p| p.lower_case()))
    }

    /// The effective architecture when the spec alone determines it (see
    /// [`ModelSpec::architecture`]); vocabSize defaults to the built-in tokenizer's size.
    pub fn architecture(&self) -> Result<crate::model::Architecture, ArchitectureError> {
        let vocab = self.tokenizer_name().map(TokenizerName::vocab_size);
        match vocab {
            Some(v) => self.model.architecture(v),
            None => {
                // A vocab file sets the size; without an explicit vocabSize it must be read.
                let arch = self.model.architecture(0)?;
                if arch.vocab_size == 0 {
                    let file = self.tokenizer.as_ref().and_then(|t| t.vocab_file.clone());
                    return Err(match file {
                        Some(f) => ArchitectureError::InFile(f),
                        None => ArchitectureError::Missing("vocabSize"),
                    });
                }
                Ok(arch)
            }
        }
    }
}
