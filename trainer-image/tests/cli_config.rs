//! Loading the configuration through the real binary: a manifest or a bare
//! spec, YAML or JSON, give the same effective spec; bad input exits 2 with
//! the field named (and the reason in the termination log).

mod cli_util;

use cli_util::{Task, run, spec_yaml, temp_dir, text, trainer, write};

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
    expect_invalid("labels", &spec, &["spec.data.testLabels is required"]);
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
