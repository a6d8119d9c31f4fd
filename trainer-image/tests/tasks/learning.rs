//! The proof that the tasks train: for each task, a tiny Megatron-BERT
//! initialised at random and trained with the real loop
//! (`megatron_trainer::train::Trainer` over `TaskData`) on a small data set
//! generated from real English text (tests/python/data_make_datasets.py)
//! reaches a validation metric far above chance within about a minute of CPU.
//! Each test prints its metric, steps and seconds.

use crate::support::task_util;
use crate::support::{common, data_common};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crds::Split;
use megatron_trainer::comm::SingleProcess;
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::task::{SplitFiles, TaskData};
use megatron_trainer::tokenizer::BertTokenizer;
use megatron_trainer::train::{
    CheckpointRequest, StepStats, TrainHooks, TrainResult, TrainTask, Trainer, TrainerConfig,
};
use serde_json::json;
use tch::Device;

const TRAIN: usize = 800;
const DEV: usize = 200;

/// Keeps the validations and the last loss; saves nothing.
#[derive(Default)]
struct Record {
    validations: Vec<(i64, BTreeMap<String, f64>)>,
    last_loss: f64,
}

impl TrainHooks for Record {
    fn on_step(&mut self, stats: &StepStats) -> TrainResult<()> {
        self.last_loss = stats.loss;
        Ok(())
    }
    fn on_validation(
        &mut self,
        step: i64,
        _epoch: f64,
        metrics: &BTreeMap<String, f64>,
    ) -> TrainResult<()> {
        println!("  step {step}: {metrics:?}");
        self.validations.push((step, metrics.clone()));
        Ok(())
    }
    fn on_checkpoint(&mut self, _request: CheckpointRequest<'_>) -> TrainResult<()> {
        Ok(())
    }
}

/// Trains a fresh tiny model on `files` and returns the final validation
/// metrics; prints the figures.
fn learn(
    name: &str,
    task: serde_json::Value,
    training: serde_json::Value,
    files: SplitFiles,
    tokenizer: BertTokenizer,
) -> BTreeMap<String, f64> {
    tch::set_num_threads(1);
    let started = Instant::now();
    let spec = task_util::spec(task, training);
    let data = TaskData::load(&spec, &files, tokenizer).unwrap();
    let cfg = TrainerConfig::from_spec(
        &spec.training,
        &spec.checkpointing,
        1,
        data.num_train_samples(),
    )
    .unwrap();
    let mut config = task_util::tiny_config(data.tokenizer().vocab_size(), 64, 2, 4);
    config.hidden_dropout = 0.0;
    config.attention_dropout = 0.0;
    tch::manual_seed(spec.training.seed);
    let model = megatron_trainer::model::BertTaskModel::new(
        &config,
        &data.head_config(),
        &TpGroup::single(),
        Device::Cpu,
    )
    .unwrap();
    let before = data.evaluate(&model, Split::Validation).unwrap().metrics;
    let mut trainer = Trainer::new(
        model,
        cfg,
        TpGroup::single(),
        Arc::new(SingleProcess),
        0,
        Device::Cpu,
    )
    .unwrap();
    let mut hooks = Record::default();
    let outcome = trainer.fit(&data, &mut hooks).unwrap();
    let metrics = outcome.last_validation.clone().expect("a final validation");
    // the loop's validation is TaskData::validate = evaluate(Validation)
    assert_eq!(
        metrics,
        data.evaluate(trainer.model(), Split::Validation)
            .unwrap()
            .metrics
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name}: {} train features, {} steps, {secs:.1} s (featurizing included); \
         before training {before:?}; after {metrics:?}; last train loss {:.4}",
        data.num_train_samples(),
        outcome.steps,
        hooks.last_loss
    );
    assert!(
        metrics["val_loss"] < before["val_loss"],
        "{name}: validation loss must fall"
    );
    metrics
}

fn chance(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("chance.json")).unwrap()).unwrap()
}

fn training(epochs: i64, lr: f64) -> serde_json::Value {
    json!({"maxEpochs": epochs, "globalBatchSize": 16, "microBatchSize": 16,
           "evalMicroBatchSize": 64,
           "optimizer": {"learningRate": lr, "weightDecay": 0.01},
           "scheduler": {"warmupRatio": 0.1}})
}

#[test]
fn text_classification_learns() {
    common::alone(module_path!(), "text_classification_learns", || {
        let dir = task_util::datasets(TRAIN, DEV);
        let k = chance(&dir)["text_classification_num_classes"]
            .as_u64()
            .unwrap();
        let majority = 100.0
            * chance(&dir)["text_classification_majority_accuracy"]
                .as_f64()
                .unwrap();
        let tc = dir.join("text_classification");
        let m = learn(
            "text classification",
            json!({"type": "TextClassification", "maxSeqLength": 64,
                   "textClassification": {"numClasses": k}}),
            training(2, 1e-3),
            SplitFiles {
                train: Some(tc.join("train.tsv")),
                validation: Some(tc.join("dev.tsv")),
                ..Default::default()
            },
            task_util::uncased(),
        );
        println!("text classification: majority-class accuracy {majority:.1}");
        assert!(
            m["val_accuracy"] > majority + 25.0,
            "accuracy {} vs majority {majority}",
            m["val_accuracy"]
        );
    });
}

#[test]
fn token_classification_learns() {
    common::alone(module_path!(), "token_classification_learns", || {
        let dir = task_util::datasets(TRAIN, DEV);
        let tc = dir.join("token_classification");
        let m = learn(
            "token classification",
            json!({"type": "TokenClassification", "maxSeqLength": 64,
                   "tokenClassification": {"labels": ["O", "CAP", "NUM", "PUNCT"]}}),
            training(4, 1e-3),
            SplitFiles {
                train: Some(tc.join("text_train.txt")),
                train_labels: Some(tc.join("labels_train.txt")),
                validation: Some(tc.join("text_dev.txt")),
                validation_labels: Some(tc.join("labels_dev.txt")),
                ..Default::default()
            },
            task_util::cased(),
        );
        let majority = 100.0
            * chance(&dir)["token_classification_majority_accuracy"]
                .as_f64()
                .unwrap();
        // always predicting the majority label gives macro F1 below 100 / 4 * (2 * majority / (1 + majority))
        println!("token classification: majority-label accuracy {majority:.1}");
        assert!(m["val_f1"] > 80.0, "macro F1 {}", m["val_f1"]);
        assert!(m["val_accuracy"] > majority + 10.0);
    });
}

/// ChemProt-style data (tests/python/task_make_relations.py): entity-marked
/// real sentences whose relation is told by the word between the entities,
/// labels given as class names.
#[test]
fn relation_extraction_learns() {
    common::alone(module_path!(), "relation_extraction_learns", || {
        let dir = data_common::temp_dir("task-learn-relations");
        let status = std::process::Command::new(common::python())
            .arg(data_common::manifest_dir().join("tests/python/task_make_relations.py"))
            .args(["--out", dir.to_str().unwrap(), "--seed", "3"])
            .args(["--train", &TRAIN.to_string(), "--dev", &DEV.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let majority = 100.0 * chance(&dir)["majority_accuracy"].as_f64().unwrap();
        let m = learn(
            "relation extraction",
            json!({"type": "RelationExtraction", "maxSeqLength": 64, "relationExtraction": {
                "classes": task_util::RELATIONS, "negativeClass": "false",
                "entityMarkers": ["@CHEMICAL$", "@GENE$"]}}),
            training(3, 1e-3),
            SplitFiles {
                train: Some(dir.join("train.tsv")),
                validation: Some(dir.join("dev.tsv")),
                ..Default::default()
            },
            task_util::uncased(),
        );
        println!("relation extraction: majority-class accuracy {majority:.1}");
        assert!(
            m["val_accuracy"] > majority + 30.0,
            "accuracy {} vs majority {majority}",
            m["val_accuracy"]
        );
        assert!(m["val_f1"] > 60.0, "micro F1 without false {}", m["val_f1"]);
    });
}

/// SQuAD-format data (tests/python/task_make_squad.py): four real sentences
/// per context, questions naming a word that occurs once in it.
#[test]
fn question_answering_learns() {
    common::alone(module_path!(), "question_answering_learns", || {
        let dir = data_common::temp_dir("task-learn-squad");
        let status = std::process::Command::new(common::python())
            .arg(data_common::manifest_dir().join("tests/python/task_make_squad.py"))
            .args(["--out", dir.to_str().unwrap(), "--seed", "5"])
            .args(["--train", &TRAIN.to_string(), "--dev", &DEV.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let m = learn(
            "question answering",
            json!({"type": "QuestionAnswering", "maxSeqLength": 128,
                   "questionAnswering": {"docStride": 48, "maxQueryLength": 24}}),
            training(8, 2e-3),
            SplitFiles {
                train: Some(dir.join("train.json")),
                validation: Some(dir.join("dev.json")),
                ..Default::default()
            },
            task_util::uncased(),
        );
        // the untrained model scores 0 (printed above): a random span is almost never exact
        assert!(m["val_exact_match"] > 30.0, "EM {}", m["val_exact_match"]);
        assert!(m["val_f1"] > 30.0, "F1 {}", m["val_f1"]);
    });
}
