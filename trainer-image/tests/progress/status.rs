//! The status writer against the real API server of the local e2e cluster
//! (`e2e/cluster/up`): the trainer writes its fields through the status
//! subresource with the rights the operator's per-job Role grants (the test
//! impersonates the trainer's ServiceAccount), progress is throttled while
//! validation, checkpoints and the result go out at once, the operator's fields
//! survive (and the trainer's survive the operator's applies), a new attempt
//! keeps the latest checkpoint, and a missing object or missing rights give a
//! clear error from `finish`.

use crate::support::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crds::{Artifact, Artifacts, CheckpointStatus, MegatronFineTune, Outcome, Phase, uri::Uri};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use megatron_trainer::progress::{JobRef, Reporter, ReporterConfig};
use megatron_trainer::train::StepStats;
use serde_json::json;

const CRD_NAME: &str = "megatronfinetunes.megatron.dev";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The admin kubeconfig of the e2e cluster (from `e2e/.cluster/env`). Panics,
/// never skips, when the cluster is not up.
fn admin_kubeconfig() -> PathBuf {
    let env = repo_root().join("e2e/.cluster/env");
    let text = std::fs::read_to_string(&env).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): the status tests need the local API server; run \
             e2e/cluster/up first",
            env.display()
        )
    });
    let path = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .map(|v| PathBuf::from(v.trim_matches('"').trim_matches('\'')))
        .next()
        .unwrap_or_else(|| panic!("{} has no KUBECONFIG; rerun e2e/cluster/up", env.display()));
    assert!(
        path.is_file(),
        "{} does not exist; run e2e/cluster/up",
        path.display()
    );
    path
}

async fn client_from(kubeconfig: &Path) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let file = Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// An admin client, with the CRD installed (from crds/) when absent.
async fn admin() -> Client {
    let client = client_from(&admin_kubeconfig()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let present = crds
        .get_opt(CRD_NAME)
        .await
        .unwrap_or_else(|e| panic!("the e2e API server does not answer ({e}); run e2e/cluster/up"));
    if present.is_none() {
        let yaml =
            std::fs::read_to_string(repo_root().join("crds/megatron.dev_megatronfinetunes.yaml"))
                .expect("read the CRD");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parse the CRD");
        crds.patch(
            CRD_NAME,
            &PatchParams::apply("progress-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("install the CRD");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let crd = crds.get(CRD_NAME).await.unwrap();
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the CRD did not become Established"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    client
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create a namespace");
    name
}

async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Creates the tiny SQuAD example as `name` in `ns`.
async fn create_job(client: &Client, ns: &str, name: &str) -> Api<MegatronFineTune> {
    let yaml = std::fs::read_to_string(repo_root().join("examples/tiny-cpu-squad.yaml"))
        .expect("read the example");
    let mut job: MegatronFineTune = serde_yaml::from_str(&yaml).expect("parse the example");
    job.metadata.name = Some(name.into());
    job.metadata.namespace = Some(ns.into());
    let api: Api<MegatronFineTune> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &job)
        .await
        .expect("create the job");
    api
}

/// Applies operator-owned status fields as the operator does (its field manager).
async fn operator_apply(api: &Api<MegatronFineTune>, name: &str, phase: &str) {
    let body = json!({
        "apiVersion": MegatronFineTune::api_version(&()),
        "kind": MegatronFineTune::kind(&()),
        "metadata": { "name": name },
        "status": {
            "phase": phase,
            "restarts": 0,
            "ranks": 2,
            "conditions": [{
                "type": "Running",
                "status": "True",
                "reason": "Running",
                "message": "all 1 rank pods are ready",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        },
    });
    api.patch_status(
        name,
        &PatchParams::apply("megatron-operator").force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("operator apply");
}

/// The Role and RoleBinding the operator gives the trainer's ServiceAccount
/// (operator/src/children/rbac.rs): get on this object, get/patch on its status.
async fn grant_trainer_rights(client: &Client, ns: &str, job: &str, sa: &str) {
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec!["megatron.dev".into()]),
        resources: Some(vec![resource.into()]),
        resource_names: Some(vec![job.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let meta = ObjectMeta {
        name: Some(sa.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![
            rule("megatronfinetunes", &["get"]),
            rule("megatronfinetunes/status", &["get", "patch"]),
        ]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: sa.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the Role");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the RoleBinding");
    // The API server authorizes from a cache of Roles and bindings: wait until it has these.
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{sa}")),
            resource_attributes: Some(ResourceAttributes {
                group: Some("megatron.dev".into()),
                resource: Some("megatronfinetunes".into()),
                subresource: Some("status".into()),
                name: Some(job.into()),
                namespace: Some(ns.into()),
                verb: Some("patch".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews = Api::<SubjectAccessReview>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("create a SubjectAccessReview");
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the API server never authorized {sa} to patch the job's status"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A kubeconfig that acts as ServiceAccount `ns/sa` (admin impersonation).
fn service_account_kubeconfig(dir: &Path, ns: &str, sa: &str) -> PathBuf {
    let text = std::fs::read_to_string(admin_kubeconfig()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for user in config["users"].as_sequence_mut().expect("users") {
        user["user"]["as"] = format!("system:serviceaccount:{ns}:{sa}").into();
        user["user"]["as-groups"] = serde_yaml::to_value([
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_string(),
        ])
        .unwrap();
    }
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

fn reporter(job: JobRef, kubeconfig: PathBuf, interval: Duration) -> Reporter {
    Reporter::new(ReporterConfig {
        is_rank0: true,
        job: Some(job),
        log_interval_steps: 2,
        kubeconfig: Some(kubeconfig),
        status_interval: interval,
        finish_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .expect("reporter")
}

fn stats(step: i64) -> StepStats {
    StepStats {
        step,
        total_steps: 8,
        epoch: step as f64 / 8.0,
        loss: 2.0 - 0.1 * step as f64,
        learning_rate: 1e-3,
        grad_norm: Some(0.75),
        loss_scale: None,
        samples_per_second: 16.0,
        tokens_per_second: 2048.0,
        eta_seconds: (8 - step) as f64 * 0.5,
        skipped: false,
    }
}

fn checkpoint(step: i64, metric: Option<f64>) -> CheckpointStatus {
    CheckpointStatus {
        step,
        uri: Uri::new(format!("s3://megatron-demo/runs/ckpt/step_{step:08}")),
        time: None,
        metric_name: metric.map(|_| "val_f1".into()),
        metric,
        duration_seconds: None,
    }
}

/// Polls the object until `done` holds; panics with the last object after `timeout`.
async fn wait_for(
    api: &Api<MegatronFineTune>,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&MegatronFineTune) -> bool,
) -> MegatronFineTune {
    let deadline = Instant::now() + timeout;
    loop {
        let job = api.get_status(name).await.expect("get status");
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {timeout:?}; status: {:#?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Status fields (top-level `f:status` keys) that field manager `manager` owns.
fn owned_status_fields(job: &MegatronFineTune, manager: &str) -> Vec<String> {
    let mut fields: Vec<String> = job
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .filter_map(|m| m.fields_v1.as_ref())
        .filter_map(|f| f.0.get("f:status")?.as_object().cloned())
        .flat_map(|status| status.into_iter().map(|(k, _)| k))
        .filter_map(|k| k.strip_prefix("f:").map(str::to_owned))
        .collect();
    fields.sort();
    fields
}

fn step_of(job: &MegatronFineTune) -> Option<i64> {
    job.status.as_ref()?.progress.as_ref().map(|p| p.step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trainer_fields_written_with_the_operators_role_and_kept_apart() {
    let client = admin().await;
    let ns = create_namespace(&client, "progress-status").await;
    let name = "tiny-squad";
    let sa = "tiny-squad-trainer";
    let api = create_job(&client, &ns, name).await;
    grant_trainer_rights(&client, &ns, name, sa).await;
    operator_apply(&api, name, "Running").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(dir.path(), &ns, sa);
    let job = JobRef {
        name: name.into(),
        namespace: ns.clone(),
        attempt: 0,
    };
    // A long interval: progress after the first write waits for it, urgent writes do not.
    let mut r = reporter(job.clone(), kubeconfig.clone(), Duration::from_secs(60));

    let before_first_step = k8s_openapi::jiff::Timestamp::now();
    r.step(&stats(1));
    let seen = wait_for(&api, name, Duration::from_secs(20), "the first step", |j| {
        step_of(j) == Some(1)
    })
    .await;
    let progress = seen.status.as_ref().unwrap().progress.clone().unwrap();
    assert_eq!(progress.total_steps, Some(8));
    assert_eq!(progress.summary.as_deref(), Some("1/8 (12%)"));
    assert_eq!(progress.samples_per_second, Some(16.0));
    assert_eq!(progress.eta_seconds, Some(4));
    let last_step_time = progress.last_step_time.expect("lastStepTime").0;
    // The API server keeps whole seconds.
    assert!(last_step_time.as_second() >= before_first_step.as_second());

    for step in 2..=4 {
        r.step(&stats(step));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let throttled = api.get_status(name).await.unwrap();
    assert_eq!(
        step_of(&throttled),
        Some(1),
        "progress is throttled to the interval"
    );

    let validation = BTreeMap::from([("val_f1".to_string(), 55.5), ("val_loss".to_string(), 1.25)]);
    r.validation(4, 0.5, &validation);
    let seen = wait_for(&api, name, Duration::from_secs(20), "the validation", |j| {
        j.status
            .as_ref()
            .and_then(|s| s.metrics.as_ref())
            .is_some_and(|m| !m.validation.is_empty())
    })
    .await;
    let status = seen.status.unwrap();
    let metrics = status.metrics.unwrap();
    assert_eq!(metrics.validation, validation);
    assert_eq!(metrics.validation_step, Some(4));
    assert_eq!(
        metrics.train_loss,
        Some((stats(3).loss + stats(4).loss) / 2.0),
        "mean of steps 3 and 4"
    );
    assert_eq!(metrics.grad_norm, Some(0.75));
    assert_eq!(
        status.progress.unwrap().step,
        4,
        "an urgent write carries the latest progress"
    );

    r.checkpoint_saved(checkpoint(4, Some(55.5)), Some(checkpoint(4, Some(55.5))));
    let seen = wait_for(&api, name, Duration::from_secs(20), "the checkpoint", |j| {
        j.status
            .as_ref()
            .and_then(|s| s.latest_checkpoint.as_ref())
            .is_some()
    })
    .await;
    let status = seen.status.unwrap();
    assert_eq!(status.latest_checkpoint, Some(checkpoint(4, Some(55.5))));
    assert_eq!(status.best_checkpoint, Some(checkpoint(4, Some(55.5))));

    let nemo = Artifact {
        uri: Uri::new("s3://megatron-demo/runs/tiny-squad/model.nemo"),
        size_bytes: Some(1234),
        sha256: Some("ab".repeat(32)),
    };
    r.artifacts(Artifacts {
        nemo: Some(nemo.clone()),
        predictions: None,
    });
    r.test_metrics(&BTreeMap::from([("test_f1".to_string(), 54.0)]));
    let finished = tokio::task::block_in_place(|| {
        r.finish(Outcome::Succeeded, "Completed", "trained 4 steps", Some(4))
    });
    finished.expect("finish");

    // finish returned: the result is there without waiting.
    let done = api.get_status(name).await.unwrap();
    let status = done.status.clone().unwrap();
    let result = status.result.expect("result");
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.attempt, 0);
    assert_eq!(result.reason, "Completed");
    assert_eq!(result.message, "trained 4 steps");
    assert_eq!(result.step, Some(4));
    assert!(result.time.is_some());
    assert_eq!(status.artifacts.unwrap().nemo, Some(nemo));
    assert_eq!(
        status.metrics.unwrap().test,
        BTreeMap::from([("test_f1".to_string(), 54.0)])
    );
    // The operator's fields survived the trainer's applies ...
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(status.ranks, Some(2));
    assert_eq!(status.conditions.len(), 1);
    assert_eq!(
        owned_status_fields(&done, "megatron-trainer"),
        [
            "artifacts",
            "bestCheckpoint",
            "latestCheckpoint",
            "metrics",
            "progress",
            "result"
        ]
    );
    assert_eq!(
        owned_status_fields(&done, "megatron-operator"),
        ["conditions", "phase", "ranks", "restarts"]
    );
    assert_eq!(r.metrics().status_write_errors.get(), 0);
    drop(r);

    // ... and the trainer's survive the operator's.
    operator_apply(&api, name, "Succeeded").await;
    let after = api.get_status(name).await.unwrap().status.unwrap();
    assert_eq!(after.phase, Some(Phase::Succeeded));
    assert_eq!(after.result.map(|r| r.reason), Some("Completed".into()));
    assert_eq!(after.latest_checkpoint.map(|c| c.step), Some(4));

    // A new attempt keeps the checkpoint (restarts are counted by it) and drops the old result.
    let mut next = reporter(
        JobRef {
            attempt: 1,
            ..job.clone()
        },
        kubeconfig,
        Duration::from_secs(60),
    );
    assert!(
        next.metrics()
            .render()
            .contains("megatron_trainer_attempt 1")
    );
    next.step(&stats(5));
    let seen = wait_for(
        &api,
        name,
        Duration::from_secs(20),
        "attempt 1's first step",
        |j| step_of(j) == Some(5),
    )
    .await;
    let status = seen.status.unwrap();
    assert_eq!(status.latest_checkpoint, Some(checkpoint(4, Some(55.5))));
    assert_eq!(status.best_checkpoint, Some(checkpoint(4, Some(55.5))));
    assert_eq!(status.metrics.unwrap().validation, validation);
    assert_eq!(
        status.result, None,
        "an earlier attempt's result is not carried over"
    );
    let finished =
        tokio::task::block_in_place(|| next.finish(Outcome::Failed, "InvalidData", "bad", None));
    finished.expect("finish attempt 1");
    let result = api
        .get_status(name)
        .await
        .unwrap()
        .status
        .unwrap()
        .result
        .unwrap();
    assert_eq!(
        (result.outcome, result.attempt, result.step),
        (Outcome::Failed, 1, None)
    );
    drop(next);
    delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_is_a_clear_error_from_finish() {
    let client = admin().await;
    let ns = create_namespace(&client, "progress-missing").await;
    let mut r = reporter(
        JobRef {
            name: "no-such-job".into(),
            namespace: ns.clone(),
            attempt: 0,
        },
        admin_kubeconfig(),
        Duration::from_secs(1),
    );
    r.step(&stats(1));
    let started = Instant::now();
    let err =
        tokio::task::block_in_place(|| r.finish(Outcome::Succeeded, "Completed", "", Some(1)))
            .expect_err("no object to write to");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "MegatronFineTune {ns}/no-such-job not found (404)"
        )),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a 404 is not retried until the timeout"
    );
    assert!(r.metrics().status_write_errors.get() >= 1);
    drop(r);
    delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rights_are_a_clear_error_from_finish() {
    let client = admin().await;
    let ns = create_namespace(&client, "progress-forbidden").await;
    let name = "tiny-squad";
    let api = create_job(&client, &ns, name).await;
    let dir = tempfile::tempdir().unwrap();
    // A ServiceAccount identity without the operator's Role.
    let kubeconfig = service_account_kubeconfig(dir.path(), &ns, "someone-else");
    let mut r = reporter(
        JobRef {
            name: name.into(),
            namespace: ns.clone(),
            attempt: 0,
        },
        kubeconfig,
        Duration::from_secs(1),
    );
    r.step(&stats(1));
    let err =
        tokio::task::block_in_place(|| r.finish(Outcome::Succeeded, "Completed", "", Some(1)))
            .expect_err("forbidden");
    let text = err.to_string();
    assert!(text.contains("forbidden (403)"), "{text}");
    assert!(
        text.contains("get and patch on megatronfinetunes/status"),
        "{text}"
    );
    drop(r);
    let status = api.get_status(name).await.unwrap().status;
    assert!(
        status.and_then(|s| s.progress).is_none(),
        "nothing was written"
    );
    delete_namespace(&client, &ns).await;
}

/// A kubeconfig like the admin's whose server is `127.0.0.1:port`.
fn kubeconfig_via_port(dir: &Path, port: u16) -> (PathBuf, String) {
    let text = std::fs::read_to_string(admin_kubeconfig()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let cluster = &mut config["clusters"][0]["cluster"];
    let upstream = cluster["server"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .to_owned();
    cluster["server"] = format!("https://127.0.0.1:{port}").into();
    let path = dir.join("via-proxy.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    (path, upstream)
}

/// Forwards TCP connections on `port` to `upstream` (TLS passes through).
async fn proxy(port: u16, upstream: String) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the proxy port");
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_retried_without_blocking_training() {
    let client = admin().await;
    let ns = create_namespace(&client, "progress-outage").await;
    let name = "tiny-squad";
    let api = create_job(&client, &ns, name).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (kubeconfig, upstream) = kubeconfig_via_port(dir.path(), port);
    let mut r = reporter(
        JobRef {
            name: name.into(),
            namespace: ns.clone(),
            attempt: 0,
        },
        kubeconfig,
        Duration::from_secs(1),
    );
    // The API server is unreachable: training goes on at full speed.
    let started = Instant::now();
    for step in 1..=200 {
        r.step(&stats(step % 8 + 1));
    }
    r.validation(8, 1.0, &BTreeMap::from([("val_f1".to_string(), 50.0)]));
    r.checkpoint_saved(checkpoint(8, None), None);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "reporting blocked training for {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        r.metrics().status_write_errors.get() >= 1,
        "writes were attempted and failed"
    );
    // The API server comes back; finish waits for it.
    let server = tokio::spawn(proxy(port, upstream));
    let finished =
        tokio::task::block_in_place(|| r.finish(Outcome::Succeeded, "Completed", "", Some(8)));
    finished.expect("finish after the outage");
    let status = api.get_status(name).await.unwrap().status.unwrap();
    assert_eq!(status.result.map(|r| r.outcome), Some(Outcome::Succeeded));
    assert_eq!(status.latest_checkpoint.map(|c| c.step), Some(8));
    assert_eq!(status.metrics.unwrap().validation["val_f1"], 50.0);
    drop(r);
    server.abort();
    delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, _) = kubeconfig_via_port(dir.path(), common::free_port());
    let mut r = Reporter::new(ReporterConfig {
        job: Some(JobRef {
            name: "unreachable".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        kubeconfig: Some(kubeconfig),
        finish_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .expect("reporter");
    let started = Instant::now();
    let err = tokio::task::block_in_place(|| r.finish(Outcome::Succeeded, "Completed", "", None))
        .expect_err("unreachable API server");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("did not accept the status within 2s"),
        "{text}"
    );
    assert!(
        text.contains(
            "cannot reach the API server for the status of MegatronFineTune default/unreachable"
        ),
        "{text}"
    );
}
