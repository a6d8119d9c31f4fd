//! `spec.task`: which downstream task to fine-tune, as a discriminated union.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metric::Metric;

/// The downstream tasks of NeMo's Megatron-BERT examples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TaskType {
    /// Extractive question answering on SQuAD v1.1 JSON (start/end span head).
    QuestionAnswering,
    /// Per-word labels (NER, e.g. BC5CDR, NCBI-disease): text + labels files.
    TokenClassification,
    /// One label per sentence: TSV lines `sentence<TAB>label index`.
    TextClassification,
    /// Relation between two marked entities (e.g. ChemProt): TSV lines `sentence<TAB>class name`.
    RelationExtraction,
}

impl TaskType {
    /// NeMo's default maximum sequence length for the task.
    pub fn default_max_seq_length(self) -> i64 {
        match self {
            Self::QuestionAnswering => 384,
            Self::TokenClassification => 128,
            Self::TextClassification | Self::RelationExtraction => 256,
        }
    }

    /// NeMo's default classification head for the task.
    pub fn default_head(self) -> Head {
        match self {
            Self::QuestionAnswering => Head {
                num_layers: 1,
                dropout: 0.0,
            },
            Self::TokenClassification => Head {
                num_layers: 2,
                dropout: 0.5,
            },
            Self::TextClassification | Self::RelationExtraction => Head {
                num_layers: 2,
                dropout: 0.1,
            },
        }
    }

    /// Validation metrics the trainer reports for this task (all may be monitored).
    pub fn metrics(self) -> &'static [Metric] {
        use Metric::*;
        match self {
            Self::QuestionAnswering => &[ValLoss, ValExactMatch, ValF1],
            Self::TokenClassification | Self::TextClassification | Self::RelationExtraction => {
                &[ValLoss, ValAccuracy, ValPrecision, ValRecall, ValF1]
            }
        }
    }
}

/// The task: `type` plus the options object named after it, e.g.
/// `{type: TokenClassification, tokenClassification: {labels: [O, B-Disease, I-Disease]}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.questionAnswering) || self.type == 'QuestionAnswering'").field_path(".questionAnswering").message("spec.task.questionAnswering is only allowed when spec.task.type is QuestionAnswering: remove it or change the type"))]
#[x_kube(validation = Rule::new("!has(self.tokenClassification) || self.type == 'TokenClassification'").field_path(".tokenClassification").message("spec.task.tokenClassification is only allowed when spec.task.type is TokenClassification: remove it or change the type"))]
#[x_kube(validation = Rule::new("!has(self.textClassification) || self.type == 'TextClassification'").field_path(".textClassification").message("spec.task.textClassification is only allowed when spec.task.type is TextClassification: remove it or change the type"))]
#[x_kube(validation = Rule::new("!has(self.relationExtraction) || self.type == 'RelationExtraction'").field_path(".relationExtraction").message("spec.task.relationExtraction is only allowed when spec.task.type is RelationExtraction: remove it or change the type"))]
#[x_kube(validation = Rule::new("self.type != 'TokenClassification' || has(self.tokenClassification)").message("spec.task.tokenClassification is required when spec.task.type is TokenClassification: list the labels, pad label first"))]
#[x_kube(validation = Rule::new("self.type != 'TextClassification' || has(self.textClassification)").message("spec.task.textClassification is required when spec.task.type is TextClassification: set numClasses"))]
#[x_kube(validation = Rule::new("self.type != 'RelationExtraction' || has(self.relationExtraction)").message("spec.task.relationExtraction is required when spec.task.type is RelationExtraction: list the classes"))]
pub struct TaskSpec {
    /// Which task: QuestionAnswering, TokenClassification, TextClassification or RelationExtraction.
    #[serde(rename = "type")]
    pub type_: TaskType,

    /// Longest input in tokens (including [CLS]/[SEP]); at most the model's
    /// maxPositionEmbeddings. Default: 384 QuestionAnswering, 128 TokenClassification,
    /// 256 TextClassification and RelationExtraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 131072))]
    pub max_seq_length: Option<i64>,

    /// The classification head on top of the encoder. Default: 1 layer for QuestionAnswering;
    /// 2 layers with dropout 0.5 for TokenClassification and 0.1 for the others (NeMo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,

    /// Options for QuestionAnswering (all have SQuAD v1.1 defaults, so this may be omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_answering: Option<QuestionAnsweringTask>,

    /// Options for TokenClassification (required with that type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_classification: Option<TokenClassificationTask>,

    /// Options for TextClassification (required with that type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_classification: Option<TextClassificationTask>,

    /// Options for RelationExtraction (required with that type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_extraction: Option<RelationExtractionTask>,
}

/// Classification head shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadSpec {
    /// Fully connected layers (hidden layers use ReLU; the last maps to the labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4))]
    pub num_layers: Option<i32>,

    /// Dropout before each layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub dropout: Option<f64>,
}

/// A head with every default applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Head {
    /// Fully connected layers.
    pub num_layers: i32,
    /// Dropout before each layer.
    pub dropout: f64,
}

/// SQuAD-style extractive question answering (NeMo question_answering_squad.py).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.nBestSize >= 1").message("spec.task.questionAnswering.nBestSize must be at least 1"))]
pub struct QuestionAnsweringTask {
    /// Overlap step between windows of a long context, in tokens.
    #[serde(default = "default_doc_stride")]
    #[schemars(range(min = 1, max = 65536))]
    pub doc_stride: i64,

    /// Questions are truncated to this many tokens; must leave room for context in maxSeqLength.
    #[serde(default = "default_max_query_length")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_query_length: i64,

    /// Longest answer span predicted, in tokens.
    #[serde(default = "default_max_answer_length")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_answer_length: i64,

    /// Candidate start/end logits considered per window when decoding answers.
    #[serde(default = "default_n_best_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub n_best_size: i64,
}

fn default_doc_stride() -> i64 {
    128
}
fn default_max_query_length() -> i64 {
    64
}
fn default_max_answer_length() -> i64 {
    30
}
fn default_n_best_size() -> i64 {
    20
}

impl Default for QuestionAnsweringTask {
    fn default() -> Self {
        Self {
            doc_stride: default_doc_stride(),
            max_query_length: default_max_query_length(),
            max_answer_length: default_max_answer_length(),
            n_best_size: default_n_best_size(),
        }
    }
}

/// Token classification (NeMo token_classification.py): files of words and of per-word labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.labels[0] == self.padLabel").field_path(".labels").message(Message::Expression("'spec.task.tokenClassification.labels must start with the pad label ' + self.padLabel + ': put it first (its id is 0)'".into())))]
pub struct TokenClassificationTask {
    /// Label names; a label's id is its index. The pad label comes first.
    #[schemars(
        length(min = 2, max = 1024),
        inner(length(min = 1, max = 64), pattern(r"^\S+$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub labels: Vec<String>,

    /// Label of padding and of tokens that are not scored (NeMo's pad_label).
    #[serde(default = "default_pad_label")]
    #[schemars(length(min = 1, max = 64))]
    pub pad_label: String,

    /// Score only the first sub-token of each word (NeMo's ignore_extra_tokens).
    #[serde(default)]
    pub ignore_extra_tokens: bool,

    /// Do not score [CLS] and [SEP] (NeMo's ignore_start_end).
    #[serde(default)]
    pub ignore_start_end: bool,
}

fn default_pad_label() -> String {
    "O".to_owned()
}

/// Sentence classification (NeMo text_classification_with_bert.py).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.classNames) || size(self.classNames) == self.numClasses").field_path(".classNames").message(Message::Expression("'spec.task.textClassification.classNames has %d names but numClasses is %d: give one name per class'.format([size(self.classNames), self.numClasses])".into())))]
pub struct TextClassificationTask {
    /// Number of classes; labels in the data are 0 .. numClasses-1.
    #[schemars(range(min = 2, max = 10000))]
    pub num_classes: i64,

    /// Optional display names for the class indices (reports and the .nemo label map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10000), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub class_names: Option<Vec<String>>,
}

/// Relation extraction as sentence classification over entity-marked text (NeMo's BioMegatron
/// ChemProt recipe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.negativeClass) || self.negativeClass in self.classes").field_path(".negativeClass").message(Message::Expression("'spec.task.relationExtraction.negativeClass ' + self.negativeClass + ' must be one of spec.task.relationExtraction.classes'".into())))]
pub struct RelationExtractionTask {
    /// Relation classes (e.g. CPR:3, CPR:4, CPR:5, CPR:6, CPR:9, false); a class's id is its index.
    #[schemars(
        length(min = 2, max = 256),
        inner(length(min = 1, max = 64), pattern(r"^\S+$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub classes: Vec<String>,

    /// The "no relation" class, left out of micro precision/recall/F1 (ChemProt: false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub negative_class: Option<String>,

    /// Entity placeholders in the text (e.g. @CHEMICAL$, @GENE$). Training fails when no
    /// sentence of a split carries them all (a sign of unconverted data) and warns with the
    /// count when some lack one. Like NeMo's BioMegatron recipe they are tokenized as text
    /// (word pieces), so the exported .nemo tokenizes them the same way under NeMo.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 64), pattern(r"^\S+$")))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub entity_markers: Vec<String>,
}

/// A resolved view of [`TaskSpec`]'s union.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Task<'a> {
    /// Question answering with its options (defaults filled in when omitted).
    QuestionAnswering(&'a QuestionAnsweringTask),
    /// Token classification.
    TokenClassification(&'a TokenClassificationTask),
    /// Text classification.
    TextClassification(&'a TextClassificationTask),
    /// Relation extraction.
    RelationExtraction(&'a RelationExtractionTask),
}

/// `spec.task.type` names a task whose options object is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.task.{0} is required when spec.task.type is {1:?}")]
pub struct MissingTaskOptions(pub &'static str, pub TaskType);

static DEFAULT_QA: std::sync::LazyLock<QuestionAnsweringTask> =
    std::sync::LazyLock::new(QuestionAnsweringTask::default);

impl TaskSpec {
    /// The options object selected by `type`.
    pub fn resolved(&self) -> Result<Task<'_>, MissingTaskOptions> {
        let missing = |field| MissingTaskOptions(field, self.type_);
        Ok(match self.type_ {
            TaskType::QuestionAnswering => {
                Task::QuestionAnswering(self.question_answering.as_ref().unwrap_or(&DEFAULT_QA))
            }
            TaskType::TokenClassification => Task::TokenClassification(
                self.token_classification
                    .as_ref()
                    .ok_or_else(|| missing("tokenClassification"))?,
            ),
            TaskType::TextClassification => Task::TextClassification(
                self.text_classification
                    .as_ref()
                    .ok_or_else(|| missing("textClassification"))?,
            ),
            TaskType::RelationExtraction => Task::RelationExtraction(
                self.relation_extraction
                    .as_ref()
                    .ok_or_else(|| missing("relationExtraction"))?,
            ),
        })
    }

    /// `maxSeqLength` or the task's default.
    pub fn max_seq_length(&self) -> i64 {
        self.max_seq_length
            .unwrap_or_else(|| self.type_.default_max_seq_length())
    }

    /// The head with the task's defaults for unset fields.
    pub fn head(&self) -> Head {
        let default = self.type_.default_head();
        let spec = self.head.clone().unwrap_or_default();
        Head {
            num_layers: spec.num_layers.unwrap_or(default.num_layers),
            dropout: spec.dropout.unwrap_or(default.dropout),
        }
    }

    /// Outputs of the head's last layer: 2 (start/end) for QA, else the number of labels.
    pub fn num_outputs(&self) -> Result<i64, MissingTaskOptions> {
        Ok(match self.resolved()? {
            Task::QuestionAnswering(_) => 2,
            Task::TokenClassification(t) => t.labels.len() as i64,
            Task::TextClassification(t) => t.num_classes,
            Task::RelationExtraction(t) => t.classes.len() as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qa_defaults_are_squad_v11() {
        let t: TaskSpec =
            serde_json::from_value(serde_json::json!({"type": "QuestionAnswering"})).unwrap();
        assert_eq!(t.max_seq_length(), 384);
        let Task::QuestionAnswering(qa) = t.resolved().unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                qa.doc_stride,
                qa.max_query_length,
                qa.max_answer_length,
                qa.n_best_size
            ),
            (128, 64, 30, 20)
        );
        assert_eq!(
            t.head(),
            Head {
                num_layers: 1,
                dropout: 0.0
            }
        );
        assert_eq!(t.num_outputs().unwrap(), 2);
    }

    #[test]
    fn token_classification_round_trip_and_defaults() {
        let t: TaskSpec = serde_json::from_value(serde_json::json!({
            "type": "TokenClassification",
            "head": {"dropout": 0.3},
            "tokenClassification": {"labels": ["O", "B-Disease", "I-Disease"]}
        }))
        .unwrap();
        let Task::TokenClassification(tc) = t.resolved().unwrap() else {
            panic!()
        };
        assert_eq!(tc.pad_label, "O");
        assert!(!tc.ignore_extra_tokens);
        assert_eq!(
            t.head(),
            Head {
                num_layers: 2,
                dropout: 0.3
            }
        );
        assert_eq!(t.num_outputs().unwrap(), 3);
        assert_eq!(t.max_seq_length(), 128);
        let back: TaskSpec = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn missing_options_is_an_error_naming_the_field() {
        let t: TaskSpec =
            serde_json::from_value(serde_json::json!({"type": "TextClassification"})).unwrap();
        let err = t.resolved().unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.task.textClassification is required when spec.task.type is TextClassification"
        );
    }
}
