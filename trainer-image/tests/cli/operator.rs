//! The trainer under the operator's contract, against the real API server
//! and S3 of the local e2e cluster (run `e2e/cluster/up` first): a pod's
//! environment (POD_INDEX, NPROC_PER_NODE=2, WORLD_SIZE, MASTER_ADDR/PORT,
//! MEGATRON_JOB_*, MEGATRON_ATTEMPT), a launcher with two tensor-parallel
//! ranks, outputs in the job's S3 root, and the completion protocol: rank 0
//! writes artifacts, metrics and the result into the MegatronFineTune's
//! status, then every process keeps running until SIGTERM, and exits 0.

use crate::support::cli_util;
use crate::support::storage_util;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_util::{Task, run, spec_yaml, temp_dir, text, trainer, write};

const BUCKET: &str = "megatron-cli-tests";

fn kubectl(env: &std::collections::HashMap<String, String>) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", &env["KUBECONFIG"])
        .env("PATH", &env["PATH"]);
    cmd
}

/// Installs (server-side applies) the CRD from crds/ and waits until it is
/// served: these tests must not rely on another test having installed it.
fn install_crd(env: &std::collections::HashMap<String, String>) {
    let crd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/megatron.dev_megatronfinetunes.yaml");
    let out = run(kubectl(env)
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=cli-operator-tests",
            "-f",
        ])
        .arg(&crd));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(kubectl(env).args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/megatronfinetunes.megatron.dev",
    ]));
    assert!(out.status.success(), "{}", text(&out));
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn completion_protocol_under_the_operator_env() {
    let env = storage_util::cluster_env();
    let ns = format!("cli-op-{}", std::process::id());
    let name = "tiny-tc";
    install_crd(&env);
    let out = run(kubectl(&env).args(["create", "namespace", &ns]));
    assert!(out.status.success(), "{}", text(&out));
    // The object the trainer reports to (a spec the API server accepts).
    let manifest = format!(
        "apiVersion: megatron.dev/v1alpha1\nkind: MegatronFineTune\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  task: {{type: TextClassification, textClassification: {{numClasses: 5}}}}\n  \
         model: {{pretrained: megatron-bert-345m-uncased}}\n  data: {{train: s3://{BUCKET}/none/train.tsv}}\n  \
         training: {{maxSteps: 2, globalBatchSize: 8, microBatchSize: 4}}\n  \
         parallelism: {{tensorParallelSize: 2, ranksPerPod: 2, device: CPU}}\n  \
         runPolicy: {{suspend: true}}\n  storage: {{bucket: {BUCKET}, credentialsSecretRef: {{name: s3}}}}\n"
    );
    let dir = temp_dir("operator");
    let manifest_file = write(&dir, "job.yaml", &manifest);
    let out = run(kubectl(&env).args(["apply", "-f"]).arg(&manifest_file));
    assert!(out.status.success(), "{}", text(&out));

    // The trainer's own config: a tiny random-init model, outputs in S3.
    let prefix = storage_util::unique_prefix("cli-operator");
    storage_util::ensure_bucket(BUCKET);
    let spec = spec_yaml(Task::TextClassification, 2, 2).replace(
        "storage: {bucket: unused, credentialsSecretRef: {name: none}}",
        &format!(
            "storage: {{bucket: {BUCKET}, prefix: {prefix}, credentialsSecretRef: {{name: s3}}}}"
        ),
    );
    let spec_file = write(&dir, "spec.yaml", &spec);
    let port = e2e::port::free_port().unwrap();
    let mut cmd = trainer();
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "MEGATRON_S3_ENDPOINT",
        "KUBECONFIG",
    ] {
        cmd.env(k, &env[k]);
    }
    let mut launcher = cmd
        .env("POD_INDEX", "0")
        .env("NPROC_PER_NODE", "2")
        .env("WORLD_SIZE", "2")
        .env("TENSOR_PARALLEL_SIZE", "2")
        .env("DATA_PARALLEL_SIZE", "1")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("MEGATRON_JOB_NAME", name)
        .env("MEGATRON_JOB_NAMESPACE", &ns)
        .env("MEGATRON_JOB_UID", "uid")
        .env("MEGATRON_ATTEMPT", "0")
        .env("MEGATRON_CONFIG", &spec_file)
        .env("MEGATRON_WORK_DIR", dir.join("work"))
        .args(["train", "--random-init", "--cache-dir"])
        .arg(dir.join("cache"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("trainer.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.join("trainer.log")).unwrap_or_default();

    // Wait for the result in status.
    let start = Instant::now();
    let status = loop {
        let out = run(kubectl(&env).args(["get", "mft", name, "-n", &ns, "-o", "json"]));
        let obj: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if obj["status"]["result"].is_object() {
            break obj["status"].clone();
        }
        if let Some(code) = launcher.try_wait().unwrap() {
            panic!(
                "the trainer exited ({code:?}) before reporting a result:\n{}",
                log()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no result after 180 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let result = &status["result"];
    assert_eq!(result["outcome"], "Succeeded", "{status:#}");
    assert_eq!(result["attempt"], 0);
    assert_eq!(result["step"], 2);
    let nemo = &status["artifacts"]["nemo"];
    let root = format!("s3://{BUCKET}/{prefix}/{ns}/{name}");
    assert_eq!(
        nemo["uri"],
        format!("{root}/artifacts/{name}.nemo"),
        "{status:#}"
    );
    assert_eq!(nemo["sha256"].as_str().unwrap().len(), 64);
    assert!(
        status["metrics"]["test"]["test_f1"].is_number(),
        "{status:#}"
    );
    assert_eq!(status["latestCheckpoint"]["step"], 2, "{status:#}");

    // Every process keeps running after the result...
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        launcher.try_wait().unwrap().is_none(),
        "the launcher exited after the result:\n{}",
        log()
    );
    let ranks = children_of(launcher.id());
    assert_eq!(ranks.len(), 2, "both ranks sleep: {ranks:?}");
    // ...until the pod is terminated: SIGTERM, exit 0.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let code = loop {
        if let Some(s) = launcher.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(0), "{}", log());
    assert!(!ranks.iter().any(|p| alive(*p)), "ranks left behind");
    let _ = run(kubectl(&env).args(["delete", "namespace", &ns, "--wait=false"]));
}

#[test]
fn invalid_data_reports_a_failed_result_and_exits_2() {
    let env = storage_util::cluster_env();
    let ns = format!("cli-op-bad-{}", std::process::id());
    let name = "bad-data";
    install_crd(&env);
    let out = run(kubectl(&env).args(["create", "namespace", &ns]));
    assert!(out.status.success(), "{}", text(&out));
    let manifest = format!(
        "apiVersion: megatron.dev/v1alpha1\nkind: MegatronFineTune\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  task: {{type: TextClassification, textClassification: {{numClasses: 5}}}}\n  \
         model: {{pretrained: megatron-bert-345m-uncased}}\n  data: {{train: s3://{BUCKET}/none/train.tsv}}\n  \
         training: {{maxSteps: 2, globalBatchSize: 8, microBatchSize: 4}}\n  parallelism: {{device: CPU}}\n  \
         runPolicy: {{suspend: true}}\n  storage: {{bucket: {BUCKET}, credentialsSecretRef: {{name: s3}}}}\n"
    );
    let dir = temp_dir("operator-bad");
    let out = run(kubectl(&env)
        .args(["apply", "-f"])
        .arg(write(&dir, "job.yaml", &manifest)));
    assert!(out.status.success(), "{}", text(&out));
    let bad = write(&dir, "train.tsv", "sentence\tlabel\nfine\t1\nbroken line\n");
    let prefix = storage_util::unique_prefix("cli-operator-bad");
    let spec = spec_yaml(Task::TextClassification, 2, 1).replace(
        "storage: {bucket: unused, credentialsSecretRef: {name: none}}",
        &format!(
            "storage: {{bucket: {BUCKET}, prefix: {prefix}, credentialsSecretRef: {{name: s3}}}}"
        ),
    );
    let spec_file = write(&dir, "spec.yaml", &spec);
    let log = dir.join("termination-log");
    let mut cmd = trainer();
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "MEGATRON_S3_ENDPOINT",
        "KUBECONFIG",
    ] {
        cmd.env(k, &env[k]);
    }
    let out = run(cmd
        .env("POD_INDEX", "0")
        .env("NPROC_PER_NODE", "1")
        .env("WORLD_SIZE", "1")
        .env("MEGATRON_JOB_NAME", name)
        .env("MEGATRON_JOB_NAMESPACE", &ns)
        .env("MEGATRON_ATTEMPT", "3")
        .env("MEGATRON_TERMINATION_LOG", &log)
        .env("MEGATRON_WORK_DIR", dir.join("work"))
        .args(["train", "--random-init", "--config"])
        .arg(&spec_file)
        .arg("--train-data")
        .arg(&bad));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let where_ = format!("{}:3", bad.display());
    assert!(
        std::fs::read_to_string(&log).unwrap().contains(&where_),
        "termination log names {where_}"
    );
    let out = run(kubectl(&env).args([
        "get",
        "mft",
        name,
        "-n",
        &ns,
        "-o",
        "jsonpath={.status.result}",
    ]));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(result["outcome"], "Failed", "{}", text(&out));
    assert_eq!(result["attempt"], 3);
    assert_eq!(result["reason"], "InvalidData");
    assert!(
        result["message"].as_str().unwrap().contains(&where_),
        "{result}"
    );
    let _ = run(kubectl(&env).args(["delete", "namespace", &ns, "--wait=false"]));
}
