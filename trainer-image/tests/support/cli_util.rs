//! Helpers of the `cli_*` tests: the trainer binary, the generated data sets
//! (tests/python/data_make_datasets.py) and tiny specs for each task.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod ngc_server;

/// The trainer binary under test.
pub fn trainer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_megatron-trainer"));
    cmd.env("MEGATRON_LOG", "info")
        .env_remove("MEGATRON_JOB_NAME")
        .env_remove("NPROC_PER_NODE")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("MEGATRON_CONFIG")
        .env("MEGATRON_NUM_THREADS", "1");
    cmd
}

/// Runs `cmd` and returns its output (panics only when it cannot start).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the trainer binary starts")
}

/// stdout and stderr as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh directory under the target dir's tmp.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The four tasks' small data sets, generated once per test binary.
pub fn datasets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("data");
        let python = std::env::var("MEGATRON_PYTHON").unwrap_or_else(|_| "python3".into());
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/data_make_datasets.py");
        let out = Command::new(&python)
            .arg(&script)
            .args([
                "--out",
                dir.to_str().unwrap(),
                "--train",
                "64",
                "--dev",
                "24",
                "--seed",
                "3",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!("running {python} (set MEGATRON_PYTHON, see scripts/torch-env): {e}")
            });
        assert!(out.status.success(), "{}", text(&out));
        dir
    })
}

/// The tasks of the CRD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    QuestionAnswering,
    TokenClassification,
    TextClassification,
    RelationExtraction,
}

/// A tiny random-init spec (YAML) for `task` on the generated data: train on
/// the train split, validate and test on dev.
pub fn spec_yaml(task: Task, steps: i64, tp: i64) -> String {
    let d = datasets().display().to_string();
    let (task_yaml, data_yaml) = match task {
        Task::QuestionAnswering => (
            "type: QuestionAnswering\n  maxSeqLength: 64\n  questionAnswering: {docStride: 32, maxQueryLength: 16, maxAnswerLength: 8, nBestSize: 5}".to_owned(),
            format!("train: {d}/squad/train.json\n  validation: {d}/squad/dev.json\n  test: {d}/squad/dev.json"),
        ),
        Task::TokenClassification => (
            "type: TokenClassification\n  maxSeqLength: 48\n  tokenClassification: {labels: [O, NUM, CAP, PUNCT]}".to_owned(),
            format!(
                "train: {d}/token_classification/text_train.txt\n  trainLabels: {d}/token_classification/labels_train.txt\n  \
                 validation: {d}/token_classification/text_dev.txt\n  validationLabels: {d}/token_classification/labels_dev.txt\n  \
                 test: {d}/token_classification/text_dev.txt\n  testLabels: {d}/token_classification/labels_dev.txt"
            ),
        ),
        Task::TextClassification => (
            "type: TextClassification\n  maxSeqLength: 48\n  textClassification: {numClasses: 5}".to_owned(),
            format!(
                "train: {d}/text_classification/train.tsv\n  validation: {d}/text_classification/dev.tsv\n  \
                 test: {d}/text_classification/dev.tsv\n  tsvHeader: true"
            ),
        ),
        Task::RelationExtraction => (
            "type: RelationExtraction\n  maxSeqLength: 48\n  relationExtraction: {classes: [\"CPR:3\", \"CPR:4\", \"false\"], negativeClass: \"false\", entityMarkers: [\"@CHEMICAL$\", \"@GENE$\"]}".to_owned(),
            format!(
                "train: {d}/relation/train.tsv\n  validation: {d}/relation/dev.tsv\n  test: {d}/relation/dev.tsv\n  tsvHeader: true"
            ),
        ),
    };
    format!(
        "task:\n  {task_yaml}\n\
         model:\n  pretrained: megatron-bert-uncased\n  config: {{hiddenSize: 32, numAttentionHeads: 4, numLayers: 2, maxPositionEmbeddings: 64, hiddenDropout: 0.0, attentionDropout: 0.0}}\n\
         data:\n  {data_yaml}\n\
         training:\n  maxSteps: {steps}\n  globalBatchSize: 8\n  microBatchSize: 4\n  validationIntervalSteps: {steps}\n  logIntervalSteps: 1\n  optimizer: {{learningRate: 0.001}}\n\
         parallelism: {{device: CPU, tensorParallelSize: {tp}}}\n\
         storage: {{bucket: unused, credentialsSecretRef: {{name: none}}}}\n"
    )
}

/// [`spec_yaml`] without `spec.storage`: the config of a run on local files
/// that writes to `--output-dir` (or `evaluate`/`predict --output`).
pub fn local_spec_yaml(task: Task, steps: i64, tp: i64) -> String {
    let spec = spec_yaml(task, steps, tp);
    let local: String = spec
        .lines()
        .filter(|l| !l.starts_with("storage:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(local.len() < spec.len(), "spec_yaml sets spec.storage");
    local
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Parses a metrics JSON file.
pub fn metrics(path: &Path) -> std::collections::BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
