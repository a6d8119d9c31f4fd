//! `train` end to end on each task's generated data set with a tiny
//! random-init model, locally (`--output-dir`); then `evaluate` and
//! `predict` from the written .nemo give the same metrics and predictions
//! that `train` reported for the test split.

use crate::support::cli_util;

use std::collections::BTreeSet;
use std::path::Path;

use cli_util::{Task, datasets, metrics, run, spec_yaml, temp_dir, text, trainer, write};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks the predictions file is in the task's standard format and covers the test split.
fn check_predictions_format(task: Task, path: &Path) {
    let d = datasets();
    match task {
        Task::QuestionAnswering => {
            let preds: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let dev: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("squad/dev.json")).unwrap())
                    .unwrap();
            let ids: BTreeSet<String> = dev["data"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["paragraphs"].as_array().unwrap())
                .flat_map(|p| p["qas"].as_array().unwrap())
                .map(|q| q["id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(preds.keys().cloned().collect::<BTreeSet<_>>(), ids);
            assert!(preds.values().all(|v| v.is_string()));
        }
        Task::TokenClassification => {
            let words = lines(&d.join("token_classification/text_dev.txt"));
            let got = lines(path);
            assert_eq!(got.len(), words.len(), "one line per sentence");
            for (w, p) in words.iter().zip(&got) {
                assert_eq!(
                    w.split_whitespace().count(),
                    p.split_whitespace().count(),
                    "one label per word: {p}"
                );
                assert!(
                    p.split_whitespace()
                        .all(|l| ["O", "NUM", "CAP", "PUNCT"].contains(&l)),
                    "{p}"
                );
            }
        }
        Task::TextClassification | Task::RelationExtraction => {
            let file = if task == Task::TextClassification {
                "text_classification/dev.tsv"
            } else {
                "relation/dev.tsv"
            };
            let examples = lines(&d.join(file)).len() - 1; // header
            let got = lines(path);
            assert_eq!(got.len(), examples, "one prediction per example");
            let allowed: &[&str] = if task == Task::TextClassification {
                &["0", "1", "2", "3", "4"]
            } else {
                &["CPR:3", "CPR:4", "false"]
            };
            assert!(got.iter().all(|l| allowed.contains(&l.trim())), "{got:?}");
        }
    }
}

fn train_evaluate_predict(name: &str, task: Task) {
    let dir = temp_dir(name);
    let spec = write(&dir, "spec.yaml", &spec_yaml(task, 3, 1));
    let out_dir = dir.join("out");
    let out = run(trainer()
        .args(["train", "--random-init", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let artifacts = out_dir.join("artifacts");
    let nemo = artifacts.join("model.nemo");
    assert!(nemo.is_file(), "{}", text(&out));
    let pred_name = if task == Task::QuestionAnswering {
        "predictions.json"
    } else {
        "predictions.txt"
    };
    let trained_preds = artifacts.join(pred_name);
    check_predictions_format(task, &trained_preds);
    let trained = metrics(&artifacts.join("test_metrics.json"));
    assert!(
        trained.contains_key("test_loss") && trained.contains_key("test_f1"),
        "{trained:?}"
    );
    // Committed checkpoints: the validation one at step 3 (also the final step).
    assert!(
        out_dir
            .join("checkpoints/step-000000000003/manifest.json")
            .is_file()
    );

    // evaluate from the .nemo: the same test metrics.
    let eval_json = dir.join("eval.json");
    let eval_preds = dir.join(format!("eval-{pred_name}"));
    let out = run(trainer()
        .args(["evaluate", "--config"])
        .arg(&spec)
        .arg("--nemo")
        .arg(&nemo)
        .arg("--output")
        .arg(&eval_json)
        .arg("--predictions")
        .arg(&eval_preds));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let evaluated = metrics(&eval_json);
    assert_eq!(
        evaluated.keys().collect::<Vec<_>>(),
        trained.keys().collect::<Vec<_>>()
    );
    for (k, v) in &trained {
        let e = evaluated[k];
        assert!(
            (v - e).abs() <= 1e-9 * v.abs().max(1.0),
            "{k}: train {v} vs evaluate {e}"
        );
    }
    assert_eq!(
        std::fs::read(&eval_preds).unwrap(),
        std::fs::read(&trained_preds).unwrap()
    );

    // predict from the .nemo: the same predictions file.
    let predicted = dir.join(format!("predict-{pred_name}"));
    let out = run(trainer()
        .args(["predict", "--config"])
        .arg(&spec)
        .arg("--nemo")
        .arg(&nemo)
        .arg("--output")
        .arg(&predicted));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read(&predicted).unwrap(),
        std::fs::read(&trained_preds).unwrap()
    );
}

#[test]
fn question_answering() {
    train_evaluate_predict("qa", Task::QuestionAnswering);
}

#[test]
fn token_classification() {
    train_evaluate_predict("token", Task::TokenClassification);
}

#[test]
fn text_classification() {
    train_evaluate_predict("text", Task::TextClassification);
}

#[test]
fn relation_extraction() {
    train_evaluate_predict("relation", Task::RelationExtraction);
}

#[test]
fn a_second_run_resumes_from_the_last_checkpoint() {
    let dir = temp_dir("resume");
    let spec = write(
        &dir,
        "spec.yaml",
        &spec_yaml(Task::TextClassification, 2, 1),
    );
    let out_dir = dir.join("out");
    let out = run(trainer()
        .args(["train", "--random-init", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Four steps now: continues at step 2 instead of starting over.
    let out = run(trainer()
        .args(["train", "--random-init", "--max-steps", "4", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resuming") && stderr.contains("step=2"),
        "{}",
        text(&out)
    );
    assert!(
        out_dir
            .join("checkpoints/step-000000000004/manifest.json")
            .is_file(),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_data_exits_2_naming_the_file_and_line() {
    let dir = temp_dir("bad-data");
    let src = datasets().join("text_classification/train.tsv");
    let mut rows = lines(&src);
    rows[5] = "a sentence without a label".into();
    let bad = dir.join("train.tsv");
    std::fs::write(&bad, rows.join("\n") + "\n").unwrap();
    let spec = write(
        &dir,
        "spec.yaml",
        &spec_yaml(Task::TextClassification, 2, 1),
    );
    let out = run(trainer()
        .args(["train", "--random-init", "--config"])
        .arg(&spec)
        .arg("--train-data")
        .arg(&bad)
        .arg("--output-dir")
        .arg(dir.join("out")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:6", bad.display())),
        "file:line expected: {}",
        text(&out)
    );
}

#[test]
fn evaluate_mode_scores_a_nemo_through_train() {
    let dir = temp_dir("evaluate-mode");
    let spec = write(
        &dir,
        "spec.yaml",
        &spec_yaml(Task::TokenClassification, 2, 1),
    );
    let out = run(trainer()
        .args(["train", "--random-init", "--config"])
        .arg(&spec)
        .arg("--output-dir")
        .arg(dir.join("a")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let nemo = dir.join("a/artifacts/model.nemo");
    // spec.mode Evaluate: only the .nemo and the test split.
    let d = datasets().join("token_classification");
    let eval_spec = format!(
        "mode: Evaluate\ntask:\n  type: TokenClassification\n  maxSeqLength: 48\n  tokenClassification: {{labels: [O, NUM, CAP, PUNCT]}}\n\
         model: {{nemo: {}}}\ndata: {{test: {}, testLabels: {}}}\n\
         training: {{globalBatchSize: 4, microBatchSize: 4}}\nparallelism: {{device: CPU}}\n\
         storage: {{bucket: unused, credentialsSecretRef: {{name: none}}}}\n",
        nemo.display(),
        d.join("text_dev.txt").display(),
        d.join("labels_dev.txt").display()
    );
    let eval_file = write(&dir, "eval.yaml", &eval_spec);
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(&eval_file)
        .arg("--output-dir")
        .arg(dir.join("b")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        metrics(&dir.join("b/artifacts/test_metrics.json")),
        metrics(&dir.join("a/artifacts/test_metrics.json"))
    );
    assert!(
        !dir.join("b/artifacts/model.nemo").exists(),
        "evaluation writes no model"
    );
    assert!(!dir.join("b/checkpoints/step-000000000001").exists());
}

/// `--validate-before-training` (here through its environment variable, as
/// under the operator): the untrained model's validation is logged as step 0
/// and named in the result's message next to the final one, the run is
/// otherwise the same, and a resumed run does not repeat it.
#[test]
fn validation_before_training_is_reported_at_step_0() {
    let dir = temp_dir("validate-first");
    let spec = write(&dir, "spec.yaml", &spec_yaml(Task::QuestionAnswering, 3, 2));
    let train = |out_dir: &str, validate_first: bool, extra: &[&str]| {
        let mut cmd = trainer();
        cmd.args(["train", "--random-init"])
            .args(extra)
            .arg("--config")
            .arg(&spec)
            .arg("--output-dir")
            .arg(dir.join(out_dir));
        if validate_first {
            cmd.env("MEGATRON_VALIDATE_BEFORE_TRAINING", "1");
        } else {
            cmd.env_remove("MEGATRON_VALIDATE_BEFORE_TRAINING");
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        out
    };

    let out = train("first", true, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("validation at step 0 (before training): val_exact_match "),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("trained 3 steps; validation at step 0: val_exact_match ")
            && stderr.contains("; validation at step 3: val_exact_match "),
        "the result names both validations: {}",
        text(&out)
    );
    // An evaluation only: the same training as without it.
    train("plain", false, &[]);
    assert_eq!(
        metrics(&dir.join("first/artifacts/test_metrics.json")),
        metrics(&dir.join("plain/artifacts/test_metrics.json"))
    );

    // Resumed at step 3: no second baseline.
    let out = train("first", true, &["--max-steps", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resumed: the validation before training ran in an earlier attempt")
            && !stderr.contains("validation at step 0"),
        "{}",
        text(&out)
    );
}
