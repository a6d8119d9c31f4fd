//! `model_config.yaml`: the NeMo 1.x model config of a Megatron-BERT task
//! model, written with the fields `QAModel`, `TokenClassificationModel` and
//! `TextClassificationModel` read on restore, and parsed back into our head
//! config and artifact references.

use serde_json::{Map, Value, json};

use crate::model::{HeadActivation, HeadConfig, Task};

/// The NeMo 1.x model class a .nemo restores as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NemoTask {
    /// `nemo.collections.nlp.models.QAModel` (span QA).
    QuestionAnswering,
    /// `TokenClassificationModel` (NER and other per-token labels).
    TokenClassification,
    /// `TextClassificationModel` (text classification, relation extraction).
    TextClassification,
}

impl NemoTask {
    /// The `target` class path NeMo instantiates.
    pub fn target(self) -> &'static str {
        match self {
            Self::QuestionAnswering => {
                "nemo.collections.nlp.models.question_answering.qa_model.QAModel"
            }
            Self::TokenClassification => {
                "nemo.collections.nlp.models.token_classification.token_classification_model.TokenClassificationModel"
            }
            Self::TextClassification => {
                "nemo.collections.nlp.models.text_classification.text_classification_model.TextClassificationModel"
            }
        }
    }

    /// The NeMo class for one of our heads.
    pub fn of_head(task: Task) -> Self {
        match task {
            Task::QuestionAnswering => Self::QuestionAnswering,
            Task::TokenClassification => Self::TokenClassification,
            Task::SequenceClassification => Self::TextClassification,
        }
    }

    /// Our head kind for this class.
    pub fn head_task(self) -> Task {
        match self {
            Self::QuestionAnswering => Task::QuestionAnswering,
            Self::TokenClassification => Task::TokenClassification,
            Self::TextClassification => Task::SequenceClassification,
        }
    }
}

/// The command-line spelling (`question-answering`, ...), as `FromStr` reads it.
impl std::fmt::Display for NemoTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::QuestionAnswering => "question-answering",
            Self::TokenClassification => "token-classification",
            Self::TextClassification => "text-classification",
        })
    }
}

/// A task name [`NemoTask`]'s `FromStr` does not know (as given).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task `{0}`: use question-answering, token-classification or \
     text-classification"
)]
pub struct UnknownNemoTask(pub String);

impl std::str::FromStr for NemoTask {
    type Err = UnknownNemoTask;

    /// `question-answering` (`qa`), `token-classification`,
    /// `text-classification` (`relation-extraction`), any case, `_` or `-`.
    fn from_str(s: &str) -> Result<Self, UnknownNemoTask> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "question-answering" | "questionanswering" | "qa" => Ok(Self::QuestionAnswering),
            "token-classification" | "tokenclassification" => Ok(Self::TokenClassification),
            "text-classification"
            | "textclassification"
            | "relation-extraction"
            | "relationextraction" => Ok(Self::TextClassification),
            _ => Err(UnknownNemoTask(s.to_string())),
        }
    }
}

/// Artifact references (`nemo:<member>`) written into the config.
#[derive(Clone, Debug, Default)]
pub struct ArtifactRefs {
    pub encoder_config: String,
    pub vocab: String,
    pub checkpoint_version: String,
    pub labels: Option<String>,
}

/// What [`build`] needs besides the artifact references.
pub struct ConfigInput<'a> {
    pub head: &'a HeadConfig,
    pub pretrained_model_name: &'a str,
    pub do_lower_case: bool,
    pub labels: Option<&'a [String]>,
    /// Extra `dataset` settings (max_seq_length, doc_stride, ...).
    pub dataset: &'a Map<String, Value>,
}

/// The model config as NeMo 1.x's `ModelPT.to_config_file` writes it.
pub fn build(input: &ConfigInput<'_>, refs: &ArtifactRefs) -> Value {
    let task = NemoTask::of_head(input.head.task);
    let head = input.head;
    let activation = activation_name(head.activation);
    let mut dataset = input.dataset.clone();
    dataset
        .entry("do_lower_case")
        .or_insert(json!(input.do_lower_case));
    let mut cfg = json!({
        "target": task.target(),
        "nemo_path": null,
        "language_model": {
            "pretrained_model_name": input.pretrained_model_name,
            "lm_checkpoint": null,
            "config_file": refs.encoder_config,
            "config": null,
        },
        "tokenizer": {
            "tokenizer_name": input.pretrained_model_name,
            "vocab_file": refs.vocab,
            "tokenizer_model": null,
            "special_tokens": null,
        },
        "megatron_checkpoint_version": { "json": refs.checkpoint_version },
    });
    let obj = cfg.as_object_mut().expect("object literal");
    match task {
        NemoTask::QuestionAnswering => {
            obj.insert(
                "token_classifier".into(),
                json!({
                    "num_layers": head.num_layers,
                    "dropout": head.dropout,
                    "num_classes": head.num_classes,
                    "activation": activation,
                    "log_softmax": false,
                    "use_transformer_init": true,
                }),
            );
        }
        NemoTask::TokenClassification => {
            let label_ids: Map<String, Value> = input
                .labels
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), json!(i)))
                .collect();
            if let Some(pad) = input.labels.and_then(|l| l.first()) {
                dataset.entry("pad_label").or_insert(json!(pad));
            }
            obj.insert("label_ids".into(), Value::Object(label_ids));
            obj.insert(
                "class_labels".into(),
                json!({ "class_labels_file": refs.labels }),
            );
            obj.insert(
                "head".into(),
                json!({
                    "num_fc_layers": head.num_layers,
                    "fc_dropout": head.dropout,
                    "activation": activation,
                    "use_transformer_init": true,
                }),
            );
        }
        NemoTask::TextClassification => {
            dataset.insert("num_classes".into(), json!(head.num_classes));
            obj.insert(
                "class_labels".into(),
                json!({ "class_labels_file": refs.labels }),
            );
            obj.insert(
                "classifier_head".into(),
                json!({
                    "num_output_layers": head.num_layers,
                    "fc_dropout": head.dropout,
                    "activation": activation,
                }),
            );
        }
    }
    obj.insert("dataset".into(), Value::Object(dataset));
    cfg
}

fn activation_name(a: HeadActivation) -> &'static str {
    match a {
        HeadActivation::Relu => "relu",
        HeadActivation::Gelu => "gelu",
        HeadActivation::Tanh => "tanh",
    }
}

/// A parsed `model_config.yaml`.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub task: NemoTask,
    /// The head as the config describes it (`num_classes` may be unknown
    /// for text classification without `dataset.num_classes`: 0).
    pub head: HeadConfig,
    /// `label_ids` in id order (token classification).
    pub label_ids: Option<Vec<String>>,
    pub pretrained_model_name: Option<String>,
    /// `language_model.config_file`.
    pub encoder_config_ref: Option<String>,
    /// `language_model.config` (inline architecture).
    pub inline_encoder_config: Option<Value>,
    /// `tokenizer.vocab_file`.
    pub vocab_ref: Option<String>,
    /// `class_labels.class_labels_file`.
    pub labels_ref: Option<String>,
    /// The `dataset` section.
    pub dataset: Map<String, Value>,
    /// `nemo_version`: the NeMo release that saved the model (NeMo's
    /// `ModelPT` records it; our archives do not).
    pub nemo_version: Option<String>,
}

/// Why a `model_config.yaml` cannot be restored. Messages name the field
/// (`section.key`) and what it must hold, so the archive's author can fix it;
/// the reader prefixes the archive path and `model_config.yaml`.
#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    /// The text is not YAML at all.
    #[error("is not valid YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),
    /// The document (or its `model` key) is not a mapping.
    #[error("must be a mapping of config keys")]
    NotAMapping,
    /// `target` names a class other than the three task models we restore.
    #[error(
        "target `{target}` is not a Megatron-BERT task model this trainer restores \
         (QAModel, TokenClassificationModel, TextClassificationModel)"
    )]
    UnknownTarget {
        /// The `target` as written (empty when absent).
        target: String,
    },
    /// `section.key` holds something other than an integer.
    #[error("{section}.{key} must be an integer, got {value}")]
    NotAnInteger {
        section: String,
        key: String,
        value: Value,
    },
    /// `section.key` holds something other than a number.
    #[error("{section}.{key} must be a number, got {value}")]
    NotANumber {
        section: String,
        key: String,
        value: Value,
    },
    /// `section.activation` is not one our heads implement.
    #[error("{section}.activation `{value}` is not supported (relu, gelu, tanh)")]
    UnknownActivation { section: String, value: String },
    /// Token classification without a `label_ids` mapping.
    #[error("label_ids must map each label to its id")]
    LabelIdsNotAMapping,
    /// A `label_ids` entry whose id is not an integer.
    #[error("label_ids.{label} must be an integer id, got {value}")]
    LabelIdNotAnInteger { label: String, value: Value },
    /// The ids are not exactly `0..n`.
    #[error("label_ids must number the labels 0, 1, 2, ... without gaps")]
    LabelIdsNotContiguous,
}

/// Parses a model config; errors name the field.
pub fn parse(text: &str) -> Result<Parsed, ModelConfigError> {
    let mut root: Value = serde_yaml::from_str(text).map_err(ModelConfigError::Yaml)?;
    if let Some(model) = root.get("model").filter(|m| m.is_object()) {
        root = model.clone();
    }
    let Value::Object(cfg) = root else {
        return Err(ModelConfigError::NotAMapping);
    };
    let str_at = |path: &[&str]| -> Option<String> {
        let mut v = cfg.get(path[0])?;
        for p in &path[1..] {
            v = v.get(p)?;
        }
        v.as_str().map(str::to_string)
    };
    let section = |name: &str| cfg.get(name).and_then(Value::as_object);
    let target = str_at(&["target"]).unwrap_or_default();
    let class = target.rsplit('.').next().unwrap_or_default();
    let task = match class {
        "QAModel" => NemoTask::QuestionAnswering,
        "TokenClassificationModel" => NemoTask::TokenClassification,
        "TextClassificationModel" => NemoTask::TextClassification,
        "" if section("token_classifier").is_some() => NemoTask::QuestionAnswering,
        "" if cfg.contains_key("label_ids") => NemoTask::TokenClassification,
        "" if section("classifier_head").is_some() => NemoTask::TextClassification,
        _ => return Err(ModelConfigError::UnknownTarget { target }),
    };
    let dataset = section("dataset").cloned().unwrap_or_default();
    let int = |sec: &str, key: &str, default: i64| -> Result<i64, ModelConfigError> {
        match section(sec).and_then(|s| s.get(key)) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| ModelConfigError::NotAnInteger {
                section: sec.to_string(),
                key: key.to_string(),
                value: v.clone(),
            }),
        }
    };
    let float = |sec: &str, key: &str, default: f64| -> Result<f64, ModelConfigError> {
        match section(sec).and_then(|s| s.get(key)) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| ModelConfigError::NotANumber {
                section: sec.to_string(),
                key: key.to_string(),
                value: v.clone(),
            }),
        }
    };
    let activation = |sec: &str| -> Result<HeadActivation, ModelConfigError> {
        match str_at(&[sec, "activation"]).as_deref() {
            None | Some("relu") => Ok(HeadActivation::Relu),
            Some("gelu") => Ok(HeadActivation::Gelu),
            Some("tanh") => Ok(HeadActivation::Tanh),
            Some(other) => Err(ModelConfigError::UnknownActivation {
                section: sec.to_string(),
                value: other.to_string(),
            }),
        }
    };
    let mut label_ids = None;
    let head = match task {
        NemoTask::QuestionAnswering => HeadConfig {
            task: Task::QuestionAnswering,
            num_classes: int("token_classifier", "num_classes", 2)?,
            num_layers: int("token_classifier", "num_layers", 1)?,
            activation: activation("token_classifier")?,
            dropout: float("token_classifier", "dropout", 0.0)?,
        },
        NemoTask::TokenClassification => {
            let ids = cfg
                .get("label_ids")
                .and_then(Value::as_object)
                .ok_or(ModelConfigError::LabelIdsNotAMapping)?;
            let mut pairs = ids
                .iter()
                .map(|(k, v)| {
                    v.as_i64().map(|i| (i, k.clone())).ok_or_else(|| {
                        ModelConfigError::LabelIdNotAnInteger {
                            label: k.clone(),
                            value: v.clone(),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            pairs.sort();
            if pairs.iter().enumerate().any(|(i, (id, _))| *id != i as i64) {
                return Err(ModelConfigError::LabelIdsNotContiguous);
            }
            let names: Vec<String> = pairs.into_iter().map(|(_, n)| n).collect();
            let n = names.len() as i64;
            label_ids = Some(names);
            HeadConfig {
                task: Task::TokenClassification,
                num_classes: n,
                num_layers: int("head", "num_fc_layers", 2)?,
                activation: activation("head")?,
                dropout: float("head", "fc_dropout", 0.5)?,
            }
        }
        NemoTask::TextClassification => HeadConfig {
            task: Task::SequenceClassification,
            num_classes: int("dataset", "num_classes", 0)?,
            num_layers: int("classifier_head", "num_output_layers", 2)?,
            activation: activation("classifier_head")?,
            dropout: float("classifier_head", "fc_dropout", 0.1)?,
        },
    };
    let inline_encoder_config = cfg
        .get("language_model")
        .and_then(|l| l.get("config"))
        .filter(|c| c.is_object())
        .cloned();
    Ok(Parsed {
        task,
        head,
        label_ids,
        pretrained_model_name: str_at(&["language_model", "pretrained_model_name"]),
        encoder_config_ref: str_at(&["language_model", "config_file"]),
        inline_encoder_config,
        vocab_ref: str_at(&["tokenizer", "vocab_file"]),
        labels_ref: str_at(&["class_labels", "class_labels_file"]),
        dataset,
        nemo_version: cfg
            .get("nemo_version")
            .filter(|v| !v.is_null())
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs() -> ArtifactRefs {
        ArtifactRefs {
            encoder_config: "nemo:a_enc.json".into(),
            vocab: "nemo:b_vocab.txt".into(),
            checkpoint_version: "nemo:c_megatron_checkpoint_version.json".into(),
            labels: Some("nemo:d_label_ids.csv".into()),
        }
    }

    #[test]
    fn round_trips_every_task() {
        let labels: Vec<String> = ["O", "B-Disease", "I-Disease"].map(String::from).into();
        let dataset = Map::new();
        for head in [
            HeadConfig::question_answering(),
            HeadConfig::token_classification(3),
            HeadConfig::sequence_classification(4),
        ] {
            let input = ConfigInput {
                head: &head,
                pretrained_model_name: "megatron-bert-345m-uncased",
                do_lower_case: true,
                labels: Some(&labels),
                dataset: &dataset,
            };
            let yaml = serde_yaml::to_string(&build(&input, &refs())).unwrap();
            let parsed = parse(&yaml).unwrap();
            assert_eq!(parsed.head, head, "{yaml}");
            assert_eq!(parsed.vocab_ref.as_deref(), Some("nemo:b_vocab.txt"));
            assert_eq!(
                parsed.encoder_config_ref.as_deref(),
                Some("nemo:a_enc.json")
            );
            if head.task == Task::TokenClassification {
                assert_eq!(parsed.label_ids.as_deref(), Some(&labels[..]));
                assert_eq!(parsed.dataset["pad_label"], json!("O"));
            }
        }
    }

    #[test]
    fn task_names_round_trip_and_the_nemo_version_is_read() {
        for task in [
            NemoTask::QuestionAnswering,
            NemoTask::TokenClassification,
            NemoTask::TextClassification,
        ] {
            assert_eq!(task.to_string().parse::<NemoTask>(), Ok(task));
        }
        let parsed = parse("target: x.QAModel\nnemo_version: 1.23.0\n").unwrap();
        assert_eq!(parsed.nemo_version.as_deref(), Some("1.23.0"));
        assert_eq!(parse("target: x.QAModel\n").unwrap().nemo_version, None);
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse("target: foo.Bar\n").unwrap_err().to_string();
        assert!(err.contains("foo.Bar") || err.contains("Bar"), "{err}");
        let err =
            parse("target: x.TokenClassificationModel\nlabel_ids: {O: 0, B: 2}\n").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("label_ids"), "{err}");
        let err = parse("target: x.QAModel\ntoken_classifier: {num_layers: two}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_classifier.num_layers"), "{err}");
    }
}
