//! Loading the configuration through the real binary: a manifest or a bare
//! spec, YAML or JSON, give the same effective spec; bad input exits 2 with
//! the field named (and the reason in the termination log); a local run
//! needs no `spec.storage`, a run that uses S3 without it exits 2 naming it.

use crate::support::cli_util;
use crate::support::nemo_util;

use std::path::{Path, PathBuf};

use cli_util::{
    Task, datasets, local_spec_yaml, metrics, run, spec_yaml, temp_dir, text, trainer, write,
};
use megatron_trainer::model::HeadConfig;

fn dry_run(config: &std::path::Path) -> std::process::Output {
    run(trainer()
        .args(["train", "--random-init", "--dry-run", "--config"])
        .arg(config))
}

fn yaml_to_json(yaml: &str) -> serde_json::Value {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn manifest_and_bare_spec_in_yaml_and_json_agree() {
    let dir = temp_dir("config-forms");
    let spec = spec_yaml(Task::TextClassification, 3, 1);
    let spec_json = yaml_to_json(&spec);
    let manifest = serde_json::json!({
        "apiVersion": "megatron.dev/v1alpha1",
        "kind": "MegatronFineTune",
        "metadata": {"name": "tc", "namespace": "team"},
        "spec": spec_json,
    });
    let files = [
        write(&dir, "spec.yaml", &spec),
        write(
            &dir,
            "spec.json",
            &serde_json::to_string_pretty(&spec_json).unwrap(),
        ),
        write(
            &dir,
            "manifest.yaml",
            &serde_yaml::to_string(&manifest).unwrap(),
        ),
        write(
            &dir,
            "manifest.json",
            &serde_json::to_string(&manifest).unwrap(),
        ),
    ];
    let mut printed = Vec::new();
    for f in &files {
        let out = dry_run(f);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            f.display(),
            text(&out)
        );
        printed.push(yaml_to_json(&String::from_utf8(out.stdout).unwrap()));
    }
    assert!(printed.windows(2).all(|w| w[0] == w[1]), "{printed:#?}");
    // Defaults were applied (the effective spec, not the input echoed).
    assert_eq!(printed[0]["training"]["seed"], 1234);
    assert_eq!(printed[0]["data"]["train"], spec_json["data"]["train"]);
}

#[test]
fn overrides_replace_spec_fields() {
    let dir = temp_dir("config-overrides");
    let f = write(
        &dir,
        "spec.yaml",
        &spec_yaml(Task::TextClassification, 3, 1),
    );
    std::fs::write(dir.join("other.tsv"), "sentence\tlabel\n").unwrap();
    let out = run(trainer()
        .current_dir(&dir)
        .args([
            "train",
            "--random-init",
            "--dry-run",
            "--max-steps",
            "7",
            "--train-data",
            "other.tsv",
            "--config",
        ])
        .arg(&f));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let spec = yaml_to_json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(spec["training"]["maxSteps"], 7);
    // Relative paths become absolute locations.
    assert_eq!(
        spec["data"]["train"],
        dir.join("other.tsv").display().to_string()
    );
}

fn expect_invalid(name: &str, spec: &str, needles: &[&str]) {
    let dir = temp_dir(name);
    let f = write(&dir, "spec.yaml", spec);
    let log = dir.join("termination-log");
    let out = run(trainer()
        .env("MEGATRON_TERMINATION_LOG", &log)
        .args(["train", "--random-init", "--dry-run", "--config"])
        .arg(&f));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = std::fs::read_to_string(&log).unwrap_or_default();
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            text(&out)
        );
        assert!(
            message.contains(needle),
            "termination log lacks {needle:?}: {message}"
        );
    }
    assert!(
        stderr.contains(&f.display().to_string()),
        "the file is named: {stderr}"
    );
}

#[test]
fn a_wrong_type_names_the_field() {
    let spec = spec_yaml(Task::TextClassification, 3, 1)
        .replace("globalBatchSize: 8", "globalBatchSize: eight");
    expect_invalid("bad-type", &spec, &["spec.training.globalBatchSize"]);
}

#[test]
fn an_unknown_field_is_rejected() {
    let spec = spec_yaml(Task::TextClassification, 3, 1)
        .replace("microBatchSize: 4", "microBatchSize: 4\n  warmup: 3");
    expect_invalid("unknown", &spec, &["spec.training.warmup"]);
}

#[test]
fn crd_rules_are_checked_locally() {
    // 4 heads cannot be split over 3 ranks; batch 8 is no multiple of 3.
    let spec =
        spec_yaml(Task::TextClassification, 3, 3).replace("microBatchSize: 4", "microBatchSize: 3");
    expect_invalid(
        "rules",
        &spec,
        &[
            "spec.parallelism.tensorParallelSize (3) must divide",
            "spec.training.globalBatchSize (8)",
        ],
    );
    // A token classification spec without its labels files.
    let spec = spec_yaml(Task::TokenClassification, 3, 1);
    let spec: String = spec
        .lines()
        .filter(|l| !l.contains("testLabels"))
        .collect::<Vec<_>>()
        .join("\n");
    expect_invalid(
        "labels",
        &spec,
        &[
            "spec.data: TokenClassification reads words and labels from separate files",
            "(missing: spec.data.testLabels)",
        ],
    );
    // A loss scale floor of 0 (the schema allows it) is caught before any rank loads.
    let spec = spec_yaml(Task::TextClassification, 3, 1).replace(
        "microBatchSize: 4",
        "microBatchSize: 4\n  precision: fp16\n  lossScaling: {minScale: 0}",
    );
    expect_invalid(
        "min-scale",
        &spec,
        &["spec.training.lossScaling.minScale must be above 0"],
    );
}

#[test]
fn a_foreign_manifest_and_an_empty_file_are_invalid() {
    expect_invalid(
        "kind",
        "apiVersion: batch/v1\nkind: Job\nspec: {}\n",
        &["apiVersion is \"batch/v1\""],
    );
    expect_invalid("empty", "\n", &["empty"]);
}

#[test]
fn a_missing_config_or_input_file_is_invalid() {
    let dir = temp_dir("missing");
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(dir.join("nope.yaml")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope.yaml"),
        "{}",
        text(&out)
    );

    let spec = spec_yaml(Task::TextClassification, 3, 1);
    let f = write(&dir, "spec.yaml", &spec);
    let out = run(trainer()
        .args(["train", "--random-init", "--output-dir"])
        .arg(dir.join("out"))
        .arg("--train-data")
        .arg(dir.join("absent.tsv"))
        .arg("--config")
        .arg(&f));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.data.train") && stderr.contains("absent.tsv"),
        "{}",
        text(&out)
    );
}

/// A tiny random text-classification model (5 classes, 64 positions: the
/// generated data set and spec_yaml's maxSeqLength) as `dir/model.nemo`.
fn text_classification_nemo(dir: &Path) -> PathBuf {
    let mut cfg = nemo_util::tiny_config();
    cfg.max_position_embeddings = 64;
    let path = dir.join("model.nemo");
    nemo_util::write_tiny_nemo(
        &path,
        &cfg,
        &HeadConfig::sequence_classification(5),
        None,
        1,
        5,
    );
    path
}

#[test]
fn a_local_run_needs_no_storage() {
    let dir = temp_dir("no-storage");
    let spec = local_spec_yaml(Task::TextClassification, 3, 1);
    assert!(!spec.contains("storage"), "{spec}");
    write(&dir, "spec.yaml", &spec);
    text_classification_nemo(&dir);

    // The workstation user's command: local spec, data, .nemo and output.
    let out = run(trainer().current_dir(&dir).args([
        "predict",
        "--config",
        "spec.yaml",
        "--nemo",
        "model.nemo",
        "--output",
        "p.txt",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let examples = std::fs::read_to_string(datasets().join("text_classification/dev.tsv"))
        .unwrap()
        .lines()
        .count()
        - 1; // header
    let predictions = std::fs::read_to_string(dir.join("p.txt")).unwrap();
    let lines: Vec<&str> = predictions.lines().collect();
    assert_eq!(
        lines.len(),
        examples,
        "one class per example: {predictions}"
    );
    assert!(
        lines.iter().all(|l| ["0", "1", "2", "3", "4"].contains(l)),
        "{predictions}"
    );

    let out = run(trainer().current_dir(&dir).args([
        "evaluate",
        "--config",
        "spec.yaml",
        "--nemo",
        "model.nemo",
        "--output",
        "metrics.json",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m = metrics(&dir.join("metrics.json"));
    assert!(
        m.contains_key("test_accuracy") && m.contains_key("test_f1"),
        "{m:?}"
    );

    // The effective spec of a local run has no storage either.
    let out = dry_run(&dir.join("spec.yaml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = yaml_to_json(&String::from_utf8(out.stdout).unwrap());
    assert!(printed.get("storage").is_none(), "{printed:#}");
}

#[test]
fn storage_is_required_where_s3_is_used() {
    // An s3:// input in the spec: exit 2 before any work, naming spec.storage,
    // the field and the fix.
    let d = datasets().display().to_string();
    let local_test = format!("test: {d}/text_classification/dev.tsv");
    let spec = local_spec_yaml(Task::TextClassification, 3, 1);
    assert!(spec.contains(&local_test), "{spec}");
    expect_invalid(
        "s3-without-storage",
        &spec.replace(&local_test, "test: s3://datasets/tc/dev.tsv"),
        &[
            "spec.storage is required to read s3:// locations (spec.data.test: s3://datasets/tc/dev.tsv)",
            "add spec.storage (bucket and credentialsSecretRef",
            "or use local paths",
        ],
    );

    // predict with an s3:// .nemo on the command line.
    let dir = temp_dir("s3-without-storage-predict");
    let f = write(&dir, "spec.yaml", &spec);
    let out = run(trainer()
        .args(["predict", "--config"])
        .arg(&f)
        .args(["--nemo", "s3://models/tc/model.nemo", "--output"])
        .arg(dir.join("p.txt")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.storage is required")
            && stderr.contains("spec.model.nemo: s3://models/tc/model.nemo"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("p.txt").exists());

    // Outputs to the job's S3 root (a manifest with metadata.name and no
    // --output-dir) need the store too; the message names the local way out.
    let manifest = serde_json::json!({
        "apiVersion": "megatron.dev/v1alpha1",
        "kind": "MegatronFineTune",
        "metadata": {"name": "tc"},
        "spec": yaml_to_json(&spec),
    });
    let f = write(
        &dir,
        "manifest.yaml",
        &serde_yaml::to_string(&manifest).unwrap(),
    );
    let out = run(trainer()
        .args(["train", "--random-init", "--config"])
        .arg(&f));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "writing the outputs to the job's S3 root needs the S3 store, but the config has no spec.storage"
        ) && stderr.contains("or pass --output-dir DIR"),
        "{}",
        text(&out)
    );
}
