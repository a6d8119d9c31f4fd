//! `train` with S3 inputs and outputs on the local e2e S3 server (run
//! `e2e/cluster/up` first): `s3://` data is downloaded into the cache with
//! its sha256 recorded, and checkpoints, artifacts and TensorBoard files land
//! under `s3://<bucket>/<prefix>/<namespace>/<name>/`; the secret key never
//! appears in the output.

use crate::support::cli_util;
use crate::support::storage_util;

use std::collections::BTreeMap;

use bytes::Bytes;
use cli_util::{Task, datasets, run, spec_yaml, temp_dir, text, trainer, write};
use megatron_trainer::storage::{Store, TransferOptions};
use sha2::{Digest, Sha256};

const BUCKET: &str = "megatron-cli-tests";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn s3_inputs_and_outputs() {
    let env = storage_util::cluster_env();
    let prefix = storage_util::unique_prefix("cli-s3");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config =
        megatron_trainer::storage::S3Config::from_lookup(BUCKET, &prefix, |k| env.get(k).cloned())
            .unwrap();
    let store = Store::s3(config).unwrap();
    rt.block_on(store.create_bucket()).unwrap();
    let d = datasets();
    let train = std::fs::read(d.join("text_classification/train.tsv")).unwrap();
    let dev = std::fs::read(d.join("text_classification/dev.tsv")).unwrap();
    rt.block_on(store.put_bytes("data/train.tsv", Bytes::from(train.clone())))
        .unwrap();
    rt.block_on(store.put_bytes("data/dev.tsv", Bytes::from(dev)))
        .unwrap();

    let dir = temp_dir("s3");
    let data = format!("s3://{BUCKET}/{prefix}/data");
    let spec = spec_yaml(Task::TextClassification, 2, 1)
        .replace(&d.join("text_classification/train.tsv").display().to_string(), &format!("{data}/train.tsv"))
        .replace(&d.join("text_classification/dev.tsv").display().to_string(), &format!("{data}/dev.tsv"))
        .replace(
            "storage: {bucket: unused, credentialsSecretRef: {name: none}}",
            &format!(
                "storage: {{bucket: {BUCKET}, prefix: {prefix}/out, endpoint: \"{}\", credentialsSecretRef: {{name: s3}}}}",
                env["MEGATRON_S3_ENDPOINT"]
            ),
        );
    let spec_value: serde_json::Value = serde_yaml::from_str(&spec).unwrap();
    let manifest = serde_json::json!({
        "apiVersion": "megatron.dev/v1alpha1", "kind": "MegatronFineTune",
        "metadata": {"name": "s3job", "namespace": "team-a"}, "spec": spec_value,
    });
    let file = write(&dir, "job.yaml", &serde_yaml::to_string(&manifest).unwrap());
    let cache = dir.join("cache");
    let mut cmd = trainer();
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
        cmd.env(k, &env[k]);
    }
    cmd.env_remove("MEGATRON_S3_ENDPOINT")
        .env_remove("AWS_ENDPOINT_URL");
    cmd.env("MEGATRON_WORK_DIR", dir.join("work"));
    let out = run(cmd
        .args(["train", "--random-init", "--cache-dir"])
        .arg(&cache)
        .arg("--config")
        .arg(&file));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        !all.contains(&env["AWS_SECRET_ACCESS_KEY"]),
        "the secret key was printed"
    );

    // The input was downloaded once, with its digest recorded.
    let cached = cache.join(BUCKET).join(&prefix).join("data/train.tsv");
    assert_eq!(std::fs::read(&cached).unwrap(), train);
    let mut side = cached.clone().into_os_string();
    side.push(".source.json");
    let source: serde_json::Value = serde_json::from_slice(&std::fs::read(side).unwrap()).unwrap();
    assert_eq!(source["sha256"], sha256(&train));

    // Outputs under <prefix>/out/<namespace>/<name>/.
    let objects: BTreeMap<String, u64> = rt
        .block_on(store.list("out/team-a/s3job"))
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let root = "out/team-a/s3job";
    for key in [
        "artifacts/s3job.nemo",
        "artifacts/predictions.txt",
        "artifacts/test_metrics.json",
        "checkpoints/step-000000000002/manifest.json",
    ] {
        assert!(
            objects.contains_key(&format!("{root}/{key}")),
            "{key} missing in {objects:#?}"
        );
    }
    assert!(
        objects
            .keys()
            .any(|k| k.starts_with(&format!("{root}/tensorboard/events.out.tfevents"))),
        "{objects:#?}"
    );
    // The rank's log, as it printed it, without the secret.
    for rank in 0..1 {
        let key = format!("{root}/logs/attempt-0/rank-{rank:04}.log");
        assert!(objects.contains_key(&key), "{key} missing in {objects:#?}");
        let log = String::from_utf8(rt.block_on(store.get_bytes(&key)).unwrap().to_vec()).unwrap();
        assert!(log.contains("rank ready"), "{log}");
        assert!(
            !log.contains(&env["AWS_SECRET_ACCESS_KEY"]),
            "the secret key is in {key}"
        );
        if rank == 0 {
            assert!(log.contains("training finished"), "{log}");
        }
    }
    // The uploaded .nemo is the one the log reports (size and sha256).
    let local = dir.join("nemo");
    let digest = rt
        .block_on(store.download_file(
            &format!("{root}/artifacts/s3job.nemo"),
            &local,
            &TransferOptions::default(),
        ))
        .unwrap();
    assert!(
        all.contains(&digest.sha256),
        "the artifact's sha256 {} is reported: {all}",
        digest.sha256
    );
    assert_eq!(sha256(&std::fs::read(&local).unwrap()), digest.sha256);
}
