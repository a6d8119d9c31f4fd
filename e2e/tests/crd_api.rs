//! The MegatronFineTune API against a real apiserver: the CRD installs, the examples are
//! accepted, invalid specs are rejected at apply time with messages naming the field,
//! immutable fields stay immutable and `kubectl explain` documents the fields.
//!
//! Needs the local cluster: `e2e/cluster/install && e2e/cluster/up`.

use std::path::PathBuf;
use std::time::Duration;

use crds::MegatronFineTune;
use e2e::{Cluster, TestNamespace};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

async fn setup(prefix: &str) -> (Cluster, TestNamespace) {
    let cluster = Cluster::connect()
        .await
        .expect("connect to the local cluster");
    cluster.install_crd().await.expect("install the CRD");
    let ns = cluster
        .namespace(prefix)
        .await
        .expect("create a test namespace");
    (cluster, ns)
}

fn dynamic_api(cluster: &Cluster, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        cluster.client.clone(),
        ns,
        &ApiResource::erase::<MegatronFineTune>(&()),
    )
}

fn examples_dir() -> PathBuf {
    e2e::workspace_root().join("examples")
}

fn example(file: &str) -> Value {
    let text = std::fs::read_to_string(examples_dir().join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Sets a dotted path (creating objects on the way).
fn set(v: &mut Value, path: &str, new: Value) {
    let mut cur = v;
    let parts: Vec<_> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(p.to_string())
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut()
        .unwrap()
        .insert(parts[parts.len() - 1].to_owned(), new);
}

/// Removes a dotted path.
fn del(v: &mut Value, path: &str) {
    let (parent, leaf) = path.rsplit_once('.').unwrap();
    let mut cur = v;
    for p in parent.split('.') {
        cur = cur.get_mut(p).unwrap();
    }
    cur.as_object_mut().unwrap().remove(leaf);
}

/// The API server's answer to a request it refused: its message, the value under test.
#[derive(Debug)]
struct Rejected(String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Server-side dry-run create; the API server's message when it refuses.
async fn dry_run(api: &Api<DynamicObject>, manifest: &Value) -> Result<(), Rejected> {
    let obj: DynamicObject = serde_json::from_value(manifest.clone()).unwrap();
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&params, &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(Rejected(status.message.clone())),
        Err(e) => panic!("dry run failed without an API answer: {e}"),
    }
}

#[tokio::test]
async fn crd_installs_with_names_and_columns() {
    let cluster = Cluster::connect()
        .await
        .expect("connect to the local cluster");
    let crd = cluster.install_crd().await.expect("install the CRD");
    let names = crd.status.unwrap().accepted_names.unwrap();
    assert_eq!(names.kind, "MegatronFineTune");
    assert_eq!(names.short_names, Some(vec!["mft".to_owned()]));
    assert_eq!(names.categories, Some(vec!["megatron".to_owned()]));
    // Installing twice is idempotent.
    cluster.install_crd().await.expect("re-apply the CRD");
}

#[tokio::test]
async fn every_example_passes_a_server_side_dry_run() {
    let (cluster, ns) = setup("examples").await;
    let api = dynamic_api(&cluster, &ns.name);
    let mut files: Vec<_> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "expected the 7 examples, found {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let manifest: Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        if let Err(message) = dry_run(&api, &manifest).await {
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    ns.delete().await.unwrap();
    assert!(
        failures.is_empty(),
        "examples rejected:\n{}",
        failures.join("\n")
    );
}

struct Invalid {
    name: &'static str,
    base: &'static str,
    edit: fn(&mut Value),
    expect: &'static [&'static str],
}

const TINY: &str = "tiny-cpu-squad.yaml";
const EVAL: &str = "evaluate-squad-nemo.yaml";
const NER: &str = "ner-biomegatron-token-classification.yaml";
const SST: &str = "text-classification-megatron-345m-uncased.yaml";
const CHEMPROT: &str = "relation-extraction-chemprot-biomegatron.yaml";

fn invalid_cases() -> Vec<Invalid> {
    vec![
        Invalid {
            name: "tensor parallel size does not divide the inline head count",
            base: TINY,
            edit: |v| {
                set(v, "spec.parallelism.tensorParallelSize", json!(3));
                set(v, "spec.parallelism.ranksPerPod", json!(1));
            },
            expect: &[
                "spec.parallelism.tensorParallelSize (3) must divide spec.model.config.numAttentionHeads (4): use one of [1, 2, 4]",
            ],
        },
        Invalid {
            name: "tensor parallel size does not divide the 16 heads of a published model",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.model",
                    json!({"pretrained": "megatron-bert-345m-uncased"}),
                );
                set(v, "spec.parallelism.tensorParallelSize", json!(6));
                set(v, "spec.parallelism.ranksPerPod", json!(1));
            },
            expect: &[
                "spec.parallelism.tensorParallelSize (6) must divide the 16 attention heads of megatron-bert-345m-uncased: use 1, 2, 4, 8 or 16",
            ],
        },
        Invalid {
            name: "global batch not a multiple of the micro batch",
            base: TINY,
            edit: |v| set(v, "spec.training.globalBatchSize", json!(6)),
            expect: &[
                "spec.training.globalBatchSize (6) must be a multiple of spec.training.microBatchSize (4)",
            ],
        },
        Invalid {
            name: "global batch not a multiple of micro batch x data parallel",
            base: TINY,
            edit: |v| {
                set(v, "spec.parallelism.dataParallelSize", json!(2));
                set(v, "spec.training.microBatchSize", json!(8));
            },
            expect: &[
                "spec.training.globalBatchSize (8) must be a multiple of spec.training.microBatchSize x spec.parallelism.dataParallelSize (8 x 2 = 16)",
            ],
        },
        Invalid {
            name: "ranks per pod does not divide the world size",
            base: TINY,
            edit: |v| set(v, "spec.parallelism.ranksPerPod", json!(4)),
            expect: &[
                "spec.parallelism.ranksPerPod (4) must divide the world size tensorParallelSize x dataParallelSize (2)",
            ],
        },
        Invalid {
            name: "tensor parallel size zero",
            base: TINY,
            edit: |v| set(v, "spec.parallelism.tensorParallelSize", json!(0)),
            expect: &[
                "spec.parallelism.tensorParallelSize",
                "greater than or equal to 1",
            ],
        },
        Invalid {
            name: "no model source",
            base: TINY,
            edit: |v| {
                del(v, "spec.model.pretrained");
                del(v, "spec.model.checkpoint");
            },
            expect: &["spec.model needs a source: set spec.model.pretrained"],
        },
        Invalid {
            name: "a .nemo together with a pretrained name",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.model.nemo",
                    json!("s3://megatron-demo/models/qa.nemo"),
                )
            },
            expect: &["spec.model.nemo restores a complete model: remove spec.model.pretrained"],
        },
        Invalid {
            name: "generic name without a checkpoint",
            base: TINY,
            edit: |v| del(v, "spec.model.checkpoint"),
            expect: &[
                "spec.model.pretrained megatron-bert-uncased is a generic Megatron-LM BERT: set spec.model.checkpoint",
            ],
        },
        Invalid {
            name: "random initialization together with a checkpoint",
            base: TINY,
            edit: |v| set(v, "spec.model.initialization", json!("Random")),
            expect: &[
                "spec.model.initialization Random trains from random weights, so spec.model.checkpoint and spec.model.nemo would be ignored",
            ],
        },
        Invalid {
            name: "generic name without an architecture",
            base: TINY,
            edit: |v| del(v, "spec.model.config"),
            expect: &[
                "is a generic Megatron-LM BERT",
                "spec.model.config or spec.model.configFile",
            ],
        },
        Invalid {
            name: "config and configFile together",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.model.configFile",
                    json!("s3://megatron-demo/tiny-bert/config.json"),
                )
            },
            expect: &[
                "spec.model: set either spec.model.config or spec.model.configFile, not both",
            ],
        },
        Invalid {
            name: "architecture override on a published model",
            base: SST,
            edit: |v| set(v, "spec.model.config", json!({"numLayers": 12})),
            expect: &["spec.model.config: the architecture of megatron-bert-345m-uncased is fixed"],
        },
        Invalid {
            name: "incomplete architecture for a Megatron-LM checkpoint",
            base: TINY,
            edit: |v| del(v, "spec.model.config.numLayers"),
            expect: &[
                "spec.model.config must set hiddenSize, numAttentionHeads, numLayers and maxPositionEmbeddings",
            ],
        },
        Invalid {
            name: "hidden size not a multiple of the heads",
            base: TINY,
            edit: |v| set(v, "spec.model.config.hiddenSize", json!(66)),
            expect: &[
                "spec.model.config.hiddenSize (66) must be a multiple of spec.model.config.numAttentionHeads (4)",
            ],
        },
        Invalid {
            name: "bare checkpoint without a tokenizer",
            base: TINY,
            edit: |v| del(v, "spec.model.pretrained"),
            expect: &["spec.tokenizer is required with a bare spec.model.checkpoint"],
        },
        Invalid {
            name: "tokenizer with both a name and a vocab file",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.tokenizer",
                    json!({"name": "megatron-bert-uncased", "vocabFile": "s3://megatron-demo/vocab.txt"}),
                )
            },
            expect: &["spec.tokenizer: set exactly one of spec.tokenizer.name"],
        },
        Invalid {
            name: "tokenizer next to a .nemo",
            base: EVAL,
            edit: |v| {
                set(
                    v,
                    "spec.tokenizer",
                    json!({"name": "megatron-bert-uncased"}),
                )
            },
            expect: &["spec.tokenizer must be unset with spec.model.nemo"],
        },
        Invalid {
            name: "checkpoint iteration next to an iteration directory",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.model.checkpoint",
                    json!({"location": "s3://megatron-demo/tiny-bert/iter_0000100", "iteration": 100}),
                )
            },
            expect: &[
                "spec.model.checkpoint.iteration: location already names an iteration directory",
            ],
        },
        Invalid {
            name: "Evaluate mode without a .nemo",
            base: TINY,
            edit: |v| {
                set(v, "spec.mode", json!("Evaluate"));
                set(
                    v,
                    "spec.data.test",
                    json!("s3://megatron-demo/squad-tiny/dev.json"),
                );
            },
            expect: &["spec.mode Evaluate restores a trained model: set spec.model.nemo"],
        },
        Invalid {
            name: "Evaluate mode without test data",
            base: EVAL,
            edit: |v| del(v, "spec.data.test"),
            expect: &["spec.mode Evaluate runs the test split: set spec.data.test"],
        },
        Invalid {
            name: ".nemo that is not a .nemo file",
            base: EVAL,
            edit: |v| {
                set(
                    v,
                    "spec.model.nemo",
                    json!("s3://ml-runs/models/model.tar.gz"),
                )
            },
            expect: &["spec.model.nemo must name a .nemo file"],
        },
        Invalid {
            name: "Train mode without a training length",
            base: TINY,
            edit: |v| del(v, "spec.training.maxSteps"),
            expect: &[
                "spec.training.maxSteps or spec.training.maxEpochs is required in Train mode",
            ],
        },
        Invalid {
            name: "both maxSteps and maxEpochs",
            base: TINY,
            edit: |v| set(v, "spec.training.maxEpochs", json!(1)),
            expect: &["spec.training: set either maxSteps or maxEpochs, not both"],
        },
        Invalid {
            name: "Train mode without training data",
            base: TINY,
            edit: |v| del(v, "spec.data.train"),
            expect: &["spec.data.train is required in Train mode"],
        },
        Invalid {
            name: "relative data path",
            base: TINY,
            edit: |v| set(v, "spec.data.train", json!("squad/train.json")),
            expect: &["spec.data.train", "should match"],
        },
        Invalid {
            name: "options of another task",
            base: SST,
            edit: |v| set(v, "spec.task.questionAnswering", json!({"docStride": 64})),
            expect: &[
                "spec.task.questionAnswering is only allowed when spec.task.type is QuestionAnswering",
            ],
        },
        Invalid {
            name: "text classification without its options",
            base: SST,
            edit: |v| del(v, "spec.task.textClassification"),
            expect: &[
                "spec.task.textClassification is required when spec.task.type is TextClassification",
            ],
        },
        Invalid {
            name: "unknown task type",
            base: TINY,
            edit: |v| set(v, "spec.task.type", json!("Summarization")),
            expect: &["spec.task.type", "Unsupported value: \"Summarization\""],
        },
        Invalid {
            name: "pad label not first",
            base: NER,
            edit: |v| {
                set(
                    v,
                    "spec.task.tokenClassification.labels",
                    json!(["B-Disease", "O", "I-Disease"]),
                )
            },
            expect: &["spec.task.tokenClassification.labels must start with the pad label O"],
        },
        Invalid {
            name: "duplicate token labels",
            base: NER,
            edit: |v| {
                set(
                    v,
                    "spec.task.tokenClassification.labels",
                    json!(["O", "B-Disease", "B-Disease"]),
                )
            },
            expect: &["spec.task.tokenClassification.labels[2]", "Duplicate value"],
        },
        Invalid {
            name: "token classification without a labels file",
            base: NER,
            edit: |v| del(v, "spec.data.validationLabels"),
            expect: &["spec.data: TokenClassification reads words and labels from separate files"],
        },
        Invalid {
            name: "labels files on a non-token task",
            base: SST,
            edit: |v| {
                set(
                    v,
                    "spec.data.trainLabels",
                    json!("s3://ml-datasets/sst2/labels.txt"),
                )
            },
            expect: &[
                "spec.data.trainLabels, validationLabels and testLabels are only used by TokenClassification",
            ],
        },
        Invalid {
            name: "class names do not match the class count",
            base: SST,
            edit: |v| {
                set(
                    v,
                    "spec.task.textClassification.classNames",
                    json!(["neg", "neutral", "pos"]),
                )
            },
            expect: &["spec.task.textClassification.classNames has 3 names but numClasses is 2"],
        },
        Invalid {
            name: "negative class not among the classes",
            base: CHEMPROT,
            edit: |v| {
                set(
                    v,
                    "spec.task.relationExtraction.negativeClass",
                    json!("none"),
                )
            },
            expect: &[
                "spec.task.relationExtraction.negativeClass none must be one of spec.task.relationExtraction.classes",
            ],
        },
        Invalid {
            name: "sequence longer than the inline position table (task default)",
            base: TINY,
            edit: |v| del(v, "spec.task.maxSeqLength"),
            expect: &[
                "spec.task.maxSeqLength (384, the task default) exceeds spec.model.config.maxPositionEmbeddings (128)",
            ],
        },
        Invalid {
            name: "sequence longer than a published model's 512 positions",
            base: SST,
            edit: |v| set(v, "spec.task.maxSeqLength", json!(1024)),
            expect: &[
                "spec.task.maxSeqLength (1024) exceeds the 512 positions of megatron-bert-345m-uncased",
            ],
        },
        Invalid {
            name: "question longer than the window",
            base: TINY,
            edit: |v| set(v, "spec.task.questionAnswering.maxQueryLength", json!(126)),
            expect: &["spec.task.questionAnswering.maxQueryLength must leave room for context"],
        },
        Invalid {
            name: "monitoring a metric the task does not report",
            base: SST,
            edit: |v| {
                set(
                    v,
                    "spec.checkpointing.best.monitor",
                    json!("val_exact_match"),
                )
            },
            expect: &[
                "spec.checkpointing.best.monitor val_exact_match is not reported for TextClassification",
            ],
        },
        Invalid {
            name: "early stopping without validation data",
            base: NER,
            edit: |v| {
                del(v, "spec.data.validation");
                del(v, "spec.data.validationLabels");
                del(v, "spec.checkpointing.best");
            },
            expect: &[
                "spec.training.earlyStopping watches a validation metric: set spec.data.validation",
            ],
        },
        Invalid {
            name: "loss scaling without fp16",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.training.lossScaling",
                    json!({"initialScale": 1024}),
                )
            },
            expect: &["spec.training.lossScaling only applies to precision fp16"],
        },
        Invalid {
            name: "unknown precision",
            base: TINY,
            edit: |v| set(v, "spec.training.precision", json!("fp8")),
            expect: &["spec.training.precision", "Unsupported value: \"fp8\""],
        },
        Invalid {
            name: "warmup given twice",
            base: TINY,
            edit: |v| set(v, "spec.training.scheduler.warmupRatio", json!(0.1)),
            expect: &["spec.training.scheduler: set either warmupSteps or warmupRatio, not both"],
        },
        Invalid {
            name: "resume From without a location",
            base: TINY,
            edit: |v| set(v, "spec.checkpointing.resume", json!({"policy": "From"})),
            expect: &["spec.checkpointing.resume.from is required with policy From"],
        },
        Invalid {
            name: "keeping no checkpoint at all",
            base: TINY,
            edit: |v| set(v, "spec.checkpointing.keepLast", json!(0)),
            expect: &["spec.checkpointing keeps nothing"],
        },
        Invalid {
            name: "backoff start above its maximum",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.runPolicy.backoff",
                    json!({"initialSeconds": 100, "maxSeconds": 10}),
                )
            },
            expect: &[
                "spec.runPolicy.backoff.initialSeconds must not exceed spec.runPolicy.backoff.maxSeconds",
            ],
        },
        Invalid {
            name: "reserved environment variable",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "spec.pod.env",
                    json!([{"name": "WORLD_SIZE", "value": "8"}]),
                )
            },
            expect: &["spec.pod.env must not set MASTER_ADDR"],
        },
        Invalid {
            name: "invalid bucket name",
            base: TINY,
            edit: |v| set(v, "spec.storage.bucket", json!("My_Bucket")),
            expect: &["spec.storage.bucket", "should match"],
        },
        Invalid {
            name: "storage without a credentials Secret",
            base: TINY,
            edit: |v| del(v, "spec.storage.credentialsSecretRef"),
            expect: &["spec.storage.credentialsSecretRef: Required value"],
        },
        Invalid {
            name: "name too long for pod and Service names",
            base: TINY,
            edit: |v| {
                set(
                    v,
                    "metadata.name",
                    json!("a-very-long-fine-tuning-job-name-that-exceeds-the-limit"),
                )
            },
            expect: &["metadata.name must be a DNS label of at most 48 characters"],
        },
    ]
}

/// Cases only the API server checks, and why the trainer's
/// `MegatronFineTuneSpec::validate` does not repeat them.
const API_ONLY: &[(&str, &str)] = &[
    (
        "unknown task type",
        "the Rust type cannot hold it: reading the config fails, naming spec.task.type",
    ),
    (
        "unknown precision",
        "the Rust type cannot hold it: reading the config fails, naming spec.training.precision",
    ),
    (
        "storage without a credentials Secret",
        "the Rust type cannot hold it: reading the config fails, naming credentialsSecretRef",
    ),
    (
        "backoff start above its maximum",
        "spec.runPolicy is the operator's (the trainer never restarts anything)",
    ),
    (
        "reserved environment variable",
        "spec.pod shapes the operator's pods, not the trainer's run",
    ),
    (
        "name too long for pod and Service names",
        "metadata.name is not part of the spec the trainer reads",
    ),
];

/// Cases whose message is the API server's schema wording (ranges, patterns): the Rust rule
/// names the same field in its own words.
const SCHEMA_WORDING: &[&str] = &[
    "tensor parallel size zero",
    "relative data path",
    "invalid bucket name",
];

/// The same table through `MegatronFineTuneSpec::validate` (what the trainer runs on a config
/// file): every case the API server rejects with a CEL message is rejected with the same
/// message and field, so the two rule sets cannot drift. Cases whose values the Rust types
/// cannot even hold (an unknown enum value) are rejected when the spec is read.
#[test]
fn the_rust_rules_reject_the_invalid_cases_with_the_same_messages() {
    let mut failures = Vec::new();
    for case in invalid_cases() {
        let mut manifest = example(case.base);
        (case.edit)(&mut manifest);
        if let Some((_, why)) = API_ONLY.iter().find(|(n, _)| *n == case.name) {
            assert!(!why.is_empty());
            continue;
        }
        let spec: crds::MegatronFineTuneSpec =
            match serde_json::from_value(manifest["spec"].clone()) {
                Ok(spec) => spec,
                Err(e) => {
                    failures.push(format!(
                        "{}: the type cannot hold it ({e}); list it in API_ONLY",
                        case.name
                    ));
                    continue;
                }
            };
        let problems = spec.validate(crds::Allow::default());
        if SCHEMA_WORDING.contains(&case.name) {
            let field = case.expect[0];
            if !problems.iter().any(|p| p.field == field) {
                failures.push(format!(
                    "{}: no problem names {field}: {problems:?}",
                    case.name
                ));
            }
            continue;
        }
        let matched = problems
            .iter()
            .find(|p| case.expect.iter().all(|want| p.message.contains(want)));
        match matched {
            Some(p) if case.expect[0].starts_with(&p.field) || p.message.starts_with(&p.field) => {}
            Some(p) => failures.push(format!(
                "{}: field {} for {:?}",
                case.name, p.field, p.message
            )),
            None => failures.push(format!(
                "{}: no message contains {:?}; got {:?}",
                case.name,
                case.expect,
                problems.iter().map(|p| &p.message).collect::<Vec<_>>()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn invalid_specs_are_rejected_with_messages_naming_the_field() {
    let (cluster, ns) = setup("invalid").await;
    let api = dynamic_api(&cluster, &ns.name);
    let cases = invalid_cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in &cases {
        let mut manifest = example(case.base);
        (case.edit)(&mut manifest);
        match dry_run(&api, &manifest).await {
            Ok(()) => failures.push(format!("{}: accepted", case.name)),
            Err(Rejected(message)) => {
                for want in case.expect {
                    if !message.contains(want) {
                        failures.push(format!(
                            "{}: message lacks {want:?}:\n  {message}",
                            case.name
                        ));
                    }
                }
            }
        }
    }
    ns.delete().await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} invalid cases misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

async fn merge_patch(
    api: &Api<DynamicObject>,
    name: &str,
    patch: Value,
) -> Result<DynamicObject, Rejected> {
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(obj) => Ok(obj),
        Err(kube::Error::Api(status)) => Err(Rejected(status.message.clone())),
        Err(e) => panic!("patch failed without an API answer: {e}"),
    }
}

#[tokio::test]
async fn immutable_fields_stay_immutable_and_run_policy_is_mutable() {
    let (cluster, ns) = setup("immutable").await;
    let api = dynamic_api(&cluster, &ns.name);
    let manifest = example(TINY);
    let obj: DynamicObject = serde_json::from_value(manifest).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let name = created.name_any();
    // The apiserver applied the schema defaults.
    assert_eq!(
        created.data["spec"]["runPolicy"]["cleanPodPolicy"],
        "Running"
    );
    assert_eq!(created.data["spec"]["data"]["shuffle"], true);

    let rejected = [
        (
            json!({"spec": {"parallelism": {"dataParallelSize": 2}}}),
            "spec.parallelism is immutable",
        ),
        (
            json!({"spec": {"task": {"questionAnswering": {"nBestSize": 7}}}}),
            "spec.task is immutable",
        ),
        (
            json!({"spec": {"model": {"checkpoint": {"location": "s3://megatron-demo/other/"}}}}),
            "spec.model is immutable",
        ),
        (
            json!({"spec": {"data": {"validation": null}}}),
            "spec.data is immutable",
        ),
        (
            json!({"spec": {"training": {"maxSteps": 80}}}),
            "spec.training is immutable",
        ),
        (
            json!({"spec": {"storage": {"bucket": "another-bucket"}}}),
            "spec.storage is immutable",
        ),
        (
            json!({"spec": {"checkpointing": {"keepLast": 5}}}),
            "spec.checkpointing is immutable",
        ),
        (
            json!({"spec": {"mode": "Evaluate"}}),
            "spec.mode is immutable",
        ),
        (
            json!({"spec": {"tokenizer": {"name": "megatron-bert-uncased"}}}),
            "spec.tokenizer is immutable",
        ),
    ];
    let mut failures = Vec::new();
    for (patch, want) in &rejected {
        match merge_patch(&api, &name, patch.clone()).await {
            Ok(_) => failures.push(format!("accepted {patch}")),
            Err(Rejected(message)) if !message.contains(want) => {
                failures.push(format!("{patch}: message lacks {want:?}: {message}"))
            }
            Err(_) => {}
        }
    }

    let suspended = merge_patch(
        &api,
        &name,
        json!({"spec": {"runPolicy": {"suspend": true, "maxRestarts": 7}}}),
    )
    .await
    .expect("runPolicy must stay mutable");
    assert_eq!(suspended.data["spec"]["runPolicy"]["suspend"], true);
    assert_eq!(suspended.data["spec"]["runPolicy"]["maxRestarts"], 7);
    let repodded = merge_patch(
        &api,
        &name,
        json!({"spec": {"pod": {"image": "example.com/trainer:fixed"}}}),
    )
    .await
    .expect("pod settings must stay mutable");
    assert_eq!(
        repodded.data["spec"]["pod"]["image"],
        "example.com/trainer:fixed"
    );

    // Status is a subresource: the printer columns read it.
    let status = json!({"status": {"phase": "Running", "ranks": 2, "progress": {"step": 10, "totalSteps": 40, "percent": 25.0, "summary": "10/40 (25%)"}}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let table = cluster
        .kubectl_output(&["get", "mft", "-n", &ns.name])
        .unwrap();
    let header: Vec<_> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "TASK", "TP", "RANKS", "PROGRESS", "AGE"],
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    for cell in [
        "tiny-cpu-squad",
        "Running",
        "QuestionAnswering",
        "2",
        "10/40",
    ] {
        assert!(row.contains(cell), "row lacks {cell}: {table}");
    }

    // The typed Rust API reads back what the apiserver stored.
    let typed: Api<MegatronFineTune> = Api::namespaced(cluster.client.clone(), &ns.name);
    let job = typed.get(&name).await.unwrap();
    assert_eq!(job.spec.world_size(), 2);
    assert!(job.spec.run_policy.suspend);
    assert_eq!(job.status.unwrap().progress.unwrap().step, 10);

    ns.delete().await.unwrap();
    assert!(
        failures.is_empty(),
        "immutability misbehaved:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn kubectl_explain_shows_field_descriptions() {
    let (cluster, ns) = setup("explain").await;
    ns.delete().await.unwrap();
    // The OpenAPI document is republished asynchronously after the CRD changes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        match cluster.kubectl_output(&["explain", "megatronfinetune.spec.parallelism"]) {
            Ok(out) if out.contains("tensorParallelSize") => break out,
            result => {
                if tokio::time::Instant::now() > deadline {
                    panic!("kubectl explain never showed spec.parallelism: {result:?}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    for want in [
        "KIND:       MegatronFineTune",
        "Tensor/data parallel sizes",
        "tensorParallelSize",
        "dataParallelSize",
        "ranksPerPod",
        "device",
        "<integer>",
    ] {
        assert!(out.contains(want), "kubectl explain lacks {want:?}:\n{out}");
    }
    let pretrained = cluster
        .kubectl_output(&["explain", "mft.spec.model.pretrained"])
        .unwrap();
    assert!(
        pretrained.contains("megatron-bert-345m-uncased"),
        "{pretrained}"
    );
    assert!(pretrained.contains("pretrained name"), "{pretrained}");
    // Where published weights come from, as the user reads it.
    let initialization = cluster
        .kubectl_output(&["explain", "mft.spec.model.initialization"])
        .unwrap();
    for want in ["shared model cache", "--model-mirror", "NGC", "Random"] {
        assert!(
            initialization.contains(want),
            "lacks {want:?}:\n{initialization}"
        );
    }
}
