//! Every manifest in examples/ parses into the Rust types without losing a field, and the
//! helper methods give the expected layout.

use std::path::PathBuf;

use crds::{MegatronFineTune, Mode, Task, TaskType};
use serde_json::Value;

fn examples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_yaml::from_str(&text).unwrap();
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 7,
        "expected the 7 example manifests, found {}",
        out.len()
    );
    out
}

/// Every leaf of `written` appears with an equal value in `parsed` (numbers compared as f64).
fn assert_subset(file: &str, path: &str, written: &Value, parsed: &Value) {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => {
            for (k, v) in w {
                let got = p.get(k).unwrap_or_else(|| {
                    panic!("{file}: {path}.{k} was dropped by the Rust types (misspelled or unknown field?)")
                });
                assert_subset(file, &format!("{path}.{k}"), v, got);
            }
        }
        (Value::Array(w), Value::Array(p)) => {
            assert_eq!(w.len(), p.len(), "{file}: {path} length");
            for (i, (a, b)) in w.iter().zip(p).enumerate() {
                assert_subset(file, &format!("{path}[{i}]"), a, b);
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{file}: {path}")
        }
        _ => assert_eq!(written, parsed, "{file}: {path}"),
    }
}

#[test]
fn examples_round_trip_without_losing_fields() {
    for (file, value) in examples() {
        let job: MegatronFineTune = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{file} does not parse as a MegatronFineTune: {e}"));
        let back = serde_json::to_value(&job).unwrap();
        assert_subset(&file, "", &value, &back);
        let again: MegatronFineTune = serde_json::from_value(back).unwrap();
        assert_eq!(again, job, "{file}: a second round trip changed the object");
    }
}

fn load(file: &str) -> MegatronFineTune {
    let (_, value) = examples().into_iter().find(|(f, _)| f == file).unwrap();
    serde_json::from_value(value).unwrap()
}

#[test]
fn squad_example_layout() {
    let job = load("squad-qa-megatron-345m-uncased.yaml");
    let spec = &job.spec;
    assert_eq!((spec.world_size(), spec.num_pods()), (4, 2));
    assert_eq!(
        spec.training
            .gradient_accumulation_steps(spec.parallelism.data_parallel_size),
        2
    );
    assert_eq!(spec.do_lower_case(), Some(true));
    let arch = spec.architecture().unwrap();
    assert_eq!((arch.hidden_size, arch.vocab_size), (1024, 30522));
    assert_eq!(
        arch.padded_vocab_size(spec.parallelism.tensor_parallel_size),
        30720
    );
    let Task::QuestionAnswering(qa) = spec.task.resolved().unwrap() else {
        panic!("squad is QA")
    };
    assert_eq!((qa.doc_stride, qa.max_query_length), (128, 64));
}

#[test]
fn tiny_cpu_example_layout() {
    let job = load("tiny-cpu-squad.yaml");
    let spec = &job.spec;
    assert_eq!(spec.parallelism.device, crds::Device::CPU);
    assert_eq!((spec.world_size(), spec.num_pods()), (2, 1));
    let arch = spec.architecture().unwrap();
    assert_eq!(
        (
            arch.hidden_size,
            arch.num_layers,
            arch.num_attention_heads,
            arch.vocab_size
        ),
        (64, 2, 4, 30522)
    );
    assert_eq!(spec.task.max_seq_length(), 128);
    assert_eq!(
        spec.storage
            .as_ref()
            .expect("the example sets spec.storage")
            .checkpoints_root("default", "tiny-cpu-squad")
            .as_str(),
        "s3://megatron-demo/runs/default/tiny-cpu-squad/checkpoints"
    );
}

#[test]
fn evaluate_example_defers_to_the_nemo() {
    let job = load("evaluate-squad-nemo.yaml");
    assert_eq!(job.spec.mode, Mode::Evaluate);
    assert_eq!(job.spec.do_lower_case(), None);
    assert!(matches!(
        job.spec.architecture(),
        Err(crds::ArchitectureError::InFile(_))
    ));
}

#[test]
fn every_task_has_an_example() {
    let tasks: std::collections::BTreeSet<_> = examples()
        .into_iter()
        .map(|(_, v)| {
            serde_json::from_value::<MegatronFineTune>(v)
                .unwrap()
                .spec
                .task
                .type_
        })
        .map(|t| format!("{t:?}"))
        .collect();
    for t in [
        TaskType::QuestionAnswering,
        TaskType::TokenClassification,
        TaskType::TextClassification,
        TaskType::RelationExtraction,
    ] {
        assert!(tasks.contains(&format!("{t:?}")), "no example for {t:?}");
    }
}
