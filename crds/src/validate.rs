//! The spec rules the API server enforces (schema ranges and CEL rules of the
//! CRD) as Rust: [`MegatronFineTuneSpec::validate`]. The trainer runs them so a
//! config file run outside Kubernetes fails with the same field-named messages
//! before any work starts; e2e/tests/crd_api.rs drives its invalid-manifest
//! table through both the API server and this, so the two cannot drift. One
//! rule is relaxed: `spec.storage` is required only when an `s3://` location
//! needs it (a local run writes to a directory).

use crate::model::HEADS_345M;
use crate::storage::STORAGE_FIX;
use crate::training::Precision;
use crate::uri::Location;
use crate::{MegatronFineTuneSpec, Metric, Mode, ResumePolicy, Task, TaskType, Uri};

/// Rules a command line may relax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allow {
    /// The weights come from outside the spec (`evaluate --training-checkpoint`):
    /// spec.mode Evaluate without spec.model.nemo.
    pub external_weights: bool,
}

/// A broken rule: the field it names first and the message (which names the fix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The spec path the message is about, e.g. `spec.training.globalBatchSize`.
    pub field: String,
    /// The message, as the API server's CEL rule words it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl FieldError {
    fn new(message: String) -> Self {
        let field = message
            .split_whitespace()
            .find(|w| w.starts_with("spec."))
            .map(|w| w.trim_end_matches([':', ',', '.', ')']).to_owned())
            .unwrap_or_else(|| "spec".to_owned());
        Self { field, message }
    }
}

impl MegatronFineTuneSpec {
    /// Every broken rule of this spec, each naming its field and the fix; empty when none.
    pub fn validate(&self, allow: Allow) -> Vec<FieldError> {
        let mut p = Problems(Vec::new(), allow);
        uris(self, &mut p);
        mode(self, &mut p);
        model(self, &mut p);
        task(self, &mut p);
        parallelism(self, &mut p);
        training(self, &mut p);
        checkpointing(self, &mut p);
        p.0
    }
}

struct Problems(Vec<FieldError>, Allow);

impl Problems {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(FieldError::new(message()));
        }
    }
}

fn uris(spec: &MegatronFineTuneSpec, p: &mut Problems) {
    let d = &spec.data;
    let m = &spec.model;
    let fields: [(&str, Option<&Uri>); 11] = [
        ("spec.data.train", d.train.as_ref()),
        ("spec.data.validation", d.validation.as_ref()),
        ("spec.data.test", d.test.as_ref()),
        ("spec.data.trainLabels", d.train_labels.as_ref()),
        ("spec.data.validationLabels", d.validation_labels.as_ref()),
        ("spec.data.testLabels", d.test_labels.as_ref()),
        ("spec.model.nemo", m.nemo.as_ref()),
        (
            "spec.model.checkpoint.location",
            m.checkpoint.as_ref().map(|c| &c.location),
        ),
        ("spec.model.configFile", m.config_file.as_ref()),
        (
            "spec.tokenizer.vocabFile",
            spec.tokenizer.as_ref().and_then(|t| t.vocab_file.as_ref()),
        ),
        (
            "spec.checkpointing.resume.from",
            spec.checkpointing.resume.from.as_ref(),
        ),
    ];
    let mut on_s3 = Vec::new();
    for (field, uri) in fields {
        if let Some(uri) = uri {
            p.check(uri.location().is_ok(), || {
                format!("{field}: {}", uri.location().unwrap_err())
            });
            // resume.from is opened with the environment's S3 settings only.
            if matches!(uri.location(), Ok(Location::S3 { .. }))
                && field != "spec.checkpointing.resume.from"
            {
                on_s3.push(format!("{field}: {uri}"));
            }
        }
    }
    match &spec.storage {
        Some(storage) => {
            let bucket = &storage.bucket;
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                })
                && !bucket.starts_with(['.', '-'])
                && !bucket.ends_with(['.', '-']);
            p.check(bucket_ok, || {
                format!("spec.storage.bucket: {bucket:?} is not a bucket name (3-63 characters of a-z, 0-9, '.', '-')")
            });
        }
        // The API server requires spec.storage; the trainer only where it is
        // used, so a run on local files needs no bucket (outputs to the
        // job's S3 root are checked where they are chosen).
        None => p.check(on_s3.is_empty(), || {
            format!(
                "spec.storage is required to read s3:// locations ({}): {STORAGE_FIX}, or use local paths",
                on_s3.join(", ")
            )
        }),
    }
    if let Some(nemo) = &m.nemo {
        p.check(nemo.as_str().ends_with(".nemo"), || {
            "spec.model.nemo must name a .nemo file (ending in .nemo), e.g. s3://bucket/models/squad.nemo".into()
        });
    }
}

fn mode(spec: &MegatronFineTuneSpec, p: &mut Problems) {
    let t = &spec.training;
    match spec.mode {
        Mode::Train => {
            p.check(spec.data.train.is_some(), || {
                "spec.data.train is required in Train mode (or set spec.mode: Evaluate)".into()
            });
            p.check(t.max_steps.is_some() || t.max_epochs.is_some(), || {
                "spec.training.maxSteps or spec.training.maxEpochs is required in Train mode".into()
            });
        }
        Mode::Evaluate => {
            let external = p.1.external_weights;
            p.check(external || spec.model.nemo.is_some(), || {
                "spec.model: spec.mode Evaluate restores a trained model: set spec.model.nemo to a .nemo file".into()
            });
            p.check(spec.data.test.is_some(), || {
                "spec.data: spec.mode Evaluate runs the test split: set spec.data.test".into()
            });
        }
    }
}

fn model(spec: &MegatronFineTuneSpec, p: &mut Problems) {
    let m = &spec.model;
    if let Some(c) = &m.checkpoint {
        let names_iteration = matches!(c.dir(), crate::CheckpointDir::Given(_));
        p.check(c.iteration.is_none() || !names_iteration, || {
            "spec.model.checkpoint.iteration: location already names an iteration directory; \
             remove iteration or point location at the checkpoint root"
                .into()
        });
    }
    let generic = m.pretrained.is_some_and(|n| n.is_generic());
    let random = (m.is_random() || p.1.external_weights) && has_arch_of(m);
    p.check(!m.is_random() || (m.checkpoint.is_none() && m.nemo.is_none()), || {
        "spec.model.initialization Random trains from random weights, so spec.model.checkpoint and \
         spec.model.nemo would be ignored: remove them, or remove initialization (Pretrained is the default)".into()
    });
    p.check(random || m.nemo.is_some() || m.pretrained.is_some() || m.checkpoint.is_some(), || {
        "spec.model needs a source: set spec.model.pretrained (a published name), spec.model.checkpoint \
         (a Megatron-LM checkpoint) or spec.model.nemo (a .nemo file)".into()
    });
    p.check(
        m.nemo.is_none()
            || !(m.pretrained.is_some() || m.checkpoint.is_some() || m.config.is_some() || m.config_file.is_some()),
        || "spec.model.nemo restores a complete model: remove spec.model.pretrained, spec.model.checkpoint, \
            spec.model.config and spec.model.configFile".into(),
    );
    p.check(!(m.config.is_some() && m.config_file.is_some()), || {
        "spec.model: set either spec.model.config or spec.model.configFile, not both".into()
    });
    let has_arch = m.config.is_some() || m.config_file.is_some();
    if let Some(name) = m.pretrained.filter(|_| generic) {
        p.check((random || m.checkpoint.is_some()) && has_arch, || {
            format!("spec.model.pretrained {name} is a generic Megatron-LM BERT: set spec.model.checkpoint \
                     (the Megatron-LM checkpoint, or initialization: Random) and spec.model.config or spec.model.configFile (its architecture)")
        });
    }
    p.check(m.pretrained.is_some() || m.checkpoint.is_none() || has_arch, || {
        "spec.model.checkpoint without spec.model.pretrained needs the architecture: set spec.model.config \
         or spec.model.configFile".into()
    });
    if let Some(name) = m.published() {
        let only_dropouts = m.config_file.is_none()
            && m.config.as_ref().is_none_or(|c| {
                c.hidden_size.is_none()
                    && c.num_attention_heads.is_none()
                    && c.num_layers.is_none()
                    && c.max_position_embeddings.is_none()
                    && c.ffn_hidden_size.is_none()
                    && c.vocab_size.is_none()
                    && c.type_vocab_size.is_none()
                    && c.layer_norm_epsilon.is_none()
                    && c.activation.is_none()
                    && c.make_vocab_size_divisible_by.is_none()
            });
        p.check(only_dropouts, || {
            format!("spec.model.config: the architecture of {name} is fixed; only hiddenDropout and \
                     attentionDropout may be set (and not configFile). For another architecture use \
                     pretrained megatron-bert-uncased or megatron-bert-cased with a checkpoint")
        });
    } else if let Some(c) = &m.config {
        p.check(
            c.hidden_size.is_some()
                && c.num_attention_heads.is_some()
                && c.num_layers.is_some()
                && c.max_position_embeddings.is_some(),
            || "spec.model.config must set hiddenSize, numAttentionHeads, numLayers and maxPositionEmbeddings".into(),
        );
    }
    if let Some(c) = &m.config {
        if let (Some(h), Some(n)) = (c.hidden_size, c.num_attention_heads) {
            p.check(n > 0 && h % n == 0, || {
                format!("spec.model.config.hiddenSize ({h}) must be a multiple of spec.model.config.numAttentionHeads ({n})")
            });
        }
        for (field, v) in [
            ("hiddenDropout", c.hidden_dropout),
            ("attentionDropout", c.attention_dropout),
        ] {
            if let Some(v) = v {
                p.check((0.0..1.0).contains(&v), || {
                    format!("spec.model.config.{field} ({v}) must be in [0, 1)")
                });
            }
        }
    }
    // Tokenizer.
    p.check(m.nemo.is_none() || spec.tokenizer.is_none(), || {
        "spec.tokenizer must be unset with spec.model.nemo: the .nemo carries its tokenizer".into()
    });
    p.check(m.pretrained.is_some() || m.nemo.is_some() || spec.tokenizer.is_some(), || {
        "spec.tokenizer is required with a bare spec.model.checkpoint or config: set spec.tokenizer.name \
         (megatron-bert-uncased or megatron-bert-cased) or spec.tokenizer.vocabFile".into()
    });
    if let Some(t) = &spec.tokenizer {
        p.check(t.name.is_some() != t.vocab_file.is_some(), || {
            "spec.tokenizer: set exactly one of spec.tokenizer.name (megatron-bert-uncased or \
             megatron-bert-cased) or spec.tokenizer.vocabFile"
                .into()
        });
    }
    // Sequence length against the positions.
    let max_seq = spec.task.max_seq_length();
    if let Some(name) = m.published() {
        p.check(max_seq <= 512, || {
            format!("spec.task.maxSeqLength ({max_seq}) exceeds the 512 positions of {name}: use 512 or less")
        });
    }
    if let Some(pos) = m.config.as_ref().and_then(|c| c.max_position_embeddings) {
        let default = if spec.task.max_seq_length.is_none() {
            ", the task default"
        } else {
            ""
        };
        p.check(max_seq <= pos, || {
            format!("spec.task.maxSeqLength ({max_seq}{default}) exceeds spec.model.config.maxPositionEmbeddings \
                     ({pos}): set spec.task.maxSeqLength to at most {pos}")
        });
    }
}

fn has_arch_of(m: &crate::ModelSpec) -> bool {
    m.config.is_some() || m.config_file.is_some()
}

fn task(spec: &MegatronFineTuneSpec, p: &mut Problems) {
    let t = &spec.task;
    let ty = t.type_;
    let present = [
        (
            "questionAnswering",
            t.question_answering.is_some(),
            TaskType::QuestionAnswering,
        ),
        (
            "tokenClassification",
            t.token_classification.is_some(),
            TaskType::TokenClassification,
        ),
        (
            "textClassification",
            t.text_classification.is_some(),
            TaskType::TextClassification,
        ),
        (
            "relationExtraction",
            t.relation_extraction.is_some(),
            TaskType::RelationExtraction,
        ),
    ];
    for (field, set, owner) in present {
        p.check(!set || owner == ty, || {
            format!("spec.task.{field} is only allowed when spec.task.type is {owner:?}: remove it or change the type")
        });
    }
    match t.resolved() {
        Err(e) => p.0.push(FieldError::new(e.to_string())),
        Ok(Task::QuestionAnswering(qa)) => {
            let max_seq = t.max_seq_length();
            p.check(qa.max_query_length + 3 < max_seq, || {
                "spec.task.questionAnswering.maxQueryLength must leave room for context: \
                 maxQueryLength + 3 must be below spec.task.maxSeqLength"
                    .into()
            });
        }
        Ok(Task::TokenClassification(tc)) => {
            p.check(tc.labels.len() >= 2, || {
                "spec.task.tokenClassification.labels needs at least 2 labels".into()
            });
            for (i, label) in tc.labels.iter().enumerate() {
                p.check(!tc.labels[..i].contains(label), || {
                    format!("spec.task.tokenClassification.labels[{i}]: Duplicate value: {label:?}")
                });
            }
            p.check(tc.labels.first() == Some(&tc.pad_label), || {
                format!("spec.task.tokenClassification.labels must start with the pad label {}: put it first (its id is 0)", tc.pad_label)
            });
        }
        Ok(Task::TextClassification(tc)) => {
            p.check(tc.num_classes >= 2, || {
                "spec.task.textClassification.numClasses must be at least 2".into()
            });
            if let Some(names) = &tc.class_names {
                p.check(names.len() as i64 == tc.num_classes, || {
                    format!("spec.task.textClassification.classNames has {} names but numClasses is {}: give one name per class",
                            names.len(), tc.num_classes)
                });
            }
        }
        Ok(Task::RelationExtraction(re)) => {
            p.check(re.classes.len() >= 2, || {
                "spec.task.relationExtraction.classes needs at least 2 classes".into()
            });
            if let Some(neg) = &re.negative_class {
                p.check(re.classes.contains(neg), || {
                    format!("spec.task.relationExtraction.negativeClass {neg} must be one of spec.task.relationExtraction.classes")
                });
            }
        }
    }
    let d = &spec.data;
    if ty == TaskType::TokenClassification {
        let missing: Vec<&str> = [
            (
                "spec.data.trainLabels",
                d.train.is_some(),
                d.train_labels.is_some(),
            ),
            (
                "spec.data.validationLabels",
                d.validation.is_some(),
                d.validation_labels.is_some(),
            ),
            (
                "spec.data.testLabels",
                d.test.is_some(),
                d.test_labels.is_some(),
            ),
        ]
        .into_iter()
        .filter(|&(_, words, labels)| words && !labels)
        .map(|(field, _, _)| field)
        .collect();
        // The CEL rule's message, then which labels file is missing.
        p.check(missing.is_empty(), || {
            format!(
                "spec.data: TokenClassification reads words and labels from separate files: set \
                 trainLabels, validationLabels and testLabels next to each of train, validation and \
                 test (missing: {})",
                missing.join(", ")
            )
        });
    } else {
        p.check(d.train_labels.is_none() && d.validation_labels.is_none() && d.test_labels.is_none(), || {
            "spec.data.trainLabels, validationLabels and testLabels are only used by TokenClassification: remove them".into()
        });
    }
    for (split, words, labels) in [
        ("train", d.train.is_some(), d.train_labels.is_some()),
        (
            "validation",
            d.validation.is_some(),
            d.validation_labels.is_some(),
        ),
        ("test", d.test.is_some(), d.test_labels.is_some()),
    ] {
        p.check(!labels || words, || {
            format!("spec.data.{split}Labels needs spec.data.{split} (the words file it labels)")
        });
    }
    let allowed = ty.metrics();
    let mut monitor = |field: &str, m: Metric| {
        p.check(allowed.contains(&m), || {
            let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            format!(
                "{field} {} is not reported for {ty:?}: use {}",
                m.as_str(),
                names.join(", ")
            )
        });
    };
    if let Some(best) = &spec.checkpointing.best {
        monitor("spec.checkpointing.best.monitor", best.monitor);
    }
    if let Some(es) = &spec.training.early_stopping {
        monitor("spec.training.earlyStopping.monitor", es.monitor);
    }
}

fn parallelism(spec: &MegatronFineTuneSpec, p: &mut Problems) {
    let par = &spec.parallelism;
    let (tp, dp, rpp) = (
        par.tensor_parallel_size,
        par.data_parallel_size,
        par.ranks_per_pod,
    );
    for (field, v, max) in [
        ("tensorParallelSize", tp, 64),
        ("dataParallelSize", dp, 4096),
        ("ranksPerPod", rpp, 64),
    ] {
        p.check((1..=max).contains(&v), || {
            format!("spec.parallelism.{field} ({v}) must be between 1 and {max}")
        });
    }
    if tp < 1 || dp < 1 || rpp < 1 {
        return;
    }
    p.check((tp * dp) % rpp == 0, || {
        format!(
            "spec.parallelism.ranksPerPod ({rpp}) must divide the world size tensorParallelSize x \
                 dataParallelSize ({})",
            tp * dp
        )
    });
    let heads = spec.model.known_attention_heads();
    if let Some(h) = heads {
        p.check(h % tp == 0, || match spec.model.published() {
            Some(name) if h == HEADS_345M => format!(
                "spec.parallelism.tensorParallelSize ({tp}) must divide the 16 attention heads of \
                 {name}: use 1, 2, 4, 8 or 16"
            ),
            _ => {
                // The CEL rule's candidates: the tensor-parallel sizes worth offering.
                let divisors: Vec<i64> = TP_CANDIDATES.into_iter().filter(|d| h % d == 0).collect();
                format!(
                    "spec.parallelism.tensorParallelSize ({tp}) must divide \
                     spec.model.config.numAttentionHeads ({h}): use one of {divisors:?}"
                )
            }
        });
    }
    if let Some(ffn) = spec.model.config.as_ref().and_then(|c| c.ffn_hidden_size) {
        p.check(ffn % tp == 0, || {
            format!("spec.model.config.ffnHiddenSize ({ffn}) must be a multiple of spec.parallelism.tensorParallelSize ({tp})")
        });
    }
    let t = &spec.training;
    p.check(t.micro_batch_size >= 1 && t.global_batch_size >= 1, || {
        "spec.training.microBatchSize and globalBatchSize must be at least 1".into()
    });
    if t.micro_batch_size >= 1 {
        p.check(t.global_batch_size % t.micro_batch_size == 0, || {
            format!(
                "spec.training.globalBatchSize ({}) must be a multiple of spec.training.microBatchSize ({})",
                t.global_batch_size, t.micro_batch_size
            )
        });
        p.check(t.global_batch_size % (t.micro_batch_size * dp) == 0, || {
            format!("spec.training.globalBatchSize ({}) must be a multiple of spec.training.microBatchSize x \
                     spec.parallelism.dataParallelSize ({} x {dp} = {})",
                    t.global_batch_size, t.micro_batch_size, t.micro_batch_size * dp)
        });
    }
}

/// Tensor-parallel sizes the heads rule offers (as the CRD's CEL rule lists them).
const TP_CANDIDATES: [i64; 26] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 24, 28, 32, 36, 40, 48, 56, 64,
];

fn training(spec: &MegatronFineTuneSpec, p: &mut Problems) {
    let t = &spec.training;
    p.check(!(t.max_steps.is_some() && t.max_epochs.is_some()), || {
        "spec.training: set either maxSteps or maxEpochs, not both".into()
    });
    for (field, v) in [
        ("maxSteps", t.max_steps),
        ("maxEpochs", t.max_epochs),
        ("validationIntervalSteps", t.validation_interval_steps),
        ("evalMicroBatchSize", t.eval_micro_batch_size),
    ] {
        if let Some(v) = v {
            p.check(v >= 1, || {
                format!("spec.training.{field} ({v}) must be at least 1")
            });
        }
    }
    p.check(t.log_interval_steps >= 1, || {
        "spec.training.logIntervalSteps must be at least 1".into()
    });
    p.check(t.loss_scaling.is_none() || t.precision == Precision::Fp16, || {
        "spec.training.lossScaling only applies to precision fp16: remove it or set precision: fp16".into()
    });
    if let Some(ls) = &t.loss_scaling {
        p.check(
            ls.min_scale > 0.0 && ls.min_scale <= ls.initial_scale,
            || {
                format!(
                    "spec.training.lossScaling.minScale must be above 0 and at most initialScale \
                 ({}), got {}",
                    ls.initial_scale, ls.min_scale
                )
            },
        );
    }
    p.check(
        !(t.scheduler.warmup_steps.is_some() && t.scheduler.warmup_ratio.is_some()),
        || "spec.training.scheduler: set either warmupSteps or warmupRatio, not both".into(),
    );
    let lr = t.optimizer.learning_rate;
    p.check((0.0..=10.0).contains(&lr), || {
        format!("spec.training.optimizer.learningRate ({lr}) must be in [0, 10]")
    });
    p.check(
        t.early_stopping.is_none() || spec.data.validation.is_some(),
        || {
            "spec.training.earlyStopping watches a validation metric: set spec.data.validation"
                .into()
        },
    );
}

fn checkpointing(spec: &MegatronFineTuneSpec, p: &mut Problems) {
    let c = &spec.checkpointing;
    p.check(c.keep_last > 0 || c.best.is_some(), || {
        "spec.checkpointing keeps nothing: set keepLast to 1 or more, or set spec.checkpointing.best".into()
    });
    p.check(c.best.is_none() || spec.data.validation.is_some(), || {
        "spec.checkpointing.best ranks checkpoints by a validation metric: set spec.data.validation"
            .into()
    });
    p.check(
        (c.resume.policy == ResumePolicy::From) == c.resume.from.is_some(),
        || {
            "spec.checkpointing.resume.from is required with policy From and only allowed with it"
                .into()
        },
    );
    if let Some(i) = c.interval_steps {
        p.check(i >= 1, || {
            format!("spec.checkpointing.intervalSteps ({i}) must be at least 1")
        });
    }
}
