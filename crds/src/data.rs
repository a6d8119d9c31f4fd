//! `spec.data`: the dataset splits and how to read them.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::uri::Uri;

/// Dataset files. Formats by task: QuestionAnswering reads SQuAD v1.1 JSON; TokenClassification
/// reads a words file (one sentence per line, space-separated words) plus a labels file (one
/// label per word, same layout); TextClassification reads TSV `sentence<TAB>label index`;
/// RelationExtraction reads TSV `sentence<TAB>class name` with entities replaced by markers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.trainLabels) || has(self.train)").field_path(".trainLabels").message("spec.data.trainLabels needs spec.data.train (the words file it labels)"))]
#[x_kube(validation = Rule::new("!has(self.validationLabels) || has(self.validation)").field_path(".validationLabels").message("spec.data.validationLabels needs spec.data.validation (the words file it labels)"))]
#[x_kube(validation = Rule::new("!has(self.testLabels) || has(self.test)").field_path(".testLabels").message("spec.data.testLabels needs spec.data.test (the words file it labels)"))]
pub struct DataSpec {
    /// Training split. Required in Train mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<Uri>,

    /// Validation split: evaluated every spec.training.validationIntervalSteps and at the end;
    /// needed to monitor a metric (checkpointing.best, training.earlyStopping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Uri>,

    /// Test split: evaluated once after training, and the whole job in Evaluate mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Uri>,

    /// TokenClassification only: labels file for `train` (required with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_labels: Option<Uri>,

    /// TokenClassification only: labels file for `validation` (required with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_labels: Option<Uri>,

    /// TokenClassification only: labels file for `test` (required with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_labels: Option<Uri>,

    /// TSV inputs start with a header line to skip (e.g. `sentence<TAB>label`).
    #[serde(default)]
    pub tsv_header: bool,

    /// Shuffle the training split every epoch (seeded by spec.training.seed).
    #[serde(default = "default_true")]
    pub shuffle: bool,
}

fn default_true() -> bool {
    true
}

/// One split of the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data.
    Validation,
    /// Test data.
    Test,
}

impl DataSpec {
    /// The data file of a split.
    pub fn file(&self, split: Split) -> Option<&Uri> {
        match split {
            Split::Train => self.train.as_ref(),
            Split::Validation => self.validation.as_ref(),
            Split::Test => self.test.as_ref(),
        }
    }

    /// The TokenClassification labels file of a split.
    pub fn labels_file(&self, split: Split) -> Option<&Uri> {
        match split {
            Split::Train => self.train_labels.as_ref(),
            Split::Validation => self.validation_labels.as_ref(),
            Split::Test => self.test_labels.as_ref(),
        }
    }
}
