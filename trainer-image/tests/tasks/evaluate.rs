//! The four tasks as `TaskData`: featurized batches and their targets,
//! `evaluate` against a Python recomputation of the metrics from the data
//! files and the written predictions, predictions round trips, the loss of
//! a whole split against one direct computation, evaluation under tensor
//! parallelism against TP=1, and bad input named by file and line.

use crate::support::common;
use crate::support::data_common;
use crate::support::task_util;

use std::collections::BTreeMap;
use std::path::Path;

use crds::Split;
use megatron_trainer::data::squad::read_squad_file;
use megatron_trainer::data::text_classification::read_text_classification;
use megatron_trainer::data::token_classification::read_token_classification;
use megatron_trainer::model::{
    BertTaskModel, HeadOutput, Task, question_answering_loss, sequence_classification_loss,
    token_classification_loss,
};
use megatron_trainer::task::{Evaluation, Predictions, SplitFiles, TaskData, write_metrics_json};
use megatron_trainer::train::{TrainError, TrainTask};
use serde_json::json;
use task_util::{RELATIONS, assert_metrics_match, reference_metrics, spec, write};
use tch::Device;

fn files(train: &Path, validation: &Path) -> SplitFiles {
    SplitFiles {
        train: Some(train.to_path_buf()),
        validation: Some(validation.to_path_buf()),
        ..Default::default()
    }
}

fn without_loss(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .filter(|(k, _)| !k.ends_with("_loss"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Writes, reads back and re-scores predictions: the metrics must equal the evaluation's.
fn round_trip(data: &TaskData, ev: &Evaluation, path: &Path) {
    data.write_predictions(ev, path).unwrap();
    let back = data.read_predictions(ev.split, path).unwrap();
    assert_eq!(back, ev.predictions, "predictions survive the file");
    let again = data.score(ev.split, back).unwrap();
    assert_eq!(again.metrics, without_loss(&ev.metrics));
    assert_eq!(again.report, ev.report);
}

/// The mean loss of the whole split in one batch, computed directly.
fn direct_loss(data: &TaskData, model: &BertTaskModel, split: Split) -> f64 {
    let _g = tch::no_grad_guard();
    let all: Vec<usize> = (0..data.num_features(split)).collect();
    let b = data.batch(split, &all, Device::Cpu).unwrap();
    let out = model
        .forward(
            &b.input_ids,
            Some(&b.token_type_ids),
            Some(&b.attention_mask),
            false,
        )
        .unwrap();
    let loss = match &out {
        HeadOutput::Span {
            start_logits,
            end_logits,
        } => question_answering_loss(
            start_logits,
            end_logits,
            b.start_positions.as_ref().unwrap(),
            b.end_positions.as_ref().unwrap(),
        ),
        HeadOutput::TokenLogits(l) => {
            token_classification_loss(l, b.labels.as_ref().unwrap(), b.loss_mask.as_ref(), -100)
        }
        HeadOutput::SequenceLogits(l) => {
            sequence_classification_loss(l, b.labels.as_ref().unwrap())
        }
    };
    loss.unwrap().double_value(&[])
}

fn assert_close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn question_answering_evaluates_like_the_official_script() {
    let generated = task_util::datasets(60, 24);
    let (train, dev) = (
        generated.join("squad/train.json"),
        generated.join("squad/dev.json"),
    );
    let s = spec(
        json!({"type": "QuestionAnswering", "maxSeqLength": 96,
               "questionAnswering": {"docStride": 32, "maxQueryLength": 32, "nBestSize": 10}}),
        json!({"evalMicroBatchSize": 7}),
    );
    let data = TaskData::load(&s, &files(&train, &dev), task_util::uncased()).unwrap();
    let head = data.head_config();
    assert_eq!(
        (head.task, head.num_classes, head.num_layers, head.dropout),
        (Task::QuestionAnswering, 2, 1, 0.0)
    );
    assert_eq!(data.label_names(), None);
    // contexts of ~150 tokens do not fit 96: several windows per question
    assert!(
        data.num_train_samples() > 60 * 3 / 2,
        "{}",
        data.num_train_samples()
    );
    let b = data.train_batch(&[0, 1, 2, 3], Device::Cpu).unwrap();
    assert_eq!(b.input_ids.size()[0], 4);
    assert!(b.input_ids.size()[1] <= 96);
    let (st, en) = (b.start_positions.unwrap(), b.end_positions.unwrap());
    assert_eq!((st.size(), en.size()), (vec![4], vec![4]));
    assert_eq!(st.le_tensor(&en).all().int64_value(&[]), 1);

    let cfg = task_util::tiny_config(data.tokenizer().vocab_size(), 32, 2, 2);
    let model = task_util::model(&cfg, &head, 11);
    let ev = data.evaluate(&model, Split::Validation).unwrap();
    let keys: Vec<&str> = ev.metrics.keys().map(String::as_str).collect();
    assert_eq!(keys, ["val_exact_match", "val_f1", "val_loss"]);
    let Predictions::Answers(answers) = &ev.predictions else {
        panic!("QA predicts answers")
    };
    assert_eq!(answers.len(), 24);
    assert_close(
        ev.metrics["val_loss"],
        direct_loss(&data, &model, Split::Validation),
        1e-4,
        "val_loss",
    );
    let dir = data_common::temp_dir("task-qa");
    let pred = dir.join("predictions.json");
    round_trip(&data, &ev, &pred);
    let reference = reference_metrics(json!({"task": "squad", "data": dev, "predictions": pred}));
    assert_metrics_match(&ev.metrics, "val", &reference);

    // a predictions file with right, partly right and wrong answers scores like the official script
    let examples = read_squad_file(&dev).unwrap();
    let mixed: BTreeMap<String, String> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let gold = &e.answers[0].text;
            let text = match i % 3 {
                0 => gold.clone(),
                1 => format!("the {gold} and more"),
                _ => "nothing".into(),
            };
            (e.id.clone(), text)
        })
        .collect();
    let scored = data
        .score(Split::Validation, Predictions::Answers(mixed))
        .unwrap();
    data.write_predictions(&scored, &pred).unwrap();
    let reference = reference_metrics(json!({"task": "squad", "data": dev, "predictions": pred}));
    assert_metrics_match(&scored.metrics, "val", &reference);
    assert!(scored.metrics["val_exact_match"] > 30.0);
    // a test file without answers is only predicted
    let unlabeled = write(
        &dir,
        "questions.json",
        r#"{"data": [{"title": "t", "paragraphs": [{"context": "The licensor is Apache. It was 2004.",
            "qas": [{"id": "a", "question": "Who is the licensor?"}, {"id": "b", "question": "When?"}]}]}]}"#,
    );
    let f = SplitFiles {
        test: Some(unlabeled),
        ..Default::default()
    };
    let only_test = TaskData::load(&s, &f, task_util::uncased()).unwrap();
    let t = only_test.evaluate(&model, Split::Test).unwrap();
    assert!(t.metrics.is_empty());
    let Predictions::Answers(a) = &t.predictions else {
        panic!()
    };
    assert_eq!(a.keys().collect::<Vec<_>>(), ["a", "b"]);
    let m = dir.join("metrics.json");
    write_metrics_json(&ev, &m).unwrap();
    let back: BTreeMap<String, f64> =
        serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    assert_eq!(back, ev.metrics);
}

#[test]
fn token_classification_predicts_every_word_and_scores_by_word() {
    let generated = task_util::datasets(60, 24);
    let tc = generated.join("token_classification");
    let labels = ["O", "CAP", "NUM", "PUNCT"];
    // 16 tokens: most sentences need several windows
    let s = spec(
        json!({"type": "TokenClassification", "maxSeqLength": 16,
               "tokenClassification": {"labels": labels}}),
        json!({"evalMicroBatchSize": 5}),
    );
    let f = SplitFiles {
        train: Some(tc.join("text_train.txt")),
        train_labels: Some(tc.join("labels_train.txt")),
        validation: Some(tc.join("text_dev.txt")),
        validation_labels: Some(tc.join("labels_dev.txt")),
        ..Default::default()
    };
    let data = TaskData::load(&s, &f, task_util::cased()).unwrap();
    assert_eq!(data.label_names().unwrap(), labels);
    let head = data.head_config();
    assert_eq!(
        (head.task, head.num_classes, head.num_layers, head.dropout),
        (Task::TokenClassification, 4, 2, 0.5)
    );
    assert!(data.num_features(Split::Validation) > 24 * 2);
    let b = data.train_batch(&[0, 1, 2], Device::Cpu).unwrap();
    let shape = b.input_ids.size();
    assert!(shape[0] == 3 && shape[1] <= 16);
    assert_eq!(b.labels.as_ref().unwrap().size(), shape);
    assert_eq!(b.loss_mask.as_ref().unwrap().size(), shape);

    let cfg = task_util::tiny_config(data.tokenizer().vocab_size(), 32, 2, 2);
    let model = task_util::model(&cfg, &head, 12);
    let ev = data.evaluate(&model, Split::Validation).unwrap();
    let keys: Vec<&str> = ev.metrics.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "val_accuracy",
            "val_f1",
            "val_loss",
            "val_precision",
            "val_recall"
        ]
    );
    assert!(ev.report.as_ref().unwrap().contains("macro avg"));
    assert_close(
        ev.metrics["val_loss"],
        direct_loss(&data, &model, Split::Validation),
        1e-4,
        "val_loss",
    );
    let dir = data_common::temp_dir("task-tc");
    let pred = dir.join("predictions.txt");
    round_trip(&data, &ev, &pred);
    let req = |p: &Path| {
        json!({"task": "token", "text": tc.join("text_dev.txt"), "labels": tc.join("labels_dev.txt"),
               "predictions": p, "label_names": labels})
    };
    assert_metrics_match(&ev.metrics, "val", &reference_metrics(req(&pred)));

    // gold labels with every third word changed: non-trivial scores, same as Python
    let examples =
        read_token_classification(&tc.join("text_dev.txt"), Some(&tc.join("labels_dev.txt")))
            .unwrap();
    let mut k = 0;
    let words: Vec<Vec<usize>> = examples
        .iter()
        .map(|e| {
            e.labels
                .as_ref()
                .unwrap()
                .iter()
                .map(|l| {
                    k += 1;
                    let id = labels.iter().position(|x| x == l).unwrap();
                    if k % 3 == 0 { (id + 1) % 4 } else { id }
                })
                .collect()
        })
        .collect();
    let scored = data
        .score(Split::Validation, Predictions::WordLabels(words))
        .unwrap();
    data.write_predictions(&scored, &pred).unwrap();
    assert_metrics_match(&scored.metrics, "val", &reference_metrics(req(&pred)));
    assert!(scored.metrics["val_accuracy"] > 60.0 && scored.metrics["val_accuracy"] < 70.0);
}

/// Sub-token label spreading and NeMo's loss-mask switches on a handmade sentence.
#[test]
fn token_classification_loss_mask_follows_ignore_options() {
    let dir = data_common::temp_dir("task-tc-mask");
    let text = write(
        &dir,
        "text.txt",
        "Tokenization of unbelievably long words\n",
    );
    let labs = write(&dir, "labels.txt", "B O B I O\n");
    let tok = task_util::uncased();
    let pieces: Vec<usize> = ["Tokenization", "of", "unbelievably", "long", "words"]
        .iter()
        .map(|w| tok.tokenize(w).unwrap().len())
        .collect();
    assert!(
        pieces.iter().sum::<usize>() > 5,
        "some words split: {pieces:?}"
    );
    let subtokens: usize = pieces.iter().sum();
    for (extra, start_end, expected) in [
        (false, false, subtokens + 2),
        (true, false, 5 + 2),
        (false, true, subtokens),
        (true, true, 5),
    ] {
        let s = spec(
            json!({"type": "TokenClassification", "tokenClassification": {
                "labels": ["O", "B", "I"], "ignoreExtraTokens": extra, "ignoreStartEnd": start_end}}),
            json!({}),
        );
        let f = SplitFiles {
            train: Some(text.clone()),
            train_labels: Some(labs.clone()),
            ..Default::default()
        };
        let data = TaskData::load(&s, &f, tok.clone()).unwrap();
        let b = data.train_batch(&[0], Device::Cpu).unwrap();
        let mask = Vec::<i64>::try_from(b.loss_mask.unwrap().flatten(0, -1)).unwrap();
        let labels = Vec::<i64>::try_from(b.labels.unwrap().flatten(0, -1)).unwrap();
        assert_eq!(
            mask.iter().sum::<i64>() as usize,
            expected,
            "{extra} {start_end}"
        );
        // [CLS], then each word's pieces all carry its label, then [SEP] with the pad label
        let mut want = vec![0i64];
        for (p, l) in pieces.iter().zip([1, 0, 1, 2, 0]) {
            want.extend(std::iter::repeat_n(l, *p));
        }
        want.push(0);
        assert_eq!(labels, want);
    }
}

fn per_example_classes(data: &TaskData, model: &BertTaskModel, n: usize) -> Vec<(usize, f64)> {
    let _g = tch::no_grad_guard();
    (0..n)
        .map(|i| {
            let b = data.batch(Split::Validation, &[i], Device::Cpu).unwrap();
            let out = model
                .forward(
                    &b.input_ids,
                    Some(&b.token_type_ids),
                    Some(&b.attention_mask),
                    false,
                )
                .unwrap();
            let HeadOutput::SequenceLogits(l) = out else {
                panic!()
            };
            let (top, idx) = l.get(0).topk(2, -1, true, true);
            let top = Vec::<f32>::try_from(top).unwrap();
            (
                idx.get(0).int64_value(&[]) as usize,
                f64::from(top[0] - top[1]),
            )
        })
        .collect()
}

#[test]
fn text_classification_matches_per_sentence_argmax_and_python() {
    let generated = task_util::datasets(60, 24);
    let chance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(generated.join("chance.json")).unwrap())
            .unwrap();
    let k = chance["text_classification_num_classes"].as_u64().unwrap() as usize;
    let (train, dev) = (
        generated.join("text_classification/train.tsv"),
        generated.join("text_classification/dev.tsv"),
    );
    let s = spec(
        json!({"type": "TextClassification", "maxSeqLength": 64,
               "textClassification": {"numClasses": k}}),
        json!({"microBatchSize": 2, "globalBatchSize": 2, "evalMicroBatchSize": 5}),
    );
    let mut s_header = s.clone();
    s_header.data.tsv_header = true;
    let data = TaskData::load(&s_header, &files(&train, &dev), task_util::uncased()).unwrap();
    assert_eq!(data.label_names(), None);
    assert_eq!(data.num_train_samples(), 60);
    let b = data.train_batch(&[5, 9], Device::Cpu).unwrap();
    let gold = read_text_classification(&train, k, true).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(b.labels.unwrap()).unwrap(),
        [gold[5].label.unwrap() as i64, gold[9].label.unwrap() as i64]
    );
    assert!(b.input_ids.size()[1] <= 64);
    let head = data.head_config();
    assert_eq!(
        (head.task, head.num_classes, head.num_layers, head.dropout),
        (Task::SequenceClassification, k as i64, 2, 0.1)
    );
    let cfg = task_util::tiny_config(data.tokenizer().vocab_size(), 32, 2, 2);
    let model = task_util::model(&cfg, &head, 13);
    let ev = data.evaluate(&model, Split::Validation).unwrap();
    let Predictions::Classes(classes) = &ev.predictions else {
        panic!()
    };
    for (i, (c, margin)) in per_example_classes(&data, &model, 24)
        .into_iter()
        .enumerate()
    {
        assert!(
            classes[i] == c || margin < 1e-4,
            "sentence {i}: batched {} vs alone {c}",
            classes[i]
        );
    }
    assert_close(
        ev.metrics["val_loss"],
        direct_loss(&data, &model, Split::Validation),
        1e-4,
        "val_loss",
    );
    let dir = data_common::temp_dir("task-text");
    let pred = dir.join("predictions.txt");
    round_trip(&data, &ev, &pred);
    let names: Vec<String> = (0..k).map(|i| i.to_string()).collect();
    let req = |p: &Path| json!({"task": "text", "data": dev, "predictions": p, "class_names": names, "header": true});
    assert_metrics_match(&ev.metrics, "val", &reference_metrics(req(&pred)));
    let dev_gold = read_text_classification(&dev, k, true).unwrap();
    let mixed: Vec<usize> = dev_gold
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if i % 4 == 0 {
                (e.label.unwrap() + 1) % k
            } else {
                e.label.unwrap()
            }
        })
        .collect();
    let scored = data
        .score(Split::Validation, Predictions::Classes(mixed))
        .unwrap();
    data.write_predictions(&scored, &pred).unwrap();
    assert_metrics_match(&scored.metrics, "val", &reference_metrics(req(&pred)));
    assert_close(scored.metrics["val_accuracy"], 75.0, 1e-9, "accuracy");

    // without tsvHeader the header line is still recognised (its label is no class)
    let plain = TaskData::load(&s, &files(&train, &dev), task_util::uncased()).unwrap();
    assert_eq!(plain.num_train_samples(), 60);

    // named classes: labels may be names, predictions are written as names;
    // a test file without labels is only predicted
    let named = spec(
        json!({"type": "TextClassification", "maxSeqLength": 32,
               "textClassification": {"numClasses": 2, "classNames": ["neg", "pos"]}}),
        json!({}),
    );
    let tr = write(
        &dir,
        "named.tsv",
        "sentence\tlabel\ngood film\tpos\nbad film\t0\n",
    );
    let te = write(&dir, "unlabeled.tsv", "fine film\nawful film\nok\n");
    let f = SplitFiles {
        train: Some(tr),
        test: Some(te),
        ..Default::default()
    };
    let d = TaskData::load(&named, &f, task_util::uncased()).unwrap();
    assert_eq!(d.label_names().unwrap(), ["neg", "pos"]);
    let b = d.train_batch(&[0, 1], Device::Cpu).unwrap();
    assert_eq!(Vec::<i64>::try_from(b.labels.unwrap()).unwrap(), [1, 0]);
    let m = task_util::model(&cfg, &d.head_config(), 3);
    let ev = d.evaluate(&m, Split::Test).unwrap();
    assert!(ev.metrics.is_empty() && ev.report.is_none());
    d.write_predictions(&ev, &pred).unwrap();
    let text = std::fs::read_to_string(&pred).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().all(|l| l == "neg" || l == "pos"), "{text}");
}

#[test]
fn relation_extraction_scores_micro_without_the_negative_class() {
    let generated = task_util::datasets(60, 24);
    let (train, dev) = (
        generated.join("relation/train.tsv"),
        generated.join("relation/dev.tsv"),
    );
    let s = spec(
        json!({"type": "RelationExtraction", "maxSeqLength": 64, "relationExtraction": {
            "classes": RELATIONS, "negativeClass": "false",
            "entityMarkers": ["@CHEMICAL$", "@GENE$"]}}),
        json!({}),
    );
    let data = TaskData::load(&s, &files(&train, &dev), task_util::uncased()).unwrap();
    assert_eq!(data.label_names().unwrap(), RELATIONS);
    assert_eq!(data.head_config().num_classes, 3);
    let cfg = task_util::tiny_config(data.tokenizer().vocab_size(), 32, 2, 2);
    let model = task_util::model(&cfg, &data.head_config(), 14);
    let ev = data.evaluate(&model, Split::Validation).unwrap();
    let dir = data_common::temp_dir("task-re");
    let pred = dir.join("predictions.txt");
    round_trip(&data, &ev, &pred);
    let req = |p: &Path| {
        json!({"task": "relation", "data": dev, "predictions": p, "class_names": RELATIONS,
               "negative": "false"})
    };
    assert_metrics_match(&ev.metrics, "val", &reference_metrics(req(&pred)));
    // predictions are class names
    let text = std::fs::read_to_string(&pred).unwrap();
    assert!(text.lines().all(|l| RELATIONS.contains(&l)));

    // hand-computed: gold [CPR:3, CPR:4, false, false], predicted [CPR:3, false, CPR:4, false]:
    // without "false", tp 1, predicted 2, true 2 -> P = R = F1 = 50; accuracy 50
    let tr = write(
        &dir,
        "named.tsv",
        "@CHEMICAL$ binds @GENE$\tCPR:3\n@GENE$ is hit by @CHEMICAL$\tCPR:4\n\
         @CHEMICAL$ far from @GENE$\tfalse\n@GENE$ and @CHEMICAL$\t2\n",
    );
    let f = SplitFiles {
        train: Some(tr.clone()),
        validation: Some(tr),
        ..Default::default()
    };
    let d = TaskData::load(&s, &f, task_util::uncased()).unwrap();
    let ev = d
        .score(Split::Validation, Predictions::Classes(vec![0, 2, 1, 2]))
        .unwrap();
    for m in ["val_precision", "val_recall", "val_f1", "val_accuracy"] {
        assert_close(ev.metrics[m], 50.0, 1e-9, m);
    }
    assert!(ev.report.unwrap().contains("CPR:3"));
}

#[track_caller]
fn invalid(r: Result<TaskData, TrainError>, needles: &[&str]) {
    let e = r.expect_err("bad input must fail");
    assert!(e.is_invalid_input(), "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} should name {n:?}");
    }
}

#[test]
fn bad_data_is_invalid_input_naming_file_and_line() {
    let dir = data_common::temp_dir("task-bad");
    let tok = task_util::uncased;
    let tc = |labels: &[&str]| {
        spec(
            json!({"type": "TokenClassification", "tokenClassification": {"labels": labels}}),
            json!({}),
        )
    };
    let text = write(&dir, "text.txt", "a b\nc d e\n");
    let labs = write(&dir, "labels.txt", "O O\nO X O\n");
    let f = SplitFiles {
        train: Some(text.clone()),
        train_labels: Some(labs.clone()),
        ..Default::default()
    };
    invalid(
        TaskData::load(&tc(&["O", "B"]), &f, tok()),
        &[
            "labels.txt:2:",
            "\"X\"",
            "spec.task.tokenClassification.labels",
        ],
    );
    let short = write(&dir, "short.txt", "O O\nO O\n");
    let f2 = SplitFiles {
        train_labels: Some(short),
        ..f.clone()
    };
    invalid(
        TaskData::load(&tc(&["O", "X"]), &f2, tok()),
        &["short.txt:2:", "3 words"],
    );
    let f3 = SplitFiles {
        train_labels: None,
        ..f.clone()
    };
    invalid(
        TaskData::load(&tc(&["O", "X"]), &f3, tok()),
        &["spec.data.trainLabels"],
    );
    invalid(
        TaskData::load(&tc(&["B", "O"]), &f, tok()),
        &["spec.task.tokenClassification.labels", "pad label"],
    );

    let text_spec = spec(
        json!({"type": "TextClassification", "textClassification": {"numClasses": 2}}),
        json!({}),
    );
    let tsv = write(
        &dir,
        "train.tsv",
        "sentence\tlabel\ngood\t1\nbad\t0\nworse\t2\n",
    );
    let only = |p: &Path| SplitFiles {
        train: Some(p.to_path_buf()),
        ..Default::default()
    };
    invalid(
        TaskData::load(&text_spec, &only(&tsv), tok()),
        &["train.tsv:4:", "\"2\"", "0..2"],
    );
    let nolabel = write(&dir, "nolabel.tsv", "good\t1\nbad\n");
    invalid(
        TaskData::load(&text_spec, &only(&nolabel), tok()),
        &["nolabel.tsv:2:", "no label"],
    );
    let missing = dir.join("absent.tsv");
    invalid(
        TaskData::load(&text_spec, &only(&missing), tok()),
        &["absent.tsv"],
    );

    let re_spec = spec(
        json!({"type": "RelationExtraction", "relationExtraction": {"classes": RELATIONS}}),
        json!({}),
    );
    let re = write(
        &dir,
        "re.tsv",
        "@GENE$ x @CHEMICAL$\tCPR:3\n@GENE$ y @CHEMICAL$\tCPR:7\n",
    );
    invalid(
        TaskData::load(&re_spec, &only(&re), tok()),
        &["re.tsv:2:", "CPR:7", "CPR:4"],
    );
    let marked_spec = spec(
        json!({"type": "RelationExtraction", "relationExtraction": {"classes": RELATIONS,
            "entityMarkers": ["@CHEMICAL$", "@GENE$"]}}),
        json!({}),
    );
    let unmarked = write(
        &dir,
        "unmarked.tsv",
        "aspirin binds COX1\tCPR:3\naspirin and @GENE$\tCPR:4\n",
    );
    invalid(
        TaskData::load(&marked_spec, &only(&unmarked), tok()),
        &[
            "unmarked.tsv",
            "no sentence carries every entity marker",
            "entityMarkers",
        ],
    );

    let qa_spec = spec(json!({"type": "QuestionAnswering"}), json!({}));
    let bad_json = write(&dir, "squad.json", "{\"data\": [\n  {\"title\": 1,\n");
    invalid(
        TaskData::load(&qa_spec, &only(&bad_json), tok()),
        &["squad.json:"],
    );
    let noans = write(
        &dir,
        "noans.json",
        r#"{"data": [{"title": "t", "paragraphs": [{"context": "a b c", "qas": [{"id": "q1", "question": "x?", "answers": []}]}]}]}"#,
    );
    invalid(
        TaskData::load(&qa_spec, &only(&noans), tok()),
        &["noans.json", "\"q1\"", "no answer"],
    );

    // predictions files are checked too
    let data = TaskData::load(
        &text_spec,
        &only(&write(&dir, "ok.tsv", "a\t0\nb\t1\n")),
        tok(),
    )
    .unwrap();
    let p = write(&dir, "pred.txt", "0\n7\n");
    let e = data.read_predictions(Split::Train, &p).unwrap_err();
    assert!(
        e.is_invalid_input() && e.to_string().contains("pred.txt:2:"),
        "{e}"
    );
    let e = data.evaluate(
        &task_util::model(
            &task_util::tiny_config(data.tokenizer().vocab_size(), 16, 1, 1),
            &data.head_config(),
            1,
        ),
        Split::Validation,
    );
    assert!(e.unwrap_err().to_string().contains("spec.data.validation"));
}

/// Every rank of a tensor-parallel group evaluates to the same metrics and
/// predictions as the unsplit model.
#[test]
fn tensor_parallel_evaluation_matches_tp1() {
    const TP: usize = 2;
    if common::rank_child().is_some() {
        tch::set_num_threads(1);
        let topo = megatron_trainer::comm::init_from_env(TP).expect("rendezvous");
        let group = megatron_trainer::parallel::TpGroup::new(topo.tp.clone());
        let generated = std::path::PathBuf::from(std::env::var("TASK_TEST_DATA").unwrap());
        let s = spec(
            json!({"type": "TokenClassification", "maxSeqLength": 24,
                   "tokenClassification": {"labels": ["O", "CAP", "NUM", "PUNCT"]}}),
            json!({"evalMicroBatchSize": 8}),
        );
        let tc = generated.join("token_classification");
        let f = SplitFiles {
            validation: Some(tc.join("text_dev.txt")),
            validation_labels: Some(tc.join("labels_dev.txt")),
            ..Default::default()
        };
        let data = TaskData::load(&s, &f, task_util::cased()).unwrap();
        let mut cfg = task_util::tiny_config(data.tokenizer().vocab_size(), 32, 2, 4);
        cfg.padded_vocab_size = cfg.padded_vocab_for(TP as i64);
        let full = task_util::model(&cfg, &data.head_config(), 21);
        let ev1 = data.evaluate(&full, Split::Validation).unwrap();
        let shard =
            megatron_trainer::model::shard_state_dict(&full.state_dict(), TP as i64, group.rank())
                .unwrap();
        let mut m = BertTaskModel::new(&cfg, &data.head_config(), &group, Device::Cpu).unwrap();
        m.load_state_dict(&shard).unwrap();
        let ev2 = data.evaluate(&m, Split::Validation).unwrap();
        assert_eq!(ev2.predictions, ev1.predictions);
        for (k, v) in &ev1.metrics {
            assert_close(ev2.metrics[k], *v, 1e-5, k);
        }
        common::emit("val_loss", format!("{:.6}", ev2.metrics["val_loss"]));
        common::emit("val_f1", format!("{:.9}", ev2.metrics["val_f1"]));
        return;
    }
    let generated = task_util::datasets(60, 24);
    let outs = common::Ranks::new(module_path!(), "tensor_parallel_evaluation_matches_tp1", TP)
        .env("TASK_TEST_DATA", generated.display())
        .run_ok();
    assert_eq!(
        outs[0].expect_value("val_f1"),
        outs[1].expect_value("val_f1")
    );
    assert_eq!(
        outs[0].expect_value("val_loss"),
        outs[1].expect_value("val_loss")
    );
}

/// Data-parallel replicas split the evaluation batches between them and
/// exchange the outputs: each runs only its share, and every replica gets
/// exactly (bit for bit) the predictions and metrics of one process that
/// ran every batch. Three replicas, so the shares are uneven.
#[test]
fn data_parallel_evaluation_is_sharded_and_matches_one_replica() {
    const DP: usize = 3;
    if common::rank_child().is_some() {
        tch::set_num_threads(1);
        let topo = megatron_trainer::comm::init_from_env(1).expect("rendezvous");
        assert_eq!((topo.dp_size, topo.tp_size), (DP, 1));
        let generated = std::path::PathBuf::from(std::env::var("TASK_TEST_DATA").unwrap());
        let tc = generated.join("token_classification");
        let chance: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(generated.join("chance.json")).unwrap())
                .unwrap();
        let k = chance["text_classification_num_classes"].as_u64().unwrap();
        let cases = [
            (
                json!({"type": "QuestionAnswering", "maxSeqLength": 96,
                       "questionAnswering": {"docStride": 32, "maxQueryLength": 32}}),
                SplitFiles {
                    validation: Some(generated.join("squad/dev.json")),
                    ..Default::default()
                },
            ),
            (
                json!({"type": "TokenClassification", "maxSeqLength": 24,
                       "tokenClassification": {"labels": ["O", "CAP", "NUM", "PUNCT"]}}),
                SplitFiles {
                    validation: Some(tc.join("text_dev.txt")),
                    validation_labels: Some(tc.join("labels_dev.txt")),
                    ..Default::default()
                },
            ),
            (
                json!({"type": "TextClassification", "maxSeqLength": 32,
                       "textClassification": {"numClasses": k}}),
                SplitFiles {
                    validation: Some(generated.join("text_classification/dev.tsv")),
                    ..Default::default()
                },
            ),
        ];
        for (task, files) in cases {
            let name = task["type"].as_str().unwrap().to_owned();
            let mut data = TaskData::load(
                &spec(task, json!({"evalMicroBatchSize": 7})),
                &files,
                task_util::uncased(),
            )
            .unwrap();
            let cfg = task_util::tiny_config(data.tokenizer().vocab_size(), 32, 2, 2);
            let model = task_util::model(&cfg, &data.head_config(), 5);
            let whole = data.evaluate(&model, Split::Validation).unwrap();
            data.shard_evaluation(topo.dp.clone());
            let sharded = data.evaluate(&model, Split::Validation).unwrap();
            let share = (0..whole.batches_run)
                .filter(|b| b % DP == topo.dp_rank)
                .count();
            assert!(
                whole.batches_run >= DP,
                "{name}: {} batches",
                whole.batches_run
            );
            assert_eq!(sharded.batches_run, share, "{name}: this replica's share");
            assert_eq!(sharded.predictions, whole.predictions, "{name}");
            for (k, v) in &whole.metrics {
                assert_eq!(sharded.metrics[k].to_bits(), v.to_bits(), "{name} {k}");
            }
            assert_eq!(sharded.metrics.len(), whole.metrics.len(), "{name}");
            common::emit(
                &format!("{name}_loss"),
                format!("{:e}", sharded.metrics["val_loss"]),
            );
        }
        return;
    }
    let generated = task_util::datasets(60, 24);
    let outs = common::Ranks::new(
        module_path!(),
        "data_parallel_evaluation_is_sharded_and_matches_one_replica",
        DP,
    )
    .env("TASK_TEST_DATA", generated.display())
    .run_ok();
    for task in [
        "QuestionAnswering",
        "TokenClassification",
        "TextClassification",
    ] {
        let key = format!("{task}_loss");
        for r in 1..DP {
            assert_eq!(
                outs[r].expect_value(&key),
                outs[0].expect_value(&key),
                "{key}"
            );
        }
    }
}
